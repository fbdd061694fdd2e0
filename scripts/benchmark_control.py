"""ChunkRunner in a real-time loop on this machine: act() latency, overruns, every counter, success.

    python scripts/benchmark_control.py --out results/control          # the table in docs/control.md
    python scripts/benchmark_control.py --episodes 1 --quick           # a smoke run

The trained demo policy (``assets/policies/obstacle_reach_small``) drives ObstacleReach at a fixed
control period (10 Hz by default, real sleeps between ticks): each tick the env's observation goes
to ``runner.act`` and the action to ``env.step``. Rows: ``ddpm`` and ``speculative_picard`` at act()
budgets of 0.1 s and 0.02 s, and the same with a GIL-holding slow denoiser (a pure-Python busy loop of
``--gil-ms`` before each call of the network, which Python interrupts only at its switch interval).
The same held-out episodes (env seeds 1000 and up) for every row. Run it alone on the machine:
it measures wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(REPO / "envs"))

from policy_sampler import DiffusionPolicy  # noqa: E402
from policy_sampler.benchmark import machine_name  # noqa: E402
from policy_sampler.control import ChunkRunner, RunnerConfig  # noqa: E402
from policy_sampler.serialization import atomic_write_bytes, jsonable  # noqa: E402

POLICY = REPO / "assets" / "policies" / "obstacle_reach_small"
TASK = "PolicySampler/ObstacleReach-v0"
#: every count stats() reports (summed over a row's episodes), in the order of the counter table
COUNTERS = ("launched", "chunks", "dropped_chunks", "failed_chunks", "cancelled_chunks", "in_flight", "misses",
            "dropped_actions", "early_stops", "doomed_ticks", "fallback_rest", "fallback_ddim", "safe_actions",
            "fallback_launched", "fallback_failed", "fallback_dropped", "fallback_doomed_ticks", "overruns")


def hold_gil(policy: DiffusionPolicy, seconds: float) -> None:
    """Make every denoiser call first spin ``seconds`` in pure Python (holding the GIL but at switches)."""
    network = policy.denoiser

    def denoiser(differentiable: bool = False):
        inner = network(differentiable)

        def call(x, t, cond):
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
            return inner(x, t, cond)

        return call

    policy.denoiser = denoiser


def run_episode(runner: ChunkRunner, env: Any, seed: int, period: float, max_steps: int) -> dict[str, Any]:
    obs, _ = env.reset(seed=seed)
    runner.reset(obs)
    durations, success = [], False
    t_next = time.perf_counter()
    for _ in range(max_steps):
        start = time.perf_counter()
        action = runner.act(obs)
        durations.append(time.perf_counter() - start)
        obs, _, terminated, truncated, info = env.step(action)
        success = success or bool(info.get("is_success", False))
        if terminated or truncated:
            break
        t_next += period
        lag = t_next - time.perf_counter()
        if lag > 0:
            time.sleep(lag)
        else:
            t_next = time.perf_counter()  # behind schedule: start the next tick now, do not burst
    return {"success": success, "durations": durations, "stats": runner.stats()}


def run_row(label: str, sampler: str, budget: float, gil_ms: float, args: argparse.Namespace) -> dict[str, Any]:
    from policy_sampler_envs import make_env

    policy = DiffusionPolicy.load(POLICY)
    if gil_ms:
        hold_gil(policy, gil_ms / 1000)
    config = RunnerConfig(budget_s=budget, control_period_s=args.period, seed=0)
    runner = ChunkRunner(policy, sampler=sampler, config=config)
    env = make_env(TASK)
    episodes = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(args.episodes):
                episodes.append(run_episode(runner, env, 1000 + i, args.period, args.max_steps))
    finally:
        runner.close()
        env.close()
    durations = np.concatenate([e["durations"] for e in episodes])
    summed = {k: sum(e["stats"][k] for e in episodes) for k in COUNTERS}
    latencies = [e["stats"]["latency_p50_s"] for e in episodes if e["stats"]["latency_p50_s"] is not None]
    return {
        "label": label, "sampler": sampler, "budget_s": budget, "gil_ms": gil_ms,
        "episodes": len(episodes), "successes": sum(e["success"] for e in episodes), "ticks": int(durations.size),
        "act_p50_ms": 1000 * float(np.percentile(durations, 50)), "act_p99_ms": 1000 * float(np.percentile(durations, 99)),
        "act_max_ms": 1000 * float(durations.max()),
        "chunk_p50_ms": 1000 * float(np.median(latencies)) if latencies else None,
        **summed, "warnings": sorted({str(w.message).split(".")[0] for w in caught}),
        "per_episode": [e["stats"] for e in episodes],
    }


def table(rows: list[dict[str, Any]]) -> str:
    """Two markdown tables: timing and success per row, then every counter per row."""
    head = "| row | budget | success | act p50 / p99 / max (ms) | overruns | chunk p50 (ms) | doomed at (tick, per episode) |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        chunk = "-" if r["chunk_p50_ms"] is None else f"{r['chunk_p50_ms']:.0f}"
        doomed = ", ".join("-" if e["doomed_at"] is None else str(e["doomed_at"]) for e in r["per_episode"])
        lines.append(f"| {r['label']} | {r['budget_s']:g} s | {r['successes']}/{r['episodes']} | {r['act_p50_ms']:.2f} / "
                     f"{r['act_p99_ms']:.1f} / {r['act_max_ms']:.1f} | {r['overruns']}/{r['ticks']} | {chunk} | {doomed} |")
    lines += ["", "| row | budget | " + " | ".join(COUNTERS) + " |", "|" + "---|" * (len(COUNTERS) + 2)]
    for r in rows:
        lines.append(f"| {r['label']} | {r['budget_s']:g} s | " + " | ".join(str(r[k]) for k in COUNTERS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=3, help="held-out episodes per row (env seeds 1000..)")
    parser.add_argument("--period", type=float, default=0.1, help="control period in seconds (0.1: 10 Hz)")
    parser.add_argument("--max-steps", type=int, default=200, help="ticks per episode at most")
    parser.add_argument("--gil-ms", type=float, default=15.0, help="busy loop before each denoiser call (GIL rows)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="40 ticks per episode (a smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="write results.json and table.md here")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.period <= 0 or args.max_steps < 1 or args.gil_ms < 0 or args.threads < 1:
        parser.error("--episodes, --max-steps and --threads must be >= 1, --period > 0, --gil-ms >= 0")
    if args.quick:
        args.max_steps = 40
    torch.set_num_threads(args.threads)
    specs = [(f"{sampler}{' + GIL-holding denoiser' if gil else ''}", sampler, budget, args.gil_ms if gil else 0.0)
             for gil in (False, True) for sampler in ("ddpm", "speculative_picard") for budget in (0.1, 0.02)]
    rows = []
    for label, sampler, budget, gil_ms in specs:
        rows.append(run_row(label, sampler, budget, gil_ms, args))
        r = rows[-1]
        print(f"{label} budget {budget:g}: {r['successes']}/{r['episodes']} successes, act p99 {r['act_p99_ms']:.1f} ms, "
              f"{r['overruns']} overruns, {r['misses']} misses", flush=True)
    machine = machine_name(torch.device("cpu"))
    text = (f"{machine}; {args.period:g} s control period; {args.episodes} held-out episodes per row; "
            f"GIL rows spin {args.gil_ms:g} ms per denoiser call\n\n{table(rows)}")
    print("\n" + text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        doc = {"machine": machine, "period_s": args.period, "episodes": args.episodes, "gil_ms": args.gil_ms,
               "switch_interval_s": sys.getswitchinterval(), "rows": rows}
        atomic_write_bytes(args.out / "results.json", json.dumps(jsonable(doc), indent=2).encode())
        atomic_write_bytes(args.out / "table.md", (text + "\n").encode())


if __name__ == "__main__":
    main()
