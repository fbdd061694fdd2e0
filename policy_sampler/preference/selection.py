"""Choosing among N sampled action chunks with a learned reward (best-of-N under the posterior).

At run time the policy samples N candidate chunks in one batched call; each candidate is scored by
the learned trajectory reward w . phi applied to the episode so far followed by the candidate's
*preview* (where the chunk would take the robot), normalized with the pool's stored constants.
Modes: ``'mean'`` takes the argmax under the normalized posterior mean (for a reward linear in w this
is also the argmax of the posterior expected reward), keeping only the components the posterior is
sure of: a weight whose mean lies within ``min_confidence`` posterior standard deviations of zero is
set to 0. A component the answers have not pinned down (its mean is noise) would otherwise steer
every chunk the same way: a small learned weight on effort or distance makes every chosen chunk a
slow one, and episodes time out; ``'thompson'`` draws one posterior sample per
choice and takes its argmax; ``'soft'`` samples a candidate with probability proportional to
exp(reward / temperature). With N = 1 the policy is unchanged.

Previews are the task's (``chunk_features`` of its description, ``policy_sampler_envs.describe_task``):
where the chunk would take the robot, from a kinematic guess. ObstacleReach's, for example, integrates
the velocity commands and, before the path passes the obstacle, sets the ``side`` feature to the side
the preview heads to, so early chunks already carry the side preference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from policy_sampler.preference.features import FeatureNormalizer, TrajectoryFeatures
from policy_sampler.serialization import atomic_write_bytes

__all__ = ["RewardSelector", "SELECTION_MODES"]

SELECTION_MODES = ("mean", "thompson", "soft")
FORMAT = "policy_sampler.RewardSelector"


class RewardSelector:
    """Scores and picks candidate chunks; see the module docstring.

    ``task``: the task's description (its features and chunk preview). ``weights``: ``[d]`` (a weight
    vector) or ``[M, d]`` (posterior samples; their normalized mean is the point estimate).
    ``normalizer``: the :class:`FeatureNormalizer` the weights were learned with.
    """

    def __init__(self, task: TrajectoryFeatures, weights: Any, normalizer: FeatureNormalizer, mode: str = "mean",
                 temperature: float = 1.0, min_confidence: float = 2.0) -> None:
        if not hasattr(task, "chunk_features"):
            raise ValueError(f"task must be a task description with chunk_features (policy_sampler_envs."
                             f"describe_task), got {type(task).__name__}")
        self.task = task
        samples = np.asarray(weights, dtype=np.float64)
        samples = samples[None] if samples.ndim == 1 else samples
        d = len(task.feature_names)
        if samples.ndim != 2 or samples.shape[1] != d or not np.isfinite(samples).all():
            raise ValueError(f"weights must be finite, [{d}] or [M, {d}] for {task.task_id}, got shape {samples.shape}")
        if mode not in SELECTION_MODES:
            raise ValueError(f"mode must be one of {SELECTION_MODES}, got {mode!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        if not min_confidence >= 0:
            raise ValueError(f"min_confidence must be >= 0, got {min_confidence!r}")
        self.samples = samples
        self.min_confidence = float(min_confidence)
        mean, std = samples.mean(0), samples.std(0)
        sure = np.abs(mean) >= self.min_confidence * std
        mean = np.where(sure, mean, 0.0)
        self.weights = mean / max(np.linalg.norm(mean), 1e-12)
        self.normalizer = normalizer
        self.mode = mode
        self.temperature = float(temperature)

    # ------------------------------------------------------------------ scoring
    def features(self, past_obs: np.ndarray, past_actions: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Normalized features [N, d] of the episode so far (``past_obs`` [T + 1, obs_dim]: every
        observation including the current one; ``past_actions`` [T, action_dim]) followed by each
        candidate chunk [N, L, action_dim], previewed by the task."""
        past_obs = np.asarray(past_obs, dtype=np.float64)
        past_actions = np.asarray(past_actions, dtype=np.float64)
        raw = np.stack([self.task.chunk_features(past_obs, past_actions, np.asarray(chunk, dtype=np.float64))
                        for chunk in candidates])
        return self.normalizer.transform(raw)

    def rewards(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weights

    def choose(self, past_obs: Sequence[np.ndarray], past_actions: Sequence[np.ndarray], candidates: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
        """Index [B] of the chosen candidate per env; ``candidates`` [B, N, L, action_dim]."""
        picks = []
        for b in range(candidates.shape[0]):
            phi = self.features(np.asarray(past_obs[b]), np.asarray(past_actions[b]), candidates[b])
            if self.mode == "thompson":
                w = self.samples[rng.integers(len(self.samples))]
                picks.append(int(np.argmax(phi @ w)))
            elif self.mode == "soft":
                r = self.rewards(phi) / self.temperature
                p = np.exp(r - r.max())
                picks.append(int(rng.choice(len(p), p=p / p.sum())))
            else:
                picks.append(int(np.argmax(self.rewards(phi))))
        return np.asarray(picks, dtype=np.int64)

    # ------------------------------------------------------------------ files
    def state_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "task": self.task.task_id, "weights": self.samples.tolist(),
                "normalizer": self.normalizer.state_dict(), "mode": self.mode, "temperature": self.temperature,
                "min_confidence": self.min_confidence}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        atomic_write_bytes(path, json.dumps(self.state_dict(), indent=1).encode())
        return path

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], task: TrajectoryFeatures, **overrides: Any) -> "RewardSelector":
        """The selector saved in ``state``, for ``task`` (which must be the task it was learned on)."""
        if not isinstance(state, Mapping) or state.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file (format {state.get('format') if isinstance(state, Mapping) else None!r})")
        if state.get("task") != task.task_id:
            raise ValueError(f"the reward was learned on task {state.get('task')!r}, not {task.task_id!r}")
        args = dict(mode=state["mode"], temperature=state["temperature"],
                    min_confidence=state.get("min_confidence", 2.0))
        args.update(overrides)
        return cls(task, state["weights"], FeatureNormalizer.from_state_dict(state["normalizer"]), **args)

    @classmethod
    def load(cls, path: str | os.PathLike, task: TrajectoryFeatures, **overrides: Any) -> "RewardSelector":
        """The selector saved at ``path`` by :meth:`save`, for ``task``."""
        try:
            state = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read the reward file {path}: {exc}") from None
        return cls.from_state_dict(state, task, **overrides)
