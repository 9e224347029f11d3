// lens_ros console page: one WebSocket to the console server; state in, instructions out.
// Text frames are JSON ({type: hello | sections | notice}); binary frames are overlay JPEGs.
"use strict";

const $ = (id) => document.getElementById(id);
const RECONNECT_MS = 1000;
let socket = null;
let streamUpdates = 0;

// Overlay: show the newest JPEG; while one is still decoding keep only the newest waiting one.
let shownUrl = null;
let pendingBlob = null;
let decoding = false;

function showFrame(blob) {
  if (decoding) { pendingBlob = blob; return; }
  decoding = true;
  const url = URL.createObjectURL(blob);
  const img = $("overlay");
  img.onload = img.onerror = () => {
    if (shownUrl) URL.revokeObjectURL(shownUrl);
    shownUrl = url;
    decoding = false;
    img.dataset.frames = String(Number(img.dataset.frames) + 1);
    $("no-video").hidden = true;
    if (pendingBlob) { const next = pendingBlob; pendingBlob = null; showFrame(next); }
  };
  img.src = url;
}

function text(id, value) { $(id).textContent = value === undefined || value === null ? "" : String(value); }

function badge(id, label) {
  const el = $(id);
  el.textContent = label;
  el.className = "badge " + String(label).replace(/\s+/g, "-");
}

function showStatus(s) {
  badge("status", s.status);
  text("status-text", s.status_text);
  // The node's words for the last instruction it refused (kept until the next instruction).
  text("refusal", s.refusal ? s.refusal.status_text : "");
  text("current-instruction", s.instruction);
  text("object", s.label ? `${s.label} (score ${s.score})` + (s.box ? `, box ${s.box.join(" ")}` : "") : "");
  text("reasoning-ms", s.reasoning_ms ? `${s.reasoning_ms} ms` : "");
  text("total-ms", s.total_ms ? `${s.total_ms} ms` : "");
  text("tracking-hz", s.tracking_hz !== undefined ? `${s.tracking_hz} Hz` : "");
}

function showStream(stream) {
  const el = $("rationale");
  if (!stream.final && stream.partials === 0) streamUpdates = 0;  // a new instruction
  if (!stream.final && stream.partials > 0) streamUpdates += 1;
  el.textContent = stream.text;
  el.dataset.final = String(stream.final);
  el.dataset.partials = String(streamUpdates);
}

function showPose(p) {
  if (!p) { text("pose", "none"); return; }
  const [x, y, z] = p.position;
  text("pose", `x ${x} y ${y} z ${z} m in ${p.frame_id || "(no frame)"}`);
}

function showHistory(entries) {
  const list = $("history");
  list.replaceChildren();
  for (const e of entries.slice().reverse()) {
    const li = document.createElement("li");
    const head = document.createElement("div");
    const what = document.createElement("strong");
    what.textContent = e.instruction;
    const status = document.createElement("span");
    status.className = "badge " + e.status.replace(/\s+/g, "-");
    status.textContent = e.status;
    head.append(what, " ", status);
    if (e.reasoning_ms) head.append(` ${e.reasoning_ms} ms`);
    const answer = document.createElement("div");
    answer.className = "answer";
    answer.textContent = e.status_text || e.answer;
    li.append(head, answer);
    li.title = e.rationale;
    li.dataset.status = e.status;
    list.append(li);
  }
}

function showDiagnostics(d) {
  if (!d.level) return;
  badge("diagnostics-level", d.level);
  text("diagnostics-message", d.message);
  const body = $("diagnostics").tBodies[0];
  body.replaceChildren();
  for (const [key, value] of Object.entries(d.values)) {
    const row = body.insertRow();
    row.insertCell().textContent = key;
    row.insertCell().textContent = value;
  }
}

function onMessage(event) {
  if (event.data instanceof Blob) { showFrame(event.data); return; }
  const m = JSON.parse(event.data);
  if (m.type === "hello") {
    text("node-name", m.lens_node);
    $("instruction").maxLength = m.max_instruction_length;
  } else if (m.type === "notice") {
    text("notice", m.text);
  } else if (m.type === "sections") {
    if (m.status) showStatus(m.status);
    if (m.stream) showStream(m.stream);
    if (m.pose !== undefined) showPose(m.pose);
    if (m.history) showHistory(m.history);
    if (m.diagnostics) showDiagnostics(m.diagnostics);
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}/ws`);
  socket.onopen = () => badge("connection", "connected");
  socket.onmessage = onMessage;
  socket.onclose = () => {
    badge("connection", "off");
    setTimeout(connect, RECONNECT_MS);
  };
}

$("instruction-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("instruction");
  if (!socket || socket.readyState !== WebSocket.OPEN) { text("notice", "not connected"); return; }
  socket.send(JSON.stringify({ type: "instruction", text: input.value }));
  text("notice", "");
  input.select();
});

// The token, if any, now lives in an HttpOnly cookie: keep it out of the address bar and history.
if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", location.pathname);
connect();
