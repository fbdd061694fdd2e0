"""Gymnasium/MuJoCo tasks of policy_sampler, registered under the ``PolicySampler`` namespace.

Importing this package registers every task with Gymnasium and its scripted expert with
:mod:`policy_sampler_envs.registry`, so
``gymnasium.make("policy_sampler_envs:PolicySampler/<Task>-v0")`` works from a fresh
interpreter and ``make_expert(task_id, env)`` gives the task's demonstrator.

Tasks:

- ``PolicySampler/ObstacleReach-v0``: a planar puck reaches a goal around a cylindrical
  obstacle; the expert passes left or right at random (multimodal demonstrations). See
  :mod:`policy_sampler_envs.obstacle_reach`.
- ``PolicySampler/MetaWorld-<env_name>`` (e.g. ``PolicySampler/MetaWorld-push-v3``): the 50
  Meta-World v3 tasks with their scripted experts plus seeded variation. See
  :mod:`policy_sampler_envs.metaworld_tasks`.
"""

import os

# Headless rendering: must be set before anything imports mujoco's rendering backend.
os.environ.setdefault("MUJOCO_GL", "egl")

from .registry import Expert, available_tasks, make_expert, register_task  # noqa: E402

__all__ = ["Expert", "available_tasks", "make_expert", "register_task"]

# --- Our own MuJoCo tasks -----------------------------------------------------------------
register_task(
    task_id="PolicySampler/ObstacleReach-v0",
    entry_point="policy_sampler_envs.obstacle_reach:ObstacleReachEnv",
    max_episode_steps=200,
    expert="policy_sampler_envs.obstacle_reach:ObstacleReachExpert",
)

# --- Meta-World tasks ---------------------------------------------------------------------
# Every Meta-World v3 task, registered lazily (nothing is registered where Meta-World is absent).
from . import metaworld_tasks  # noqa: E402,F401
