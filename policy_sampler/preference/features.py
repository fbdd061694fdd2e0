"""Trajectory features phi(xi) for preference learning, and their normalization with stored
constants (the reward is w . phi; arXiv 1810.04303 Sec. III uses hand-designed features).

The features are the task's: a task registers a description (``policy_sampler_envs.describe_task``)
with its ``feature_names`` and a ``features(observations, actions, info)`` method, and this module
applies it to episodes. It knows no task itself.

``featurize(task, episodes)`` takes ``policy_sampler.data.demos.Episode`` objects or anything with
``observations`` [T, obs_dim], ``actions`` [T, act_dim], an ``info`` dict and, optionally,
``next_observations`` [T, obs_dim] (its last row then counts as the final state).
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

import numpy as np

__all__ = ["FeatureNormalizer", "TrajectoryFeatures", "featurize"]


class TrajectoryFeatures(Protocol):
    """What preference learning needs of a task (``policy_sampler_envs.TaskDescription`` provides it)."""

    task_id: str
    feature_names: tuple[str, ...]

    def features(self, observations: np.ndarray, actions: np.ndarray, info: Mapping[str, Any]) -> np.ndarray: ...

    def chunk_features(self, past_observations: np.ndarray, past_actions: np.ndarray,
                       chunk: np.ndarray) -> np.ndarray: ...


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


def featurize(task: TrajectoryFeatures, episodes: Sequence[Any]) -> np.ndarray:
    """Features [n, d] (float64) of ``episodes`` under ``task``'s features; columns ``task.feature_names``."""
    rows = []
    for index, episode in enumerate(episodes):
        obs, actions = _states(episode, index)
        try:
            rows.append(task.features(obs, actions, getattr(episode, "info", None) or {}))
        except ValueError as exc:
            raise ValueError(f"episode {index}: {exc}") from None
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(task.feature_names))


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
