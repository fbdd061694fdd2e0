// The admin page: per-annotator progress (refreshed every 5 s), with each annotator's agreement with
// their own earlier answers on the consistency repeats, and the CSV / JSON exports.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const auth = { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" };

async function download(path, name) {
  const r = await fetch(path, auth);
  if (!r.ok) { document.getElementById("status").textContent = `export failed: ${r.status}`; return; }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await r.blob());
  a.download = name;
  a.click();
}

async function refresh() {
  const r = await fetch("/api/admin/progress", auth);
  if (!r.ok) { document.getElementById("status").textContent = `cannot read progress: ${r.status}`; return; }
  const tbody = document.querySelector("#progress tbody");
  tbody.replaceChildren(...(await r.json()).map((p) => {
    const tr = document.createElement("tr");
    const last = p.last_answer_at ? new Date(p.last_answer_at * 1000).toLocaleString() : "-";
    const agreement = p.self_agreement === null ? "-" : `${Math.round(100 * p.self_agreement)} % (${p.repeats_answered})`;
    [p.annotator, `${p.batches_issued} / ${p.n_batches}`, `${p.answered} / ${p.queries_issued}`, p.skipped, p.undone,
      agreement, last, p.done ? "yes" : "no"]
      .forEach((v) => { const td = document.createElement("td"); td.textContent = v; tr.append(td); });
    return tr;
  }));
}

document.getElementById("csv").addEventListener("click", (e) => { e.preventDefault(); download("/api/admin/answers.csv", "answers.csv"); });
document.getElementById("json").addEventListener("click", (e) => { e.preventDefault(); download("/api/admin/export", "study_export.json"); });
refresh();
setInterval(refresh, 5000);
