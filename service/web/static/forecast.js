// The forecast panel: a series typed or pasted as plain numbers, a horizon, POST /forecast with the 80 %
// and 95 % levels, and the answer drawn (plot.js) and listed in a table.

import { ApiError, postJson, showError } from "./api.js";
import { drawForecastPlot } from "./plot.js";

const LEVELS = [80, 95];
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** The example: sin(3x) + x at 200 points over x in [0, 20] (about 21 points a period, a rising trend). */
export function exampleSeries() {
  return Array.from({ length: 200 }, (_, i) => {
    const x = (20 * i) / 199;
    return Number((Math.sin(3 * x) + x).toFixed(4));
  });
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
  constructor(panel) {
    this.panel = panel;
    this.form = panel.querySelector("#forecast-form");
    this.seriesInput = panel.querySelector("#series");
    this.horizonInput = panel.querySelector("#horizon");
    this.button = panel.querySelector("#forecast-run");
    this.error = panel.querySelector("#forecast-error");
    this.plot = panel.querySelector("#forecast-plot");
    this.shownNote = panel.querySelector("#forecast-shown");
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

  /** Forecast again if the last try failed for want of an API key. */
  retryIfRefused() {
    if (this.lastFailure && this.lastFailure.status === 401) this.run();
  }

  async run() {
    let request;
    try {
      request = { series: parseSeries(this.seriesInput.value), horizon: this.horizon(), levels: LEVELS };
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
    this.fillTable(answer);
    this.redraw();
  }

  redraw() {
    const shown = drawForecastPlot(this.plot, this.series, this.answer, this.zoom.checked);
    const horizon = this.answer ? this.answer.forecast.length : 0;
    this.plot.dataset.drawn = this.answer ? "forecast" : this.series.length ? "history" : "nothing";
    this.plot.setAttribute(
      "aria-label",
      this.answer
        ? `Plot of the last ${shown} values of the series and the ${horizon}-step forecast, with its 80 % ` +
            "and 95 % intervals shaded"
        : `Plot of the last ${shown} values of the series`,
    );
    this.shownNote.textContent =
      shown < this.series.length
        ? `The plot shows the last ${shown} of the series' ${this.series.length} values.`
        : "";
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
