"""Trajectory features phi(xi) for preference learning, and their normalization with stored
constants (the reward is w . phi; arXiv 1810.04303 Sec. III uses hand-designed features).

``featurize(task_id, episodes)`` takes ``policy_sampler.data.demos.Episode`` objects or anything
with ``observations`` [T, obs_dim], ``actions`` [T, act_dim], an ``info`` dict and, optionally,
``next_observations`` [T, obs_dim] (its last row then counts as the final state).

``PolicySampler/ObstacleReach-v0`` (positions in metres, one step = 0.04 s):
  path_length (sum of |step| of the puck), jerk (sum of squared third differences of the puck's
  position), min_clearance (smallest gap between the puck's rim and the obstacle's; negative
  when touching), side (-1 passed left of the obstacle, +1 right, 0 never passed; from
  ``info["side"]``, else from where the path first crosses the obstacle's line going up),
  final_distance (puck to goal at the end), time (steps), effort (sum of |a|^2).

``PolicySampler/MetaWorld-*`` (hand xyz = obs[0:3], object = obs[4:7], goal = obs[-3:]):
  path_length and jerk of the hand, final_distance (the hand's to the goal for reach tasks, the
  object's otherwise), time (steps), effort (sum of |a_xyz|^2), gripper_use (mean of the
  gripper command mapped to [0, 1]: 0 always open, 1 always closed).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from policy_sampler.data.demos import canonical_task_id

__all__ = ["FeatureNormalizer", "featurize", "feature_names"]

_OBSTACLE_REACH = "PolicySampler/ObstacleReach-v0"
_METAWORLD_PREFIX = "PolicySampler/MetaWorld-"
_OBSTACLE_REACH_NAMES = ["path_length", "jerk", "min_clearance", "side", "final_distance", "time", "effort"]
_METAWORLD_NAMES = ["path_length", "jerk", "final_distance", "time", "effort", "gripper_use"]
_SIDES = {"left": -1.0, "right": 1.0}


def feature_names(task_id: str) -> list[str]:
    """The names of ``featurize(task_id, ...)``'s columns, in order."""
    task = canonical_task_id(task_id)
    if task == _OBSTACLE_REACH:
        return list(_OBSTACLE_REACH_NAMES)
    if task.startswith(_METAWORLD_PREFIX):
        return list(_METAWORLD_NAMES)
    raise ValueError(f"no preference features for task {task_id!r}; supported: {_OBSTACLE_REACH} and {_METAWORLD_PREFIX}<env>")


