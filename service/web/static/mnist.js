// A drawing as the digit model's input, made the way MNIST was made (and the way the service treats an
// uploaded image, service/imaging.py): cropped to the ink, scaled to fit a 20×20 box with its aspect
// kept (area averaging), ink scaled to peak at 255, then placed in a 28×28 field so that its centre of
// mass falls on the field's centre (14, 14). White digit on black, raw values 0–255.

export const FIELD = 28;
const BOX = 20;
const CENTRE = 14;
/** Ink fainter than this (out of 255) is no digit: the service refuses such an image too. */
const FAINTEST_PEAK = 8;

/**
 * `grey` holds `width`×`height` values 0–255, row by row, white ink on black. Returns 28 rows of 28
 * integers 0–255, or null when there is no ink to send.
 */
export function mnistPixels(grey, width, height) {
  const box = inkBounds(grey, width, height);
  if (box === null) return null;
  const scale = BOX / Math.max(box.width, box.height);
  const targetWidth = Math.max(1, Math.round(box.width * scale));
  const targetHeight = Math.max(1, Math.round(box.height * scale));
  const digit = resampleByArea(grey, width, box, targetWidth, targetHeight);
  const peak = Math.max(...digit);
  if (peak < FAINTEST_PEAK) return null;
  for (let i = 0; i < digit.length; i++) digit[i] *= 255 / peak;
  return centreByMass(digit, targetWidth, targetHeight);
}

function inkBounds(grey, width, height) {
  let top = height;
  let bottom = -1;
  let left = width;
  let right = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (grey[y * width + x] > 0) {
        top = Math.min(top, y);
        bottom = Math.max(bottom, y);
        left = Math.min(left, x);
        right = Math.max(right, x);
      }
    }
  }
  if (bottom < 0) return null;
  return { left, top, width: right - left + 1, height: bottom - top + 1 };
}

/** For each of `targetSize` cells over `sourceSize` source cells: [source index, weight] pairs, the
 * weights of one cell summing to 1 (each source cell weighs by how much of it the target cell covers). */
function areaWeights(sourceSize, targetSize) {
  const step = sourceSize / targetSize;
  const cells = [];
  for (let t = 0; t < targetSize; t++) {
    const start = t * step;
    const end = start + step;
    const taps = [];
    for (let s = Math.floor(start); s < Math.min(Math.ceil(end), sourceSize); s++) {
      const overlap = Math.min(end, s + 1) - Math.max(start, s);
      if (overlap > 0) taps.push([s, overlap / step]);
    }
    cells.push(taps);
  }
  return cells;
}

/** The `box` part of `grey` (rows of `stride` values) averaged down to `targetWidth`×`targetHeight`. */
function resampleByArea(grey, stride, box, targetWidth, targetHeight) {
  const columns = areaWeights(box.width, targetWidth);
  const rows = areaWeights(box.height, targetHeight);
  const narrowed = new Float64Array(box.height * targetWidth); // columns first, then rows
  for (let y = 0; y < box.height; y++) {
    const offset = (box.top + y) * stride + box.left;
    for (let t = 0; t < targetWidth; t++) {
      let sum = 0;
      for (const [s, weight] of columns[t]) sum += grey[offset + s] * weight;
      narrowed[y * targetWidth + t] = sum;
    }
  }
  const digit = new Float64Array(targetHeight * targetWidth);
  for (let t = 0; t < targetHeight; t++) {
    for (let x = 0; x < targetWidth; x++) {
      let sum = 0;
      for (const [s, weight] of rows[t]) sum += narrowed[s * targetWidth + x] * weight;
      digit[t * targetWidth + x] = sum;
    }
  }
  return digit;
}

/** `digit` (`width`×`height`, at most 28×28) in a 28×28 field, its centre of mass nearest (14, 14). */
function centreByMass(digit, width, height) {
  let mass = 0;
  let rowMoment = 0;
  let columnMoment = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const value = digit[y * width + x];
      mass += value;
      rowMoment += y * value;
      columnMoment += x * value;
    }
  }
  // Keep the whole digit in the field even if its mass lies far off its box's centre.
  const top = clamp(Math.round(CENTRE - rowMoment / mass), 0, FIELD - height);
  const left = clamp(Math.round(CENTRE - columnMoment / mass), 0, FIELD - width);
  const field = Array.from({ length: FIELD }, () => new Array(FIELD).fill(0));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      field[top + y][left + x] = Math.min(255, Math.round(digit[y * width + x]));
    }
  }
  return field;
}

function clamp(value, low, high) {
  return Math.min(Math.max(value, low), high);
}
