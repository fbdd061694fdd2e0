"""Side-by-side sampler measurements: rounds, NFE, wall time, memory, error against ``ddpm``.

Every sampler runs on the same denoiser, schedule, initial noise and per-step noise as ``ddpm``, so
the error column is pathwise (exact-law samplers differ pathwise by design and are checked in law by
the tests instead). Wall time is what this machine measured; the projected column is a *projection*:
the sum over a sampler's sequential calls of the per-call latency of the 65.8M-parameter DiffusionPolicy
U-Net captured in CUDA graphs, measured on the device the table names
(:func:`policy_sampler.projection.device_call_table`: the newest report in docs/gpu/, else an H100
table measured outside the repo), interpolated in the rows of the call.
"""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import psutil
import torch

from policy_sampler.projection import H100_CALL_TABLE, REPO, CallTable, device_call_table
from policy_sampler.samplers import SampleResult, available_samplers, make_sampler
from policy_sampler.schedule import NoiseSchedule

if TYPE_CHECKING:
    from policy_sampler.policy import DiffusionPolicyConfig

# (label, sampler name, options): every configuration a benchmark table compares.
SAMPLER_CONFIGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ddpm", "ddpm", {}),
    ("ddim eta=0 (other chain)", "ddim", {"eta": 0.0}),
    ("picard", "picard", {}),
    ("paradigms", "paradigms", {}),
    ("paradigms w=32", "paradigms", {"window": 32}),
    ("paradigms w=32 paper init", "paradigms", {"window": 32, "init": "copy"}),
    ("speculative L=4", "speculative", {"lookahead": 4}),
    ("speculative L=16", "speculative", {"lookahead": 16}),
    ("speculative (adaptive window)", "speculative", {}),
    ("speculative L=end", "speculative", {"adaptive_window": False}),
    ("autospeculative", "autospeculative", {}),
    ("speculative_picard (defaults: adaptive, tau=30)", "speculative_picard", {}),
    ("speculative_picard full window tau=30", "speculative_picard", {"adaptive_window": False}),
    ("speculative_picard full window tau=10", "speculative_picard", {"adaptive_window": False, "prior_precision": 10.0}),
    ("speculative_picard frozen", "speculative_picard", {"prior_precision": None}),
)


def projected_h100_ms(rows_per_call: Sequence[int]) -> float:
    """Projected H100 latency of a run (the H100 table measured outside the repo, issue 7)."""
    return H100_CALL_TABLE.project(rows_per_call)


