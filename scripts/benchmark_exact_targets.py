"""The exact samplers at their default options against issue 21's targets, measured side by side in one run.

    python scripts/benchmark_exact_targets.py --checkpoint assets/policies/obstacle_reach_small

1. **Mixture**: the 16 x 2 action-chunk Gaussian mixture (``policy_sampler.reference.chunk_mixture``),
   ``--batch`` rows (default 12000) in one call: NFE per sample, rounds of the slowest row, mean rounds.
   Targets: at most 300 NFE and 11 rounds. (The law at these defaults is held by the slow law tests.)
2. **Trained policy at batch 1**: ``--episodes`` held-out episodes (env seeds ``--seed``...), one env at a
   time, through the project's rollout loop: plain chunk execution, and the ChunkRunner at delay 0
   (each chunk's first draft is the previous chunk shifted, ``guess_from_previous``). Per chunk:
   rounds (median target: at most 5), NFE and wall time (p50 / mean), ``ddpm`` in the same run.
   Target: the exact chunk at least 2x faster than ``ddpm``. The H100 column is a *projection*: the
   measured H100 per-call latency of the 65.8M U-Net at each call's rows, summed
   (``policy_sampler.benchmark.projected_h100_ms``), per chunk, median.

The rows compare the defaults with the previous ones (fixed full windows, tau 10) and fixed full
windows at tau 30. Name the machine: it is printed with the tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from diffusers import DDPMScheduler

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from policy_sampler import DiffusionPolicy, NoiseSchedule, make_sampler  # noqa: E402
from policy_sampler.benchmark import machine_name, projected_h100_ms  # noqa: E402
from policy_sampler.reference import chunk_mixture  # noqa: E402

CONFIGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("speculative_picard (defaults)", "speculative_picard", {}),
    ("speculative_picard, fixed full window, tau 30", "speculative_picard", {"adaptive_window": False}),
    ("speculative_picard, previous defaults (full window, tau 10)", "speculative_picard",
     {"adaptive_window": False, "prior_precision": 10.0, "probe_every": None}),
    ("speculative (defaults)", "speculative", {}),
)


def mixture_rows(batch: int) -> list[str]:
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                              prediction_type="epsilon", variance_type="fixed_small")
    schedule = NoiseSchedule.from_diffusers(scheduler, num_inference_steps=100)
    mixture = chunk_mixture(schedule)
    x_T = torch.randn(batch, 16, 2, generator=torch.Generator().manual_seed(0))
    lines = [f"#### Mixture 16 x 2, 3 modes, {batch} rows in one call (targets: NFE <= 300, slowest row <= 11 rounds)",
             "", "| sampler | NFE per sample | rounds (slowest row) | rounds (mean) | rounds p99 | seconds |",
             "|---|---|---|---|---|---|"]
    for label, name, options in CONFIGS:
        start = time.perf_counter()
        with torch.inference_mode():
            res = make_sampler(name, **options).sample(mixture, schedule, x_T, generator=torch.Generator().manual_seed(1))
        rounds = np.asarray(res.rounds_per_row)
        lines.append(f"| {label} | {res.nfe} | {res.rounds} | {rounds.mean():.2f} | {np.percentile(rounds, 99):.0f} | "
                     f"{time.perf_counter() - start:.0f} |")
        print(lines[-1], flush=True)
    return lines


@contextmanager
def _recording_rows(policy: DiffusionPolicy, calls: list[list[int]]) -> Iterator[None]:
    """Record the rows of every denoiser call of each ``predict_action`` (for the H100 projection)."""
    plain = policy.predict_action

    def recorded(*args: Any, **kwargs: Any):
        out = plain(*args, **kwargs)
        calls.append(list(out.info["rows_per_call"]))
        return out

    policy.predict_action = recorded
    try:
        yield
    finally:
        del policy.predict_action


def policy_rows(checkpoint: str, task: str | None, episodes: int, seed: int) -> list[str]:
    from policy_sampler.rollout import RolloutConfig, SamplerSpec, evaluate_sampler

    torch.set_num_threads(1)
    policy = DiffusionPolicy.load(checkpoint)
    task = task or policy.metadata.get("task")
    lines = [f"#### {task}, batch 1, {episodes} held-out episodes (env seeds {seed}-{seed + episodes - 1}), "
             "1 torch thread (targets: median rounds <= 5, exact chunk >= 2x faster than ddpm)", "",
             "| sampler | execution | chunks | rounds median | rounds mean | NFE mean | wall ms p50 | wall ms mean | "
             "x ddpm (p50) | H100 ms p50 (projected) | successes |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    ddpm_p50 = None
    for label, name, options in (("ddpm", "ddpm", {}),) + CONFIGS:
        for execution, control in (("plain", None), ("runner, previous chunk as draft", {"inference_delay": 0})):
            if name == "ddpm" and control is not None:
                continue
            spec = SamplerSpec(label, name, dict(options), control=control)
            calls: list[list[int]] = []
            with _recording_rows(policy, calls):
                report, _ = evaluate_sampler(policy, task, spec, episodes, seed,
                                             rollout=RolloutConfig(n_envs=1, stop_on_success=True))
            h100 = float(np.median([projected_h100_ms(rows) for rows in calls]))
            rounds = np.array([c["rounds"] for c in report.chunks])
            nfe = np.array([c["nfe"] for c in report.chunks])
            wall = np.array([c["latency_s"] for c in report.chunks]) * 1e3
            p50 = float(np.median(wall))
            ddpm_p50 = p50 if name == "ddpm" else ddpm_p50
            successes = sum(bool(e["success"]) for e in report.episodes)
            lines.append(f"| {label} | {execution} | {len(rounds)} | {np.median(rounds):.1f} | {rounds.mean():.2f} | "
                         f"{nfe.mean():.0f} | {p50:.1f} | {wall.mean():.1f} | {ddpm_p50 / p50:.2f} | "
                         f"{h100:.1f} | {successes}/{episodes} |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a trained policy (skip the policy part without it)")
    parser.add_argument("--task", help="default: the task recorded in the checkpoint")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000, help="first held-out env seed")
    parser.add_argument("--batch", type=int, default=12000, help="mixture rows (0 skips the mixture)")
    parser.add_argument("--out", help="also write the tables to this markdown file")
    args = parser.parse_args()
    if args.episodes < 1 or args.batch < 0:
        parser.error("--episodes must be >= 1 and --batch >= 0")
    lines = [f"Measured on {machine_name(torch.device('cpu'))}.", ""]
    print(lines[0], flush=True)
    if args.batch:
        lines += mixture_rows(args.batch) + [""]
    if args.checkpoint:
        lines += policy_rows(args.checkpoint, args.task, args.episodes, args.seed)
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        from policy_sampler.serialization import atomic_write_bytes

        atomic_write_bytes(Path(args.out), (text + "\n").encode())


if __name__ == "__main__":
    main()
