"""Latency per action chunk of every sampler, eager and compiled, through the DenoiserRuntime.

    python scripts/benchmark_latency.py --model small --quick --out results/latency
    python scripts/benchmark_latency.py --model paper --batches 1 --repeats 1 --out results/latency
    python scripts/benchmark_latency.py --model paper --device cuda --out results/latency   # + cuda_graph

The policy's real U-Net (configs/policy/<model>.yaml, obs_dim 20, action_dim 2; random weights, which
is fine for latency but not for rounds: a trained net's rounds differ) and its real schedule (100
DDPM steps, squaredcos_cap_v2). Every sampler at each batch size starts from the same x_T, per-step
noise and conditioning as ``ddpm``, in the same run, so the sequential baseline is measured beside it.
Per (batch, mode) one runtime serves every sampler; compiled and CUDA-graph runtimes are warmed on
every row bucket the eager runs used (``--compile-buckets``) before anything is timed (compile time
reported apart), and the run fails if anything compiles or is captured while timed.

The "projected" column is a projection, not a measurement: the sum over a run's sequential denoiser
calls of the per-call latency of the 65.8M-parameter U-Net in CUDA graphs on the device its table
names (``policy_sampler.projection.device_call_table``: the newest docs/gpu/ report measured by
scripts/gpu_check.sh, else the H100 table measured outside the repo: 1.59 ms at 1 row, 2.10 ms at
100, linear in between and along the further points), assuming nothing else costs time (the
per-round overhead the device check measures is left out). Beside it, sequential DDPM projected on
the same table (100 one-row calls).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy_sampler import DiffusionPolicy
from policy_sampler.benchmark import machine_name, policy_preset
from policy_sampler.projection import device_call_table
from policy_sampler.runtime import DenoiserRuntime, coalesce_buckets
from policy_sampler.samplers import available_samplers, make_sampler
from policy_sampler.serialization import atomic_write_bytes, jsonable

OBS_DIM, ACTION_DIM = 20, 2
# (label, sampler, options): each registered sampler at its default settings.
SAMPLERS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ddpm", "ddpm", {}),
    ("ddim eta=0", "ddim", {}),
    ("picard", "picard", {}),
    ("paradigms w=64", "paradigms", {}),
    ("speculative", "speculative", {}),
    ("autospeculative", "autospeculative", {}),
    ("speculative_picard", "speculative_picard", {}),
)


def build_policy(model: str, device: torch.device) -> DiffusionPolicy:
    """The DiffusionPolicy of configs/policy/<model>.yaml with random weights (seed 0)."""
    config = policy_preset(model, obs_dim=OBS_DIM, action_dim=ACTION_DIM)
    torch.manual_seed(0)
    return DiffusionPolicy(config).to(device).eval()


def bucket_set(rows: set[int], kind: str) -> tuple[int, ...]:
    """The row buckets a compiled or graphed runtime gets: the row counts the eager runs used (within
    5%: 100-row calls run in the 101-row bucket), or each rounded up to a power of two (fewer shapes,
    up to 2x padding: nearly free on a GPU, paid in full on a CPU)."""
    if kind == "pow2":
        return tuple(sorted({1 << (r - 1).bit_length() for r in rows}))
    return coalesce_buckets(rows)


def error_status(name: str, err: float) -> str:
    """What the error against the same-noise ddpm path means for this sampler."""
    if name == "ddpm":
        return f"{err:.1e} (same path)"
    if make_sampler(name).exact:
        return "exact (law)"
    if name == "ddim":
        return f"{err:.2f} (other chain)"
    return f"{err:.1e}"


def timed(fn, device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, (time.perf_counter() - start) * 1e3


def measure(policy: DiffusionPolicy, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    schedule = policy.schedule
    c = policy.config
    event, cond_shape = (c.horizon, c.action_dim), (c.global_cond_dim,)
    samplers = [s for s in SAMPLERS if s[1] in available_samplers() and (not args.samplers or s[1] in args.samplers)]
    rows: list[dict[str, Any]] = []
    compile_s: dict[str, float] = {}
    table = device_call_table()
    for batch in args.batches:
        g = torch.Generator().manual_seed(batch)
        x_T = torch.randn(batch, *event, generator=g).to(device)
        noise = torch.randn(schedule.num_steps, batch, *event, generator=g).to(device)
        cond = torch.randn(batch, *cond_shape, generator=g).to(device)
        observed: set[int] = set()  # row counts the eager runs called the denoiser with
        reference = None
        for mode in args.modes:
            if mode == "eager":
                runtime = DenoiserRuntime(policy.denoiser(), mode="eager", row_buckets=None)
            else:
                buckets = bucket_set(observed, args.compile_buckets)
                runtime = DenoiserRuntime(policy.denoiser(), mode=mode, row_buckets=buckets,
                                          compile_backend=args.compile_backend)
                _, ms = timed(lambda: runtime.warmup(event, cond_shape, device=device), device)
                compile_s[f"{mode} batch {batch}"] = ms / 1e3
                print(f"batch {batch} {mode}: {len(buckets)} buckets {buckets} ready in {ms / 1e3:.0f} s", flush=True)
            ready = (runtime.compilations, runtime.captures)
            for label, name, opts in samplers:
                def chunk():
                    with torch.no_grad():
                        return make_sampler(name, **opts).sample(
                            runtime, schedule, x_T, cond=cond, noise=noise,
                            generator=torch.Generator(device=device).manual_seed(7))
                if device.type == "cuda":
                    chunk()  # untimed: allocator and cuDNN warm-up
                times, result = [], None
                for _ in range(args.repeats):
                    result, ms = timed(chunk, device)
                    times.append(ms)
                if mode == "eager":
                    observed.update(result.rows_per_call)
                    reference = result.sample if name == "ddpm" else reference
                err = float((result.sample - reference).abs().max()) if reference is not None else float("nan")
                projected = table.project(result.rows_per_call)
                rows.append(dict(
                    batch=batch, mode=mode, label=label, sampler=name, rounds=result.rounds, nfe=result.nfe,
                    rows_per_call=result.rows_per_call, times_ms=times,
                    p50_ms=float(np.percentile(times, 50)), p99_ms=float(np.percentile(times, 99)),
                    max_err_vs_ddpm=err, vs_ddpm=error_status(name, err), projected_ms=projected,
                    projected_on=table.device, ddpm_projected_ms=table.project([batch] * schedule.num_steps),
                ))
                print(f"  {label:28s} b={batch} {mode:10s} rounds {result.rounds:3d} p50 {rows[-1]['p50_ms']:9.1f} ms",
                      flush=True)
            if (runtime.compilations, runtime.captures) != ready:
                raise RuntimeError(f"{mode} runtime compiled or captured during the timed runs: {ready} -> "
                                   f"{(runtime.compilations, runtime.captures)}")
    return dict(rows=rows, compile_s=compile_s, projection=dict(device=table.device, source=table.source,
                                                                 points=table.points))


def precision_report(policy: DiffusionPolicy, device: torch.device) -> str:
    """Max abs error against float32 of bf16 autocast (and TF32 on CUDA): one denoiser call at 1 and 101
    rows, and a whole 100-step ddpm chunk at batch 1 on the same noise."""
    c, schedule = policy.config, policy.schedule
    event, cond_shape = (c.horizon, c.action_dim), (c.global_cond_dim,)
    variants = [("bf16 autocast", dict(dtype=torch.bfloat16))]
    if device.type == "cuda":
        variants.append(("tf32", dict(tf32=True)))
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(1, *event, generator=g).to(device)
    noise = torch.randn(schedule.num_steps, 1, *event, generator=g).to(device)
    reference = DenoiserRuntime(policy.denoiser())
    lines = ["| precision | call, 1 row | call, 101 rows | ddpm chunk (100 steps) |", "|---|---|---|---|"]
    for label, opts in variants:
        runtime = DenoiserRuntime(policy.denoiser(), **opts)
        errors = []
        for rows in (1, 101):
            x = torch.randn(rows, *event, generator=g).to(device)
            t = torch.randint(0, c.num_train_timesteps, (rows,), generator=g).to(device)
            cond = torch.randn(rows, *cond_shape, generator=g).to(device)
            errors.append(float((runtime(x, t, cond) - reference(x, t, cond)).abs().max()))
        cond = torch.randn(1, *cond_shape, generator=g).to(device)
        chunks = [make_sampler("ddpm").sample(r, schedule, x_T, cond=cond, noise=noise).sample
                  for r in (runtime, reference)]
        errors.append(float((chunks[0] - chunks[1]).abs().max()))
        lines.append(f"| {label} | " + " | ".join(f"{e:.1e}" for e in errors) + " |")
    return "\n".join(lines)


def per_call_report(policy: DiffusionPolicy, device: torch.device, repeats: int) -> str:
    """p50 latency of one eager denoiser call at the row counts the samplers use (1 and 8: ddpm; 64:
    a paradigms window; 101: a speculative window; 808: eight of them), and its ratio to one row."""
    c = policy.config
    g = torch.Generator().manual_seed(0)
    denoiser = policy.denoiser()
    lines = ["| rows | p50 ms per call | x one row | ms per row |", "|---|---|---|---|"]
    one = None
    for rows in (1, 8, 64, 101, 808):
        x = torch.randn(rows, c.horizon, c.action_dim, generator=g).to(device)
        t = torch.randint(0, c.num_train_timesteps, (rows,), generator=g).to(device)
        cond = torch.randn(rows, c.global_cond_dim, generator=g).to(device)
        denoiser(x, t, cond)
        ms = float(np.median([timed(lambda: denoiser(x, t, cond), device)[1] for _ in range(repeats)]))
        one = one or ms
        lines.append(f"| {rows} | {ms:.1f} | {ms / one:.1f} | {ms / rows:.2f} |")
    return "\n".join(lines)


def format_tables(report: dict[str, Any]) -> str:
    on = report["projection"]["device"]
    lines = [f"## {report['model']}: {report['params_m']:.1f}M-parameter U-Net, random weights, "
             f"{report['steps']} DDPM steps", f"Measured on {report['machine']}; {report['repeats']} repeat(s) per "
             f"row (p99 of few repeats is their max). {on} columns are projections from the per-call table "
             f"measured on {on} ({report['projection']['source']}), not measurements.", ""]
    for batch in sorted({r["batch"] for r in report["rows"]}):
        rows = [r for r in report["rows"] if r["batch"] == batch]
        base = next((r["p50_ms"] for r in rows if r["sampler"] == "ddpm" and r["mode"] == "eager"), float("nan"))
        lines += [f"### batch {batch}", "",
                  "| sampler | mode | rounds | NFE | p50 ms | p99 ms | x eager ddpm | vs ddpm (max abs err) | "
                  f"{on} ms (projected) | x ddpm on {on} (projected) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            h = r["projected_ms"]
            lines.append(
                f"| {r['label']} | {r['mode']} | {r['rounds']} | {r['nfe']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{base / r['p50_ms']:.2f} | {r['vs_ddpm']} | {h:.1f} | {r['ddpm_projected_ms'] / h:.2f} |")
        lines.append("")
    for key, s in report["compile_s"].items():
        lines.append(f"- warm-up ({key}): {s:.0f} s, before timing")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in report["rows"]})
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.5), squeeze=False)
    markers = {"eager": "o", "compile": "s", "cuda_graph": "^"}
    for ax, batch in zip(axes[0], batches):
        rows = [r for r in report["rows"] if r["batch"] == batch]
        for mode in dict.fromkeys(r["mode"] for r in rows):
            sel = [r for r in rows if r["mode"] == mode]
            ax.scatter([r["rounds"] for r in sel], [r["p50_ms"] for r in sel], marker=markers.get(mode, "x"),
                       label=f"{mode} (measured p50)")
        proj = [r for r in rows if r["mode"] == rows[0]["mode"]]
        ax.scatter([r["rounds"] for r in proj], [r["projected_ms"] for r in proj], marker="*", color="k",
                   label=f"{report['projection']['device']} (projected)")
        for r in proj:
            ax.annotate(r["sampler"], (r["rounds"], r["p50_ms"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rounds (sequential denoiser calls)")
        ax.set_ylabel("latency per chunk, ms")
        ax.set_title(f"{report['model']} U-Net, batch {batch}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Measured on {report['machine']}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_name(path.name + ".tmp.png"), dpi=110)
    plt.close(fig)
    path.with_name(path.name + ".tmp.png").replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("small", "paper"), default="small", help="configs/policy/<model>.yaml")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", choices=("eager", "compile", "cuda_graph"),
                        help="default: eager compile (+ cuda_graph on cuda)")
    parser.add_argument("--repeats", type=int, default=10, help="timed chunks per row")
    parser.add_argument("--samplers", nargs="+", help="only these sampler names")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-buckets", choices=("exact", "pow2"), default="exact",
                        help="row buckets of compiled/graphed runtimes: the eager runs' row counts, or pow2")
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--out", default="results/latency", help="folder for the JSON, table and plot")
    parser.add_argument("--precision", action="store_true",
                        help="only print the bf16 (and TF32 on CUDA) error against float32, then exit")
    parser.add_argument("--per-call", action="store_true",
                        help="only print the eager per-call latency against rows, then exit")
    parser.add_argument("--plot", help="also write the latency-vs-rounds plot here (e.g. docs/images/...)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.quick:
        args.repeats = min(args.repeats, 3)
    if args.repeats < 1 or any(b < 1 for b in args.batches):
        parser.error("--repeats and --batches must be positive")
    if args.samplers and set(args.samplers) - {s[1] for s in SAMPLERS}:
        parser.error(f"--samplers must be among {[s[1] for s in SAMPLERS]}")
    args.modes = args.modes or (["eager", "compile", "cuda_graph"] if device.type == "cuda" else ["eager", "compile"])
    if "eager" not in args.modes:
        args.modes = ["eager", *args.modes]  # the eager ddpm baseline and reference path
    policy = build_policy(args.model, device)
    if args.precision:
        print(f"{args.model} U-Net, random weights, on {machine_name(device)}: max abs error against float32\n")
        print(precision_report(policy, device), flush=True)
        return
    if args.per_call:
        print(f"{args.model} U-Net, one eager call, on {machine_name(device)}, {args.repeats} repeats\n")
        print(per_call_report(policy, device, args.repeats), flush=True)
        return
    report = dict(model=args.model, machine=machine_name(device), device=device.type, repeats=args.repeats,
                  compile_backend=args.compile_backend, compile_buckets=args.compile_buckets,
                  params_m=policy.ema_model.num_parameters() / 1e6, steps=policy.schedule.num_steps,
                  weights="random (seed 0)")
    report.update(measure(policy, args, device))
    table = format_tables(report)
    print(table, flush=True)
    out = Path(args.out)
    stem = f"latency_{args.model}_{device.type}"
    atomic_write_bytes(out / f"{stem}.json", json.dumps(jsonable(report), indent=1).encode())
    atomic_write_bytes(out / f"{stem}.md", (table + "\n").encode())
    plot(report, out / f"{stem}_vs_rounds.png")
    if args.plot:
        plot(report, Path(args.plot))
    print(f"wrote {out / stem}.json, .md and _vs_rounds.png", flush=True)


if __name__ == "__main__":
    main()
