"""The device check: every figure the project quotes for a GPU, measured in one command.

    bash scripts/gpu_check.sh [--out DIR]            # a CUDA device: under 8 minutes
    bash scripts/gpu_check.sh --cpu [--out DIR]      # the same code paths at small sizes on the CPU
    bash scripts/gpu_check.sh --cpu --tiny           # smaller still (the test suite runs this)

Run through scripts/gpu_check.sh, which installs the wheels a lent machine lacks (docs/gpu/README.md).
Sections, each within its own time budget (a section that would overrun is skipped and the report
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
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpu_check_report import write_report  # noqa: E402  (scripts/ is on sys.path when run as a script)

from policy_sampler import DiffusionPolicy  # noqa: E402
from policy_sampler.benchmark import call_latencies_ms, machine_name, policy_preset  # noqa: E402
from policy_sampler.policy import DiffusionPolicyConfig  # noqa: E402
from policy_sampler.projection import H100_CALL_TABLE, CallTable, table_from_report  # noqa: E402
from policy_sampler.runtime import (  # noqa: E402
    DenoiserRuntime,
    bucket_for,
    coalesce_buckets,
    host_sync_audit,
    sampler_buckets,
)
from policy_sampler.samplers import available_samplers, make_sampler  # noqa: E402

OBS_DIM, ACTION_DIM = 20, 2  # the random-weight U-Nets' sizes (as scripts/benchmark_latency.py)
TASK = "policy_sampler_envs:PolicySampler/ObstacleReach-v0"
PRECISIONS = {"fp32": dict(tf32=False), "tf32": dict(tf32=True), "bf16": dict(dtype=torch.bfloat16)}
# (label, sampler, options): every registered sampler at its defaults, then the configuration the
# docs quote for an exact chunk (speculative_picard with tau = 30 and trimmed windows).
EXTRA_CONFIGS = (("speculative_picard tau=30 trim", "speculative_picard",
                  {"prior_precision": 30.0, "trim_window": True}),)


@dataclass(frozen=True)
class Preset:
    """Sizes of one run: what each section measures, and the whole run's time budget."""

    models: tuple[str, ...]  # per-call table: 'tiny', 'small', 'paper'
    rows: tuple[int, ...]
    modes: tuple[str, ...]
    precisions: tuple[str, ...]
    call_repeats: int
    sampler_model: str
    sampler_mode: str
    sampler_precisions: tuple[str, ...]
    batches: tuple[int, ...]
    chunk_repeats: int
    steps: int | None  # inference steps of the random-weight samplers' schedule (None: the config's 100)
    episode_ticks: int
    budget_s: float
    compile_backend: str
    compile_rows: tuple[int, ...]  # compile cells, in order of priority (each compiles the U-Net once)
    compile_guess_s: float  # assumed time of the first compile (a cell starts only if it fits)
    run_pytest: bool


PRESETS = {
    "gpu": Preset(models=("paper", "small"), rows=(1, 8, 64, 101, 256, 1024),
                  modes=("eager", "cuda_graph", "compile"), precisions=("fp32", "tf32", "bf16"),
                  call_repeats=30, sampler_model="paper", sampler_mode="cuda_graph",
                  sampler_precisions=("fp32", "tf32"), batches=(1, 8), chunk_repeats=15, steps=None,
                  episode_ticks=100, budget_s=420.0, compile_backend="inductor", compile_rows=(1, 101, 8, 64, 256, 1024),
                  compile_guess_s=100.0, run_pytest=True),
    "cpu": Preset(models=("small",), rows=(1, 8, 64, 101), modes=("eager", "compile"),
                  precisions=("fp32", "bf16"), call_repeats=5, sampler_model="small", sampler_mode="eager",
                  sampler_precisions=("fp32",), batches=(1, 2), chunk_repeats=3, steps=None,
                  episode_ticks=20, budget_s=270.0, compile_backend="aot_eager", compile_rows=(1, 101, 8, 64),
                  compile_guess_s=30.0, run_pytest=True),
    "tiny": Preset(models=("tiny",), rows=(1, 8), modes=("eager", "compile"), precisions=("fp32", "bf16"),
                   call_repeats=2, sampler_model="tiny", sampler_mode="eager", sampler_precisions=("fp32",),
                   batches=(1, 2), chunk_repeats=2, steps=8, episode_ticks=4, budget_s=50.0,
                   compile_backend="aot_eager", compile_rows=(1,), compile_guess_s=5.0, run_pytest=False),
}
# seconds each section may take at most, as fractions of the whole budget (compile gets what is left)
SECTION_SHARE = {"pytest": 0.2, "per_call": 0.25, "samplers": 0.25, "trained": 0.12, "episode": 0.1,
                 "audit": 0.05}
