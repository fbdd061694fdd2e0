"""The device check's measurements (scripts/gpu_check.py runs them as budgeted sections).

Each function takes the section's ``deadline`` (a ``time.perf_counter()`` value) and stops starting
new work past it, recording what it skipped; a failed cell or sampler records its error and the rest
still measure. Sizes come from a :class:`Preset`.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from policy_sampler import DiffusionPolicy
from policy_sampler.benchmark import call_latencies_ms, machine_name, policy_preset
from policy_sampler.policy import DiffusionPolicyConfig
from policy_sampler.projection import H100_CALL_TABLE, CallTable, table_from_report
from policy_sampler.runtime import DenoiserRuntime, bucket_for, coalesce_buckets, host_sync_audit, sampler_buckets
from policy_sampler.samplers import available_samplers, make_sampler

ROOT = Path(__file__).resolve().parent.parent
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


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


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
    """``pytest -m gpu`` on the test files that have GPU tests (found by their marker, so modules that
    need packages the device lacks are never collected); all skipped without CUDA."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if "mark.gpu" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", *files, "-q", "-p", "no:cacheprovider"]
    timeout = max(5.0, deadline - time.perf_counter())
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        text, rc = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:  # its captured output may be bytes even in text mode
        parts = [p.decode(errors="replace") if isinstance(p, bytes) else (p or "") for p in (exc.stdout, exc.stderr)]
        text, rc = "".join(parts) + f"\nTIMEOUT after {timeout:.0f} s", None
    (out / "pytest.log").write_text(text)
    last = [line for line in text.splitlines() if line.strip()][-1:] or [""]
    if rc not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"pytest -m gpu exited {rc}: {last[0]} (see pytest.log)")
    return dict(command=" ".join(cmd[1:]), returncode=rc, summary=last[0])


# ---------------------------------------------------------------------------------------------- per call
def per_call(deadline: float, preset: Preset, device: torch.device, modes: tuple[str, ...],
             rows_out: list[dict[str, Any]]) -> None:
    """Per-call latency of each model at each row count, mode and precision (``modes`` of this pass).
    Compile cells (``preset.compile_rows``, row counts first so every precision gets its 1-row and
    101-row cells early) start only if one more compile fits the budget; two failed compiles in a
    row end the pass. A failed cell records its error and the pass goes on."""
    precisions = [p for p in preset.precisions if p != "tf32" or device.type == "cuda"]
    modes = tuple(m for m in modes if m != "cuda_graph" or device.type == "cuda")
    if modes == ("compile",):
        cells = [(model, precision, "compile", rows) for rows in preset.compile_rows
                 for model in preset.models for precision in precisions]
    else:
        cells = [(model, precision, mode, rows) for model in preset.models for precision in precisions
                 for mode in modes for rows in preset.rows]
    policies: dict[str, DiffusionPolicy] = {}
    runtimes: dict[tuple[str, str, str], DenoiserRuntime] = {}
    compile_seconds: list[float] = []
    failures = 0
    for model, precision, mode, rows in cells:
        policy = policies.get(model) or policies.setdefault(model, random_policy(model, device, None))
        c = policy.config
        row = dict(model=model, params_m=round(policy.ema_model.num_parameters() / 1e6, 2), mode=mode,
                   precision=precision, rows=rows, p50_ms=None, p99_ms=None)
        rows_out.append(row)
        guess = 1.5 * max(compile_seconds, default=preset.compile_guess_s) if mode == "compile" else 1.0
        if failures >= 2 or time.perf_counter() + guess > deadline:
            row["status"] = "skipped: " + ("two compiles failed" if failures >= 2 else "time budget")
            continue
        key = (model, precision, mode)
        if key not in runtimes:
            buckets = preset.compile_rows if mode == "compile" else preset.rows
            runtimes[key] = DenoiserRuntime(policy.denoiser(), mode=mode, row_buckets=buckets,
                                            compile_backend=preset.compile_backend, **PRECISIONS[precision])
        runtime = runtimes[key]
        g = torch.Generator().manual_seed(rows)
        x = torch.randn(rows, c.horizon, c.action_dim, generator=g).to(device)
        t = torch.randint(0, c.num_train_timesteps, (rows,), generator=g).to(device)
        cond = torch.randn(rows, c.global_cond_dim, generator=g).to(device)
        t0 = time.perf_counter()
        try:
            runtime(x, t, cond)  # compile or capture this bucket
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if mode == "compile":
                compile_seconds.append(time.perf_counter() - t0)
                row["compile_s"] = round(compile_seconds[-1], 1)
            row.update(stats_ms(call_latencies_ms(lambda: runtime(x, t, cond), device, preset.call_repeats)),
                       status="ok")
            failures = 0
        except Exception as exc:  # one cell's failure is a finding; the others still measure
            failures += mode == "compile"
            row["status"] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
            log(f"  {model} {precision} {mode} {rows} rows: {row['status']}")
    runtimes.clear()
    free(device)


# ---------------------------------------------------------------------------------------------- samplers
def sampler_configs() -> list[tuple[str, str, dict[str, Any]]]:
    return [(name, name, {}) for name in available_samplers()] + list(EXTRA_CONFIGS)


def runtime_buckets(schedule, event, cond_dim: int, batches: tuple[int, ...]) -> tuple[int, ...]:
    """Every row count the samplers call with at these batch sizes (5% coalesced); samplers that size
    their windows per row add the powers of two up to batch * (K + 1) (``sampler_buckets``)."""
    rows: set[int] = set()
    for _, name, options in sampler_configs():
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


def attempt(measure: Callable[[], dict[str, Any]], where: dict[str, Any]) -> dict[str, Any]:
    """``measure()`` with status ok, or ``where`` with the error (one sampler's failure is a finding;
    the others still measure)."""
    try:
        return dict(measure(), status="ok")
    except Exception as exc:
        log(f"  {where.get('name')} b={where.get('batch')}: failed: {type(exc).__name__}: {exc}")
        return dict(where, status=f"failed: {type(exc).__name__}: {str(exc)[:300]}")


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
                where = dict(model=f"{preset.sampler_model} (random weights)", batch=batch, precision=precision,
                             mode=preset.sampler_mode, steps=schedule.num_steps)
                row = attempt(lambda: chunk_rows(label, name, options, run, device, preset.chunk_repeats, table,
                                                 calls, where), dict(where, name=label, sampler=name))
                rows_out.append(row)
                if row["status"] != "ok":
                    continue
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
            where = dict(model=f"trained {checkpoint.name}", batch=batch, precision="fp32",
                         mode=preset.sampler_mode, steps=schedule.num_steps)
            row = attempt(lambda: chunk_rows(label, name, options, run, device, preset.chunk_repeats, None, calls,
                                             where, paper_table=paper), dict(where, name=label, sampler=name))
            rows_out.append(row)
            if row["status"] != "ok":
                continue
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
