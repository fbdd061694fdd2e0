"""The unit of work of a sweep: one sampler configuration on one block of consecutive episodes of one
task and checkpoint, either scored (``kind="evaluate"``) or kept as trajectories (``kind="candidates"``).

A unit is pure content: everything that decides its result (task, checkpoint digest, sampler spec, the
block's episodes and seeds, rollout options, device) and nothing about where it runs. Its id is a hash
of that content, so the same unit planned twice, by any launcher, has the same id and the same result
file (``<out_dir>/units/<unit_id>.json``), and a resumed sweep recognises what is already done.

Seeding (see :func:`policy_sampler.rollout.evaluate_sampler`): episode i resets its env with seed
``seed + i`` and a block's ``torch.Generator`` is seeded with the env seed of its first episode, so a
unit's result depends on its content only, never on the unit that ran before it in the same process.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from policy_sampler.rollout import RolloutConfig, SamplerSpec
from policy_sampler.sweep.checkpoint import CheckpointBlob, load_policy
from policy_sampler.validation import check_int

__all__ = ["KINDS", "ROLLOUT_OPTIONS", "Unit", "plan_units", "run_unit", "unit_options"]

KINDS = ("evaluate", "candidates")
# the RolloutConfig fields a unit carries (the rest is decided per unit)
ROLLOUT_OPTIONS = ("n_envs", "env_kwargs", "max_steps", "stop_on_success")


def unit_options(rollout: RolloutConfig | None) -> dict[str, Any]:
    """The part of ``rollout`` that units carry (:data:`ROLLOUT_OPTIONS`)."""
    rollout = RolloutConfig() if rollout is None else rollout
    return {name: getattr(rollout, name) for name in ROLLOUT_OPTIONS}


@dataclass(frozen=True)
class Unit:
    """Episodes ``first_episode .. first_episode + n_episodes - 1`` (env seeds ``seed + i``) of ``task``
    with the checkpoint whose digest is ``checkpoint`` under sampler configuration ``spec``;
    ``record_videos`` = episodes i below it keep their frames."""

    kind: str
    task: str
    checkpoint: str
    spec: SamplerSpec
    seed: int
    first_episode: int
    n_episodes: int
    options: Mapping[str, Any] = field(default_factory=dict)
    record_videos: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown unit kind {self.kind!r}; valid: {', '.join(KINDS)}")
        unknown = sorted(set(self.options) - set(ROLLOUT_OPTIONS))
        if unknown:
            raise ValueError(f"unknown rollout option(s) {unknown}; valid: {', '.join(ROLLOUT_OPTIONS)}")
        for name in ("seed", "first_episode", "n_episodes", "record_videos"):
            check_int(f"unit {name}", getattr(self, name), minimum=1 if name == "n_episodes" else 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["options"] = dict(self.options)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Unit":
        data = dict(data)
        data["spec"] = SamplerSpec(**data["spec"])
        return cls(**data)

    @property
    def unit_id(self) -> str:
        """``<kind>-<label>-<first episode>-<16 hex digits of the content's SHA-256>``."""
        content = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(content.encode()).hexdigest()[:16]
        label = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.spec.label)
        return f"{self.kind}-{label}-{self.first_episode}-{digest}"

    @property
    def env_seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.first_episode, self.first_episode + self.n_episodes)]

    def describe(self) -> str:
        """``"ddpm on ObstacleReach-v0, episodes 0-9"``, for progress lines and errors."""
        last = self.first_episode + self.n_episodes - 1
        return f"{self.kind} {self.spec.label} on {self.task}, episodes {self.first_episode}-{last}"


