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
    this.canvas.width = size;
    this.canvas.height = size;
    this.context = this.canvas.getContext("2d", { willReadFrequently: true });
    this.context.imageSmoothingEnabled = true;
    this.context.imageSmoothingQuality = "high";
    this.busy = false;
  }

  /** RGB 0..255 float32 pixels (NHWC, batch 1) of an image, video frame or canvas. */
  pixels(source) {
    const { size, context } = this;
    context.clearRect(0, 0, size, size);
    context.fillStyle = "#ffffff"; // transparent pixels on white, as in the app
    context.fillRect(0, 0, size, size);
    context.drawImage(source, 0, 0, size, size);
    const rgba = context.getImageData(0, 0, size, size).data;
    const rgb = new Float32Array(size * size * 3);
    for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
      rgb[j] = rgba[i];
      rgb[j + 1] = rgba[i + 1];
      rgb[j + 2] = rgba[i + 2];
    }
    return rgb;
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

/** Reads a dropped or chosen file as an upright bitmap (EXIF rotation applied). */
export async function fileToBitmap(file) {
  return createImageBitmap(file, { imageOrientation: "from-image" });
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
