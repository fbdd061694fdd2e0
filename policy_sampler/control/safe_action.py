"""What a tick gets when no chunk has an action for it: the safe action, explicit per task.

``'task'`` asks the task's description (:class:`policy_sampler_envs.description.TaskDescription`), found
from the task the policy was trained on (``policy.metadata['task']``): the task knows whether zero or a
repeat of the last command keeps the robot still. ObstacleReach commands velocities, so zero stops it;
Meta-World commands hand displacements and a gripper effort, so its safe action holds the hand and
keeps the last gripper command. A policy that names no task gets zeros (``source`` says so).
``'zero'``: zeros. ``'repeat'``: each env's last executed action (zeros before the first), right for
absolute position targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SafeAction", "policy_task_description"]


def policy_task_description(policy: Any) -> Any:
    """The description of the task named in ``policy.metadata['task']``, or None when it names none.
    A named task without a description is a ``ValueError`` saying how to choose the safe action."""
    task = (getattr(policy, "metadata", None) or {}).get("task")
    if not task:
        return None
    try:
        from policy_sampler_envs import describe_task

        return describe_task(str(task))
    except (ImportError, ValueError) as err:
        raise ValueError(f"the policy names task {task!r}, whose safe action is unknown ({err}); pass "
                         f"RunnerConfig(safe_action='zero' or 'repeat')") from err


class SafeAction:
    """The safe action of each env for ``mode`` (``'task'``, ``'zero'`` or ``'repeat'``);
    ``description`` is the task's (for ``'task'``; None gives zeros)."""

    def __init__(self, mode: str, action_dim: int, description: Any = None) -> None:
        self.action_dim = int(action_dim)
        if mode == "task" and description is None:
            mode = "zero"
            self.source = "zero (the policy names no task)"
        elif mode == "task":
            self.source = f"task {description.task_id}"
        else:
            self.source = mode
        self.mode = mode
        self.description = description

    def __call__(self, last: np.ndarray | None, n_envs: int) -> np.ndarray:
        """``[n_envs, action_dim]`` given the last executed actions ``[n_envs, action_dim]`` (None
        before the first tick)."""
        if self.mode == "zero" or (self.mode == "repeat" and last is None):
            return np.zeros((n_envs, self.action_dim), np.float32)
        if self.mode == "repeat":
            return np.array(last, np.float32)
        rows = [np.asarray(self.description.safe_action(None if last is None else last[e]), np.float32)
                for e in range(n_envs)]
        out = np.stack(rows)
        if out.shape != (n_envs, self.action_dim):
            raise ValueError(f"{self.source}'s safe action has shape {out.shape[1:]}, the policy's actions "
                             f"have {self.action_dim} numbers")
        return out
