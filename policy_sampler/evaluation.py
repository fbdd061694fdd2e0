"""Closed-loop evaluation of a DiffusionPolicy under several samplers, on the same seeded episodes.

Diffusion Policy's protocol (Chi et al. 2023, ``env_runner``): parallel envs, each keeping its last
``n_obs_steps`` observations (padded with the first one at reset), one action chunk predicted for all
active envs at once, its ``n_action_steps`` actions executed before the next prediction, an env stopping
at termination or truncation; per episode the success (``info["is_success"]`` ever true), the total
and the max reward, the length and, when the task reports it, the side the agent passed (``side``).

Every sampler configuration sees the same episodes (env seed ``seed + i`` for episode i) and its own
``torch.Generator`` seeded with the env seed of its first episode (``seed`` for a whole run; a block of
episodes starting at episode k, as :mod:`policy_sampler.sweep` runs them, seeds it with ``seed + k``),
so a configuration evaluated twice gives the same episodes, and configurations differ only by the sampler. The fast baselines a user would pick instead of an
exact parallel sampler (DDIM with 16 and with 10 steps, which change the sampled law) run beside them.

    from policy_sampler.evaluation import SamplerSpec, evaluate, write_results
    specs = [SamplerSpec("ddpm", "ddpm"), SamplerSpec("paradigms", "paradigms", {"tolerance": 0.1}),
             SamplerSpec("ddim-16", "ddim", {"eta": 0.0}, num_inference_steps=16, baseline=True)]
    report = evaluate(policy, "PolicySampler/ObstacleReach-v0", specs, n_episodes=20, seed=0)
    write_results(report, "eval/run")        # results.json, results.csv, results.png, videos/

Per sampler configuration (``SamplerReport.summary`` / the CSV row, see :data:`CSV_COLUMNS`):
success rate with a Wilson 95% interval, mean total and max reward, mean episode length, per chunk
call (one ``predict_action`` on the batch of active envs) the wall latency p50 / p99 / mean in
seconds, the mean sequential rounds and NFE, the mean accepted length (speculative samplers) and the
share of episodes passing left (when the task reports ``side``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from policy_sampler.policy.observations import flat_observation, stack_observations
from policy_sampler.serialization import atomic_write_bytes, jsonable

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_BASELINES",
    "EvaluationReport",
    "SamplerReport",
    "SamplerSpec",
    "evaluate",
    "evaluate_sampler",
    "format_table",
    "load_sampler_specs",
    "summarize",
    "wilson_interval",
    "write_results",
]

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

# The fast baselines a user would pick instead: DDIM (eta 0) with 16 and with 10 steps.
DEFAULT_BASELINES: tuple[dict[str, Any], ...] = (
    {"label": "ddim-16", "sampler": "ddim", "num_inference_steps": 16, "options": {"eta": 0.0}},
    {"label": "ddim-10", "sampler": "ddim", "num_inference_steps": 10, "options": {"eta": 0.0}},
)


# ---------------------------------------------------------------------------------------------- specs
@dataclass
class SamplerSpec:
    """One sampler configuration: ``label`` (unique in a run), the registered ``sampler`` name, its
    ``options`` (keyword arguments of ``make_sampler``), the schedule's ``num_inference_steps`` (None =
    the policy's own) and whether it is a ``baseline``."""

    label: str
    sampler: str
    options: dict[str, Any] = field(default_factory=dict)
    num_inference_steps: int | None = None
    baseline: bool = False
    control: dict[str, Any] | None = None  # ChunkRunner settings: rolled tick by tick through it

    def make(self):
        from policy_sampler.samplers import make_sampler

        return make_sampler(self.sampler, **dict(self.options))


