"""The device check: every figure the project quotes for a GPU, measured in one command.

    bash scripts/gpu_check.sh [--out DIR]            # a CUDA device: under 8 minutes
    bash scripts/gpu_check.sh --cpu [--out DIR]      # the same code paths at small sizes on the CPU
    bash scripts/gpu_check.sh --cpu --tiny           # smaller still (the test suite runs this)

Run through scripts/gpu_check.sh, which installs the wheels a lent machine lacks (docs/gpu/README.md).
Sections (scripts/gpu_check_measure.py), each within its own time budget (a section that would overrun is skipped and the report
says so): the environment; ``pytest -m gpu``; the denoiser's per-call latency (small and paper-sized
U-Nets, 1 to 1024 rows, eager / cuda_graph / compile x fp32 / TF32 / bf16, CUDA events after warm-up);
per-chunk latency of every sampler at batch 1 and 8 in cuda_graph mode with rounds, NFE, the projected
latency and the measured per-round overhead; the same on the trained policy shipped in
assets/policies/; one ChunkRunner episode at 10 Hz; and the host-sync audit (every sampler under
``torch.cuda.set_sync_debug_mode("error")``, only the one ``tolist`` per round allowed). Writes
``summary.json`` and ``report.md`` (scripts/gpu_check_report.py) into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# scripts/ is on sys.path when this runs as a script
from gpu_check_measure import (  # noqa: E402
    Preset,
    audit,
    environment,
    episode,
    free,
    log,
    per_call,
    pytest_gpu,
    samplers,
    trained,
)
from gpu_check_report import write_report  # noqa: E402

PRESETS = {
    "gpu": Preset(models=("paper", "small"), rows=(1, 8, 64, 101, 256, 1024),
                  precisions=("fp32", "tf32", "bf16"),
                  call_repeats=30, sampler_model="paper", sampler_mode="cuda_graph",
                  sampler_precisions=("fp32", "tf32"), batches=(1, 8), chunk_repeats=15, steps=None,
                  episode_ticks=100, budget_s=420.0, compile_backend="inductor", compile_rows=(1, 101, 8, 64, 256, 1024),
                  compile_guess_s=100.0, run_pytest=True),
    "cpu": Preset(models=("small",), rows=(1, 8, 64, 101), precisions=("fp32", "bf16"), call_repeats=5, sampler_model="small", sampler_mode="eager",
                  sampler_precisions=("fp32",), batches=(1, 2), chunk_repeats=3, steps=None,
                  episode_ticks=20, budget_s=270.0, compile_backend="aot_eager", compile_rows=(1, 101, 8, 64),
                  compile_guess_s=30.0, run_pytest=True),
    "tiny": Preset(models=("tiny",), rows=(1, 8), precisions=("fp32", "bf16"),
                   call_repeats=2, sampler_model="tiny", sampler_mode="eager", sampler_precisions=("fp32",),
                   batches=(1, 2), chunk_repeats=1, steps=8, episode_ticks=4, budget_s=50.0,
                   compile_backend="aot_eager", compile_rows=(1,), compile_guess_s=5.0, run_pytest=False),
}
# seconds each section may take at most, as fractions of the whole budget (compile gets what is left)
SECTION_SHARE = {"pytest": 0.2, "per_call": 0.22, "samplers": 0.25, "trained": 0.12, "episode": 0.1,
                 "audit": 0.08}
MIN_SECTION_S = 10.0


class Clock:
    """The run's deadline; sections take at most their share of it and never start past it."""

    def __init__(self, total_s: float) -> None:
        self.start, self.total = time.perf_counter(), total_s

    def left(self) -> float:
        return self.total - (time.perf_counter() - self.start)

    def deadline(self, share_s: float) -> float:
        return time.perf_counter() + max(0.0, min(share_s, self.left()))


