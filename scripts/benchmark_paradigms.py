"""Our ``paradigms`` against diffusers' own ParaDiGMS loop: rounds against error over a tolerance sweep,
and the even-spacing bug of diffusers' batched step, measured.

    python scripts/benchmark_paradigms.py                       # both parts, tables on stdout
    python scripts/benchmark_paradigms.py --conditions 8 --unet-conditions 2 --plot docs/images/paradigms_vs_diffusers.png

diffusers ships ParaDiGMS (Shih et al., arXiv 2305.16317) as ``StableDiffusionParadigmsPipeline``: a
loop in the pipeline over ``DDPMParallelScheduler.batch_step_no_noise``. The loop is transcribed in
:func:`diffusers_paradigms` below (the pipeline itself needs a text encoder and a VAE), driving the
real diffusers scheduler. Same denoiser, same initial state and per-step draws as our ``ddpm``, so
the error column is pathwise: the largest absolute difference to the sequential chain's sample.

The even-spacing bug: ``batch_step_no_noise`` takes every step's previous timestep as
``t - T // K`` (T training steps, K inference steps) while ``step`` (and ours) look up the real
next timestep; the two differ on ``linspace`` and uneven ``trailing`` spacings and on custom
timesteps. The second table counts the steps where they disagree and measures the loop's error at a
tight tolerance against the sequential chain (ours on the same schedules for comparison).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from policy_sampler import NoiseSchedule, make_sampler  # noqa: E402
from policy_sampler.benchmark import machine_name  # noqa: E402
from policy_sampler.models import ConditionalUnet1D, ConditionalUnet1DConfig  # noqa: E402
from policy_sampler.reference import GaussianMixtureDenoiser, chunk_mixture  # noqa: E402

TOLERANCES = (0.2, 0.1, 0.05, 0.02, 0.01, 0.005)
BASE_CONFIG = dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                   prediction_type="epsilon", variance_type="fixed_small")


@torch.no_grad()
def diffusers_paradigms(denoiser: Callable, scheduler, x_T: torch.Tensor, cond: torch.Tensor | None,
                        noise: torch.Tensor, parallel: int, tolerance: float) -> tuple[torch.Tensor, int, int]:
    """The sliding-window loop of diffusers' ``StableDiffusionParadigmsPipeline`` (v0.42, without
    guidance, callbacks or the text/VAE parts) over ``scheduler.batch_step_no_noise``; ``noise[k]`` is
    step k's standard normal draw. Returns (sample, rounds, evaluations per sample)."""
    timesteps = scheduler.timesteps
    T = len(timesteps)
    p = min(parallel, T)
    B = x_T.shape[0]
    event = x_T.shape[1:]
    D = x_T[0].numel()
    buf = x_T.unsqueeze(0).repeat(T + 1, *([1] * x_T.ndim))  # slot k enters step k; slot T is x_0
    variance = torch.stack([scheduler._get_variance(int(t)) for t in timesteps]).to(x_T.dtype)
    z = variance.sqrt().reshape(-1, *([1] * x_T.ndim)) * noise  # the pre-drawn, scaled noise of every step
    inv = torch.cat([1 / (variance * D), torch.tensor([torch.inf], dtype=x_T.dtype)])  # slot T: +inf
    begin, end = 0, p
    rounds = evaluations = 0
    while begin < T:
        L = end - begin
        window = buf[begin:end]  # [L, B, *event]
        t_rows = timesteps[begin:end].repeat_interleave(B)
        c_rows = None if cond is None else cond.repeat(L, *([1] * (cond.ndim - 1)))
        out = denoiser(window.flatten(0, 1), t_rows, c_rows)
        rounds += 1
        evaluations += L
        mean = scheduler.batch_step_no_noise(out, t_rows, window.flatten(0, 1)).reshape(L, B, *event)
        new = buf[begin].unsqueeze(0) + torch.cumsum(mean - window, 0) + torch.cumsum(z[begin:end], 0)
        err = (new - buf[begin + 1:end + 1]).pow(2).flatten(2).sum(-1) * inv[begin + 1:end + 1, None]
        bad = torch.cat([(err > tolerance**2).any(1), torch.tensor([True])])
        stride = min(int(torch.argmax(bad.int())) + 1, p)
        buf[begin + 1:end + 1] = new
        new_begin, new_end = begin + stride, min(begin + stride + p, T)
        buf[end:new_end + 1] = buf[end]
        begin, end = new_begin, new_end
    return buf[T], rounds, evaluations