def with_control(specs: Sequence[SamplerSpec], inference_delays: Sequence[int],
                 smoothing: Sequence[str] = ("none",), warm_start: bool = False,
                 reward: str | None = None, num_candidates: int = 8) -> list[SamplerSpec]:
    """Each spec once per simulated inference delay (control ticks) and smoothing, run through
    :class:`~policy_sampler.control.ChunkRunner`; labels like ``paradigms d=2 rtc``. With ``reward``
    (a file saved by :class:`~policy_sampler.preference.RewardSelector`), each chunk is the best of
    ``num_candidates`` sampled ones under that reward (label suffix ``best-of-N``)."""
    out = []
    for spec in specs:
        for delay in inference_delays:
            for smooth in smoothing:
                label = f"{spec.label} d={delay}" + ("" if smooth == "none" else f" {smooth}")
                control = {"inference_delay": int(delay), "smoothing": str(smooth)}
                if reward is not None:
                    control.update(reward=str(reward), num_candidates=int(num_candidates))
                    label += f" best-of-{num_candidates}"
                if warm_start and spec.make().warm_start:
                    control["warm_start"] = True
                    label += " warm"
                out.append(dataclasses.replace(spec, label=label, control=control))
    return out


def load_sampler_specs(
    names: Sequence[str],
    config_dir: str | os.PathLike,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    baselines: Sequence[Mapping[str, Any]] = DEFAULT_BASELINES,
) -> list[SamplerSpec]:
    """Specs for the sampler configs ``<config_dir>/<name>.yaml`` (``name:`` plus options), each updated
    with ``overrides[name]``, followed by the ``baselines`` (dicts with ``sampler``, optional ``label``,
    ``options`` and ``num_inference_steps``; their options start from ``<sampler>.yaml`` when it exists).

    Every sampler is built once to check its options. ``ValueError`` (listing the valid names) for an
    unknown config name, a bad option, an override for a sampler not asked for, or a repeated label.
    """
    from omegaconf import OmegaConf

    config_dir = Path(config_dir)
    valid = sorted(p.stem for p in config_dir.glob("*.yaml"))

    def read(name: str) -> dict[str, Any]:
        path = config_dir / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown sampler config {name!r}; valid: {', '.join(valid)}")
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
        if not isinstance(data, dict) or "name" not in data:
            raise ValueError(f"{path} must be a mapping with a 'name' key")
        return data

    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"samplers must be a list of sampler config names, got {names!r}")
    if len(names) == 0 and len(baselines) == 0:
        raise ValueError("nothing to evaluate: samplers and baselines are both empty")
    overrides = dict(overrides or {})
    unused = sorted(set(overrides) - {str(n) for n in names})
    if unused:
        raise ValueError(f"sampler_options given for {unused}, which are not in samplers={list(names)}")
    specs: list[SamplerSpec] = []
    for name in names:
        name = str(name)
        data = read(name)
        sampler = str(data.pop("name"))
        data.update(dict(overrides.get(name) or {}))
        specs.append(SamplerSpec(label=name, sampler=sampler, options=data))
    for b in baselines:
        b = dict(b)
        unknown = sorted(set(b) - {"label", "sampler", "options", "num_inference_steps"})
        if unknown or "sampler" not in b:
            raise ValueError(
                f"a baseline needs 'sampler' and may have 'label', 'options', 'num_inference_steps'; got {b}"
            )
        sampler = str(b["sampler"])
        options: dict[str, Any] = {}
        if (config_dir / f"{sampler}.yaml").is_file():
            options = read(sampler)
            options.pop("name")
        options.update(dict(b.get("options") or {}))
        steps = b.get("num_inference_steps")
        label = str(b.get("label") or (f"{sampler}-{steps}" if steps else sampler))
        specs.append(SamplerSpec(label=label, sampler=sampler, options=options,
                                 num_inference_steps=None if steps is None else int(steps), baseline=True))
    labels = [s.label for s in specs]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise ValueError(f"sampler configuration label(s) {repeated} appear twice")
    for spec in specs:
        spec.make()  # unknown sampler or option: ValueError listing the valid ones
    return specs


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


# ---------------------------------------------------------------------------------------------- rollouts
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


def _scalar_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON scalars of a step's ``info`` (arrays and nested values left out)."""
    return {k: v for k, v in jsonable(dict(info)).items() if v is None or isinstance(v, (bool, int, float, str))}


def _make_env(task: str, env_kwargs: Mapping[str, Any] | None, render: bool, max_steps: int | None):
    from policy_sampler.data.demos import make_env

    kwargs = dict(env_kwargs or {})
    if render:
        kwargs["render_mode"] = "rgb_array"
    if max_steps is not None:
        kwargs["max_episode_steps"] = int(max_steps)
    return make_env(task, kwargs)


