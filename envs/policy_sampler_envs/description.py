"""What a task tells the layers above it, so that they need to know no task.

A task registers a :class:`TaskDescription` beside its expert (:func:`~policy_sampler_envs.register_task`).
Preference learning reads the trajectory features, the chunk preview and the control period from it;
the real-time runner reads the safe action. Everything here works on plain arrays: no env is built.

A trajectory is ``observations`` ``[T, obs_dim]`` (the observation before each action) or
``[T + 1, obs_dim]`` (the final one appended, when known), ``actions`` ``[T, action_dim]`` and the
last step's ``info``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["TaskDescription", "path_length", "squared_jerk"]


def path_length(positions: np.ndarray) -> float:
    """Sum of the step lengths of a ``[T, k]`` path."""
    return float(np.linalg.norm(np.diff(positions, axis=0), axis=1).sum())


def squared_jerk(positions: np.ndarray) -> float:
    """Sum of squared third differences of a ``[T, k]`` path (0 for fewer than 4 points)."""
    return float((np.diff(positions, n=3, axis=0) ** 2).sum()) if positions.shape[0] >= 4 else 0.0


class TaskDescription:
    """The task-specific facts of one task; subclasses fill in the class attributes and methods.

    ``feature_names``: the columns of :meth:`features` (the reward is linear in them);
    ``dt``: seconds of one env step (the control period); ``action_low`` / ``action_high``: the
    action box; ``obs_dim`` / ``action_dim``: the flat observation and action sizes the features
    read (None: any size).
    """

    task_id: str = ""
    feature_names: tuple[str, ...] = ()
    dt: float = 0.0
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    obs_dim: int | None = None
    action_dim: int | None = None

    def __init__(self, task_id: str | None = None) -> None:
        if task_id is not None:
            self.task_id = str(task_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.task_id!r})"

    # ------------------------------------------------------------------ features
    def check(self, observations: np.ndarray, actions: np.ndarray, where: str = "trajectory") -> None:
        """``ValueError`` naming ``where`` when the sizes are not this task's."""
        if self.obs_dim is not None and observations.shape[1] != self.obs_dim:
            raise ValueError(f"{where}: {self.task_id} needs obs_dim {self.obs_dim}, got {observations.shape[1]}")
        if self.action_dim is not None and actions.shape[1] != self.action_dim:
            raise ValueError(f"{where}: {self.task_id} needs action_dim {self.action_dim}, got {actions.shape[1]}")

    def features(self, observations: np.ndarray, actions: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        """The raw features ``[len(feature_names)]`` of one trajectory."""
        raise NotImplementedError

    # ------------------------------------------------------------------ chunks
    def preview(self, last_observation: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Observations ``[L, obs_dim]`` that the action chunk ``actions`` ``[L, action_dim]`` would lead
        to from ``last_observation``: a kinematic guess, no simulation."""
        raise NotImplementedError

    def chunk_trajectory(self, past_observations: np.ndarray, past_actions: np.ndarray,
                         chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The episode so far (``past_observations`` ``[T + 1, obs_dim]`` including the current one,
        ``past_actions`` ``[T, action_dim]``) followed by the previewed ``chunk`` ``[L, action_dim]``:
        ``(observations [T + L], actions [T + L], preview [L])``, one observation before each action
        (the preview's last point follows the last action)."""
        path = self.preview(past_observations[-1], chunk)
        observations = np.concatenate([past_observations, path[:-1]])
        actions = np.concatenate([past_actions.reshape(-1, chunk.shape[-1]), chunk])
        return observations, actions, path

    def chunk_features(self, past_observations: np.ndarray, past_actions: np.ndarray, chunk: np.ndarray) -> np.ndarray:
        """Raw features of :meth:`chunk_trajectory`: what a reward would say of taking ``chunk`` now."""
        observations, actions, _ = self.chunk_trajectory(past_observations, past_actions, chunk)
        return self.features(observations, actions, {})

    # ------------------------------------------------------------------ control
    def safe_action(self, last_action: np.ndarray | None) -> np.ndarray:
        """The action that keeps the robot still when no fresh command is available (the default:
        zeros, right for velocity and delta-position commands)."""
        return np.zeros(len(self.action_low), dtype=np.float32)
