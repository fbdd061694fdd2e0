"""Benchmark every sampler side by side on the analytic mixture and a DiffusionPolicy-sized U-Net.

    python scripts/benchmark_samplers.py --quick            # a few conditions, about two minutes on CPU
    python scripts/benchmark_samplers.py --seeds 32 --out results.json
    python scripts/benchmark_samplers.py --device cuda      # real GPU timings (CUDA events, warm-up)
    python scripts/benchmark_samplers.py --quick --paradigms-sweep   # + paradigms' settings side by side
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import torch
from diffusers import DDPMScheduler
from tqdm import tqdm

from policy_sampler import NoiseSchedule
from policy_sampler.benchmark import Case, format_table, machine_name, paradigms_sweep, run_case
from policy_sampler.models import ConditionalUnet1D, ConditionalUnet1DConfig
from policy_sampler.reference import GaussianMixtureDenoiser


def diffusion_policy_schedule() -> NoiseSchedule:
    """DiffusionPolicy's scheduler: 100 DDPM steps, squaredcos_cap_v2, epsilon, clip_sample."""
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                              prediction_type="epsilon", variance_type="fixed_small")
    return NoiseSchedule.from_diffusers(scheduler, num_inference_steps=100)


def cases(args: argparse.Namespace, device: torch.device) -> list[Case]:
    schedule = diffusion_policy_schedule()
    mixture = GaussianMixtureDenoiser.random(schedule, dim=32, seed=0)
    torch.manual_seed(0)
    unet = ConditionalUnet1D(ConditionalUnet1DConfig(action_dim=2, global_cond_dim=40)).to(device).eval()
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    return [
        Case("Gaussian mixture, 32-d, 3 modes (exact denoiser)", mixture, schedule, (32,), seeds=args.seeds),
        Case(f"ConditionalUnet1D {params:.1f}M params, horizon 16 x 2 actions, 2 x 20-d obs, random weights",
             unet.denoiser(), schedule, (16, 2), cond_dim=40, seeds=args.unet_seeds),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 mixture conditions, 1 U-Net condition")
    parser.add_argument("--seeds", type=int, default=32, help="conditions (one per run) on the mixture")
    parser.add_argument("--unet-seeds", type=int, default=3, help="conditions (one per run) on the U-Net")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", help="also write every run's figures to this JSON file")
    parser.add_argument("--paradigms-sweep", action="store_true",
                        help="also sweep paradigms' window, tolerance and initial guesses on the mixture")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.unet_seeds = 8, 1
    if args.seeds < 1 or args.unet_seeds < 1:
        parser.error("--seeds and --unet-seeds must be at least 1")
    device = torch.device(args.device)
    machine = machine_name(device)
    report = {"machine": machine, "cases": []}
    problems = cases(args, device)
    for case in problems:
        bar = tqdm(desc=case.name.split(",")[0], unit="sampler")
        rows = run_case(case, device=device, warmup=device.type == "cuda",
                        progress=lambda label: (bar.set_postfix_str(label), bar.update()))
        bar.close()
        print(format_table(case, rows, machine, device) + "\n", flush=True)
        report["cases"].append({"case": case.name, "rows": [asdict(r) for r in rows]})
    if args.paradigms_sweep:
        mixture = problems[0]
        print(paradigms_sweep(mixture.denoiser, mixture.schedule, mixture.event_shape) + "\n", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