def evaluate_sampler(
    policy,
    task: str,
    spec: SamplerSpec,
    n_episodes: int,
    seed: int = 0,
    *,
    n_envs: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    stop_on_success: bool = False,
    record_videos: int = 0,
    progress: bool = False,
    first_episode: int = 0,
    record_trajectories: bool = False,
) -> tuple[SamplerReport, dict[int, dict[str, Any]]]:
    """Roll ``n_episodes`` episodes with one sampler configuration: episodes ``first_episode`` ..
    ``first_episode + n_episodes - 1`` of a run, episode i with env seed ``seed + i``.

    Up to ``n_envs`` envs (default: all episodes) run side by side; each chunk is ONE ``predict_action``
    on the stacked histories of the active envs, timed with ``time.perf_counter``. The generator is a
    fresh ``torch.Generator`` seeded with ``seed + first_episode``, the block's first env seed (on the
    policy's device). ``stop_on_success`` ends an episode at its first success (tasks that never
    terminate, like Meta-World). Episodes i < ``record_videos`` render ``rgb_array`` frames, returned as
    ``{i: {"fps", "frames"}}``. With ``record_trajectories`` the report's ``trajectories`` holds, per
    episode i, ``observations`` / ``next_observations`` (T, obs_dim) (flattened env observations around
    each executed action), ``actions`` (T, act_dim), ``rewards`` (T,) and ``info`` (the last step's
    JSON-scalar info, ``is_success`` set to the episode's success).
    """
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes must be an int >= 1, got {n_episodes!r}")
    if isinstance(first_episode, bool) or not isinstance(first_episode, int) or first_episode < 0:
        raise ValueError(f"first_episode must be an int >= 0, got {first_episode!r}")
    sampler = spec.make()
    policy.schedule_for(spec.num_inference_steps)  # a bad step count fails before any rollout
    c = policy.config
    device = policy.device
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed) + first_episode)
    n_envs = n_episodes if n_envs is None else max(1, min(int(n_envs), n_episodes))
    episodes: list[dict[str, Any] | None] = [None] * n_episodes
    chunks: list[dict[str, Any]] = []
    frames: dict[int, dict[str, Any]] = {}
    trajectories: dict[int, dict[str, Any]] = {}
    control_stats: list[dict[str, Any]] = []
    start_wall = time.perf_counter()
    pending = list(range(first_episode, first_episode + n_episodes))
    while pending:
        wave, pending = pending[:n_envs], pending[n_envs:]
        envs, hist, recs, trajs = {}, {}, {}, {}
        try:
            for i in wave:
                env = _make_env(task, env_kwargs, i < record_videos, max_steps)
                envs[i] = env
                obs, info = env.reset(seed=int(seed) + i)
                hist[i] = deque([obs] * c.n_obs_steps, maxlen=c.n_obs_steps)
                recs[i] = {"episode": i, "env_seed": int(seed) + i, "success": bool(info.get("is_success", False)),
                           "total_reward": 0.0, "max_reward": None, "length": 0, "chunks": 0,
                           "terminated": False, "truncated": False}
                if record_trajectories:
                    trajs[i] = {"observations": [], "next_observations": [], "actions": [], "rewards": [],
                                "info": _scalar_info(info)}
                if "side" in info:
                    recs[i]["side"] = info["side"]
                if i < record_videos:
                    frames[i] = {"fps": int(env.metadata.get("render_fps", 25) or 25),
                                 "frames": [np.asarray(env.render())]}
            def step(i: int, action: np.ndarray) -> bool:
                """One env step of episode i with its bookkeeping; True when the episode is over."""
                env, rec = envs[i], recs[i]
                before = hist[i][-1]
                obs, reward, terminated, truncated, info = env.step(action)
                reward = float(reward)
                if i in trajs:
                    traj = trajs[i]
                    traj["observations"].append(flat_observation(before))
                    traj["next_observations"].append(flat_observation(obs))
                    traj["actions"].append(np.asarray(action, np.float32).reshape(-1))
                    traj["rewards"].append(reward)
                    traj["info"] = _scalar_info(info)
                hist[i].append(obs)
                rec["length"] += 1
                rec["total_reward"] += reward
                rec["max_reward"] = reward if rec["max_reward"] is None else max(rec["max_reward"], reward)
                rec["success"] = rec["success"] or bool(info.get("is_success", False))
                if "side" in info and (info["side"] is not None or "side" not in rec):
                    rec["side"] = info["side"]  # the latest reported side (None until it passes)
                if "collided" in info:
                    rec["collided"] = bool(info["collided"])
                if i in frames:
                    frames[i]["frames"].append(np.asarray(env.render()))
                rec["terminated"], rec["truncated"] = bool(terminated), bool(truncated)
                return bool(terminated or truncated or (stop_on_success and rec["success"]))

            if spec.control is not None:
                control_stats.append(_run_control(policy, sampler, spec, wave, hist, recs, step, chunks,
                                                  int(seed) + wave[0]))
                active = []
            else:
                active = list(wave)
            while active:
                obs_batch = stack_observations(policy.config.obs_keys, [hist[i] for i in active])
                t0 = time.perf_counter()
                out = policy.predict_action(obs_batch, sampler=sampler, generator=generator,
                                            num_inference_steps=spec.num_inference_steps)
                latency = time.perf_counter() - t0
                actions = out.actions.detach().to("cpu", torch.float32).numpy()
                chunks.append({
                    "batch": len(active), "latency_s": latency, "rounds": int(out.rounds), "nfe": int(out.nfe),
                    "mean_accepted_length": _float_or_none(out.info.get("mean_accepted_length")),
                    "num_inference_steps": int(out.info.get("num_inference_steps", policy.schedule.num_steps)),
                })
                still = []
                for row, i in enumerate(active):
                    recs[i]["chunks"] += 1
                    if not any(step(i, action) for action in actions[row]):
                        still.append(i)
                if progress:
                    print(f"  {spec.label}: chunk {len(chunks)}, {len(still)} envs active", flush=True)
                active = still
            for i in wave:
                episodes[i - first_episode] = recs[i]
                if i in trajs:
                    trajectories[i] = _stack_trajectory(trajs[i], recs[i])
        finally:
            for env in envs.values():
                env.close()
    report = SamplerReport(spec=spec, exact=bool(getattr(sampler, "exact", False)), episodes=episodes,
                           chunks=chunks, wall_s=time.perf_counter() - start_wall,
                           policy_steps=policy.schedule.num_steps, trajectories=trajectories,
                           control=merge_control_stats(spec.control, control_stats))
    return report, frames


