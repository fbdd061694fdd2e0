"""Throughput of evaluation sweeps and candidate rollouts: the local launcher, then Ray with 1 and 2
workers (a local instance with that many CPUs, one CPU and one torch thread per unit), side by side in
one run; prints the markdown table of docs/scaling.md with the machine's name.

    python scripts/benchmark_scaling.py                       # ~2-4 min on a 2-core CPU
    python scripts/benchmark_scaling.py --checkpoint demo_out/policy --episodes 64 --workers 1 2 4

Every configuration runs the same units (``--episodes`` evaluation episodes and ``--candidates``
candidate episodes, ``--seeds-per-unit`` per unit, sampler DDIM with ``--steps`` steps, episodes capped
at ``--max-steps`` env steps). Ray's workers are started (and the checkpoint loaded in them) by a
warm-up sweep before timing, so the figures are steady-state throughput; the cold start is printed
apart. Without ``--checkpoint`` an untrained policy of configs/policy/small.yaml is used (the rollouts
cost the same as a trained one's of the same size; only the success rates would differ).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

TASK = "PolicySampler/ObstacleReach-v0"


def small_checkpoint(directory: Path) -> Path:
    """An untrained policy of configs/policy/small.yaml with ObstacleReach's shapes, saved in ``directory``."""
    import torch
    from omegaconf import OmegaConf

    from policy_sampler import DiffusionPolicy
    from policy_sampler.policy import DiffusionPolicyConfig

    fields = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "policy" / "small.yaml"), resolve=True)
    torch.manual_seed(0)
    stats = {"state": {"min": [-0.5, -0.5, -0.3, -0.3, -0.1, 0.25, -0.05, -0.05],
                       "max": [0.5, 0.5, 0.3, 0.3, 0.1, 0.4, 0.05, 0.05]},
             "action": {"min": [-1.0, -1.0], "max": [1.0, 1.0]}}
    policy = DiffusionPolicy(DiffusionPolicyConfig(obs_dim=8, action_dim=2, **fields), dataset_stats=stats)
    policy.metadata = {"task": TASK}
    return policy.save(directory / "small")


