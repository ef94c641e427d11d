// The page's entry point: the API key form, the digit panel and the forecast panel.

import { storedKey, storeKey } from "./api.js";
import { DigitPanel } from "./digit.js";
import { ForecastPanel } from "./forecast.js";

const digits = new DigitPanel(document.querySelector("#digit"));
const forecasts = new ForecastPanel(document.querySelector("#forecast"));

const keyForm = document.querySelector("#key-form");
const keyInput = document.querySelector("#api-key");
const keyStatus = document.querySelector("#key-status");
keyInput.value = storedKey();
keyStatus.textContent = keyInput.value ? "A key is kept in this browser." : "";
keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  try {
    storeKey(key);
    keyStatus.textContent = key ? "Key kept in this browser and sent with each request." : "No key is sent.";
  } catch {
    keyStatus.textContent = "This browser does not allow the page to keep the key (storage is off).";
    return;
  }
  digits.resend();
  forecasts.retryIfRefused();
});
