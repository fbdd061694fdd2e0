// The annotator page: shows the server's current query, sends the choice, asks for the next one.
// The server decides what comes next; this page only keeps the query on screen and its client_id,
// so a retried submission (network error, double press) is stored once.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);
const videos = [$("video-left"), $("video-right")];
let current = null;   // {query, clientId}
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

function setButtons(enabled) {
  document.querySelectorAll("button.choice").forEach((b) => { b.disabled = !enabled; });
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

function show(query) {
  current = { query, clientId: uuid4() };
  if (query.instructions) $("instructions").textContent = query.instructions;
  videos[0].src = `${query.left.video}?token=${encodeURIComponent(token)}`;
  videos[1].src = `${query.right.video}?token=${encodeURIComponent(token)}`;
  videos.forEach((v) => { v.loop = true; v.play().catch(() => {}); });
  const done = query.position;
  $("batch-progress").max = query.batch_size;
  $("batch-progress").value = done;
  $("progress-text").textContent =
    `Batch ${query.batch + 1} of ${query.n_batches}: query ${done + 1} / ${query.batch_size}`;
  $("query").hidden = false;
  $("query").dataset.queryId = query.query_id;
  setButtons(true);
}

async function loadNext() {
  busy = true;
  setButtons(false);
  try {
    const r = await api("/api/next");
    if (r.status === 204) {
      current = null;
      $("query").hidden = true;
      $("done").hidden = false;
      videos.forEach((v) => { v.pause(); v.removeAttribute("src"); });
      status("");
      return;
    }
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      status(`Cannot load the next query: ${body.error || r.status}`, true);
      return;
    }
    show(await r.json());
    status("");
  } catch (err) {
    status("Connection lost; retrying…", true);
    setTimeout(loadNext, 1000);
  } finally {
    busy = false;
  }
}

async function answer(choice) {
  if (busy || !current) return;
  busy = true;
  setButtons(false);
  const body = JSON.stringify({ query_id: current.query.query_id, choice, client_id: current.clientId });
  for (let attempt = 0; ; attempt++) {
    try {
      status("Saving…");
      const r = await api("/api/answers", { method: "POST", body, headers: { "Content-Type": "application/json" } });
      if (r.status === 201 || r.status === 200 || r.status === 409) {
        busy = false;
        status(r.status === 409 ? "That query was already answered; loading the current one." : "Saved.");
        await loadNext();
        return;
      }
      const err = await r.json().catch(() => ({}));
      status(`Not saved: ${err.error || r.status}`, true);
      busy = false;
      setButtons(true);
      return;
    } catch (err) {  // network error: retry with the same client_id (stored once)
      status(`Connection lost; retrying (${attempt + 1})…`, true);
      await new Promise((ok) => setTimeout(ok, Math.min(5000, 500 * (attempt + 1))));
    }
  }
}

document.querySelectorAll("button.choice").forEach((b) => {
  b.addEventListener("click", () => answer(b.dataset.choice));
});
$("replay").addEventListener("click", replay);
$("playpause").addEventListener("click", togglePlay);
const KEYS = { ArrowLeft: "left", 1: "left", ArrowRight: "right", 2: "right", ArrowDown: "equal", 3: "equal", "=": "equal" };
document.addEventListener("keydown", (e) => {
  if (e.repeat || e.altKey || e.ctrlKey || e.metaKey) return;
  if (KEYS[e.key]) { e.preventDefault(); answer(KEYS[e.key]); }
  else if (e.key === " ") { e.preventDefault(); togglePlay(); }
  else if (e.key === "r" || e.key === "R") { replay(); }
});

if (!token) status("This page needs your link with ?token=… from the study organiser.", true);
else loadNext();
