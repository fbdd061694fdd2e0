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

Previews are per task: ``PolicySampler/ObstacleReach-v0`` integrates the velocity commands
(position += clip(a) * max_speed * dt, read from the env), and where the partial path has not yet
passed the obstacle the ``side`` feature is the side the preview heads to: where the straight-line
extension of the preview (its mean velocity, from its end point) crosses the obstacle's line, left
(-1) or right (+1) of the obstacle (0 straight at it), so early chunks already carry the side preference.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from policy_sampler.data.demos import canonical_task_id, make_env
from policy_sampler.preference.features import FeatureNormalizer, feature_names, featurize
from policy_sampler.serialization import atomic_write_bytes

__all__ = ["RewardSelector", "SELECTION_MODES"]

SELECTION_MODES = ("mean", "thompson", "soft")
_OBSTACLE_REACH = "PolicySampler/ObstacleReach-v0"
FORMAT = "policy_sampler.RewardSelector"


@dataclass
class _Partial:
    observations: np.ndarray
    actions: np.ndarray
    info: dict


class RewardSelector:
    """Scores and picks candidate chunks; see the module docstring.

    ``weights``: ``[d]`` (a weight vector) or ``[M, d]`` (posterior samples; their normalized mean is
    the point estimate). ``normalizer``: the :class:`FeatureNormalizer` the weights were learned with.
    """

    def __init__(self, task_id: str, weights: Any, normalizer: FeatureNormalizer, mode: str = "mean",
                 temperature: float = 1.0, min_confidence: float = 2.0) -> None:
        self.task = canonical_task_id(task_id)
        if self.task != _OBSTACLE_REACH:
            raise ValueError(f"no chunk preview for task {task_id!r}; reward selection supports {_OBSTACLE_REACH}")
        samples = np.asarray(weights, dtype=np.float64)
        samples = samples[None] if samples.ndim == 1 else samples
        d = len(feature_names(self.task))
        if samples.ndim != 2 or samples.shape[1] != d or not np.isfinite(samples).all():
            raise ValueError(f"weights must be finite, [{d}] or [M, {d}] for {self.task}, got shape {samples.shape}")
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
        env = make_env(self.task)
        self.dt = float(env.unwrapped.dt)
        self.max_speed = float(env.unwrapped.max_speed)
        env.close()

    # ------------------------------------------------------------------ scoring
    def preview(self, last_obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Observations [L, 8] the chunk ``actions`` [L, 2] would lead to from ``last_obs``."""
        vel = np.clip(actions, -1.0, 1.0) * self.max_speed
        pos = last_obs[:2] + np.cumsum(vel * self.dt, axis=0)
        rest = np.broadcast_to(last_obs[4:], (len(actions), last_obs.size - 4))
        return np.concatenate([pos, vel, rest], axis=1)

    def features(self, past_obs: np.ndarray, past_actions: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Normalized features [N, d] of the episode so far (``past_obs`` [T + 1, 8]: every observation
        including the current one; ``past_actions`` [T, 2]) followed by each candidate [N, L, 2]."""
        previews = [self.preview(past_obs[-1], chunk) for chunk in candidates]
        partials = [_Partial(np.concatenate([past_obs, path[:-1]]),
                             np.concatenate([past_actions.reshape(-1, chunk.shape[-1]), chunk]), {})
                    for path, chunk in zip(previews, candidates)]
        raw = featurize(self.task, partials)
        side = feature_names(self.task).index("side")
        for k, path in enumerate(previews):
            if raw[k, side] == 0.0:  # not past the obstacle yet: the side the preview heads to
                raw[k, side] = self._heading_side(past_obs[-1], path)
        return self.normalizer.transform(raw)

    @staticmethod
    def _heading_side(now: np.ndarray, path: np.ndarray) -> float:
        """-1 / +1: the side of the obstacle where the preview's straight-line extension (its mean
        velocity from its end) crosses the obstacle's line; the end point's side if it does not rise."""
        obstacle = now[6:8]
        end, velocity = path[-1, :2], (path[-1, :2] - now[:2]) / len(path)
        x = end[0]
        if velocity[1] > 1e-9 and end[1] < obstacle[1]:
            x = end[0] + velocity[0] / velocity[1] * (obstacle[1] - end[1])
        return float(np.sign(x - obstacle[0]))

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
        return {"format": FORMAT, "task": self.task, "weights": self.samples.tolist(),
                "normalizer": self.normalizer.state_dict(), "mode": self.mode, "temperature": self.temperature,
                "min_confidence": self.min_confidence}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        atomic_write_bytes(path, json.dumps(self.state_dict(), indent=1).encode())
        return path

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], **overrides: Any) -> "RewardSelector":
        if not isinstance(state, Mapping) or state.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file (format {state.get('format') if isinstance(state, Mapping) else None!r})")
        args = dict(mode=state["mode"], temperature=state["temperature"],
                    min_confidence=state.get("min_confidence", 2.0))
        args.update(overrides)
        return cls(state["task"], state["weights"], FeatureNormalizer.from_state_dict(state["normalizer"]), **args)

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides: Any) -> "RewardSelector":
        return cls.from_state_dict(json.loads(Path(path).read_text()), **overrides)
