// The digit panel: a black canvas to draw on with a white brush (mouse, pen or finger), the drawing sent
// to POST /predict/digit as it changes (to the model chosen), and the answer shown as the predicted digit,
// ten bars and the model that gave it.

import { postJson, showError } from "./api.js";
import { mnistPixels } from "./mnist.js";
import { ModelChoice, answeredBy } from "./models.js";

/** Brush width in canvas pixels (the canvas is 280 wide: a tenth of the 28×28 field is 2.8 pixels). */
const BRUSH = 20;

export class DigitPanel {
  /** The task of the models this panel offers (GET /models). */
  static task = "digit-classification";

  constructor(panel) {
    this.panel = panel;
    this.canvas = panel.querySelector("#digit-canvas");
    this.context = this.canvas.getContext("2d", { willReadFrequently: true });
    this.result = panel.querySelector("#digit-result");
    this.confidence = panel.querySelector("#digit-confidence");
    this.answered = panel.querySelector("#digit-answered");
    this.models = new ModelChoice(panel.querySelector("#digit-model-choice"), () => this.modelChanged());
    this.hint = panel.querySelector("#digit-hint");
    this.error = panel.querySelector("#digit-error");
    this.bars = buildBars(panel.querySelector("#digit-bars"));
    this.version = 0; // bumped by every change to the drawing
    this.clears = 0;
    this.drawn = false;
    this.inFlight = false; // at most one request at a time: the newest drawing is sent when it returns
    this.lastPoint = null;
    this.clear();
    this.listen();
  }

  listen() {
    const canvas = this.canvas;
    canvas.addEventListener("pointerdown", (event) => {
      if (event.pointerType === "mouse" && event.button !== 0) return; // the main button draws
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      this.lastPoint = this.point(event);
      this.strokeTo(this.lastPoint);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (this.lastPoint === null) return;
      const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
      for (const each of events.length ? events : [event]) this.strokeTo(this.point(each));
    });
    for (const type of ["pointerup", "pointercancel"]) {
      canvas.addEventListener(type, () => {
        this.lastPoint = null;
      });
    }
    this.panel.querySelector("#digit-clear").addEventListener("click", () => this.clear());
  }

  /** The event's position in canvas pixels (the canvas may be shown larger or smaller than it is). */
  point(event) {
    const bounds = this.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - bounds.left) * this.canvas.width) / bounds.width,
      y: ((event.clientY - bounds.top) * this.canvas.height) / bounds.height,
    };
  }

  strokeTo(point) {
    const context = this.context;
    const from = this.lastPoint || point;
    context.strokeStyle = "#fff";
    context.lineWidth = BRUSH;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(from.x, from.y);
    context.lineTo(point.x + (from === point ? 0.01 : 0), point.y); // a tap leaves a dot
    context.stroke();
    this.lastPoint = point;
    this.changed();
  }

  clear() {
    this.context.fillStyle = "#000";
    this.context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.version += 1;
    this.clears += 1; // an answer to a drawing sent before this is no longer shown
    this.drawn = false;
    this.show(null);
    showError(this.error, null);
    this.hint.hidden = false;
    this.panel.dataset.state = "empty";
  }

  changed() {
    this.version += 1;
    this.drawn = true;
    if (!this.inFlight) this.send();
  }

  /** Another model was chosen: the drawing goes to it. */
  modelChanged() {
    if (!this.drawn) return;
    this.version += 1; // an answer from the model chosen before is shown, then replaced
    if (!this.inFlight) this.send();
  }

  /** Send the drawing again (after an API key was entered, say). */
  resend() {
    if (this.drawn && !this.inFlight) this.send();
  }

  async send() {
    const { width, height } = this.canvas;
    const rgba = this.context.getImageData(0, 0, width, height).data;
    const grey = new Uint8ClampedArray(width * height);
    for (let i = 0; i < grey.length; i++) grey[i] = rgba[i * 4]; // white on black: any channel
    const pixels = mnistPixels(grey, width, height);
    if (pixels === null) return; // nothing drawn yet: the hint stays
    const sentVersion = this.version;
    const clears = this.clears;
    this.inFlight = true;
    this.hint.hidden = true;
    this.panel.dataset.state = "pending";
    let prediction = null;
    let failure = null;
    try {
      const model = this.models.chosen();
      prediction = await postJson("/predict/digit", model ? { pixels, model } : { pixels });
    } catch (error) {
      failure = error;
    } finally {
      this.inFlight = false;
    }
    if (clears !== this.clears) {
      if (this.drawn) this.send(); // cleared and drawn again meanwhile
      return;
    }
    this.show(prediction);
    showError(this.error, failure);
    if (this.version !== sentVersion) {
      this.send(); // drawn on meanwhile: send the newest drawing
    } else {
      this.panel.dataset.state = failure ? "error" : "shown";
    }
  }

  /** Show a prediction, or none. */
  show(prediction) {
    this.result.textContent = prediction ? String(prediction.digit) : "–";
    this.confidence.textContent = prediction
      ? `with probability ${(prediction.confidence * 100).toFixed(1)} %`
      : "";
    const by = answeredBy(prediction);
    this.answered.textContent = by ? `Answered by ${by}` : "";
    this.bars.forEach((bar, digit) => {
      const probability = prediction ? prediction.probabilities[digit] : 0;
      bar.row.dataset.probability = prediction ? String(probability) : "";
      bar.row.classList.toggle("top", prediction !== null && digit === prediction.digit);
      bar.meter.setAttribute("aria-valuenow", (probability * 100).toFixed(1));
      bar.fill.style.width = `${probability * 100}%`;
      bar.value.textContent = prediction ? `${(probability * 100).toFixed(1)} %` : "";
    });
  }
}

/** Ten rows in `list`, one bar for each digit's probability. */
function buildBars(list) {
  const bars = [];
  for (let digit = 0; digit < 10; digit++) {
    const row = document.createElement("li");
    row.dataset.digit = String(digit);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = String(digit);
    const meter = document.createElement("span");
    meter.className = "track";
    meter.setAttribute("role", "meter");
    meter.setAttribute("aria-label", `Probability of ${digit}`);
    meter.setAttribute("aria-valuemin", "0");
    meter.setAttribute("aria-valuemax", "100");
    const fill = document.createElement("span");
    fill.className = "fill";
    meter.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    row.append(label, meter, value);
    list.append(row);
    bars.push({ row, meter, fill, value });
  }
  return bars;
}