def machine_name(device: torch.device) -> str:
    """A line naming the hardware the wall times come from."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


def call_latencies_ms(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 3) -> list[float]:
    """Latency (ms) of ``repeats`` isolated calls of ``fn`` after ``warmup`` untimed ones: on CUDA, events
    recorded around each call with the device idle before it (so launch gaps count, as in a control
    loop), on the CPU the host clock."""
    for _ in range(warmup):
        fn()
    times = []
    cuda = device.type == "cuda"
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def policy_preset(model: str, **fields: Any) -> "DiffusionPolicyConfig":
    """The DiffusionPolicyConfig of ``configs/policy/<model>.yaml`` ('small', 'paper') with ``fields``
    added (e.g. obs_dim, action_dim); read with PyYAML, so it needs neither hydra nor omegaconf."""
    import yaml

    from policy_sampler.policy import DiffusionPolicyConfig

    path = REPO / "configs" / "policy" / f"{model}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown policy preset {model!r}: no {path}")
    return DiffusionPolicyConfig.from_dict(dict(yaml.safe_load(path.read_text()), **fields))


class _PeakRSS:
    """Peak resident memory above the starting point, sampled every millisecond (CPU runs)."""

    def __enter__(self) -> "_PeakRSS":
        self._process = psutil.Process()
        self.base = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def megabytes(self) -> float:
        return (self.peak - self.base) / 2**20


@dataclass
class Case:
    """One benchmark problem: a denoiser with its schedule, sample shape and conditioning."""

    name: str
    denoiser: Callable
    schedule: NoiseSchedule
    event_shape: tuple[int, ...]
    cond_dim: int = 0
    seeds: int = 1


@dataclass
class Row:
    label: str
    sampler: str
    exact: bool
    rounds_mean: float
    rounds_max: int
    nfe_mean: float
    accepted_mean: float | None
    wall_ms: float
    peak_mb: float
    max_error: float
    projected_ms: float
    projected_on: str
    runs: list[dict[str, float]] = field(default_factory=list)


def _timed(fn: Callable[[], SampleResult], device: torch.device) -> tuple[SampleResult, float, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        torch.cuda.synchronize(device)
        return result, start.elapsed_time(end), (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with _PeakRSS() as memory:
        t0 = time.perf_counter()
        result = fn()
        wall = (time.perf_counter() - t0) * 1e3
    return result, wall, memory.megabytes


def run_case(
    case: Case,
    configs: Sequence[tuple[str, str, dict[str, Any]]] = SAMPLER_CONFIGS,
    device: torch.device = torch.device("cpu"),
    warmup: bool = False,
    progress: Callable[[str], None] | None = None,
    projection: CallTable | None = None,
) -> list[Row]:
    """Run every registered configuration on ``case`` for each seed (one condition per run) and
    summarize; ``warmup`` runs each configuration once first (for CUDA timings); ``projection``: the
    per-call table of the projected column (default :func:`device_call_table`)."""
    projection = projection or device_call_table()
    registered = set(available_samplers())
    draws = []
    for seed in range(case.seeds):
        g = torch.Generator().manual_seed(seed)
        x_T = torch.randn(1, *case.event_shape, generator=g)
        noise = torch.randn(case.schedule.num_steps, 1, *case.event_shape, generator=g)
        cond = torch.randn(1, case.cond_dim, generator=g) if case.cond_dim else None
        draws.append(tuple(None if v is None else v.to(device) for v in (x_T, noise, cond)))

    def sample(name: str, options: dict[str, Any], seed: int) -> SampleResult:
        x_T, noise, cond = draws[seed]
        generator = torch.Generator(device=device).manual_seed(1000 + seed)
        return make_sampler(name, **options).sample(
            case.denoiser, case.schedule, x_T, cond=cond, noise=noise, generator=generator)

    with torch.inference_mode():
        references = [sample("ddpm", {}, seed).sample for seed in range(case.seeds)]
        rows = []
        for label, name, options in configs:
            if name not in registered:
                continue
            if progress:
                progress(label)
            if warmup:
                sample(name, options, 0)
            runs = []
            for seed in range(case.seeds):
                result, wall, peak = _timed(lambda: sample(name, options, seed), device)
                runs.append({
                    "rounds": result.rounds, "nfe": result.nfe, "wall_ms": wall, "peak_mb": peak,
                    "max_error": float((result.sample - references[seed]).abs().max()),
                    "projected_ms": projection.project(result.rows_per_call),
                    "accepted": result.info.get("mean_accepted_length", float("nan")),
                })
            accepted = [r["accepted"] for r in runs if r["accepted"] == r["accepted"]]
            rows.append(Row(
                label=label, sampler=name, exact=make_sampler(name, **options).exact,
                rounds_mean=float(np.mean([r["rounds"] for r in runs])),
                rounds_max=int(max(r["rounds"] for r in runs)),
                nfe_mean=float(np.mean([r["nfe"] for r in runs])),
                accepted_mean=float(np.mean(accepted)) if accepted else None,
                wall_ms=float(np.mean([r["wall_ms"] for r in runs])),
                peak_mb=float(max(r["peak_mb"] for r in runs)),
                max_error=float(max(r["max_error"] for r in runs)),
                projected_ms=float(np.mean([r["projected_ms"] for r in runs])),
                projected_on=projection.device,
                runs=runs,
            ))
    return rows


def format_table(case: Case, rows: Sequence[Row], machine: str, device: torch.device) -> str:
    """A markdown table of ``rows``, the wall-time column as ratios to ``ddpm`` too."""
    ddpm_wall = next((r.wall_ms for r in rows if r.sampler == "ddpm"), float("nan"))
    memory = "peak GPU MB" if device.type == "cuda" else "peak RSS MB"
    on = rows[0].projected_on if rows else "-"
    lines = [
        f"### {case.name}: {case.schedule.num_steps} steps, {case.seeds} condition(s), one per run",
        f"Measured on {machine}. '{on} ms' is a projection from per-call latencies measured on {on}, "
        "not a measurement.",
        "",
        f"| sampler | exact | rounds mean | rounds max | NFE | accepted/round | wall ms | x ddpm wall | {memory} | max abs err vs ddpm | {on} ms (projected) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        accepted = "-" if r.accepted_mean is None else f"{r.accepted_mean:.2f}"
        lines.append(
            f"| {r.label} | {'yes' if r.exact else 'no'} | {r.rounds_mean:.1f} | {r.rounds_max} | "
            f"{r.nfe_mean:.0f} | {accepted} | {r.wall_ms:.1f} | {r.wall_ms / ddpm_wall:.2f} | "
            f"{r.peak_mb:.1f} | {r.max_error:.2e} | {r.projected_ms:.1f} |"
        )
    return "\n".join(lines)


def paradigms_sweep(
    denoiser: Callable,
    schedule: NoiseSchedule,
    event_shape: tuple[int, ...],
    conditions: int = 64,
    windows: Sequence[int] = (16, 32, 64, 100),
    tolerances: Sequence[float] = (0.1, 0.05),
    seed: int = 11,
) -> str:
    """Rounds and pathwise error against ``ddpm`` of ``paradigms`` for each window, tolerance and
    initialization, on ``conditions`` rows sampled in one call (a markdown table)."""
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(conditions, *event_shape, generator=g)
    noise = torch.randn(schedule.num_steps, conditions, *event_shape, generator=g)
    with torch.inference_mode():
        reference = make_sampler("ddpm").sample(denoiser, schedule, x_T, noise=noise).sample
        lines = [
            f"### paradigms: window x tolerance x initial guesses, {conditions} conditions in one call",
            "",
            "| init | window | tolerance | rounds mean per condition | rounds (batch) | NFE | RMS err vs ddpm | max abs err |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for init in ("frozen_x0", "copy"):
            for window in windows:
                for tolerance in tolerances:
                    result = make_sampler("paradigms", window=window, tolerance=tolerance, init=init).sample(
                        denoiser, schedule, x_T, noise=noise)
                    error = result.sample - reference
                    lines.append(
                        f"| {init} | {window} | {tolerance} | {np.mean(result.rounds_per_row):.1f} | "
                        f"{result.rounds} | {result.nfe} | {float(error.pow(2).mean().sqrt()):.4f} | "
                        f"{float(error.abs().max()):.3f} |"
                    )
    return "\n".join(lines)
