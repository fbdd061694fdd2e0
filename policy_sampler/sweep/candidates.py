"""Candidate rollouts for the preference study: a trained policy rolled with one sampler configuration
on ``n`` seeded episodes (env seeds ``seed .. seed + n - 1``), kept as
:class:`policy_sampler.data.demos.Episode` records, on any launcher.

    episodes = generate_candidates("checkpoints/reach", "PolicySampler/ObstacleReach-v0", n=64,
                                   sampler="ddpm", seed=5000, launcher="ray", out_dir="pool/run1")

Each unit (a block of ``seeds_per_unit`` episodes) stores ``units/<unit_id>.json`` and ``.npz``; the merged
pool is ``<out_dir>/candidates.npz`` (:func:`load_candidates` reads it back). A candidate's ``expert_seed``
is -1 (no expert); its ``info`` is the last step's scalar info with ``is_success`` (ever true in the
episode), ``side`` (when the task reports it), the sampler ``label`` and the ``episode`` index.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from policy_sampler.data.demos import Episode
from policy_sampler.rollout import RolloutConfig, SamplerSpec
from policy_sampler.serialization import atomic_path, jsonable
from policy_sampler.sweep.checkpoint import CheckpointBlob
from policy_sampler.sweep.launchers import Launcher, UnitFn, make_launcher
from policy_sampler.sweep.runner import run_sweep
from policy_sampler.sweep.units import plan_units, run_unit, unit_options

__all__ = ["POOL_NAME", "generate_candidates", "load_candidates", "write_candidates"]

POOL_NAME = "candidates.npz"
_ARRAYS = ("observations", "next_observations", "actions", "rewards")


def _episodes(metas: Sequence[Mapping[str, Any]], arrays: Mapping[str, np.ndarray]) -> list[Episode]:
    """Episodes from per-episode ``seed`` / ``success`` / ``terminated`` / ``truncated`` / ``info`` and
    the step arrays concatenated in the same order (``lengths`` per episode)."""
    bounds = np.concatenate([[0], np.cumsum(arrays["lengths"])])
    out = []
    for k, meta in enumerate(metas):
        a, b = int(bounds[k]), int(bounds[k + 1])
        dones = np.zeros(b - a, dtype=np.int64)
        dones[-1] = 1
        out.append(Episode(
            observations=arrays["observations"][a:b], next_observations=arrays["next_observations"][a:b],
            actions=arrays["actions"][a:b], rewards=arrays["rewards"][a:b], dones=dones,
            success=bool(meta["success"]), seed=int(meta["seed"]), expert_seed=-1,
            terminated=bool(meta["terminated"]), truncated=bool(meta["truncated"]), info=dict(meta["info"]),
        ))
    return out


def _unit_episodes(record: Mapping[str, Any], arrays: Mapping[str, np.ndarray], label: str) -> list[Episode]:
    """A candidate unit's episodes (see ``run_unit``), their info tagged with the sampler and episode."""
    metas = [{"seed": t["env_seed"], "success": t["success"], "terminated": t["terminated"],
              "truncated": t["truncated"], "info": {**t["info"], "sampler": label, "episode": t["episode"]}}
             for t in record["trajectories"]]
    return _episodes(metas, arrays)


def write_candidates(episodes: Sequence[Episode], path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """The pool as one npz (atomically): the four step arrays concatenated, ``lengths``, and ``meta`` (a
    JSON string: per episode seed, success, ends and info, plus ``meta``)."""
    path = Path(path)
    if not episodes:
        raise ValueError("no candidate episodes to write")
    document = {"format": "policy_sampler.candidates", "format_version": 1, **dict(meta or {}),
                "episodes": [{"seed": e.seed, "success": e.success, "terminated": e.terminated,
                              "truncated": e.truncated, "info": e.info} for e in episodes]}
    arrays = {key: np.concatenate([getattr(e, key) for e in episodes]) for key in _ARRAYS}
    arrays["lengths"] = np.asarray([len(e) for e in episodes], dtype=np.int64)
    arrays["meta"] = np.asarray(json.dumps(jsonable(document)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_candidates(path: str | os.PathLike) -> list[Episode]:
    """The episodes of a pool written by :func:`write_candidates`."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    document = json.loads(str(arrays.pop("meta")))
    if document.get("format") != "policy_sampler.candidates":
        raise ValueError(f"{path} is not a candidate pool")
    return _episodes(document["episodes"], arrays)


def generate_candidates(
    checkpoint: str | os.PathLike | CheckpointBlob,
    task: str,
    n: int,
    sampler: str = "ddpm",
    sampler_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    *,
    label: str | None = None,
    num_inference_steps: int | None = None,
    launcher: str | Launcher = "local",
    out_dir: str | os.PathLike | None = None,
    seeds_per_unit: int | None = None,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = False,
    unit_fn: UnitFn = run_unit,
    rollout: RolloutConfig | None = None,
) -> list[Episode]:
    """Roll the checkpoint's policy with ``sampler`` (``sampler_options``, ``num_inference_steps``) on env
    seeds ``seed .. seed + n - 1`` (``rollout``: ``n_envs``, ``max_steps``, ``env_kwargs``,
    ``stop_on_success``) and return the ``n`` episodes in seed order. With ``out_dir``, units are stored
    there (``resume`` skips the stored ones) and the pool is written to ``<out_dir>/candidates.npz``."""
    # an unknown sampler or option is a ValueError here, before anything runs
    spec = SamplerSpec(label or sampler, sampler, dict(sampler_options or {}), num_inference_steps)
    blob = checkpoint if isinstance(checkpoint, CheckpointBlob) else CheckpointBlob.read(checkpoint)
    units = plan_units("candidates", task, blob.digest, [spec], n, seed, seeds_per_unit,
                       options=unit_options(rollout), device=device)
    results = run_sweep(units, {blob.digest: blob}, make_launcher(launcher), out_dir, resume=resume,
                        progress=progress, unit_fn=unit_fn)
    episodes = [e for u in units for e in _unit_episodes(*results[u.unit_id], spec.label)]
    if out_dir is not None:
        write_candidates(episodes, Path(out_dir) / POOL_NAME,
                         {"task": task, "checkpoint": blob.digest, "spec": vars(spec), "seed": seed, "n": n})
    return episodes