def _run_control(policy, sampler, spec: SamplerSpec, wave: list[int], hist: dict, recs: dict, step,
                 chunks: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Roll one wave of envs tick by tick through a ChunkRunner (simulated inference delay); finished
    envs keep their last observation and their actions are ignored."""
    from policy_sampler.control import ChunkRunner

    control = dict(spec.control)
    if isinstance(control.get("reward"), (str, os.PathLike)):  # a saved RewardSelector (best-of-N)
        from policy_sampler.preference.selection import RewardSelector

        control["selector"] = RewardSelector.load(control.pop("reward"))
    runner = ChunkRunner(policy, sampler=sampler, num_envs=len(wave), seed=seed,
                         num_inference_steps=spec.num_inference_steps, **control)
    runner.reset([hist[i][-1] for i in wave])
    active = set(wave)
    while active:
        actions = runner.act([hist[i][-1] for i in wave])
        for row, i in enumerate(wave):
            if i in active and step(i, actions[row]):
                active.discard(i)
    stats = runner.stats()
    for i in wave:
        recs[i]["chunks"] = stats["chunks"]
    chunks.extend({"batch": c["batch"], "latency_s": c["latency_s"], "rounds": c["rounds"], "nfe": c["nfe"],
                   "mean_accepted_length": None,
                   "num_inference_steps": spec.num_inference_steps or policy.schedule.num_steps}
                  for c in runner.chunk_log)
    return stats


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


def _stack_trajectory(traj: dict[str, Any], rec: Mapping[str, Any]) -> dict[str, Any]:
    """One episode's recorded steps as arrays, its last info with the episode's success and side."""
    info = dict(traj["info"])
    info["is_success"] = bool(rec["success"])
    if "side" in rec:
        info["side"] = rec["side"]
    return {
        "observations": np.stack(traj["observations"]).astype(np.float32),
        "next_observations": np.stack(traj["next_observations"]).astype(np.float32),
        "actions": np.stack(traj["actions"]).astype(np.float32),
        "rewards": np.asarray(traj["rewards"], dtype=np.float32),
        "info": info,
    }


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


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


def evaluate(
    policy,
    task: str,
    specs: Sequence[SamplerSpec],
    n_episodes: int,
    seed: int = 0,
    *,
    videos: int = 0,
    video_samplers: int = 1,
    progress: bool = False,
    meta: Mapping[str, Any] | None = None,
    **rollout_options: Any,
) -> EvaluationReport:
    """Evaluate every configuration in ``specs`` on the same ``n_episodes`` seeded episodes (see
    :func:`evaluate_sampler` for ``rollout_options``: ``n_envs``, ``env_kwargs``, ``max_steps``,
    ``stop_on_success``). The first ``videos`` episodes of the first ``video_samplers`` configurations
    keep their frames (written by :func:`write_results`)."""
    from policy_sampler.benchmark import machine_name

    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes must be an int >= 1, got {n_episodes!r}")
    if not specs:
        raise ValueError("specs is empty: nothing to evaluate")
    for spec in specs:  # every configuration is checked before the first rollout
        spec.make()
        policy.schedule_for(spec.num_inference_steps)
    reports, frames = [], {}
    for index, spec in enumerate(specs):
        if progress:
            print(f"evaluating {spec.label} ({index + 1}/{len(specs)}) on {n_episodes} episodes", flush=True)
        report, fr = evaluate_sampler(
            policy, task, spec, n_episodes, seed,
            record_videos=videos if index < video_samplers else 0, **rollout_options,
        )
        reports.append(report)
        if progress:
            row = report.summary
            print(f"  {spec.label}: {row['successes']}/{row['n_episodes']} successes, latency p50 "
                  f"{1000 * (row['latency_p50_s'] or 0):.1f} ms, {report.wall_s:.1f} s", flush=True)
        if fr:
            frames[spec.label] = fr
    return EvaluationReport(task=task, n_episodes=n_episodes, seed=int(seed), machine=machine_name(policy.device),
                            reports=reports, meta=dict(meta or {}), frames=frames)


# ---------------------------------------------------------------------------------------------- output
def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def format_table(report: EvaluationReport) -> str:
    """The run as a markdown table, headed by the task, episodes and machine."""
    head = (f"task {report.task}, {report.n_episodes} episodes (env seeds {report.seed}..{report.seed + report.n_episodes - 1}), "
            f"machine: {report.machine}")
    cols = ["sampler", "exact", "success [95% CI]", "mean reward", "latency p50 (ms)", "latency p99 (ms)",
            "rounds", "NFE", "accepted len", "left share"]
    note = ("latency: wall time of one predict_action call on the batch of active envs; rounds: sequential "
            "denoiser calls per chunk; NFE: denoiser evaluations per sample per chunk")
    lines = [head, note, "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in report.rows():
        ms = lambda v: None if v is None else 1000.0 * v  # noqa: E731
        success = f"{r['successes']}/{r['n_episodes']} = {r['success_rate']:.2f} [{r['success_ci_low']:.2f}, {r['success_ci_high']:.2f}]"
        cells = [
            r["label"] + (" (baseline)" if r["baseline"] else ""), "yes" if r["exact"] else "no", success,
            _fmt(r["mean_reward"], ".2f"), _fmt(ms(r["latency_p50_s"]), ".1f"), _fmt(ms(r["latency_p99_s"]), ".1f"),
            _fmt(r["rounds_mean"], ".1f"), _fmt(r["nfe_mean"], ".1f"), _fmt(r["mean_accepted_length"], ".2f"),
            _fmt(r["left_share"], ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_plot(report: EvaluationReport, path: Path) -> Path | None:
    """``results.png``: success rate with Wilson 95% bars, and latency p50 / p99 per configuration.
    Returns None (writing nothing) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = report.rows()
    labels = [r["label"] for r in rows]
    x = np.arange(len(rows))
    rate = np.array([r["success_rate"] for r in rows], dtype=float)
    err = np.array([[r["success_rate"] - r["success_ci_low"] for r in rows],
                    [r["success_ci_high"] - r["success_rate"] for r in rows]], dtype=float)
    colors = ["tab:gray" if r["baseline"] else ("tab:blue" if r["exact"] else "tab:orange") for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8.0, 1.6 * len(rows) + 4), 4.2))
    ax1.bar(x, rate, yerr=err, capsize=4, color=colors)
    ax1.set_ylim(0, 1.05)
    ax1.set_ylabel("success rate (Wilson 95% CI)")
    from matplotlib.patches import Patch

    ax1.legend(handles=[Patch(color="tab:blue", label="exact in law"), Patch(color="tab:orange", label="tolerance"),
                        Patch(color="tab:gray", label="baseline (other law)")], fontsize=7, loc="lower left")
    ax1.set_title(f"{report.task}: {report.n_episodes} episodes")
    w = 0.38
    p50 = np.array([1000 * (r["latency_p50_s"] or 0) for r in rows])
    p99 = np.array([1000 * (r["latency_p99_s"] or 0) for r in rows])
    ax2.bar(x - w / 2, p50, w, label="p50", color="tab:green")
    ax2.bar(x + w / 2, p99, w, label="p99", color="tab:red")
    ax2.set_ylabel("latency per chunk call (ms)")
    ax2.set_yscale("log" if p99.max(initial=0) > 20 * max(p50.min(initial=1), 1e-3) else "linear")
    ax2.legend()
    ax2.set_title("latency (batch of active envs)", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right")
    fig.suptitle(report.machine, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_video(frames: Sequence[np.ndarray], path: Path, fps: int = 25) -> Path:
    """MP4 through imageio-ffmpeg when installed, else a GIF through Pillow (``path``'s suffix changes
    to ``.gif``). Written to a temporary file first, then moved into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401

        target = path.with_suffix(".mp4")
        tmp = target.with_name(f".{target.stem}.tmp.mp4")
        # frames are 320x320 here; macro_block_size=1 keeps odd sizes from being resized
        writer = imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=1,
                                    ffmpeg_log_level="error")
        try:
            for frame in frames:
                writer.append_data(np.asarray(frame, dtype=np.uint8))
        finally:
            writer.close()
    except ImportError:
        from PIL import Image

        target = path.with_suffix(".gif")
        tmp = target.with_name(f".{target.stem}.tmp.gif")
        images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    os.replace(tmp, target)
    return target


def write_results(report: EvaluationReport, out_dir: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
    """Write ``results.json`` (everything: per-episode and per-chunk records, seeds, machine, meta),
    ``results.csv`` (one row per configuration, :data:`CSV_COLUMNS`), ``results.png`` (when matplotlib
    is installed) and ``videos/<label>_ep<i>.mp4`` (or ``.gif``) into ``out_dir``, each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    videos: dict[str, list[str]] = {}
    for label, per_episode in report.frames.items():
        for episode, video in sorted(per_episode.items()):
            if not video["frames"]:
                continue
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
            path = write_video(video["frames"], out / "videos" / f"{safe}_ep{episode}.mp4", fps=video["fps"])
            videos.setdefault(label, []).append(str(path.relative_to(out)))
            written[f"video:{label}:{episode}"] = path
    for r in report.reports:
        r.videos = videos.get(r.spec.label, [])
    document = jsonable(report.to_dict())
    atomic_write_bytes(out / "results.json", (json.dumps(document, indent=2) + "\n").encode())
    written["json"] = out / "results.json"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    for row in report.rows():
        w.writerow({k: ("" if row[k] is None else row[k]) for k in CSV_COLUMNS})
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    written["csv"] = out / "results.csv"
    if plot:
        png = write_plot(report, out / "results.png")
        if png is not None:
            written["png"] = png
    return written