def plan_units(
    kind: str,
    task: str,
    checkpoint: str,
    specs: Sequence[SamplerSpec],
    n_episodes: int,
    seed: int,
    seeds_per_unit: int | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    videos: int = 0,
    video_samplers: int = 0,
    device: str = "cpu",
) -> list[Unit]:
    """Every spec x block of ``seeds_per_unit`` consecutive episodes (None = all ``n_episodes`` in one
    block), in spec order then episode order. The first ``videos`` episodes of the first
    ``video_samplers`` specs keep their frames."""
    for name, value, low in (("n_episodes", n_episodes, 1), ("seed", seed, 0), ("videos", videos, 0),
                             ("video_samplers", video_samplers, 0)):
        check_int(name, value, minimum=low)
    seeds_per_unit = check_int("seeds_per_unit", seeds_per_unit, minimum=1, allow_none=True) or n_episodes
    if not specs:
        raise ValueError("specs is empty: nothing to run")
    units = []
    for index, spec in enumerate(specs):
        for first in range(0, n_episodes, seeds_per_unit):
            units.append(Unit(kind=kind, task=task, checkpoint=checkpoint, spec=spec, seed=int(seed),
                              first_episode=first, n_episodes=min(seeds_per_unit, n_episodes - first),
                              options=dict(options or {}),
                              record_videos=videos if index < video_samplers and first < videos else 0, device=str(device)))
    ids = [u.unit_id for u in units]
    if len(set(ids)) != len(ids):
        raise ValueError("two planned units have the same content (a repeated sampler label?)")
    return units


def run_unit(unit: Unit, fetch: Callable[[], CheckpointBlob]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run one unit with :func:`policy_sampler.rollout.evaluate_sampler` (the one rollout loop) on the
    policy of ``fetch()`` (called only when this process has not loaded that checkpoint yet).

    Returns the JSON record (the unit, ``exact``, ``policy_steps``, ``wall_s``, per-episode ``episodes``,
    per-call ``chunks``, ``videos`` = ``{episode: fps}``, for candidates ``trajectories`` = per episode
    its seed, success, ends and last info, and the ``worker`` that ran it) and the arrays: ``frames_<i>``
    (uint8, T+1 x H x W x 3) per recorded video, and for candidates the trajectories concatenated in
    episode order (``observations``, ``next_observations``, ``actions``, ``rewards``, ``lengths``).
    """
    from policy_sampler.benchmark import machine_name
    from policy_sampler.rollout import evaluate_sampler

    policy = load_policy(unit.checkpoint, fetch, unit.device)
    rollout = RolloutConfig(**dict(unit.options), record_trajectories=unit.kind == "candidates")
    report, frames = evaluate_sampler(policy, unit.task, unit.spec, unit.n_episodes, unit.seed, rollout=rollout,
                                      first_episode=unit.first_episode, record_videos=unit.record_videos)
    record: dict[str, Any] = {
        "unit_id": unit.unit_id, "unit": unit.to_dict(), "exact": report.exact, "policy_steps": report.policy_steps,
        "wall_s": report.wall_s, "episodes": report.episodes, "chunks": report.chunks, "control": report.control,
        "videos": {str(i): v["fps"] for i, v in sorted(frames.items()) if v["frames"]},
        "worker": {"host": socket.gethostname(), "pid": os.getpid(), "machine": machine_name(policy.device)},
    }
    arrays = {f"frames_{i}": np.stack(v["frames"]).astype(np.uint8) for i, v in frames.items() if v["frames"]}
    if unit.kind == "candidates":
        order = sorted(report.trajectories)
        trajs = [report.trajectories[i] for i in order]
        by_episode = {e["episode"]: e for e in report.episodes}
        record["trajectories"] = [
            {"episode": i, "env_seed": by_episode[i]["env_seed"], "success": by_episode[i]["success"],
             "terminated": by_episode[i]["terminated"], "truncated": by_episode[i]["truncated"], "info": t["info"]}
            for i, t in zip(order, trajs)
        ]
        for key in ("observations", "next_observations", "actions", "rewards"):
            arrays[key] = np.concatenate([t[key] for t in trajs])
        arrays["lengths"] = np.asarray([len(t["actions"]) for t in trajs], dtype=np.int64)
    return record, arrays
