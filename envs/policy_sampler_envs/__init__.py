"""Gymnasium/MuJoCo tasks of policy_sampler, registered under the ``PolicySampler`` namespace.

Importing this package registers every task with Gymnasium and its scripted expert and
description with :mod:`policy_sampler_envs.registry`, so
``gymnasium.make("policy_sampler_envs:PolicySampler/<Task>-v0")`` works from a fresh
interpreter, ``make_expert(task_id, env)`` gives the task's demonstrator and
``describe_task(task_id)`` what the task tells preference learning and the control loop.

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

from .description import TaskDescription  # noqa: E402
from .registry import (  # noqa: E402
    Expert,
    available_tasks,
    canonical_task_id,
    describe_task,
    make_env,
    make_expert,
    register_task,
)

__all__ = ["Expert", "TaskDescription", "available_tasks", "canonical_task_id", "describe_task", "make_env",
           "make_expert", "register_task"]

# --- Our own MuJoCo tasks -----------------------------------------------------------------
register_task(
    task_id="PolicySampler/ObstacleReach-v0",
    entry_point="policy_sampler_envs.obstacle_reach:ObstacleReachEnv",
    max_episode_steps=200,
    expert="policy_sampler_envs.obstacle_reach:ObstacleReachExpert",
    description="policy_sampler_envs.obstacle_reach:ObstacleReachDescription",
)

# --- Meta-World tasks ---------------------------------------------------------------------
# Every Meta-World v3 task, registered lazily (nothing is registered where Meta-World is absent).
from . import metaworld_tasks  # noqa: E402,F401
