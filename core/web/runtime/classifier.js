// Runs a Transfer Studio image classifier (ONNX) in the browser with onnxruntime-web.
//
// Reusable: the web export's index.html uses it, and so can any page that serves this folder
// next to a model.onnx and a model.json ({"model": "model.onnx", "size": N, "labels": [...]}).
// Input contract, as in every export: RGB 0..255 (not scaled), the whole picture squashed to
// size x size with bilinear filtering; the model holds its own preprocessing.
import * as ort from "./ort/ort.wasm.min.mjs";

const ORT_BASE = new URL("./ort/", import.meta.url).href;

ort.env.wasm.wasmPaths = ORT_BASE;
// Threads need a cross-origin isolated page (COOP/COEP headers); a plain static server has
// none, so use one thread there instead of failing.
ort.env.wasm.numThreads = globalThis.crossOriginIsolated
  ? Math.min(4, navigator.hardwareConcurrency || 1)
  : 1;

/**
 * Loads a classifier.
 * @param {string} base URL of the folder holding model.json and the model.
 * @returns {Promise<Classifier>}
 */
export async function loadClassifier(base = "./") {
  const root = new URL(base, document.baseURI);
  const response = await fetch(new URL("model.json", root));
  if (!response.ok) {
    throw new Error(`model.json could not be read (HTTP ${response.status}).`);
  }
  const info = await response.json();
  if (!Number.isInteger(info.size) || !Array.isArray(info.labels) || !info.labels.length) {
    throw new Error("model.json must hold an integer 'size' and a non-empty 'labels' list.");
  }
  const session = await ort.InferenceSession.create(new URL(info.model, root).href, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  return new Classifier(session, info.size, info.labels.map(String));
}

export class Classifier {
  constructor(session, size, labels) {
    this.session = session;
    this.size = size;
    this.labels = labels;
    this.canvas = document.createElement("canvas");
    this.context = this.canvas.getContext("2d", { willReadFrequently: true });
  }

  /**
   * RGB 0..255 float32 pixels (NHWC, batch 1) of an image, video frame or canvas, resized
   * exactly as the app resizes (Pillow's bilinear filter with reducing_gap=3), so the browser
   * sees the same pixels as `core predict`.
   */
  pixels(source) {
    const width = source.videoWidth || source.naturalWidth || source.width;
    const height = source.videoHeight || source.naturalHeight || source.height;
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    const { context } = this;
    context.fillStyle = "#ffffff"; // transparent pixels on white, as in the app
    context.fillRect(0, 0, width, height);
    context.drawImage(source, 0, 0, width, height);
    const rgba = context.getImageData(0, 0, width, height).data;
    const rgb = new Uint8ClampedArray(width * height * 3);
    for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
      rgb[j] = rgba[i];
      rgb[j + 1] = rgba[i + 1];
      rgb[j + 2] = rgba[i + 2];
    }
    return Float32Array.from(resizeLikePillow(rgb, width, height, this.size, this.size));
  }

  /**
   * Classifies one picture.
   * @returns {Promise<{ranked: {label: string, probability: number}[], ms: number}>}
   *   classes from most to least likely, and the time the model took.
   */
  async classify(source) {
    const started = performance.now();
    const input = new ort.Tensor("float32", this.pixels(source), [1, this.size, this.size, 3]);
    const feeds = { [this.session.inputNames[0]]: input };
    const results = await this.session.run(feeds);
    const probabilities = results[this.session.outputNames[0]].data;
    const ranked = this.labels
      .map((label, index) => ({ label, probability: Number(probabilities[index]) }))
      .sort((a, b) => b.probability - a.probability);
    return { ranked, ms: performance.now() - started };
  }
}

// ---------------------------------------------------------------- Pillow-exact resizing
//
// Pillow's Image.resize(size, BILINEAR, reducing_gap=3.0): when the picture is at least 3x the
// target, first Image.reduce (box average, Reduce.c's fixed-point rounding), then a separable
// bilinear pass (Resample.c: horizontal, rounded to 8 bits, then vertical; 22-bit fixed-point
// coefficients). Canvas scaling uses other filters, which changes answers near a tie.

const PRECISION_BITS = 22;
const ONE = 2 ** PRECISION_BITS;

