// Hold-to-record: a bidirectional Streamlit component (component API v1, no build step).
// While the record button is held, camera frames are taken every interval_ms, resized to at
// most max_side px (longest side), encoded as JPEG and queued. The queue of frames the app has
// not acknowledged yet is sent every send_ms; the app answers with the highest sequence number
// it stored (args.acked[recorder]) and the stored counts per class (args.counts).

const video = document.getElementById("video");
const startButton = document.getElementById("start");
const recordButton = document.getElementById("record");
const countOut = document.getElementById("count");
const status = document.getElementById("status");

const recorder = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
let args = { label: "", counts: {}, acked: {}, interval_ms: 100, max_side: 224, send_ms: 500,
  hold_send_ms: 1500 };
let stream = null;
let seq = 0;
let burst = 0;
let pending = []; // frames not acknowledged yet
let capture = null; // timer of the current hold
let holdStarted = 0;
let captured = 0;
let lastSent = 0; // highest seq sent
let lastSendTime = 0;
const canvas = document.createElement("canvas");

function send(type, extra = {}) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...extra }, "*");
}

function resize() {
  // The body's own height: the document's scrollHeight is never below the frame's height,
  // so it could grow the frame but never shrink it.
  const height = Math.ceil(document.body.getBoundingClientRect().height) + 4;
  send("streamlit:setFrameHeight", { height });
}

function showCount() {
  const label = args.label;
  const stored = Number(args.counts[label] || 0);
  const waiting = pending.filter((frame) => frame.label === label).length;
  countOut.replaceChildren();
  if (!label) return;
  const number = document.createElement("b");
  number.id = "class-count";
  number.textContent = String(stored + waiting);
  countOut.append(number, ` picture(s) of “${label}”`); // text, never HTML
  document.body.dataset.pending = String(pending.length);
}

function takeFrame() {
  if (video.readyState < 2) return;
  const scale = Math.min(1, args.max_side / Math.max(video.videoWidth, video.videoHeight));
  canvas.width = Math.max(1, Math.round(video.videoWidth * scale));
  canvas.height = Math.max(1, Math.round(video.videoHeight * scale));
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  seq += 1;
  captured += 1;
  pending.push({ seq, label: args.label, burst, data: canvas.toDataURL("image/jpeg", 0.9) });
  document.body.dataset.captured = String(captured);
  showCount();
}

function flush(force = false) {
  if (!pending.length) return;
  const newest = pending[pending.length - 1].seq;
  const now = performance.now();
  // New frames go out at once; unacknowledged ones are sent again after a while.
  if (!force && newest <= lastSent && now - lastSendTime < 3000) return;
  // While the button is held, send seldom: each batch makes the app redraw the page, and
  // that work shares this thread with the frame timer.
  if (!force && capture && now - lastSendTime < args.hold_send_ms) return;
  lastSent = newest;
  lastSendTime = now;
  send("streamlit:setComponentValue", {
    value: { recorder, frames: pending },
    dataType: "json",
  });
}

function startHold(event) {
  if (capture || recordButton.disabled || !args.label) return;
  event?.preventDefault();
  burst += 1;
  captured = 0;
  holdStarted = performance.now();
  document.body.dataset.recording = "true";
  recordButton.classList.add("on");
  recordButton.textContent = "Recording… release to stop";
  // Frames on a fixed timeline (holdStarted + k * interval): a late timer does not shift
  // the later frames, and a missed slot is skipped rather than filled with a copy.
  let next = holdStarted;
  const tick = () => {
    if (!capture) return;
    takeFrame();
    const now = performance.now();
    next += args.interval_ms;
    while (next <= now) next += args.interval_ms;
    capture = setTimeout(tick, next - now);
  };
  capture = setTimeout(tick, 0);
}

function stopHold() {
  if (!capture) return;
  clearTimeout(capture);
  capture = null;
  document.body.dataset.heldMs = String(Math.round(performance.now() - holdStarted));
  document.body.dataset.recording = "false";
  recordButton.classList.remove("on");
  setRecordLabel();
  status.textContent = `${captured} picture(s) taken.`;
  flush(true);
}

function setRecordLabel() {
  recordButton.textContent = args.label ? `Hold to record “${args.label}”` : "Hold to record";
  recordButton.disabled = !args.label || !stream;
  if (!args.label) status.textContent = "Name the class first.";
}

async function startCamera() {
  startButton.disabled = true;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
      audio: false,
    });
  } catch (error) {
    status.textContent = `The camera could not be opened (${error.name}): allow it in the browser.`;
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
  recordButton.hidden = false;
  setRecordLabel();
  resize();
}

startButton.addEventListener("click", startCamera);
recordButton.addEventListener("pointerdown", (event) => {
  recordButton.setPointerCapture?.(event.pointerId);
  startHold(event);
});
for (const name of ["pointerup", "pointercancel", "lostpointercapture"]) {
  recordButton.addEventListener(name, stopHold);
}
recordButton.addEventListener("keydown", (event) => {
  if ((event.key === " " || event.key === "Enter") && !event.repeat) startHold(event);
});
recordButton.addEventListener("keyup", (event) => {
  if (event.key === " " || event.key === "Enter") stopHold();
});
window.addEventListener("blur", stopHold);
setInterval(() => flush(false), args.send_ms);

window.addEventListener("message", (event) => {
  const data = event.data;
  if (!data || data.type !== "streamlit:render") return;
  args = { ...args, ...data.args };
  const acked = Number((args.acked || {})[recorder] || 0);
  pending = pending.filter((frame) => frame.seq > acked);
  if (!capture) setRecordLabel();
  showCount();
  resize();
});

send("streamlit:componentReady", { apiVersion: 1 });
resize();
new ResizeObserver(resize).observe(document.body);
