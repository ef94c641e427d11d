// The page's calls to the service's API: the optional API key, JSON requests, and every failure turned
// into a message a person can act on.

const KEY_STORAGE = "rnnserve.apiKey";

/** The API key kept in this browser, or "" when none is. */
export function storedKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return ""; // storage disabled: the page works without a key
  }
}

/** Keep `key` in this browser for later visits; an empty key forgets it. */
export function storeKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

/** A failed call: `message` says what went wrong and what to do; `details` lists the service's
 * problems one by one when it named several; `status` is the HTTP status (0: no answer at all). */
export class ApiError extends Error {
  constructor(message, status, details = []) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.details = details;
  }
}

/** POST `body` as JSON to `path` of this service; its JSON answer, or an ApiError. */
export function postJson(path, body) {
  return callJson(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

/** GET `path` of this service; its JSON answer, or an ApiError. */
export function getJson(path) {
  return callJson(path, { method: "GET", headers: {} });
}

async function callJson(path, request) {
  const headers = { ...request.headers, Accept: "application/json" };
  const key = storedKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { ...request, headers });
  } catch {
    throw new ApiError(
      `Could not reach the service at ${location.origin}: check that it is running and that this ` +
        "computer is online, then try again.",
      0,
    );
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    // Not JSON (a proxy's error page, say): described by its status below.
  }
  if (response.ok && answer !== null) return answer;
  throw describeFailure(response, answer, key !== "");
}

function describeFailure(response, answer, keySent) {
  const detail = answer && typeof answer.detail === "string" ? answer.detail : "";
  const problems = answer && Array.isArray(answer.errors) ? answer.errors : [];
  const status = response.status;
  if (status === 422 && problems.length > 1) {
    const details = problems.map((problem) => `${problem.loc}: ${problem.msg}`);
    return new ApiError("The service could not use this input:", status, details);
  }
  if (status === 422) {
    return new ApiError(detail || "The service could not use this input.", status);
  }
  if (status === 401) {
    return new ApiError(
      keySent
        ? "The service refused the API key: check the key under “API key” above and press “Use key”."
        : "This service needs an API key: enter it under “API key” above and press “Use key”.",
      status,
    );
  }
  if (status === 429 || status === 503) {
    const seconds = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    const when = Number.isFinite(seconds) ? `retry in ${seconds} s` : "retry in a moment";
    const why = detail ? ` (${detail})` : "";
    const what = status === 429 ? "The service is busy" : "The service is unavailable";
    return new ApiError(`${what}: ${when}${why}.`, status);
  }
  const text = detail || response.statusText || "no explanation given";
  return new ApiError(`The service answered ${status}: ${text}.`, status);
}

/** Show `error` (an ApiError, or any other Error) in `element`, or hide `element` when it is null. */
export function showError(element, error) {
  element.replaceChildren();
  element.hidden = error === null;
  if (error === null) return;
  const message = document.createElement("p");
  message.textContent = error instanceof ApiError ? error.message : `Something went wrong: ${error.message}`;
  element.append(message);
  const details = error instanceof ApiError ? error.details : [];
  if (details.length) {
    const list = document.createElement("ul");
    for (const detail of details) {
      const item = document.createElement("li");
      item.textContent = detail;
      list.append(item);
    }
    element.append(list);
  }
}
