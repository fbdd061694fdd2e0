"""Training throughput (samples/s) and memory of state, vision and transformer DiffusionPolicies.

    python scripts/benchmark_training.py --out results/vision_transformer
    python scripts/benchmark_training.py --only vision_unet vision_paper --steps 3 --out /tmp/bench

Every configuration runs the trainer's own optimizer step (:class:`policy_sampler.training.TrainStep`:
the DDPM loss with random crops, backward, AdamW, cosine schedule, EMA of every trained network) on
synthetic batches of its inputs (low-dim state, uint8 84 px camera images, actions), in a fresh
process each so its peak resident memory (``ru_maxrss``) is its own. Two warm-up steps, then
``--steps`` timed ones; the table gives samples per second (batch x steps / seconds), seconds per step,
the process's peak RSS and the parameters per network. Policies: the configs/policy YAMLs (small and
vision_small on CPU, vision_paper = ResNet-18 + the paper's U-Net), ObstacleReach's dimensions
(state 8 / proprio 4, action 2). Run it on a quiet machine: the figures are wall times.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "policy"
IMAGE = (84, 84)
# name -> (policy YAML, overrides, batch size, label)
RUNS: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "state_unet": ("small", {}, 256, "state U-Net (small)"),
    "state_transformer": ("small", {"model": "transformer"}, 256, "state DP-T (small)"),
    "vision_unet": ("vision_small", {}, 64, "vision U-Net (vision_small, 1 camera)"),
    "vision_transformer": ("vision_small", {"model": "transformer"}, 64, "vision DP-T (vision_small, 1 camera)"),
    "vision_paper": ("vision_paper", {}, 64, "vision paper (ResNet-18 + paper U-Net, 1 camera)"),
}


def policy_config(name: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    yaml, overrides, _, _ = RUNS[name]
    data = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{yaml}.yaml"))
    for parent in data.pop("defaults", []):
        if parent != "_self_":
            data = {**OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{parent}.yaml")), **data}
    data.update(overrides, action_dim=2)
    if data.get("vision") is not None:
        data["vision"].update(image_keys=["top_image"], image_shape=list(IMAGE))
        data["obs_dim"] = 4
    else:
        data["obs_dim"] = 8
    return data


def synthetic_batch(config, batch: int):
    import torch

    g = torch.Generator().manual_seed(0)
    obs = {k: torch.rand(batch, config.n_obs_steps, d, generator=g) * 2 - 1
           for k, d in zip(config.obs_keys, config.obs_key_dims)}
    for key in config.image_keys:
        obs[key] = torch.randint(0, 256, (batch, config.n_obs_steps, *IMAGE, 3), generator=g, dtype=torch.uint8)
    return {"obs": obs, "action": torch.rand(batch, config.horizon, config.action_dim, generator=g) * 2 - 1}


def measure(name: str, steps: int, threads: int, queue) -> None:
    """One configuration in this (fresh) process; puts its row on ``queue``."""
    import torch

    from policy_sampler import DiffusionPolicy
    from policy_sampler.benchmark import machine_name
    from policy_sampler.policy import DiffusionPolicyConfig
    from policy_sampler.training import TrainConfig, TrainStep

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    _, _, batch_size, label = RUNS[name]
    config = DiffusionPolicyConfig.from_dict(policy_config(name))
    policy = DiffusionPolicy(config).train()
    train_config = TrainConfig(steps=steps + 2, batch_size=batch_size, warmup_steps=1, progress=False)
    step = TrainStep(policy, train_config, train_config.steps)
    batch, gen = synthetic_batch(config, batch_size), torch.Generator().manual_seed(1)
    for _ in range(2):
        step(batch, gen)
    start = time.perf_counter()
    for _ in range(steps):
        step(batch, gen)
    seconds = time.perf_counter() - start
    queue.put({
        "name": name, "label": label, "batch_size": batch_size, "steps": steps, "seconds": seconds,
        "seconds_per_step": seconds / steps, "samples_per_second": batch_size * steps / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": {k: sum(p.numel() for p in m.parameters()) for k, m in policy.trained_modules().items()},
        "machine": machine_name(torch.device("cpu")),
    })


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"Training throughput, {rows[0]['machine']}; synthetic batches, the trainer's TrainStep "
             "(loss, backward, AdamW, EMA), peak RSS of a fresh process per row", "",
             "| policy | batch | samples/s | s/step | peak RSS (MB) | denoiser params | encoder params |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["parameters"]
        enc = f"{p['obs_encoder'] / 1e6:.3f}M" if "obs_encoder" in p else "-"
        lines.append(f"| {r['label']} | {r['batch_size']} | {r['samples_per_second']:.1f} | {r['seconds_per_step']:.3f} "
                     f"| {r['peak_rss_mb']:.0f} | {p['model'] / 1e6:.3f}M | {enc} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per policy (after 2 warm-up steps)")
    parser.add_argument("--paper-steps", type=int, default=2, help="timed steps of vision_paper (slow on a CPU)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", default=None, help="folder for training_benchmark.{json,md}")
    args = parser.parse_args()
    if args.steps < 1 or args.paper_steps < 1 or args.threads < 1:
        parser.error("--steps, --paper-steps and --threads must be >= 1")
    ctx = mp.get_context("spawn")
    rows = []
    for name in args.only:
        queue = ctx.Queue()
        steps = args.paper_steps if name == "vision_paper" else args.steps
        proc = ctx.Process(target=measure, args=(name, steps, args.threads, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
        print(f"{name}: {rows[-1]['samples_per_second']:.1f} samples/s", flush=True)
    table = format_table(rows)
    print("\n" + table, flush=True)
    if args.out:
        from policy_sampler.serialization import atomic_write_bytes

        out = Path(args.out)
        atomic_write_bytes(out / "training_benchmark.json", json.dumps(rows, indent=1).encode())
        atomic_write_bytes(out / "training_benchmark.md", (table + "\n").encode())
        print(f"wrote {out}/training_benchmark.json and .md", flush=True)


if __name__ == "__main__":
    main()