def _states(episode: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(observations with the final state appended when known, actions), as float64 arrays."""
    try:
        obs = np.asarray(episode.observations, dtype=np.float64)
        actions = np.asarray(episode.actions, dtype=np.float64)
    except AttributeError as exc:
        raise TypeError(f"episode {index} has no observations/actions ({exc})") from None
    if obs.ndim != 2 or obs.shape[0] < 1 or actions.ndim != 2 or actions.shape[0] != obs.shape[0]:
        raise ValueError(f"episode {index}: observations {obs.shape} and actions {actions.shape} must be [T, *] with the same T >= 1")
    nxt = getattr(episode, "next_observations", None)
    if nxt is not None:
        nxt = np.asarray(nxt, dtype=np.float64)
        if nxt.shape == obs.shape:
            obs = np.concatenate([obs, nxt[-1:]], 0)
    if not (np.isfinite(obs).all() and np.isfinite(actions).all()):
        raise ValueError(f"episode {index} has NaN or inf observations or actions")
    return obs, actions


def _path_length(pos: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(pos, axis=0), axis=1).sum())


def _jerk(pos: np.ndarray) -> float:
    return float((np.diff(pos, n=3, axis=0) ** 2).sum()) if pos.shape[0] >= 4 else 0.0


def _side(pos: np.ndarray, obstacle: np.ndarray, info: Mapping[str, Any]) -> float:
    side = info.get("side") if isinstance(info, Mapping) else None
    if side in _SIDES:
        return _SIDES[side]
    oy = obstacle[:, 1]
    crossing = np.flatnonzero((pos[:-1, 1] < oy[:-1]) & (pos[1:, 1] >= oy[:-1]))
    if crossing.size == 0:
        return 0.0
    t = crossing[0]
    frac = (oy[t] - pos[t, 1]) / (pos[t + 1, 1] - pos[t, 1])
    x = pos[t, 0] + frac * (pos[t + 1, 0] - pos[t, 0])
    return -1.0 if x < obstacle[t, 0] else 1.0


def _obstacle_reach(obs: np.ndarray, actions: np.ndarray, info: Mapping[str, Any]) -> list[float]:
    from policy_sampler_envs.obstacle_reach import AGENT_RADIUS, OBSTACLE_RADIUS

    pos, goal, obstacle = obs[:, 0:2], obs[:, 4:6], obs[:, 6:8]
    clearance = np.linalg.norm(pos - obstacle, axis=1).min() - OBSTACLE_RADIUS - AGENT_RADIUS
    return [
        _path_length(pos), _jerk(pos), float(clearance), _side(pos, obstacle, info),
        float(np.linalg.norm(pos[-1] - goal[-1])), float(actions.shape[0]), float((actions**2).sum()),
    ]


def _metaworld(task: str, obs: np.ndarray, actions: np.ndarray) -> list[float]:
    hand, obj, goal = obs[:, 0:3], obs[:, 4:7], obs[:, -3:]
    moved = hand if task[len(_METAWORLD_PREFIX):].startswith("reach") else obj
    gripper = (np.clip(actions[:, 3], -1.0, 1.0) + 1.0) / 2.0 if actions.shape[1] > 3 else np.zeros(1)
    return [
        _path_length(hand), _jerk(hand), float(np.linalg.norm(moved[-1] - goal[-1])), float(actions.shape[0]),
        float((actions[:, :3] ** 2).sum()), float(gripper.mean()),
    ]


def featurize(task_id: str, episodes: Sequence[Any]) -> np.ndarray:
    """Features [n, d] (float64) of ``episodes`` for ``task_id``; columns :func:`feature_names`."""
    task = canonical_task_id(task_id)
    names = feature_names(task)
    rows = []
    for index, episode in enumerate(episodes):
        obs, actions = _states(episode, index)
        info = getattr(episode, "info", None) or {}
        if task == _OBSTACLE_REACH:
            if obs.shape[1] != 8 or actions.shape[1] != 2:
                raise ValueError(f"episode {index}: ObstacleReach needs obs_dim 8 and act_dim 2, got {obs.shape[1]} and {actions.shape[1]}")
            rows.append(_obstacle_reach(obs, actions, info))
        else:
            if obs.shape[1] < 7 or actions.shape[1] < 3:
                raise ValueError(f"episode {index}: Meta-World needs obs_dim >= 7 and act_dim >= 3, got {obs.shape[1]} and {actions.shape[1]}")
            rows.append(_metaworld(task, obs, actions))
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(names))


class FeatureNormalizer:
    """Standardizes features with a mean and std fitted once on a pool and stored
    (:meth:`state_dict` is JSON-able), so later trajectories use the same constants. Columns
    with std below ``min_std`` are only centred."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], names: Sequence[str] | None = None):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape or not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()) or (self.std <= 0).any():
            raise ValueError("mean and std must be finite vectors of the same length, with std > 0")
        self.names = None if names is None else [str(n) for n in names]
        if self.names is not None and len(self.names) != self.mean.size:
            raise ValueError(f"{len(self.names)} names for {self.mean.size} features")

    @classmethod
    def fit(cls, features: np.ndarray, names: Sequence[str] | None = None, min_std: float = 1e-8) -> "FeatureNormalizer":
        """Mean and std of ``features`` [n, d] (n >= 1)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 1 or not np.isfinite(x).all():
            raise ValueError(f"features must be a finite [n >= 1, d] array, got shape {x.shape}")
        std = x.std(0)
        return cls(x.mean(0), np.where(std < min_std, 1.0, std), names)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """(features - mean) / std, [n, d]."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.mean.size:
            raise ValueError(f"features must be [n, {self.mean.size}], got shape {x.shape}")
        return (x - self.mean) / self.std

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "names": self.names}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "FeatureNormalizer":
        return cls(state["mean"], state["std"], state.get("names"))