def measure(launcher, blob, spec, args) -> dict:
    """Wall time of the evaluation sweep and of the candidate rollouts on ``launcher`` (one run each),
    and the summed wall time of the units themselves (what the workers spent in the rollout loop)."""
    from policy_sampler.sweep import generate_candidates, run_sweep
    from policy_sampler.sweep.units import plan_units

    units = plan_units("evaluate", TASK, blob.digest, [spec], args.episodes, 1000, args.seeds_per_unit,
                       options={"max_steps": args.max_steps})
    start = time.perf_counter()
    results = run_sweep(units, {blob.digest: blob}, launcher)
    eval_wall = time.perf_counter() - start
    unit_wall = sum(r["wall_s"] for r, _ in results.values())
    start = time.perf_counter()
    episodes = generate_candidates(blob, TASK, args.candidates, spec.sampler, spec.options, seed=5000,
                                   num_inference_steps=spec.num_inference_steps, launcher=launcher,
                                   seeds_per_unit=args.seeds_per_unit, max_steps=args.max_steps)
    cand_wall = time.perf_counter() - start
    return {"units": len(units), "eval_wall": eval_wall, "unit_wall": unit_wall, "cand_wall": cand_wall,
            "episodes": args.episodes, "candidates": len(episodes)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="a checkpoint or training run directory (default: untrained small policy)")
    ap.add_argument("--episodes", type=int, default=64, help="evaluation episodes per configuration")
    ap.add_argument("--candidates", type=int, default=32, help="candidate episodes per configuration")
    ap.add_argument("--seeds-per-unit", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=48)
    ap.add_argument("--steps", type=int, default=10, help="DDIM inference steps")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to measure")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from policy_sampler.benchmark import machine_name
    from policy_sampler.rollout import SamplerSpec
    from policy_sampler.sweep import CheckpointBlob, LocalLauncher, RayLauncher, run_sweep
    from policy_sampler.sweep.units import plan_units

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.checkpoint) if args.checkpoint else small_checkpoint(Path(tmp))
        blob = CheckpointBlob.read(path)
    spec = SamplerSpec(f"ddim-{args.steps}", "ddim", {"eta": 0.0}, num_inference_steps=args.steps)
    warm = plan_units("evaluate", TASK, blob.digest, [spec], 1, 0, 1, options={"max_steps": 4})

    rows = []
    run_sweep(warm, {blob.digest: blob}, LocalLauncher())  # load the policy in this process first
    rows.append(("local", 1, None, measure(LocalLauncher(), blob, spec, args)))
    for workers in args.workers:
        launcher = RayLauncher(num_cpus=workers, init_kwargs={
            "object_store_memory": 100 * 1024 * 1024, "log_to_driver": False,
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1"}}})
        start = time.perf_counter()
        warm_k = plan_units("evaluate", TASK, blob.digest, [spec], workers, 0, 1, options={"max_steps": 4})
        run_sweep(warm_k, {blob.digest: blob}, launcher)  # starts Ray and its workers, loads the policy
        cold = time.perf_counter() - start
        try:
            rows.append(("ray", workers, cold, measure(launcher, blob, spec, args)))
        finally:
            launcher.close()

    local = rows[0][3]
    local_per_unit = local["eval_wall"] / local["units"]
    one = next((m for name, w, _, m in rows if name == "ray" and w == 1), None)
    print(f"machine: {machine_name(torch.device('cpu'))}, {os.cpu_count()} CPU cores")
    print(f"task {TASK}, sampler {spec.label}, policy {'checkpoint ' + str(path) if args.checkpoint else 'configs/policy/small.yaml (untrained)'}, "
          f"{args.episodes} evaluation + {args.candidates} candidate episodes, {args.seeds_per_unit} per unit, "
          f"max {args.max_steps} env steps")
    print()
    print("| launcher | workers | eval episodes/s | candidates/s | speedup vs 1 Ray worker | worker s per unit | "
          "vs local | dispatch overhead per unit | cold start (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, workers, cold, m in rows:
        per_unit = m["eval_wall"] * workers / m["units"]
        inside = m["unit_wall"] / m["units"]
        dispatch = per_unit - inside
        versus = "-" if name == "local" else f"{100 * (per_unit / local_per_unit - 1):+.1f}%"
        speedup = "-" if name == "local" or one is None else f"{one['eval_wall'] / m['eval_wall']:.2f}x"
        print(f"| {name} | {workers} | {m['episodes'] / m['eval_wall']:.2f} | {m['candidates'] / m['cand_wall']:.2f} | "
              f"{speedup} | {per_unit:.3f} | {versus} | {1000 * dispatch:.0f} ms ({100 * dispatch / inside:.1f}%) | "
              f"{'-' if cold is None else f'{cold:.1f}'} |")
    print()
    print("worker s per unit: sweep wall x workers / units (the local launcher: wall / units); vs local: that "
          "against the local launcher's; dispatch overhead: worker s per unit minus the unit's own wall time "
          "inside evaluate_sampler (scheduling, (de)serialisation, result transfer, idle workers at the end), "
          "in ms and as a share of the unit's own time; speedup: the 1-worker Ray sweep's wall over this one's.")
    two = next((m for name, w, _, m in rows if name == "ray" and w == 2), None)
    if one is not None:
        per_worker = one["episodes"] / one["eval_wall"]
        eff = (one["eval_wall"] / two["eval_wall"]) / 2 if two is not None else 1.0
        print()
        print(f"PROJECTION (not measured): N nodes x 8 workers, each at the 1-worker rate measured here "
              f"({per_worker:.2f} episodes/s), times the parallel efficiency measured with 2 workers "
              f"({eff:.2f} = 2-worker speedup / 2):")
        for nodes in (1, 4, 16):
            print(f"  {nodes:2d} node(s) x 8 workers: ~{per_worker * nodes * 8 * eff:.0f} episodes/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
