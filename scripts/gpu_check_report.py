"""The device check's outputs: ``summary.json`` (everything measured) and ``report.md`` (its tables).

Used by scripts/gpu_check.py after every section, so a run stopped part-way still leaves what it
measured. Every figure in the report was measured on the device named at its top; columns that are
projections say so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from policy_sampler.serialization import atomic_write_bytes, jsonable


def _ms(value: Any) -> str:
    return "-" if value is None or value != value else f"{value:.2f}"


def per_call_table(rows: list[dict[str, Any]]) -> list[str]:
    """One table per model: rows per call down, mode x precision across (p50 ms, p99 in brackets)."""
    lines: list[str] = []
    for model in dict.fromkeys(r["model"] for r in rows):
        sel = [r for r in rows if r["model"] == model]
        columns = list(dict.fromkeys((r["mode"], r["precision"]) for r in sel))
        counts = sorted({r["rows"] for r in sel})
        params = sel[0].get("params_m")
        lines += [f"#### {model} U-Net ({params}M parameters, random weights): ms per call, p50 (p99)", "",
                  "| rows | " + " | ".join(f"{m} {p}" for m, p in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for n in counts:
            cells = []
            for mode, precision in columns:
                hit = next((r for r in sel if (r["mode"], r["precision"], r["rows"]) == (mode, precision, n)), None)
                if hit is None:
                    cells.append("")
                elif hit.get("p50_ms") is None:
                    cells.append(hit.get("status", "-"))
                else:
                    extra = f", compile {hit['compile_s']:.0f} s" if hit.get("compile_s") is not None else ""
                    cells.append(f"{hit['p50_ms']:.3f} ({hit['p99_ms']:.3f}{extra})")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def sampler_table(rows: list[dict[str, Any]]) -> list[str]:
    """Per-chunk latency of each sampler, grouped by model, batch and precision."""
    lines: list[str] = []
    keys = list(dict.fromkeys((r.get("model"), r.get("batch"), r.get("precision"), r.get("mode")) for r in rows))
    for model, batch, precision, mode in keys:
        sel = [r for r in rows if (r.get("model"), r.get("batch"), r.get("precision"), r.get("mode")) == (model, batch, precision, mode)]
        on = next((r.get("projected_on") for r in sel if r.get("projected_on")), "-")
        paper = any("paper_projected_ms" in r for r in sel)
        lines += [f"#### {model}, batch {batch}, {precision}, {mode}", "",
                  f"Projected: each call's latency from the per-call table ({on}), summed over the run's calls. "
                  "Overhead per round: (p50 - the measured calls at their buckets) / rounds.", "",
                  "| sampler | steps | rounds | NFE | p50 ms | p99 ms | projected ms | calls ms | overhead ms/round | "
                  "H100 projected ms |" + (" paper U-Net projected ms |" if paper else ""),
                  "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if paper else "")]
        for r in sel:
            if r.get("status") != "ok":
                lines.append(f"| {r.get('name')} | {r.get('status')} |")
                continue
            lines.append(
                f"| {r['name']} | {r.get('steps', '-')} | {r['rounds']} | {r['nfe']} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | "
                f"{_ms(r.get('projected_ms'))} | {_ms(r.get('calls_ms'))} | {_ms(r.get('overhead_ms_per_round'))} | "
                f"{_ms(r.get('h100_projected_ms'))} |" + (f" {_ms(r.get('paper_projected_ms'))} |" if paper else ""))
        lines.append("")
    return lines


def render(summary: dict[str, Any]) -> str:
    env = summary["environment"]
    lines = [
        f"# Device check: {summary['device']}",
        "",
        f"Measured {summary['measured_at']} by `bash scripts/gpu_check.sh"
        f"{' --cpu' if summary['cpu_mode'] else ''}{' --tiny' if summary['preset'] == 'tiny' else ''}` "
        f"(preset `{summary['preset']}`) on **{env['machine']}**. Every figure below was measured on this "
        "machine in this run; columns marked projected are projections.",
        "",
        "| | |", "|---|---|",
    ]
    for key in ("gpu", "capability", "sm_count", "memory_gib", "driver", "torch", "cuda", "cudnn", "python",
                "torch_threads", "platform"):
        if env.get(key) is not None:
            lines.append(f"| {key} | {env[key]} |")
    lines.append(f"| packages | {', '.join(f'{k} {v}' for k, v in env['packages'].items() if v)} |")
    lines += ["", "## Sections", "", "| section | status | seconds | note |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']} | {s.get('note', '')[:300]} |" for s in summary["sections"]]
    if summary.get("pytest"):
        lines += ["", f"`pytest {summary['pytest']['command']}`: {summary['pytest']['summary']} (pytest.log)"]
    if summary["per_call"]:
        lines += ["", "## Per-call latency of the denoiser", "",
                  "One runtime call (cuda_graph: copy in, replay, copy out) timed alone after warm-up; CUDA events "
                  "on a GPU, the host clock on the CPU. fp32 is IEEE float32 (TF32 off), tf32 TF32 on, bf16 autocast.", ""]
        lines += per_call_table(summary["per_call"])
    if summary["samplers"]:
        lines += ["## Per-chunk latency of every sampler", ""]
        if summary.get("trained"):
            t = summary["trained"]
            lines += [f"Trained policy: `{t['checkpoint']}` ({t['params_m']}M parameters); observations: "
                      f"{t['observations']}. Its rows run `predict_action` (normalization and copies included).", ""]
        lines += sampler_table(summary["samplers"])
    if summary.get("episode"):
        e = summary["episode"]
        lines += ["## ChunkRunner episode", "",
                  f"`ChunkRunner(policy, sampler={e['sampler']!r}, budget_s={e['period_s']})` at {1 / e['period_s']:.0f} Hz "
                  f"(wall clock): {e['ticks']} ticks, success {e['success']}, act() p50 {_ms(e['act_p50_ms'])} ms, max "
                  f"{_ms(e['act_max_ms'])} ms, {e['act_over_budget']} ticks over budget.", "",
                  "| stat | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in e["stats"].items()]
    if summary["audit"]:
        lines += ["", "## Host-sync audit", "",
                  "Each sampler's whole run under `torch.cuda.set_sync_debug_mode('error')` (any sync but `tolist` "
                  "raises; on the CPU every host read is counted instead).", "",
                  "| sampler | batch | rounds | syncs | allowed | status |", "|---|---|---|---|---|---|"]
        lines += [f"| {a['name']} | {a['batch']} | {a.get('rounds', '-')} | {a.get('syncs', '-')} | {a.get('allowed', '-')} | "
                  f"{a['status']}{(': ' + a['error'][:200]) if a.get('error') else ''} |" for a in summary["audit"]]
    return "\n".join(lines) + "\n"


def write_report(summary: dict[str, Any], out: Path) -> None:
    """``summary.json`` and ``report.md`` in ``out``, each written atomically."""
    atomic_write_bytes(out / "summary.json", json.dumps(jsonable(summary), indent=1).encode())
    atomic_write_bytes(out / "report.md", render(summary).encode())
