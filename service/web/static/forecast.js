// The forecast panel: a series typed or pasted as plain numbers, a horizon, POST /forecast with the 80 %
// and 95 % levels (to the model chosen, when there is a choice), and the answer drawn (plot.js), listed
// in a table and credited to the model that gave it.

import { ApiError, postJson, showError } from "./api.js";
import { ModelChoice, answeredBy } from "./models.js";
import { drawForecastPlot } from "./plot.js";

const LEVELS = [80, 95];
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** Bands thinner than this many pixels get a note saying how wide they are. */
const THIN_BAND_PX = 3;

/** The example: sin(3x) + x at 200 points over x in [0, 20] (about 21 points a period, a rising trend)
 * plus Gaussian noise of standard deviation 0.3, the same every time (a fixed seed). Without noise the
 * model is so sure that its intervals are thinner than a pixel. */
export function exampleSeries() {
  const random = seededRandom(20);
  return Array.from({ length: 200 }, (_, i) => {
    const x = (20 * i) / 199;
    const noise = 0.3 * Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
    return Number((Math.sin(3 * x) + x + noise).toFixed(4));
  });
}

/** Numbers uniform in [0, 1), the same sequence for the same `seed` (mulberry32). */
function seededRandom(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The numbers in `text` (separated by commas, semicolons, spaces or new lines), or an ApiError-like
 * message naming the first thing that is not a number. */
export function parseSeries(text) {
  const tokens = text.split(/[\s,;]+/).filter((token) => token !== "");
  if (!tokens.length) {
    throw new ApiError("Enter a series: numbers separated by commas, spaces or new lines, oldest first.", 0);
  }
  return tokens.map((token, i) => {
    if (!NUMBER.test(token)) {
      throw new ApiError(
        `Value ${i + 1} of the series, “${token.slice(0, 40)}”, is not a number: the series takes ` +
          "plain numbers such as 1.5 or -2e3, separated by commas, spaces or new lines.",
        0,
      );
    }
    return Number(token);
  });
}

function formatSeries(values) {
  const lines = [];
  for (let i = 0; i < values.length; i += 8) lines.push(values.slice(i, i + 8).join(", "));
  return lines.join(",\n");
}

export class ForecastPanel {
  /** The task of the models this panel offers (GET /models). */
  static task = "forecasting";

  constructor(panel) {
    this.panel = panel;
    this.form = panel.querySelector("#forecast-form");
    this.seriesInput = panel.querySelector("#series");
    this.horizonInput = panel.querySelector("#horizon");
    this.button = panel.querySelector("#forecast-run");
    this.error = panel.querySelector("#forecast-error");
    this.plot = panel.querySelector("#forecast-plot");
    this.shownNote = panel.querySelector("#forecast-shown");
    this.answered = panel.querySelector("#forecast-answered");
    this.models = new ModelChoice(panel.querySelector("#forecast-model-choice"), () => this.modelChanged());
    this.table = panel.querySelector("#forecast-table tbody");
    this.zoom = panel.querySelector("#forecast-zoom");
    this.series = [];
    this.answer = null;
    this.lastFailure = null;
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.run();
    });
    panel.querySelector("#series-example").addEventListener("click", () => this.useExample());
    this.seriesInput.addEventListener("input", () => this.seriesEdited());
    this.zoom.addEventListener("change", () => this.redraw());
    new ResizeObserver(() => this.redraw()).observe(this.plot);
    // The plot's colours follow the page's light or dark scheme.
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => this.redraw());
    this.useExample();
  }

  useExample() {
    this.seriesInput.value = formatSeries(exampleSeries());
    this.seriesEdited();
  }

  /** The series changed: plot it alone (the old forecast no longer belongs to it). */
  seriesEdited() {
    try {
      this.series = parseSeries(this.seriesInput.value);
    } catch {
      this.series = []; // said when Forecast is pressed
    }
    this.showAnswer(null);
  }

  /** Another model was chosen: a forecast shown is asked of it instead. */
  modelChanged() {
    if (this.answer) this.run();
  }

  /** Forecast again if the last try failed for want of an API key. */
  retryIfRefused() {
    if (this.lastFailure && this.lastFailure.status === 401) this.run();
  }

  async run() {
    let request;
    try {
      request = { series: parseSeries(this.seriesInput.value), horizon: this.horizon(), levels: LEVELS };
      const model = this.models.chosen();
      if (model) request.model = model;
    } catch (error) {
      this.showAnswer(null);
      this.fail(error);
      return;
    }
    this.series = request.series;
    this.panel.dataset.state = "pending";
    this.button.disabled = true;
    try {
      const answer = await postJson("/forecast", request);
      showError(this.error, null);
      this.lastFailure = null;
      this.showAnswer(answer);
    } catch (error) {
      this.showAnswer(null);
      this.fail(error);
    } finally {
      this.button.disabled = false;
    }
  }

  horizon() {
    const text = this.horizonInput.value.trim();
    if (!/^\d+$/.test(text)) {
      throw new ApiError("Horizon: enter a whole number of steps to forecast, such as 48.", 0);
    }
    return Number(text);
  }

  fail(error) {
    this.lastFailure = error;
    showError(this.error, error);
    this.panel.dataset.state = "error";
  }

  showAnswer(answer) {
    this.answer = answer;
    if (answer) {
      this.panel.dataset.response = JSON.stringify(answer);
      this.panel.dataset.state = "shown";
    } else {
      delete this.panel.dataset.response;
      this.panel.dataset.state = "idle";
    }
    const by = answeredBy(answer);
    this.answered.textContent = by ? `Forecast by ${by}` : "";
    this.fillTable(answer);
    this.redraw();
  }

  redraw() {
    const { shown, bandPixels } = drawForecastPlot(this.plot, this.series, this.answer, this.zoom.checked);
    const horizon = this.answer ? this.answer.forecast.length : 0;
    this.plot.dataset.drawn = this.answer ? "forecast" : this.series.length ? "history" : "nothing";
    this.plot.setAttribute(
      "aria-label",
      this.answer
        ? `Plot of the last ${shown} values of the series and the ${horizon}-step forecast, with its 80 % ` +
            "and 95 % intervals shaded"
        : `Plot of the last ${shown} values of the series`,
    );
    const notes = [];
    if (shown < this.series.length) {
      notes.push(`The plot shows the last ${shown} of the series' ${this.series.length} values.`);
    }
    if (this.answer && bandPixels < THIN_BAND_PX) {
      const band = this.answer.intervals["95"];
      const widest = Math.max(...band.upper.map((upper, i) => upper - band.lower[i]));
      notes.push(
        `The 95 % interval is at most ${widest.toPrecision(2)} wide, under ${THIN_BAND_PX} pixels at ` +
          "this scale: zoom on the forecast, or open “Forecast values”.",
      );
    }
    this.shownNote.textContent = notes.join(" ");
  }

  fillTable(answer) {
    this.table.replaceChildren();
    if (!answer) return;
    const [band80, band95] = LEVELS.map((level) => answer.intervals[String(level)]);
    answer.forecast.forEach((mean, i) => {
      const row = document.createElement("tr");
      const cells = [
        this.series.length + i,
        mean,
        band80.lower[i],
        band80.upper[i],
        band95.lower[i],
        band95.upper[i],
      ];
      cells.forEach((value, j) => {
        const cell = document.createElement(j === 0 ? "th" : "td");
        if (j === 0) cell.scope = "row";
        cell.textContent = j === 0 ? String(value) : value.toFixed(4);
        row.append(cell);
      });
      this.table.append(row);
    });
  }
}
