// The models the service serves for each task (GET /models), and a panel's choice among them: a <select>
// listing the task's models, the service's default first, whose choice is named in each request.

import { getJson } from "./api.js";

/**
 * The models served, by task: a Map from each task ("digit-classification", "forecasting") to its
 * models as GET /models lists them, the task's default first: `{ name, version, ready, description }`.
 * A model that failed to load names no task and is left out. Throws an ApiError when the list cannot
 * be had.
 */
export async function servedModels() {
  const answer = await getJson("/models");
  const byTask = new Map();
  for (const model of Array.isArray(answer.models) ? answer.models : []) {
    if (typeof model.task !== "string" || typeof model.name !== "string") continue;
    if (!byTask.has(model.task)) byTask.set(model.task, []);
    byTask.get(model.task).push({
      name: model.name,
      version: String(model.version ?? ""),
      ready: model.ready !== false,
      description: (model.metadata && model.metadata.description) || "",
    });
  }
  return byTask;
}

/** "digit_gru, version 1": the model and version an answer names, or "" when it names none. */
export function answeredBy(answer) {
  if (!answer || typeof answer.model !== "string") return "";
  return answer.version ? `${answer.model}, version ${answer.version}` : answer.model;
}

/**
 * A panel's model selector (`.model-choice`: a <select> and a `.model-note`). Shown when the task has
 * more than one model, or when the list could not be had (then only the service's default is offered,
 * and the note says why). `onChange` is called when a person picks another model.
 */
export class ModelChoice {
  constructor(box, onChange) {
    this.box = box;
    this.select = box.querySelector("select");
    this.note = box.querySelector(".model-note");
    this.models = [];
    this.select.addEventListener("change", () => {
      this.describe();
      onChange();
    });
    this.fallBack(null);
  }

  /** Offer `models` (the task's, the default first), keeping the current choice if it is among them. */
  offer(models) {
    const current = this.select.value;
    this.models = models;
    this.select.replaceChildren(
      ...models.map((model, i) => {
        const label = `${model.name} (version ${model.version}${i === 0 ? ", default" : ""})`;
        const option = new Option(model.ready ? label : `${label}: not ready`, model.name);
        option.disabled = !model.ready;
        return option;
      }),
    );
    if (models.some((model) => model.name === current && model.ready)) this.select.value = current;
    this.select.disabled = models.length < 2;
    this.box.hidden = models.length < 2;
    this.box.dataset.state = "listed";
    this.describe();
  }

  /** The list of models could not be had (`error`; null while it is being asked for): requests name
   * no model, so the service's default answers them. */
  fallBack(error) {
    this.models = [];
    this.select.replaceChildren(new Option("the service's default model", ""));
    this.select.disabled = true;
    this.box.hidden = error === null;
    this.box.dataset.state = error === null ? "listing" : "unlisted";
    this.note.textContent =
      error === null ? "" : `Could not list the models, so the service's default answers. ${error.message}`;
  }

  /** The model to name in a request, or null to leave the choice to the service (its default). */
  chosen() {
    return this.models.length > 1 && this.select.value ? this.select.value : null;
  }

  describe() {
    const model = this.models.find((each) => each.name === this.select.value);
    this.note.textContent = model ? model.description : "";
  }
}
