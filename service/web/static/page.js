// The page's entry point: the API key form, the digit panel and the forecast panel, and the models each
// panel offers (GET /models).

import { storedKey, storeKey } from "./api.js";
import { DigitPanel } from "./digit.js";
import { ForecastPanel } from "./forecast.js";
import { servedModels } from "./models.js";

const digits = new DigitPanel(document.querySelector("#digit"));
const forecasts = new ForecastPanel(document.querySelector("#forecast"));
const panels = [digits, forecasts];

/** Offer each panel the models of its task; when they cannot be listed, the service's default answers. */
async function listModels() {
  try {
    const byTask = await servedModels();
    for (const panel of panels) panel.models.offer(byTask.get(panel.constructor.task) || []);
  } catch (error) {
    for (const panel of panels) panel.models.fallBack(error);
  }
}

const listed = listModels();

const keyForm = document.querySelector("#key-form");
const keyInput = document.querySelector("#api-key");
const keyStatus = document.querySelector("#key-status");
keyInput.value = storedKey();
keyStatus.textContent = keyInput.value ? "A key is kept in this browser." : "";
keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  try {
    storeKey(key);
    keyStatus.textContent = key ? "Key kept in this browser and sent with each request." : "No key is sent.";
  } catch {
    keyStatus.textContent = "This browser does not allow the page to keep the key (storage is off).";
    return;
  }
  await listed;
  await listModels(); // the list may have been refused for want of the key
  digits.resend();
  forecasts.retryIfRefused();
});
