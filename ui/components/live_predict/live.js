// Live prediction: a Streamlit component (component API v1, no build step) that classifies
// camera frames in the browser with the run's web export (classifier.js + ONNX model).
// Arguments from the app: model_base (URL of the export folder, relative to this page),
// top (classes to show), interval_ms (least time between two frames).

const status = document.getElementById("status");
const startButton = document.getElementById("start");
const stopButton = document.getElementById("stop");
const video = document.getElementById("video");
const topLabel = document.getElementById("top-label");
const topProb = document.getElementById("top-prob");
const timeOut = document.getElementById("time");
const bars = document.getElementById("bars");

let runtime = null; // the classifier.js module
let classifier = null;
let args = { top: 3, interval_ms: 100 };
let stream = null;
let loop = 0; // generation of the frame loop (a stopped loop ends on its next step)
let classified = 0;
let busy = null; // the classification in flight

function send(type, extra = {}) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...extra }, "*");
}

function resize() {
  // The body's own height: the document's scrollHeight is never below the frame's height,
  // so it could grow the frame but never shrink it.
  const height = Math.ceil(document.body.getBoundingClientRect().height) + 4;
  send("streamlit:setFrameHeight", { height });
}

function show(ranked, ms) {
  classified += 1;
  const [best] = ranked;
  topLabel.textContent = best.label; // text, never HTML
  topProb.textContent = `${(100 * best.probability).toFixed(1)}%`;
  runtime.renderBars(bars, ranked, args.top);
  timeOut.dataset.ms = ms.toFixed(1);
  timeOut.textContent = `${ms.toFixed(0)} ms per frame in the model`;
  document.body.dataset.classified = String(classified);
}

async function classifyNow(source) {
  busy = classifier.classify(source);
  try {
    const { ranked, ms } = await busy;
    show(ranked, ms);
    return ranked;
  } finally {
    busy = null;
  }
}

async function load(base) {
  runtime = await import(new URL("classifier.js", new URL(base, document.baseURI)).href);
  classifier = await runtime.loadClassifier(base);
  status.textContent = `Model ready: ${classifier.labels.length} classes, ${classifier.size} px.`;
  startButton.disabled = false;
  document.body.dataset.ready = "true";
  resize();
}

async function start() {
  startButton.disabled = true;
  status.textContent = "Asking for the camera...";
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
      audio: false,
    });
  } catch (error) {
    status.textContent = `The camera could not be opened (${error.name}): allow it in the browser, or use Upload.`;
    status.classList.add("error");
    startButton.disabled = false;
    resize();
    return;
  }
  status.classList.remove("error");
  video.srcObject = stream;
  await video.play();
  document.body.dataset.running = "true";
  startButton.hidden = true;
  stopButton.hidden = false;
  status.textContent = "Classifying every frame in this browser.";
  const generation = ++loop;
  const step = async () => {
    if (generation !== loop) return;
    const started = performance.now();
    if (video.readyState >= 2 && !busy) {
      try {
        await classifyNow(video);
      } catch (error) {
        status.textContent = `A frame could not be classified: ${error.message}`;
        status.classList.add("error");
      }
    }
    const wait = Math.max(0, args.interval_ms - (performance.now() - started));
    setTimeout(() => requestAnimationFrame(step), wait);
  };
  requestAnimationFrame(step);
  resize();
}

function stop() {
  loop += 1;
  if (stream) for (const track of stream.getTracks()) track.stop();
  stream = null;
  video.srcObject = null;
  document.body.dataset.running = "false";
  stopButton.hidden = true;
  startButton.hidden = false;
  startButton.disabled = false;
  status.textContent = "Camera stopped.";
  resize();
}

/**
 * Stops the live loop, classifies the current camera frame once and returns it as a PNG
 * data URL with the answer shown (lossless, so the app can check the same pixels).
 */
window.snapshotFrame = async () => {
  loop += 1;
  while (busy) await busy.catch(() => null);
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  const ranked = await classifyNow(canvas);
  return { png: canvas.toDataURL("image/png"), label: ranked[0].label };
};

startButton.addEventListener("click", start);
stopButton.addEventListener("click", stop);
window.addEventListener("pagehide", stop);

let loading = null;
window.addEventListener("message", (event) => {
  const data = event.data;
  if (!data || data.type !== "streamlit:render") return;
  args = { ...args, ...data.args };
  if (!loading) {
    loading = load(data.args.model_base).catch((error) => {
      status.textContent = `The model could not be loaded in this browser: ${error.message}`;
      status.classList.add("error");
      resize();
    });
  }
  resize();
});

send("streamlit:componentReady", { apiVersion: 1 });
resize();
new ResizeObserver(resize).observe(document.body);