MIN_SECTION_S = 10.0


class Clock:
    """The run's deadline; sections take at most their share of it and never start past it."""

    def __init__(self, total_s: float) -> None:
        self.start, self.total = time.perf_counter(), total_s

    def left(self) -> float:
        return self.total - (time.perf_counter() - self.start)

    def deadline(self, share_s: float) -> float:
        return time.perf_counter() + max(0.0, min(share_s, self.left()))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


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


# ---------------------------------------------------------------------------------------------- setup
def environment(device: torch.device) -> dict[str, Any]:
    """Device, driver, torch, CUDA and package versions."""
    from importlib import metadata

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    env: dict[str, Any] = dict(
        machine=machine_name(device), python=platform.python_version(), torch=torch.__version__,
        cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        torch_threads=torch.get_num_threads(), platform=platform.platform(),
        packages={p: version(p) for p in ("numpy", "diffusers", "huggingface-hub", "safetensors", "gymnasium",
                                          "mujoco", "triton", "pytest")},
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}", sm_count=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1))
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def unet_config(model: str) -> DiffusionPolicyConfig:
    if model == "tiny":
        return DiffusionPolicyConfig(obs_dim=OBS_DIM, action_dim=ACTION_DIM, down_dims=(8, 16), n_groups=4,
                                     diffusion_step_embed_dim=8)
    return policy_preset(model, obs_dim=OBS_DIM, action_dim=ACTION_DIM)


def random_policy(model: str, device: torch.device, steps: int | None) -> DiffusionPolicy:
    config = unet_config(model)
    if steps is not None:
        config = DiffusionPolicyConfig.from_dict(dict(config.to_dict(), num_inference_steps=steps))
    torch.manual_seed(0)
    return DiffusionPolicy(config).to(device).eval()