def run_section(record: list[dict[str, Any]], name: str, clock: Clock, share_s: float,
                fn: Callable[[float], Any]) -> Any:
    """``fn(deadline)`` with its outcome recorded: ok, failed (with the error) or skipped (no time)."""
    if clock.left() < 2:
        record.append(dict(name=name, status="skipped", seconds=0.0, note="the run's time budget was spent"))
        log(f"{name}: skipped (no time left)")
        return None
    t0 = time.perf_counter()
    log(f"{name}: start (budget {min(share_s, clock.left()):.0f} s)")
    try:
        result = fn(clock.deadline(share_s))
        status, note = "ok", ""
    except Exception as exc:  # a failed section is a finding: record it and go on
        result, status, note = None, "failed", f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    seconds = time.perf_counter() - t0
    record.append(dict(name=name, status=status, seconds=round(seconds, 1), note=note[:2000]))
    log(f"{name}: {status} in {seconds:.1f} s {note[:300]}")
    return result


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "results" / "gpu_check"), help="folder for summary.json, report.md")
    parser.add_argument("--cpu", action="store_true", help="the same code paths at small sizes on the CPU")
    parser.add_argument("--tiny", action="store_true", help="with --cpu: smaller still (what the test suite runs)")
    parser.add_argument("--policy", default=str(ROOT / "assets" / "policies" / "obstacle_reach_small"),
                        help="the trained checkpoint (config.json + model.safetensors)")
    parser.add_argument("--budget-s", type=float, help="the whole run's time budget (default: the preset's)")
    args = parser.parse_args()
    if args.tiny and not args.cpu:
        parser.error("--tiny goes with --cpu")
    name = "tiny" if args.tiny else "cpu" if args.cpu else "gpu"
    preset = PRESETS[name]
    if not args.cpu and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --cpu for the CPU paths")
    device = torch.device("cpu" if args.cpu else "cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(args.budget_s or preset.budget_s)
    env = environment(device)
    summary: dict[str, Any] = dict(
        device=env.get("gpu") or env["machine"], device_type=device.type, cpu_mode=args.cpu, preset=name,
        preset_sizes=asdict(preset), measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        environment=env, sections=[], pytest=None, per_call=[], samplers=[], trained=None, episode=None, audit=[],
    )
    sections, keep = summary["sections"], {}
    share = {k: max(v * clock.total, MIN_SECTION_S) for k, v in SECTION_SHARE.items()}
    log(f"device check ({name}) on {summary['device']}, budget {clock.total:.0f} s, out {out}")

    def save() -> None:
        write_report(summary, out)

    # (title, budget, fn(deadline), summary key for its result, what it needs from an earlier section)
    steps: list[tuple[str, float, Callable[[float], Any], str | None, str | None]] = []
    if preset.run_pytest:
        steps.append(("pytest -m gpu", share["pytest"], lambda d: pytest_gpu(d, out), "pytest", None))
    steps += [
        ("per-call latency (eager, cuda_graph)", share["per_call"],
         lambda d: per_call(d, preset, device, ("eager", "cuda_graph"), summary["per_call"]), None, None),
        ("samplers (random weights)", share["samplers"],
         lambda d: samplers(d, preset, device, summary["per_call"], summary["samplers"], keep), None, None),
        ("host-sync audit", share["audit"], lambda d: audit(d, device, keep, summary["audit"]), None, "runtime"),
        ("samplers (trained policy)", share["trained"],
         lambda d: trained(d, preset, device, Path(args.policy), summary["per_call"], summary["samplers"], keep),
         "trained", None),
        ("ChunkRunner episode at 10 Hz", share["episode"], lambda d: episode(d, preset, keep), "episode", "policy"),
        ("per-call latency (compile)", clock.total,
         lambda d: per_call(d, preset, device, ("compile",), summary["per_call"]), None, None),
    ]
    for title, budget, fn, key, needs in steps:
        if needs is not None and needs not in keep:
            sections.append(dict(name=title, status="skipped", seconds=0.0,
                                 note=f"no {needs} from an earlier section (see its error)"))
            continue
        result = run_section(sections, title, clock, budget, fn)
        if key is not None:
            summary[key] = result
        if needs == "runtime":  # the audit was the last user of the random-weight graphs
            keep.pop("runtime", None)
            free(device)
        save()
    failed = [s["name"] for s in sections if s["status"] == "failed"]
    log(f"done in {time.perf_counter() - clock.start:.0f} s; wrote {out / 'summary.json'} and {out / 'report.md'}")
    print(summary_lines(summary), flush=True)
    return 1 if failed else 0


def summary_lines(summary: dict[str, Any]) -> str:
    """The few lines the device tool's reply shows: sections, and each sampler's p50 against projection."""
    lines = [f"device: {summary['device']} ({summary['environment'].get('torch')}, CUDA {summary['environment'].get('cuda')})"]
    lines += [f"  {s['status']:8s} {s['seconds']:6.1f} s  {s['name']}  {s.get('note', '')[:160]}" for s in summary["sections"]]
    for r in summary["samplers"]:
        if r.get("status") == "ok":
            lines.append(f"  {r['model'][:24]:24s} b={r['batch']} {r['precision']:4s} {r['name'][:30]:30s} rounds {r['rounds']:3d} "
                         f"p50 {r['p50_ms']:8.2f} ms  projected {r.get('projected_ms') or float('nan'):8.2f} ms")
    audit = [a.get("status", "") for a in summary["audit"]]
    lines.append(f"  audit: {audit.count('ok')} ok, {sum(a.startswith('failed') for a in audit)} failed, "
                 f"{sum(a.startswith('skipped') for a in audit)} skipped")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
