// The forecast plot on a <canvas>: the history, the forecast mean and its 80 % and 95 % bands (filled),
// with axes. The colours are page.css's `--plot-*` properties, which the legend's swatches use too, in
// the page's light and dark schemes alike.

const COLOUR_NAMES = ["background", "history", "mean", "band80", "band95", "grid", "axis", "text"];
const MARGIN = { left: 56, right: 16, top: 14, bottom: 34 };
/** History shown before the forecast, at most: longer series are cut in the plot. */
const MIN_HISTORY_SHOWN = 256;

/** The plot's colours, by name: the canvas's `--plot-<name>` CSS properties (page.css). */
function plotColours(canvas) {
  const style = getComputedStyle(canvas);
  return Object.fromEntries(COLOUR_NAMES.map((name) => [name, style.getPropertyValue(`--plot-${name}`).trim()]));
}

/**
 * Draw `series` and, when given, `forecast` (the service's answer: `forecast` and `intervals` with
 * "80" and "95") on `canvas`, sized to its box on the page; `zoom` shows only the forecast and as many
 * values before it as half its horizon. Returns `shown`, how many values of the series the plot shows
 * (the last ones), and `bandPixels`, the widest the 95 % band is drawn, in CSS pixels (0 without one).
 */
export function drawForecastPlot(canvas, series, forecast, zoom = false) {
  const context = fitToBox(canvas);
  const colours = plotColours(canvas);
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  context.fillStyle = colours.background;
  context.fillRect(0, 0, width, height);
  if (!series.length) return { shown: 0, bandPixels: 0 };
  const horizon = forecast ? forecast.forecast.length : 0;
  const wanted =
    zoom && forecast ? Math.max(8, Math.ceil(horizon / 2)) : Math.max(MIN_HISTORY_SHOWN, 4 * horizon);
  const shown = Math.min(series.length, wanted);
  const first = series.length - shown;
  const history = series.slice(first).map((value, i) => [first + i, value]);
  const steps = Array.from({ length: horizon }, (_, i) => series.length + i);
  const bands = forecast ? ["95", "80"].map((level) => forecast.intervals[level]).filter(Boolean) : [];

  const values = [...series.slice(first)];
  if (forecast) values.push(...forecast.forecast, ...bands.flatMap((band) => [...band.lower, ...band.upper]));
  const [low, high] = paddedRange(Math.min(...values), Math.max(...values));
  const xs = [first, series.length - 1 + Math.max(horizon, 1)];
  const area = {
    left: MARGIN.left,
    right: width - MARGIN.right,
    top: MARGIN.top,
    bottom: height - MARGIN.bottom,
  };
  const x = (step) => area.left + ((step - xs[0]) / (xs[1] - xs[0])) * (area.right - area.left);
  const y = (value) => area.bottom - ((value - low) / (high - low)) * (area.bottom - area.top);

  drawAxes(context, area, { x, y, xs, ys: [low, high] }, colours);
  bands.forEach((band, i) => {
    // Opaque fills, the 80 % band over the 95 % one: each has its own colour, whatever lies beneath.
    context.fillStyle = i === 0 ? colours.band95 : colours.band80;
    context.beginPath();
    steps.forEach((step, j) => context.lineTo(x(step), y(band.upper[j])));
    for (let j = steps.length - 1; j >= 0; j--) context.lineTo(x(steps[j]), y(band.lower[j]));
    context.closePath();
    context.fill();
  });
  if (forecast) {
    context.setLineDash([4, 4]);
    line(
      context,
      [
        [x(series.length - 1), area.top],
        [x(series.length - 1), area.bottom],
      ],
      colours.axis,
      1,
    );
    context.setLineDash([]);
    const last = history[history.length - 1];
    const mean = [last, ...steps.map((step, j) => [step, forecast.forecast[j]])];
    line(
      context,
      mean.map(([step, value]) => [x(step), y(value)]),
      colours.mean,
      2.5,
    );
  }
  line(
    context,
    history.map(([step, value]) => [x(step), y(value)]),
    colours.history,
    1.5,
  );
  const widest = bands.length ? Math.max(...bands[0].upper.map((upper, j) => upper - bands[0].lower[j])) : 0;
  return { shown, bandPixels: (widest / (high - low)) * (area.bottom - area.top) };
}

/** Size the canvas's bitmap to its box on the page (sharp on high-density screens); its context,
 * drawing in CSS pixels. */
function fitToBox(canvas) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(canvas.clientWidth * ratio);
  canvas.height = Math.round(canvas.clientHeight * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  return context;
}

function paddedRange(low, high) {
  const span = high - low || Math.abs(high) || 1;
  return [low - 0.05 * span, high + 0.05 * span];
}

/** About `count` round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]. */
function ticks(low, high, count) {
  const rough = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough) || rough;
  const values = [];
  for (let value = Math.ceil(low / step) * step; value <= high + step * 1e-9; value += step) {
    values.push(Math.abs(value) < step * 1e-9 ? 0 : value);
  }
  return { values, decimals: Math.max(0, -Math.floor(Math.log10(step))) };
}

function drawAxes(context, area, scale, colours) {
  context.font = "12px system-ui, sans-serif";
  context.fillStyle = colours.text;
  const across = ticks(scale.ys[0], scale.ys[1], Math.max(2, Math.round((area.bottom - area.top) / 50)));
  context.textAlign = "right";
  context.textBaseline = "middle";
  for (const value of across.values) {
    const at = scale.y(value);
    line(
      context,
      [
        [area.left, at],
        [area.right, at],
      ],
      colours.grid,
      1,
    );
    context.fillText(value.toFixed(across.decimals), area.left - 6, at);
  }
  const along = ticks(scale.xs[0], scale.xs[1], Math.max(2, Math.round((area.right - area.left) / 80)));
  context.textAlign = "center";
  context.textBaseline = "top";
  for (const step of along.values) {
    const at = scale.x(step);
    line(
      context,
      [
        [at, area.bottom],
        [at, area.bottom + 4],
      ],
      colours.axis,
      1,
    );
    context.fillText(step.toFixed(along.decimals), at, area.bottom + 6);
  }
  context.textAlign = "right";
  context.fillText("step", area.right, area.bottom + 20);
  line(
    context,
    [
      [area.left, area.top],
      [area.left, area.bottom],
      [area.right, area.bottom],
    ],
    colours.axis,
    1,
  );
}

function line(context, points, colour, width) {
  context.strokeStyle = colour;
  context.lineWidth = width;
  context.beginPath();
  for (const [px, py] of points) context.lineTo(px, py);
  context.stroke();
}