def stats_ms(times: list[float]) -> dict[str, float]:
    return dict(p50_ms=float(np.percentile(times, 50)), p99_ms=float(np.percentile(times, 99)))


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- pytest
def pytest_gpu(deadline: float, out: Path) -> dict[str, Any]:
    """``pytest -m gpu`` on the runtime tests (the CUDA-graph tests; all skipped without CUDA)."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/runtime", "-q", "-p", "no:cacheprovider"]
    timeout = max(5.0, deadline - time.perf_counter())
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        text, rc = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        text, rc = f"{exc.stdout or ''}{exc.stderr or ''}\nTIMEOUT after {timeout:.0f} s", None
    (out / "pytest.log").write_text(text if isinstance(text, str) else text.decode(errors="replace"))
    last = [line for line in str(text).splitlines() if line.strip()][-1:] or [""]
    if rc not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"pytest -m gpu exited {rc}: {last[0]} (see pytest.log)")
    return dict(command=" ".join(cmd[1:]), returncode=rc, summary=last[0])


# ---------------------------------------------------------------------------------------------- per call
def per_call(deadline: float, preset: Preset, device: torch.device, modes: tuple[str, ...],
             rows_out: list[dict[str, Any]]) -> None:
    """Per-call latency of each model at each row count, mode and precision (``modes`` of this pass;
    compile cells at ``preset.compile_rows`` only, each started only if a compile fits the budget)."""
    compile_seconds: list[float] = []
    for model in preset.models:
        policy = random_policy(model, device, None)
        c = policy.config
        event, cond_dim = (c.horizon, c.action_dim), c.global_cond_dim
        for precision in preset.precisions:
            if precision == "tf32" and device.type != "cuda":
                continue
            for mode in modes:
                if mode == "cuda_graph" and device.type != "cuda":
                    continue
                row_counts = preset.compile_rows if mode == "compile" else preset.rows
                runtime = DenoiserRuntime(policy.denoiser(), mode=mode, row_buckets=row_counts,
                                          compile_backend=preset.compile_backend, **PRECISIONS[precision])
                for rows in row_counts:
                    row = dict(model=model, params_m=round(policy.ema_model.num_parameters() / 1e6, 2), mode=mode,
                               precision=precision, rows=rows, p50_ms=None, p99_ms=None)
                    rows_out.append(row)
                    guess = 1.5 * max(compile_seconds, default=preset.compile_guess_s) if mode == "compile" else 1.0
                    if time.perf_counter() + guess > deadline:
                        row["status"] = "skipped: time budget"
                        continue
                    g = torch.Generator().manual_seed(rows)
                    x = torch.randn(rows, *event, generator=g).to(device)
                    t = torch.randint(0, c.num_train_timesteps, (rows,), generator=g).to(device)
                    cond = torch.randn(rows, cond_dim, generator=g).to(device)
                    t0 = time.perf_counter()
                    runtime(x, t, cond)  # compile or capture this bucket
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    if mode == "compile":
                        compile_seconds.append(time.perf_counter() - t0)
                        row["compile_s"] = round(compile_seconds[-1], 1)
                    row.update(stats_ms(call_latencies_ms(lambda: runtime(x, t, cond), device, preset.call_repeats)),
                               status="ok")
                del runtime
                free(device)


# ---------------------------------------------------------------------------------------------- samplers
def sampler_configs() -> list[tuple[str, str, dict[str, Any]]]:
    return [(name, name, {}) for name in available_samplers()] + list(EXTRA_CONFIGS)


def runtime_buckets(schedule, event, cond_dim: int, batches: tuple[int, ...]) -> tuple[int, ...]:
    """Every row count the fixed-width samplers call with at these batch sizes (5% coalesced); trimmed
    windows pad into these."""
    rows: set[int] = set()
    for _, name, options in sampler_configs():
        if options.get("trim_window"):
            continue
        rows.update(sampler_buckets(make_sampler(name, **options), schedule, event, list(batches), (cond_dim,)))
    return coalesce_buckets(rows)


def bucket_table(runtime: DenoiserRuntime, buckets: tuple[int, ...], event, cond_dim: int, device: torch.device,
                 repeats: int, deadline: float) -> dict[int, float]:
    """Measured p50 per-call latency (ms) at each bucket of a warmed runtime."""
    table = {}
    for rows in buckets:
        if time.perf_counter() > deadline:
            break
        x = torch.randn(rows, *event, device=device)
        t = torch.randint(0, 100, (rows,), device=device)
        cond = torch.randn(rows, cond_dim, device=device)
        table[rows] = float(np.median(call_latencies_ms(lambda: runtime(x, t, cond), device, repeats, warmup=1)))
    return table


def chunk_rows(label: str, name: str, options: dict[str, Any], run: Callable[[], Any], device: torch.device,
               repeats: int, table: CallTable | None, buckets: dict[int, float], extra: dict[str, Any],
               paper_table: CallTable | None = None) -> dict[str, Any]:
    """One sampler's per-chunk latency (host clock, from a synced device to the sampled chunk) with
    rounds, NFE, the projected latency and the measured per-round overhead."""
    result = run()  # warm-up (allocator, cuDNN, caches)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    rows_per_call = list(result.rows_per_call if hasattr(result, "rows_per_call") else result.info["rows_per_call"])
    row = dict(extra, name=label, sampler=name, options=options, rounds=result.rounds, nfe=result.nfe,
               rows_per_call=rows_per_call, **stats_ms(times))
    keys = sorted(buckets)
    if keys and max(rows_per_call) <= keys[-1]:
        calls = sum(buckets.get(bucket_for(r, keys), float("nan")) for r in rows_per_call)
        row.update(calls_ms=calls, overhead_ms_per_round=(row["p50_ms"] - calls) / max(result.rounds, 1))
    row["projected_ms"] = table.project(rows_per_call) if table else row.get("calls_ms")
    row["projected_on"] = table.device if table else "per-bucket calls measured here"
    row["h100_projected_ms"] = H100_CALL_TABLE.project(rows_per_call)
    if paper_table is not None:
        row["paper_projected_ms"] = paper_table.project(rows_per_call)
    return row


def samplers(deadline: float, preset: Preset, device: torch.device, per_call_rows: list[dict[str, Any]],
             rows_out: list[dict[str, Any]], keep: dict[str, Any]) -> None:
    """Every sampler at each batch size, in the preset's mode, on the random-weight model; an eager ddpm
    chunk at batch 1 as the sequential baseline. Keeps the first precision's runtime for the audit."""
    policy = random_policy(preset.sampler_model, device, preset.steps)
    c, schedule = policy.config, policy.schedule
    event, cond_dim = (c.horizon, c.action_dim), c.global_cond_dim
    buckets = runtime_buckets(schedule, event, cond_dim, preset.batches)
    report = dict(per_call=per_call_rows, device=machine_name(device))
    for precision in preset.sampler_precisions:
        table = table_from_report(report, model=preset.sampler_model, mode=preset.sampler_mode, precision=precision)
        runtime = DenoiserRuntime(policy.denoiser(), mode=preset.sampler_mode, row_buckets=buckets,
                                  **PRECISIONS[precision])
        t0 = time.perf_counter()
        runtime.warmup(event, (cond_dim,))
        log(f"  {preset.sampler_mode} {precision}: {len(buckets)} buckets ready in {time.perf_counter() - t0:.1f} s")
        calls = bucket_table(runtime, buckets, event, cond_dim, device, max(3, preset.call_repeats // 3), deadline)
        for batch in preset.batches:
            g = torch.Generator(device=device).manual_seed(batch)
            x_T = torch.randn(batch, *event, generator=g, device=device)
            cond = torch.randn(batch, cond_dim, generator=g, device=device)
            for label, name, options in sampler_configs():
                if time.perf_counter() > deadline:
                    rows_out.append(dict(name=label, sampler=name, batch=batch, precision=precision,
                                         status="skipped: time budget"))
                    continue
                sampler = make_sampler(name, **options)

                def run():
                    return sampler.sample(runtime, schedule, x_T, cond=cond,
                                          generator=torch.Generator(device=device).manual_seed(7))
                row = chunk_rows(label, name, options, run, device, preset.chunk_repeats, table, calls,
                                 dict(model=f"{preset.sampler_model} (random weights)", batch=batch,
                                      precision=precision, mode=preset.sampler_mode, steps=schedule.num_steps))
                rows_out.append(dict(row, status="ok"))
                log(f"  {label:32s} b={batch} {precision} rounds {row['rounds']:3d} p50 {row['p50_ms']:8.2f} ms "
                    f"projected {row['projected_ms'] or float('nan'):8.2f} ms")
        if "runtime" not in keep:
            keep.update(runtime=runtime, schedule=schedule, event=event, cond_dim=cond_dim)
        else:
            del runtime
            free(device)
    if time.perf_counter() < deadline:
        eager = DenoiserRuntime(policy.denoiser(), mode="eager", row_buckets=None, tf32=False)
        g = torch.Generator(device=device).manual_seed(1)
        x_T = torch.randn(1, *event, generator=g, device=device)
        cond = torch.randn(1, cond_dim, generator=g, device=device)
        row = chunk_rows("ddpm (eager, the sequential baseline)", "ddpm", {},
                         lambda: make_sampler("ddpm").sample(eager, schedule, x_T, cond=cond, generator=g),
                         device, max(2, preset.chunk_repeats // 5), None, {},
                         dict(model=f"{preset.sampler_model} (random weights)", batch=1, precision="fp32",
                              mode="eager", steps=schedule.num_steps))
        rows_out.append(dict(row, status="ok"))


def audit(deadline: float, device: torch.device, keep: dict[str, Any], rows_out: list[dict[str, Any]]) -> None:
    """Each sampler's whole run under the host-sync audit (after the timed runs warmed every cache):
    on CUDA any sync but ``tolist`` raises; allowed: one per round plus the final check (on the CPU,
    where host-side table reads count too, a few more)."""
    runtime, schedule, event, cond_dim = keep["runtime"], keep["schedule"], keep["event"], keep["cond_dim"]
    slack = 1 if device.type == "cuda" else 6
    for batch in (1, 2):
        g = torch.Generator(device=device).manual_seed(3)
        x_T = torch.randn(batch, *event, generator=g, device=device)
        cond = torch.randn(batch, cond_dim, generator=g, device=device)
        for label, name, options in sampler_configs():
            if time.perf_counter() > deadline:
                rows_out.append(dict(name=label, batch=batch, status="skipped: time budget"))
                continue
            sampler = make_sampler(name, **options)

            def run():
                return sampler.sample(runtime, schedule, x_T, cond=cond,
                                      generator=torch.Generator(device=device).manual_seed(5))
            run()
            row = dict(name=label, batch=batch, allowed=f"rounds + {slack}")
            try:
                with host_sync_audit(device) as count:
                    result = run()
                row.update(rounds=result.rounds, syncs=count.total, other=count.other,
                           status="ok" if count.total <= result.rounds + slack else "failed: too many syncs")
            except RuntimeError as exc:
                row.update(status="failed: a hidden sync", error=str(exc)[:500],
                           where=traceback.format_exc(limit=8)[-1500:])
            rows_out.append(row)
            log(f"  audit {label:32s} b={batch} {row['status']} ({row.get('syncs')} syncs, {row.get('rounds')} rounds)")


# ---------------------------------------------------------------------------------------------- trained
def task_observations(policy: DiffusionPolicy, count: int) -> tuple[dict[str, torch.Tensor], str]:
    """``count`` observation histories from the real task's resets (seeds 1000...), or, without the
    task's packages, uniform draws in the policy's training range (which the report states)."""
    c = policy.config
    try:
        import gymnasium

        env = gymnasium.make(TASK)
        states = [env.reset(seed=1000 + i)[0] for i in range(count)]
        env.close()
        obs = torch.as_tensor(np.stack(states), dtype=torch.float32)
        source = f"{TASK} resets, seeds 1000-{999 + count}"
    except Exception as exc:  # the task's packages are missing: say so, use the training range
        stats = policy.normalizer.stats()[c.obs_keys[0]]
        lo, hi = torch.tensor(stats["min"]), torch.tensor(stats["max"])
        obs = lo + (hi - lo) * torch.rand(count, lo.numel(), generator=torch.Generator().manual_seed(0))
        source = f"uniform in the training range ({type(exc).__name__}: {exc})"
    history = obs.unsqueeze(1).expand(count, c.n_obs_steps, obs.shape[-1]).contiguous()
    return {c.obs_keys[0]: history}, source


def trained(deadline: float, preset: Preset, device: torch.device, checkpoint: Path, per_call_rows: list[dict[str, Any]],
            rows_out: list[dict[str, Any]], keep: dict[str, Any]) -> dict[str, Any]:
    """Every sampler through ``predict_action`` of the trained policy, at each batch size, in the
    preset's mode: real rounds. ``paper_projected_ms``: those rounds on the paper-sized U-Net's per-call
    table measured here."""
    policy = DiffusionPolicy.load(checkpoint, device=device)
    c = policy.config
    schedule = policy.schedule_for(preset.steps)
    event, cond_dim = (c.horizon, c.action_dim), c.global_cond_dim
    # the episode runs the policy's own schedule at batch 1 (the same one unless --tiny shortens it)
    buckets = coalesce_buckets(set(runtime_buckets(schedule, event, cond_dim, preset.batches))
                               | set(runtime_buckets(policy.schedule, event, cond_dim, (1,))))
    runtime = policy.set_runtime(preset.sampler_mode, row_buckets=buckets, tf32=False)
    runtime.warmup(event, (cond_dim,))
    calls = bucket_table(runtime, buckets, event, cond_dim, device, max(3, preset.call_repeats // 3), deadline)
    obs, source = task_observations(policy, max(preset.batches))
    paper = table_from_report(dict(per_call=per_call_rows, device=machine_name(device)), model="paper",
                              mode=preset.sampler_mode, precision="fp32")
    for batch in preset.batches:
        batch_obs = {k: v[:batch] for k, v in obs.items()}
        for label, name, options in sampler_configs():
            if time.perf_counter() > deadline:
                rows_out.append(dict(name=label, batch=batch, status="skipped: time budget"))
                continue

            def run():
                return policy.predict_action(batch_obs, sampler=name, num_inference_steps=preset.steps,
                                             generator=torch.Generator(device=device).manual_seed(9), **options)
            row = chunk_rows(label, name, options, run, device, preset.chunk_repeats, None, calls,
                             dict(model=f"trained {checkpoint.name}", batch=batch, precision="fp32",
                                  mode=preset.sampler_mode, steps=schedule.num_steps), paper_table=paper)
            rows_out.append(dict(row, status="ok"))
            log(f"  trained {label:32s} b={batch} rounds {row['rounds']:3d} p50 {row['p50_ms']:8.2f} ms")
    keep.update(policy=policy)
    return dict(checkpoint=str(checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint),
                params_m=round(policy.ema_model.num_parameters() / 1e6, 2), observations=source,
                buckets=list(buckets))


def episode(deadline: float, preset: Preset, keep: dict[str, Any], sampler: str = "speculative_picard",
            period_s: float = 0.1) -> dict[str, Any]:
    """One ObstacleReach episode with ChunkRunner at 10 Hz (wall clock), through the contract's calls
    only; the policy's runtime was warmed on every bucket (the fallback's one-row DDIM calls too)."""
    import gymnasium

    from policy_sampler.control import ChunkRunner

    policy = keep["policy"]
    env = gymnasium.make(TASK)
    runner = ChunkRunner(policy, sampler=sampler, budget_s=period_s)
    obs, _ = env.reset(seed=2024)
    runner.reset()
    act_ms, late, success, ticks = [], 0, False, 0
    next_tick = time.perf_counter()
    for ticks in range(1, preset.episode_ticks + 1):
        if time.perf_counter() > deadline:
            break
        t0 = time.perf_counter()
        action = runner.act(obs)
        act_ms.append((time.perf_counter() - t0) * 1e3)
        late += act_ms[-1] > period_s * 1e3
        obs, _, terminated, truncated, info = env.step(action)
        success = success or bool(info.get("is_success", False))
        if terminated or truncated:
            break
        next_tick += period_s
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    env.close()
    stats = runner.stats()
    return dict(sampler=sampler, period_s=period_s, ticks=ticks, success=success, act_over_budget=late,
                act_p50_ms=float(np.percentile(act_ms, 50)), act_max_ms=float(max(act_ms)),
                stats={k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool, type(None)))})


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

    steps: list[tuple[str, float, Callable[[float], Any], str | None]] = []
    if preset.run_pytest:
        steps.append(("pytest -m gpu", share["pytest"], lambda d: pytest_gpu(d, out), "pytest"))
    steps += [
        ("per-call latency (eager, cuda_graph)", share["per_call"],
         lambda d: per_call(d, preset, device, ("eager", "cuda_graph"), summary["per_call"]), None),
        ("samplers (random weights)", share["samplers"],
         lambda d: samplers(d, preset, device, summary["per_call"], summary["samplers"], keep), None),
        ("host-sync audit", share["audit"], lambda d: audit(d, device, keep, summary["audit"]), None),
        ("samplers (trained policy)", share["trained"],
         lambda d: trained(d, preset, device, Path(args.policy), summary["per_call"], summary["samplers"], keep),
         "trained"),
        ("ChunkRunner episode at 10 Hz", share["episode"], lambda d: episode(d, preset, keep), "episode"),
        ("per-call latency (compile)", clock.total,
         lambda d: per_call(d, preset, device, ("compile",), summary["per_call"]), None),
    ]
    for title, budget, fn, key in steps:
        if title == "host-sync audit":
            if "runtime" not in keep:
                sections.append(dict(name=title, status="skipped", seconds=0.0, note="no warmed sampler runtime"))
                continue
        if title == "ChunkRunner episode at 10 Hz" and "policy" not in keep:
            sections.append(dict(name=title, status="skipped", seconds=0.0, note="no trained policy loaded"))
            continue
        result = run_section(sections, title, clock, budget, fn)
        if key is not None:
            summary[key] = result
        if title == "host-sync audit":
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
    bad = [a for a in summary["audit"] if a.get("status") != "ok"]
    lines.append(f"  audit: {len(summary['audit']) - len(bad)} ok, {len(bad)} not ok")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
