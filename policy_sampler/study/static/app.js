// The annotator page: shows the server's current query, sends the choice, asks for the next one.
// The server decides what comes next; this page only keeps the query on screen and its client_id,
// so a retried submission (network error, double press) is stored once. The choice buttons stay
// disabled until both clips have played to their end once (research note §5.2: no blind clicks);
// skip (S) is always there, undo (Z) retracts the last answer and shows its query again.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);
const videos = [$("video-left"), $("video-right")];
let current = null;     // {query, clientId}
let lastAnswered = null; // query_id of the last answer stored from this page (undo on the done screen)
let busy = false;

function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

const bothPlayed = () => videos.every((v) => v.dataset.played === "yes");
const undoTarget = () => (current ? current.query.undo : lastAnswered);

function setButtons() {
  const ready = !busy && current !== null;
  document.querySelectorAll("button.choice").forEach((b) => { b.disabled = !(ready && bothPlayed()); });
  $("skip").disabled = !ready;
  $("undo").disabled = busy || !undoTarget();
  $("watch-hint").hidden = !ready || bothPlayed();
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${token}`, ...(options.headers || {}) };
  return fetch(path, { ...options, headers, cache: "no-store" });
}

function replay() {
  videos.forEach((v) => { v.currentTime = 0; v.play().catch(() => {}); });
}

function togglePlay() {
  const paused = videos.every((v) => v.paused);
  videos.forEach((v) => (paused ? v.play().catch(() => {}) : v.pause()));
}

videos.forEach((v) => {
  v.addEventListener("ended", () => {  // played through once: count it, then loop
    v.dataset.played = "yes";
    setButtons();
    v.currentTime = 0;
    v.play().catch(() => {});
  });
});

function show(query) {
  current = { query, clientId: uuid4() };
  if (query.instructions) $("instructions").textContent = query.instructions;
  videos[0].src = `${query.left.video}?token=${encodeURIComponent(token)}`;
  videos[1].src = `${query.right.video}?token=${encodeURIComponent(token)}`;
  videos.forEach((v) => { v.dataset.played = "no"; v.loop = false; v.play().catch(() => {}); });
  const done = query.position;
  $("batch-progress").max = query.batch_size;
  $("batch-progress").value = done;
  $("progress-text").textContent =
    `Batch ${query.batch + 1} of ${query.n_batches}: query ${done + 1} / ${query.batch_size}`;
  $("query").hidden = false;
  $("done").hidden = true;
  $("query").dataset.queryId = query.query_id;
}

async function loadNext(message = "") {
  busy = true;
  setButtons();
  try {
    const r = await api("/api/next");
    if (r.status === 204) {
      current = null;
      $("query").hidden = true;
      $("done").hidden = false;
      videos.forEach((v) => { v.pause(); v.removeAttribute("src"); });
      status(message);
      return;
    }
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      status(`Cannot load the next query: ${body.error || r.status}`, true);
      return;
    }
    show(await r.json());
    status(message);
  } catch (err) {
    status("Connection lost; retrying…", true);
    setTimeout(() => loadNext(message), 1000);
  } finally {
    busy = false;
    setButtons();
  }
}

// POST body to path until the server answers (same client_id: stored once), then load the next query.
async function send(path, body, saved) {
  busy = true;
  setButtons();
  const text = JSON.stringify(body);
  for (let attempt = 0; ; attempt++) {
    try {
      status("Saving…");
      const r = await api(path, { method: "POST", body: text, headers: { "Content-Type": "application/json" } });
      if (r.status === 201 || r.status === 200 || r.status === 409) {
        const reply = await r.json().catch(() => ({}));
        if (path !== "/api/undo" && reply.answer) lastAnswered = reply.answer.query_id;
        if (path === "/api/undo" && r.status !== 409) lastAnswered = null;
        busy = false;
        await loadNext(r.status === 409 ? `Not changed: ${reply.error || "conflict"}` : saved);
        return;
      }
      const err = await r.json().catch(() => ({}));
      status(`Not saved: ${err.error || r.status}`, true);
      busy = false;
      setButtons();
      return;
    } catch (err) {  // network error: retry with the same client_id (stored once)
      status(`Connection lost; retrying (${attempt + 1})…`, true);
      await new Promise((ok) => setTimeout(ok, Math.min(5000, 500 * (attempt + 1))));
    }
  }
}

function answer(choice) {
  if (busy || !current || !bothPlayed()) return;
  send("/api/answers", { query_id: current.query.query_id, choice, client_id: current.clientId }, "Saved.");
}

function skip() {
  if (busy || !current) return;
  send("/api/skip", { query_id: current.query.query_id, client_id: current.clientId }, "Skipped.");
}

function undo() {
  const target = undoTarget();
  if (busy || !target) return;
  send("/api/undo", { query_id: target, client_id: uuid4() }, "Last answer undone: here it is again.");
}

document.querySelectorAll("button.choice").forEach((b) => {
  b.addEventListener("click", () => answer(b.dataset.choice));
});
$("skip").addEventListener("click", skip);
$("undo").addEventListener("click", undo);
$("replay").addEventListener("click", replay);
$("playpause").addEventListener("click", togglePlay);
const KEYS = { ArrowLeft: "left", 1: "left", ArrowRight: "right", 2: "right", ArrowDown: "equal", 3: "equal", "=": "equal" };
document.addEventListener("keydown", (e) => {
  if (e.repeat || e.altKey || e.ctrlKey || e.metaKey) return;
  if (KEYS[e.key]) { e.preventDefault(); answer(KEYS[e.key]); }
  else if (e.key === " ") { e.preventDefault(); togglePlay(); }
  else if (e.key === "r" || e.key === "R") { replay(); }
  else if (e.key === "s" || e.key === "S") { skip(); }
  else if (e.key === "z" || e.key === "Z") { undo(); }
});

if (!token) status("This page needs your link with ?token=… from the study organiser.", true);
else loadNext();