def _scheduler(parallel: bool = True, **config):
    from diffusers import DDPMParallelScheduler, DDPMScheduler

    return (DDPMParallelScheduler if parallel else DDPMScheduler)(**{**BASE_CONFIG, **config})


def _draws(schedule: NoiseSchedule, event: tuple[int, ...], cond_dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(1, *event, generator=g)
    noise = torch.randn(schedule.num_steps, 1, *event, generator=g)
    cond = torch.randn(1, cond_dim, generator=g) if cond_dim else None
    return x_T, noise, cond


def tolerance_sweep(denoiser: Callable, conditions: int, event: tuple[int, ...], cond_dim: int,
                    window: int = 64) -> list[dict]:
    """Rounds, NFE and max error against ``ddpm`` per condition (one per run), for diffusers' loop and
    ours (drafted guesses, and the paper's copies), at each tolerance."""
    scheduler = _scheduler()
    scheduler.set_timesteps(100)
    schedule = NoiseSchedule.from_diffusers(_scheduler(parallel=False), num_inference_steps=100)
    rows = []
    draws = [_draws(schedule, event, cond_dim, seed) for seed in range(conditions)]
    with torch.inference_mode():
        refs = [make_sampler("ddpm").sample(denoiser, schedule, x, cond=c, noise=n).sample for x, n, c in draws]
        for tol in TOLERANCES:
            for label in ("diffusers", "ours", "ours, paper init"):
                runs = []
                for (x, n, c), ref in zip(draws, refs):
                    if label == "diffusers":
                        sample, rounds, nfe = diffusers_paradigms(denoiser, scheduler, x, c, n, window, tol)
                    else:
                        init = "copy" if "paper" in label else "frozen_x0"
                        res = make_sampler("paradigms", window=window, tolerance=tol, init=init).sample(
                            denoiser, schedule, x, cond=c, noise=n)
                        sample, rounds, nfe = res.sample, res.rounds, res.nfe
                    runs.append((rounds, nfe, float((sample - ref).abs().max())))
                r = np.array(runs)
                rows.append({"loop": label, "tolerance": tol, "rounds": float(r[:, 0].mean()),
                             "nfe": float(r[:, 1].mean()), "max_error": float(r[:, 2].max()),
                             "mean_max_error": float(r[:, 2].mean())})
    return rows


def spacing_bug(conditions: int = 4, tolerance: float = 1e-4) -> list[dict]:
    """Per schedule: steps where ``batch_step_no_noise``'s previous timestep is not the real one, and
    the end-to-end error against the sequential chain of diffusers' loop and ours at a tight tolerance."""
    cases = [
        ("leading, K=30", dict(timestep_spacing="leading"), 30, None),
        ("linspace, K=30", dict(timestep_spacing="linspace"), 30, None),
        ("trailing, K=30", dict(timestep_spacing="trailing"), 30, None),
        ("linspace, K=7", dict(timestep_spacing="linspace"), 7, None),
        ("custom [99,90,75,50,30,15,5,0]", {}, None, [99, 90, 75, 50, 30, 15, 5, 0]),
    ]
    rows = []
    for label, config, steps, custom in cases:
        parallel = _scheduler(**config)
        sequential = _scheduler(parallel=False, **config)
        if custom is None:
            parallel.set_timesteps(steps)
            schedule = NoiseSchedule.from_diffusers(sequential, num_inference_steps=steps)
        else:
            parallel.set_timesteps(timesteps=custom)
            schedule = NoiseSchedule.from_diffusers(sequential, timesteps=custom)
        assert parallel.timesteps.tolist() == schedule.timesteps.tolist()
        # previous timestep: the batched step's uniform stride against the scalar step's lookup (both
        # below 0 mean alpha_bar = 1, the same step)
        stride = parallel.config.num_train_timesteps // (parallel.num_inference_steps or parallel.config.num_train_timesteps)
        wrong = sum(max(int(t) - stride, -1) != max(int(parallel.previous_timestep(int(t))), -1)
                    for t in parallel.timesteps)
        denoiser = GaussianMixtureDenoiser.random(schedule, dim=32, seed=0)
        errors = {"diffusers": 0.0, "ours": 0.0}
        for seed in range(conditions):
            x, n, _ = _draws(schedule, (32,), 0, seed)
            x, n = x.double(), n.double()
            ref = make_sampler("ddpm").sample(denoiser, schedule, x, noise=n).sample
            theirs, _, _ = diffusers_paradigms(denoiser, parallel, x, None, n, 64, tolerance)
            ours = make_sampler("paradigms", window=64, tolerance=tolerance).sample(denoiser, schedule, x, noise=n).sample
            errors["diffusers"] = max(errors["diffusers"], float((theirs - ref).abs().max()))
            errors["ours"] = max(errors["ours"], float((ours - ref).abs().max()))
        rows.append({"schedule": label, "steps": len(parallel.timesteps), "wrong_prev_t": wrong, **errors})
    return rows


def _sweep_table(title: str, rows: list[dict]) -> str:
    lines = [f"#### {title}", "", "| tolerance | loop | rounds | NFE | max abs err vs ddpm (worst condition) | mean over conditions |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tolerance']} | {r['loop']} | {r['rounds']:.1f} | {r['nfe']:.0f} | "
                     f"{r['max_error']:.1e} | {r['mean_max_error']:.1e} |")
    return "\n".join(lines)


def _plot(results: dict[str, list[dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2))
    for ax, (title, rows) in zip(np.atleast_1d(axes), results.items()):
        for label, style in (("diffusers", "o--"), ("ours", "s-"), ("ours, paper init", "^:")):
            pts = sorted((r["mean_max_error"], r["rounds"]) for r in rows if r["loop"] == label)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("max abs error vs ddpm (mean over conditions)")
        ax.set_ylabel("rounds (sequential denoiser calls)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conditions", type=int, default=8, help="mixture conditions (one per run)")
    parser.add_argument("--unet-conditions", type=int, default=2, help="U-Net conditions (0 skips the U-Net)")
    parser.add_argument("--window", type=int, default=64, help="window (diffusers' `parallel`)")
    parser.add_argument("--plot", help="write the rounds-against-error figure here")
    args = parser.parse_args()
    if args.conditions < 1 or args.unet_conditions < 0 or args.window < 1:
        parser.error("--conditions and --window must be >= 1, --unet-conditions >= 0")
    print(f"Measured on {machine_name(torch.device('cpu'))}.\n", flush=True)

    print("#### The even-spacing bug: batched previous timestep against the real one (tolerance 1e-4, "
          "32-d mixture, float64, 4 conditions)\n")
    print("| schedule | steps | steps with a wrong previous timestep | diffusers loop: max abs err vs sequential | ours |")
    print("|---|---|---|---|---|")
    for r in spacing_bug():
        print(f"| {r['schedule']} | {r['steps']} | {r['wrong_prev_t']} | {r['diffusers']:.1e} | {r['ours']:.1e} |")
    print(flush=True)

    schedule = NoiseSchedule.from_diffusers(_scheduler(parallel=False), num_inference_steps=100)
    results = {}
    mixture = chunk_mixture(schedule)
    title = f"Gaussian mixture, 16 x 2, 3 modes, window {args.window}, {args.conditions} conditions"
    results[title] = tolerance_sweep(mixture, args.conditions, (16, 2), 0, args.window)
    print(_sweep_table(title, results[title]) + "\n", flush=True)
    if args.unet_conditions:
        torch.manual_seed(0)
        unet = ConditionalUnet1D(ConditionalUnet1DConfig(action_dim=2, global_cond_dim=40)).eval()
        params = sum(p.numel() for p in unet.parameters()) / 1e6
        title = (f"ConditionalUnet1D {params:.1f}M params, random weights, window {args.window}, "
                 f"{args.unet_conditions} conditions")
        results[title] = tolerance_sweep(unet.denoiser(), args.unet_conditions, (16, 2), 40, args.window)
        print(_sweep_table(title, results[title]) + "\n", flush=True)
    if args.plot:
        _plot(results, args.plot)
        print(f"figure: {args.plot}")


if __name__ == "__main__":
    main()
