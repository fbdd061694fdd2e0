"""An evaluation written out: ``results.json``, ``results.csv``, ``results.png``, episode videos, and the
markdown table printed at the end of ``scripts/evaluate.py``."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from policy_sampler.rollout.report import CSV_COLUMNS, EvaluationReport
from policy_sampler.serialization import atomic_write_bytes, jsonable
from policy_sampler.video import write_video

__all__ = ["format_table", "write_plot", "write_results", "write_video"]


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def format_table(report: EvaluationReport) -> str:
    """The run as a markdown table, headed by the task, episodes and machine."""
    head = (f"task {report.task}, {report.n_episodes} episodes (env seeds {report.seed}..{report.seed + report.n_episodes - 1}), "
            f"machine: {report.machine}")
    cols = ["sampler", "exact", "success [95% CI]", "mean reward", "latency p50 (ms)", "latency p99 (ms)",
            "rounds", "NFE", "accepted len", "left share"]
    note = ("latency: wall time of one predict_action call on the batch of active envs; rounds: sequential "
            "denoiser calls per chunk; NFE: denoiser evaluations per sample per chunk")
    lines = [head, note, "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in report.rows():
        ms = lambda v: None if v is None else 1000.0 * v  # noqa: E731
        success = f"{r['successes']}/{r['n_episodes']} = {r['success_rate']:.2f} [{r['success_ci_low']:.2f}, {r['success_ci_high']:.2f}]"
        cells = [
            r["label"] + (" (baseline)" if r["baseline"] else ""), "yes" if r["exact"] else "no", success,
            _fmt(r["mean_reward"], ".2f"), _fmt(ms(r["latency_p50_s"]), ".1f"), _fmt(ms(r["latency_p99_s"]), ".1f"),
            _fmt(r["rounds_mean"], ".1f"), _fmt(r["nfe_mean"], ".1f"), _fmt(r["mean_accepted_length"], ".2f"),
            _fmt(r["left_share"], ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_plot(report: EvaluationReport, path: Path) -> Path | None:
    """``results.png``: success rate with Wilson 95% bars, and latency p50 / p99 per configuration.
    Returns None (writing nothing) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = report.rows()
    labels = [r["label"] for r in rows]
    x = np.arange(len(rows))
    rate = np.array([r["success_rate"] for r in rows], dtype=float)
    err = np.array([[r["success_rate"] - r["success_ci_low"] for r in rows],
                    [r["success_ci_high"] - r["success_rate"] for r in rows]], dtype=float)
    colors = ["tab:gray" if r["baseline"] else ("tab:blue" if r["exact"] else "tab:orange") for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8.0, 1.6 * len(rows) + 4), 4.2))
    ax1.bar(x, rate, yerr=err, capsize=4, color=colors)
    ax1.set_ylim(0, 1.05)
    ax1.set_ylabel("success rate (Wilson 95% CI)")
    from matplotlib.patches import Patch

    ax1.legend(handles=[Patch(color="tab:blue", label="exact in law"), Patch(color="tab:orange", label="tolerance"),
                        Patch(color="tab:gray", label="baseline (other law)")], fontsize=7, loc="lower left")
    ax1.set_title(f"{report.task}: {report.n_episodes} episodes")
    w = 0.38
    p50 = np.array([1000 * (r["latency_p50_s"] or 0) for r in rows])
    p99 = np.array([1000 * (r["latency_p99_s"] or 0) for r in rows])
    ax2.bar(x - w / 2, p50, w, label="p50", color="tab:green")
    ax2.bar(x + w / 2, p99, w, label="p99", color="tab:red")
    ax2.set_ylabel("latency per chunk call (ms)")
    ax2.set_yscale("log" if p99.max(initial=0) > 20 * max(p50.min(initial=1), 1e-3) else "linear")
    ax2.legend()
    ax2.set_title("latency (batch of active envs)", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right")
    fig.suptitle(report.machine, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_results(report: EvaluationReport, out_dir: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
    """Write ``results.json`` (everything: per-episode and per-chunk records, seeds, machine, meta),
    ``results.csv`` (one row per configuration, :data:`CSV_COLUMNS`), ``results.png`` (when matplotlib
    is installed) and ``videos/<label>_ep<i>.mp4`` (or ``.gif``) into ``out_dir``, each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    videos: dict[str, list[str]] = {}
    for label, per_episode in report.frames.items():
        for episode, video in sorted(per_episode.items()):
            if not video["frames"]:
                continue
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
            path = write_video(video["frames"], out / "videos" / f"{safe}_ep{episode}.mp4", fps=video["fps"])
            videos.setdefault(label, []).append(str(path.relative_to(out)))
            written[f"video:{label}:{episode}"] = path
    for r in report.reports:
        r.videos = videos.get(r.spec.label, [])
    document = jsonable(report.to_dict())
    atomic_write_bytes(out / "results.json", (json.dumps(document, indent=2) + "\n").encode())
    written["json"] = out / "results.json"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    for row in report.rows():
        w.writerow({k: ("" if row[k] is None else row[k]) for k in CSV_COLUMNS})
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    written["csv"] = out / "results.csv"
    if plot:
        png = write_plot(report, out / "results.png")
        if png is not None:
            written["png"] = png
    return written
