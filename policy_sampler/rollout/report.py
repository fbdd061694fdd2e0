"""What an evaluation reports: per sampler configuration its episodes and chunk calls, summarized as one
table row (success with a Wilson 95% interval, rewards, latency, rounds, NFE, ...).

Per sampler configuration (``SamplerReport.summary`` / the CSV row, see :data:`CSV_COLUMNS`):
success rate with a Wilson 95% interval, mean total and max reward, mean episode length, per chunk
call (one ``predict_action`` on the batch of active envs) the wall latency p50 / p99 / mean in
seconds, the mean sequential rounds and NFE, the mean accepted length (speculative samplers) and the
share of episodes passing left (when the task reports ``side``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from policy_sampler.rollout.specs import SamplerSpec

__all__ = ["CSV_COLUMNS", "EvaluationReport", "SamplerReport", "merge_control_stats", "summarize", "wilson_interval"]

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile

# One row per sampler configuration in results.csv (and the summary dict's keys, in this order).
CSV_COLUMNS = (
    "label",                 # the configuration's name in the table, e.g. "paradigms", "ddim-16"
    "sampler",               # the registered sampler name
    "options",               # the sampler options, JSON
    "num_inference_steps",   # steps of the schedule the sampler ran
    "exact",                 # Sampler.exact: samples the sequential ddpm chain's law
    "baseline",              # a fast baseline (changes the law), not one of the samplers asked for
    "n_episodes",
    "successes",
    "success_rate",
    "success_ci_low",        # Wilson 95% interval
    "success_ci_high",
    "mean_reward",           # mean over episodes of the total reward
    "mean_max_reward",       # mean over episodes of the max step reward (Diffusion Policy's score)
    "mean_length",           # env steps per episode
    "chunks",                # predict_action calls (each on the batch of active envs)
    "mean_batch",            # mean envs per call
    "latency_p50_s",         # wall seconds per chunk call
    "latency_p99_s",
    "latency_mean_s",
    "rounds_mean",           # sequential denoiser calls per chunk call
    "nfe_mean",              # denoiser evaluations per sample per chunk call
    "mean_accepted_length",  # speculative samplers (empty when the sampler does not report it)
    "left_share",            # share of episodes with side == "left" (empty when the task has no side)
    "wall_s",                # seconds the whole configuration took (rollouts included)
    "inference_delay",       # ChunkRunner rows: simulated inference delay in control ticks
    "smoothing",             # ChunkRunner rows: none, rtc or ensemble
    "misses",                # ChunkRunner rows: chunks not ready when due
    "boundary_jerk",         # ChunkRunner rows: mean |second difference| of actions where chunks meet
    "interior_jerk",         # ... and at every other tick
)

# ---------------------------------------------------------------------------------------------- statistics
def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for the default ``z``)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no rounding past p
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


@dataclass
class SamplerReport:
    """Results of one sampler configuration: the spec, its ``exact`` flag, per-episode records, per
    chunk-call records and the wall time of the whole configuration."""

    spec: SamplerSpec
    exact: bool
    episodes: list[dict[str, Any]]
    chunks: list[dict[str, Any]]
    wall_s: float
    policy_steps: int | None = None  # the policy's own inference steps (what "exact" is relative to)
    videos: list[str] = field(default_factory=list)
    trajectories: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)  # see evaluate_sampler
    control: dict[str, Any] | None = None  # ChunkRunner settings and counters (specs with control)

    @property
    def summary(self) -> dict[str, Any]:
        return summarize(self)

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "spec": asdict(self.spec), "episodes": self.episodes,
                "chunks": self.chunks, "videos": self.videos, "control": self.control}


def summarize(report: SamplerReport) -> dict[str, Any]:
    """The CSV row of a configuration (keys :data:`CSV_COLUMNS`; ``None`` where not applicable)."""
    eps, chunks, spec = report.episodes, report.chunks, report.spec
    n = len(eps)
    k = sum(1 for e in eps if e["success"])
    lo, hi = wilson_interval(k, n)
    lat = [c["latency_s"] for c in chunks]
    sides = [e.get("side") for e in eps if "side" in e]
    has_side = any("side" in e for e in eps)
    accepted = [c["mean_accepted_length"] for c in chunks if c.get("mean_accepted_length") is not None]
    return {
        "label": spec.label,
        "sampler": spec.sampler,
        "options": json.dumps(spec.options, sort_keys=True),
        "num_inference_steps": chunks[0]["num_inference_steps"] if chunks else spec.num_inference_steps,
        "exact": bool(report.exact) and (spec.num_inference_steps is None
                                         or spec.num_inference_steps == report.policy_steps),
        "baseline": bool(spec.baseline),
        "n_episodes": n,
        "successes": k,
        "success_rate": k / n if n else None,
        "success_ci_low": lo if n else None,
        "success_ci_high": hi if n else None,
        "mean_reward": _mean([e["total_reward"] for e in eps]),
        "mean_max_reward": _mean([e["max_reward"] for e in eps]),
        "mean_length": _mean([e["length"] for e in eps]),
        "chunks": len(chunks),
        "mean_batch": _mean([c["batch"] for c in chunks]),
        "latency_p50_s": _percentile(lat, 50),
        "latency_p99_s": _percentile(lat, 99),
        "latency_mean_s": _mean(lat),
        "rounds_mean": _mean([c["rounds"] for c in chunks]),
        "nfe_mean": _mean([c["nfe"] for c in chunks]),
        "mean_accepted_length": _mean(accepted) if accepted else None,
        "left_share": (sum(1 for s in sides if s == "left") / len(sides)) if has_side and sides else None,
        "wall_s": float(report.wall_s),
        **{key: (report.control or {}).get(key) for key in
           ("inference_delay", "smoothing", "misses", "boundary_jerk", "interior_jerk")},
    }


def merge_control_stats(control: dict[str, Any] | None, parts: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The ChunkRunner settings with its counters summed and its jerks averaged over ``parts`` (the
    ``stats()`` of each wave of envs, or the merged stats of each block of episodes)."""
    if control is None:
        return None
    out: dict[str, Any] = dict(control)
    for key in ("misses", "fallbacks", "dropped_actions", "early_stops", "ticks"):
        out[key] = sum(w[key] for w in parts)
    for key in ("boundary_jerk", "interior_jerk"):
        values = [w[key] for w in parts if w[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


@dataclass
class EvaluationReport:
    """All configurations of one run and what they ran on."""

    task: str
    n_episodes: int
    seed: int
    machine: str
    reports: list[SamplerReport]
    meta: dict[str, Any] = field(default_factory=dict)
    frames: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict, repr=False)

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.n_episodes)]

    def rows(self) -> list[dict[str, Any]]:
        return [r.summary for r in self.reports]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "policy_sampler.evaluation", "format_version": 1,
            "task": self.task, "n_episodes": self.n_episodes, "seed": self.seed, "env_seeds": self.seeds,
            "generator_seed": self.seed, "machine": self.machine, **self.meta,
            "columns": list(CSV_COLUMNS),
            "results": self.rows(),
            "samplers": [r.to_dict() for r in self.reports],
        }