function bilinearCoefficients(inSize, in0, in1, outSize) {
  const scale = (in1 - in0) / outSize;
  const filterScale = Math.max(scale, 1.0);
  const support = 1.0 * filterScale;
  const kernelSize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Float64Array(outSize * kernelSize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let total = 0.0;
    for (let x = 0; x < xmax; x++) {
      let w = Math.abs((x + xmin - center + 0.5) / filterScale);
      w = w < 1.0 ? 1.0 - w : 0.0;
      weights[xx * kernelSize + x] = w;
      total += w;
    }
    for (let x = 0; x < xmax; x++) {
      if (total !== 0.0) weights[xx * kernelSize + x] /= total;
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  const fixed = new Float64Array(weights.length);
  for (let i = 0; i < weights.length; i++) {
    fixed[i] = weights[i] < 0 ? Math.trunc(-0.5 + weights[i] * ONE) : Math.trunc(0.5 + weights[i] * ONE);
  }
  return { bounds, fixed, kernelSize };
}

function clip8(value) {
  if (value >= ONE * 256) return 255;
  if (value <= 0) return 0;
  return Math.floor(value / ONE);
}

function reduceMultiplier(count) {
  // Reduce.c: (UINT32)((float)(1 << 30) * 4.0 / (float)((1 << 8) * count))
  return Math.trunc(Math.fround(4294967296 / Math.fround(256 * count)));
}

function reduceBox(rgb, width, height, fx, fy) {
  const outW = Math.ceil(width / fx);
  const outH = Math.ceil(height / fy);
  const out = new Uint8ClampedArray(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    const y0 = y * fy;
    const y1 = Math.min(y0 + fy, height);
    for (let x = 0; x < outW; x++) {
      const x0 = x * fx;
      const x1 = Math.min(x0 + fx, width);
      const count = (y1 - y0) * (x1 - x0);
      const multiplier = reduceMultiplier(count);
      const amend = Math.trunc(count / 2);
      for (let c = 0; c < 3; c++) {
        let sum = amend;
        for (let yy = y0; yy < y1; yy++) {
          for (let xx = x0; xx < x1; xx++) sum += rgb[(yy * width + xx) * 3 + c];
        }
        out[(y * outW + x) * 3 + c] = Math.floor((sum * multiplier) / 16777216);
      }
    }
  }
  return { rgb: out, width: outW, height: outH };
}

/** Resizes packed RGB bytes to outW x outH the way Pillow does (see above). */
export function resizeLikePillow(rgb, width, height, outW, outH) {
  if (width === outW && height === outH) return rgb;
  let box = [0, 0, width, height];
  const fx = Math.trunc(width / outW / 3.0) || 1;
  const fy = Math.trunc(height / outH / 3.0) || 1;
  if (fx > 1 || fy > 1) {
    ({ rgb, width, height } = reduceBox(rgb, width, height, fx, fy));
    box = [0, 0, box[2] / fx, box[3] / fy];
  }
  const horizontal = bilinearCoefficients(width, box[0], box[2], outW);
  const vertical = bilinearCoefficients(height, box[1], box[3], outH);
  const needHorizontal = outW !== width || box[0] !== 0 || box[2] !== outW;
  const needVertical = outH !== height || box[1] !== 0 || box[3] !== outH;
  const first = vertical.bounds[0];
  const last = vertical.bounds[outH * 2 - 2] + vertical.bounds[outH * 2 - 1];
  let source = rgb;
  let rows = height;
  let rowOffset = 0;
  let sourceWidth = width;
  if (needHorizontal) {
    rows = last - first;
    const temp = new Uint8ClampedArray(outW * rows * 3);
    const { bounds, fixed, kernelSize } = horizontal;
    for (let yy = 0; yy < rows; yy++) {
      const row = (yy + first) * width;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = bounds[xx * 2];
        const xmax = bounds[xx * 2 + 1];
        const k = xx * kernelSize;
        for (let c = 0; c < 3; c++) {
          let sum = ONE / 2;
          for (let x = 0; x < xmax; x++) sum += source[(row + x + xmin) * 3 + c] * fixed[k + x];
          temp[(yy * outW + xx) * 3 + c] = clip8(sum);
        }
      }
    }
    source = temp;
    sourceWidth = outW;
    rowOffset = first;
  }
  if (!needVertical) return source;
  const out = new Uint8ClampedArray(outW * outH * 3);
  const { bounds, fixed, kernelSize } = vertical;
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[yy * 2] - rowOffset;
    const ymax = bounds[yy * 2 + 1];
    const k = yy * kernelSize;
    for (let xx = 0; xx < outW; xx++) {
      for (let c = 0; c < 3; c++) {
        let sum = ONE / 2;
        for (let y = 0; y < ymax; y++) {
          sum += source[((y + ymin) * sourceWidth + xx) * 3 + c] * fixed[k + y];
        }
        out[(yy * outW + xx) * 3 + c] = clip8(sum);
      }
    }
  }
  return out;
}

/** Reads a dropped or chosen file as an upright bitmap (EXIF rotation applied). */
export async function fileToBitmap(file) {
  return createImageBitmap(file, {
    imageOrientation: "from-image",
    colorSpaceConversion: "none",
    premultiplyAlpha: "none",
  });
}

/**
 * Shows the top classes as bars (text only: class names are never read as HTML).
 * @param {HTMLElement} container
 */
export function renderBars(container, ranked, count = 5) {
  container.replaceChildren();
  for (const { label, probability } of ranked.slice(0, count)) {
    const row = document.createElement("div");
    row.className = "bar-row";
    const name = document.createElement("span");
    name.className = "bar-label";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "bar-track";
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = `${(100 * probability).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = `${(100 * probability).toFixed(1)}%`;
    row.append(name, track, value);
    container.append(row);
  }
}

/**
 * Classifies webcam frames continuously (after the user allowed the camera).
 * @returns {Promise<() => void>} a function that stops the camera.
 */
export async function startWebcam(classifier, video, onResult) {
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: 640 }, height: { ideal: 480 } },
    audio: false,
  });
  video.srcObject = stream;
  await video.play();
  let running = true;
  const step = async () => {
    if (!running) return;
    if (video.readyState >= 2) {
      onResult(await classifier.classify(video));
    }
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
  return () => {
    running = false;
    for (const track of stream.getTracks()) track.stop();
    video.srcObject = null;
  };
}
