"""A pool of candidate trajectories in one ``.npz`` file (``candidates.npz``): the format's one
definition, its writer and its reader.

    write_candidates(episodes, "pool/candidates.npz", meta={"task": ...})
    episodes = load_candidates("pool/candidates.npz")

The file holds the four step arrays of every episode concatenated (``observations``,
``next_observations``, ``actions``, ``rewards``), ``lengths`` (steps per episode) and ``meta``: a
JSON string ``{"format": "policy_sampler.candidates", "format_version": 1, ..., "episodes": [{"seed",
"success", "terminated", "truncated", "info"}, ...]}``. Policy rollouts are written by
:func:`policy_sampler.sweep.generate_candidates`; the study server reads them to render its pool.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policy_sampler.data.demos import Episode
from policy_sampler.serialization import atomic_path, jsonable

__all__ = ["FORMAT", "FORMAT_VERSION", "POOL_NAME", "episodes_from_arrays", "load_candidates", "write_candidates"]

POOL_NAME = "candidates.npz"
FORMAT = "policy_sampler.candidates"
FORMAT_VERSION = 1
STEP_ARRAYS = ("observations", "next_observations", "actions", "rewards")


def episodes_from_arrays(metas: Sequence[Mapping[str, Any]], arrays: Mapping[str, np.ndarray]) -> list[Episode]:
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


def write_candidates(episodes: Sequence[Episode], path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """The pool as one npz (atomically): the four step arrays concatenated, ``lengths``, and ``meta`` (a
    JSON string: per episode seed, success, ends and info, plus ``meta``)."""
    path = Path(path)
    if not episodes:
        raise ValueError("no candidate episodes to write")
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, **dict(meta or {}),
                "episodes": [{"seed": e.seed, "success": e.success, "terminated": e.terminated,
                              "truncated": e.truncated, "info": e.info} for e in episodes]}
    arrays = {key: np.concatenate([getattr(e, key) for e in episodes]) for key in STEP_ARRAYS}
    arrays["lengths"] = np.asarray([len(e) for e in episodes], dtype=np.int64)
    arrays["meta"] = np.asarray(json.dumps(jsonable(document)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_candidates(path: str | os.PathLike) -> list[Episode]:
    """The episodes of a pool written by :func:`write_candidates`; ``ValueError`` naming ``path`` when
    it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        document = json.loads(str(arrays.pop("meta")))
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path} is not a candidate pool ({type(exc).__name__}: {exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{path} is not a candidate pool")
    return episodes_from_arrays(document["episodes"], arrays)
