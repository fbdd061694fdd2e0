"""Gymnasium/MuJoCo tasks of policy_sampler, registered under the ``PolicySampler`` namespace.

Importing this package registers every task with Gymnasium and its scripted expert with
:mod:`policy_sampler_envs.registry`, so
``gymnasium.make("policy_sampler_envs:PolicySampler/<Task>-v0")`` works from a fresh
interpreter and ``make_expert(task_id, env)`` gives the task's demonstrator.

Tasks:

- ``PolicySampler/ObstacleReach-v0``: a planar puck reaches a goal around a cylindrical
  obstacle; the expert passes left or right at random (multimodal demonstrations). See
  :mod:`policy_sampler_envs.obstacle_reach`.
"""

import os

# Headless rendering: must be set before anything imports mujoco's rendering backend.
os.environ.setdefault("MUJOCO_GL", "egl")

import importlib.util  # noqa: E402

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
# The single place where other task families join the registry: the module
# ``policy_sampler_envs/metaworld_tasks.py`` calls ``register_task(...)`` for each of its tasks
# at import. It is imported here when it exists; it must import cleanly (registering nothing,
# or registering lazily) where Meta-World is not installed, since importing this package must
# never fail.
if importlib.util.find_spec(f"{__name__}.metaworld_tasks") is not None:
    from . import metaworld_tasks  # noqa: E402,F401
