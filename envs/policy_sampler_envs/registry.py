"""Registry of the tasks of ``policy_sampler_envs`` and of their scripted experts.

Every task is registered through :func:`register_task`, which registers the environment with
Gymnasium and records a factory for its scripted expert. A demo collector then does::

    env = gymnasium.make(task_id)
    expert = make_expert(task_id, env)
    obs, info = env.reset(seed=seed)
    expert.reset(seed)
    while ...:
        obs, reward, terminated, truncated, info = env.step(expert.act(obs))

An expert factory is a callable ``factory(env) -> Expert`` or, so that registering a task does
not import its simulator, a ``"module:attribute"`` string naming such a callable (a class
whose constructor takes the env is the usual case), resolved on the first ``make_expert``.

Beside its expert a task registers its :class:`~policy_sampler_envs.description.TaskDescription`
(its trajectory features, chunk preview, control period and safe action), given the same way: a
``factory(task_id) -> TaskDescription`` or a ``"module:attribute"`` string; :func:`describe_task`
builds it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol, Union, runtime_checkable

import gymnasium
import numpy as np

__all__ = ["Expert", "ExpertFactory", "available_tasks", "canonical_task_id", "describe_task", "make_env",
           "make_expert", "register_task"]

_MODULE_PREFIX = "policy_sampler_envs:"


@runtime_checkable
class Expert(Protocol):
    """A scripted demonstrator for one task.

    ``reset(seed)`` is called once per episode, after ``env.reset``; it reseeds the expert's
    own randomness (side choice, waypoint jitter, action noise...) so that an episode is
    reproducible from the pair (env seed, expert seed). ``act(observation)`` returns a valid
    action of the env's action space.
    """

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, observation: np.ndarray) -> np.ndarray: ...


ExpertFactory = Callable[[gymnasium.Env], Expert]

# task id (without module prefix) -> expert factory or "module:attribute" string
_EXPERTS: dict[str, Union[ExpertFactory, str]] = {}
# task id -> description factory or "module:attribute" string (tasks without one are absent)
_DESCRIPTIONS: dict[str, Union[Callable[[str], Any], str]] = {}


def canonical_task_id(task_id: str) -> str:
    """Strip surrounding blanks and Gymnasium's ``module:`` prefix, so both spellings name the same
    task: ``"policy_sampler_envs:PolicySampler/X-v0"`` -> ``"PolicySampler/X-v0"``."""
    task_id = str(task_id).strip()
    if ":" in task_id:
        task_id = task_id.split(":", 1)[1]
    return task_id


def _known(task_id: str) -> str:
    """The canonical id of a registered task, else a ``ValueError`` listing the tasks."""
    key = canonical_task_id(task_id)
    if key not in _EXPERTS:
        listing = "\n  ".join(available_tasks()) or "(none registered)"
        raise ValueError(f"unknown task {task_id!r}; available tasks:\n  {listing}")
    return key


def register_task(
    task_id: str,
    entry_point: str,
    max_episode_steps: int,
    expert: Union[ExpertFactory, str],
    description: Union[Callable[[str], Any], str, None] = None,
    **kwargs: Any,
) -> None:
    """Register ``task_id`` with Gymnasium and record its expert factory and its description.

    ``kwargs`` go to :func:`gymnasium.register` (e.g. ``kwargs={...}`` for the env constructor,
    ``reward_threshold``). Registering the same id again (a module re-import or reload)
    replaces the expert and leaves Gymnasium's entry as it is, so it never warns.
    """
    task_id = canonical_task_id(task_id)
    if task_id not in gymnasium.registry:
        gymnasium.register(
            id=task_id,
            entry_point=entry_point,
            max_episode_steps=max_episode_steps,
            **kwargs,
        )
    _EXPERTS[task_id] = expert
    if description is not None:
        _DESCRIPTIONS[task_id] = description


def available_tasks() -> list[str]:
    """Ids of the registered tasks that have an expert, sorted."""
    return sorted(_EXPERTS)


def _resolve(factory: Union[ExpertFactory, str]) -> ExpertFactory:
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    return factory


def make_env(task_id: str, **kwargs: Any) -> gymnasium.Env:
    """``gymnasium.make`` of a registered task (``kwargs`` go to the env; ``ValueError`` listing the
    tasks for an unknown id)."""
    return gymnasium.make(_known(task_id), **kwargs)


def describe_task(task_id: str) -> Any:
    """The task's :class:`~policy_sampler_envs.description.TaskDescription` (a ``ValueError`` for an
    unknown task, or one that registered none)."""
    key = _known(task_id)
    if key not in _DESCRIPTIONS:
        described = ", ".join(sorted(_DESCRIPTIONS)) or "none"
        raise ValueError(f"task {key!r} registered no description (features, preview); described: {described}")
    return _resolve(_DESCRIPTIONS[key])(key)


def make_expert(task_id: str, env: gymnasium.Env) -> Expert:
    """Build the scripted expert of ``task_id`` for ``env`` (wrapped or not).

    Raises ``ValueError`` naming the available tasks for an unknown id.
    """
    key = _known(task_id)
    factory = _resolve(_EXPERTS[key])
    _EXPERTS[key] = factory
    return factory(env)
