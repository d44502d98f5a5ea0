// The drawing page: pointer events (mouse, touch, pen) draw on #pad; when a stroke ends the
// drawing is sent to POST /predict as a PNG, and the guess, the bars and the 28x28 input the
// model received are shown. An uploaded file is sent as it is.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const guess = document.getElementById("guess");
const confidence = document.getElementById("confidence");
const topList = document.getElementById("top");
const bars = document.getElementById("bars");
const message = document.getElementById("message");
const input28 = document.getElementById("input28");
const upload = document.getElementById("upload");

let classes = [];
let drawing = null;  // the pointer drawing now: {id, x, y}
let inked = false;  // anything on the pad since it was cleared
let sent = 0;  // requests sent: an answer to an older one than the last is dropped

function clearPad() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
}

function showBars(probabilities, best) {
  bars.replaceChildren();
  probabilities.forEach((p, k) => {
    const label = document.createElement("span");
    label.className = "bar-label";
    label.textContent = classes[k] ?? String(k);
    const track = document.createElement("span");
    track.className = "bar-track";
    track.setAttribute("role", "listitem");
    const fill = document.createElement("span");
    fill.className = k === best ? "bar-fill top" : "bar-fill";
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    fill.style.display = "block";
    track.append(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = `${(p * 100).toFixed(1)} %`;
    bars.append(label, track, value);
  });
}

function resetAnswer(text) {
  guess.textContent = "?";
  guess.dataset.label = "";
  confidence.textContent = text;
  topList.replaceChildren();
  showBars(classes.map(() => 0), -1);
  input28.getContext("2d").clearRect(0, 0, 28, 28);
}

function showInput(rows) {
  const image = new ImageData(28, 28);
  rows.flat().forEach((v, i) => {
    image.data.set([v, v, v, 255], i * 4);
  });
  input28.getContext("2d").putImageData(image, 0, 0);
}

function show(answer) {
  guess.textContent = answer.class;
  guess.dataset.label = String(answer.label);
  confidence.textContent = `${(answer.probability * 100).toFixed(1)} % sure`;
  topList.replaceChildren(
    ...answer.top.map((t) => {
      const item = document.createElement("li");
      item.textContent = `${t.class}: ${(t.probability * 100).toFixed(1)} %`;
      return item;
    }),
  );
  showBars(answer.probabilities, answer.label);
  showInput(answer.input);
  message.textContent = "";
}

async function predict(body, type) {
  const mine = ++sent;
  // data-sent and data-answered tell a test (or a person's script) when the guess is current
  document.body.dataset.sent = String(mine);
  document.body.dataset.busy = "true";
  try {
    const response = await fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": type },
      body,
    });
    const answer = await response.json();
    if (mine !== sent) return;
    if (response.ok) {
      show(answer);
    } else {
      resetAnswer("no guess");
      message.textContent = answer.error ?? `the server answered ${response.status}`;
    }
  } catch (err) {
    if (mine === sent) message.textContent = `cannot reach the server: ${err.message}`;
  } finally {
    if (mine === sent) {
      document.body.dataset.busy = "false";
      document.body.dataset.answered = String(mine);
    }
  }
}

function sendPad() {
  if (!inked) return;
  pad.toBlob((blob) => predict(blob, "image/png"), "image/png");
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) / box.width) * pad.width,
    y: ((event.clientY - box.top) / box.height) * pad.height,
  };
}

function lineWidth(event) {
  // a pen's pressure thickens its stroke; a mouse or a finger reports 0.5 (or 0)
  const pressure = event.pointerType === "pen" && event.pressure > 0 ? event.pressure : 0.5;
  return 14 + 16 * pressure;
}

pad.addEventListener("pointerdown", (event) => {
  if (drawing !== null || event.button > 0) return;
  pad.setPointerCapture(event.pointerId);
  const p = point(event);
  drawing = { id: event.pointerId, ...p };
  ctx.fillStyle = "#fff";
  ctx.beginPath();
  ctx.arc(p.x, p.y, lineWidth(event) / 2, 0, 2 * Math.PI);
  ctx.fill();
  inked = true;
  event.preventDefault();
});

pad.addEventListener("pointermove", (event) => {
  if (drawing === null || event.pointerId !== drawing.id) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  ctx.strokeStyle = "#fff";
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const e of events.length ? events : [event]) {
    const p = point(e);
    ctx.lineWidth = lineWidth(e);
    ctx.beginPath();
    ctx.moveTo(drawing.x, drawing.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    drawing.x = p.x;
    drawing.y = p.y;
  }
  event.preventDefault();
});

function endStroke(event) {
  if (drawing === null || event.pointerId !== drawing.id) return;
  drawing = null;
  sendPad();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

document.getElementById("clear").addEventListener("click", () => {
  sent++;  // an answer still on its way is for a drawing that is gone
  clearPad();
  resetAnswer("draw, then lift the pen");
  message.textContent = "";
});

upload.addEventListener("change", () => {
  const file = upload.files[0];
  if (!file) return;
  clearPad();
  const url = URL.createObjectURL(file);
  const picture = new Image();
  picture.onload = () => {
    // shown on the pad, fitted; the server classifies the file itself
    const scale = Math.min(pad.width / picture.width, pad.height / picture.height);
    const w = picture.width * scale;
    const h = picture.height * scale;
    ctx.drawImage(picture, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    URL.revokeObjectURL(url);
  };
  picture.onerror = () => URL.revokeObjectURL(url);
  picture.src = url;
  predict(file, file.type || "application/octet-stream");
  upload.value = "";  // the same file chosen again is sent again
});

async function loadModel() {
  const model = document.getElementById("model");
  try {
    const health = await (await fetch("/health")).json();
    classes = health.classes;
    const name = health.source.split(/[\\/]/).pop();
    model.textContent = `${name}: ${health.dataset}, ${classes.length} classes`;
    if (health.dataset !== "mnist") document.querySelector("h1").textContent = "Draw something";
  } catch (err) {
    model.textContent = `cannot reach the server: ${err.message}`;
  }
  resetAnswer("draw, then lift the pen");
  document.body.dataset.ready = "true";
}

clearPad();
loadModel();
