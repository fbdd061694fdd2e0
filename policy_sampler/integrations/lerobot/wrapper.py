"""``wrap_lerobot_policy``: a LeRobot DiffusionPolicy whose chunks any sampler draws, in LeRobot's own loop.

    from policy_sampler.integrations.lerobot import wrap_lerobot_policy
    fast = wrap_lerobot_policy(policy, sampler="speculative_picard")
    fast.reset()
    action = fast.select_action(batch)          # LeRobot's call: same queues, shapes and processors
    fast.last_result.rounds, fast.last_result.nfe

Everything but the reverse chain stays LeRobot's: ``select_action``, ``predict_action_chunk`` and
``reset`` are LeRobot's own methods on the same policy object (its observation and action queues,
its image stacking, ``generate_actions``' conditioning and slicing). Only while one of them runs,
the policy's ``diffusion.conditional_sample`` is replaced by :meth:`LeRobotSampledPolicy._conditional_sample`,
which draws ``x_T`` and the per-step noise in LeRobot's order (:meth:`LeRobotChain.draw`) and runs
the chosen sampler on LeRobot's U-Net and schedule. Afterwards the policy is LeRobot's again.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import Tensor

from policy_sampler.integrations.lerobot.chain import (
    NO_DIFFUSION_CHAIN,
    LeRobotChain,
    require_lerobot,
    resolve_sampler,
)
from policy_sampler.samplers import SampleResult, Sampler

__all__ = ["LeRobotSampledPolicy", "check_lerobot_policy", "wrap_lerobot_policy"]


def check_lerobot_policy(policy: Any) -> None:
    """Raise unless ``policy`` is a LeRobot ``DiffusionPolicy``: an ``ImportError`` saying how to install
    LeRobot when it is missing, else a ``ValueError`` naming what ``policy`` is."""
    lerobot_diffusion_policy = require_lerobot()
    if isinstance(policy, lerobot_diffusion_policy):
        return
    kind = type(policy)
    if kind.__module__.startswith("policy_sampler."):
        raise ValueError(
            "policy is policy_sampler's own DiffusionPolicy, not a LeRobot one: it takes samplers directly, "
            "policy.predict_action(obs, sampler=...)"
        )
    if kind.__module__.startswith("lerobot."):
        name = str(getattr(policy, "name", "") or kind.__name__)
        why = NO_DIFFUSION_CHAIN.get(name, "it is not a diffusion policy")
        raise ValueError(
            f"policy is a LeRobot {kind.__name__} (type {name!r}), which is not supported: {why}. "
            "wrap_lerobot_policy samples the reverse diffusion chain of a LeRobot DiffusionPolicy (type 'diffusion')"
        )
    raise ValueError(
        f"policy must be a LeRobot DiffusionPolicy (lerobot.policies.diffusion.modeling_diffusion.DiffusionPolicy), "
        f"got {kind.__module__}.{kind.__qualname__}"
    )


def wrap_lerobot_policy(
    policy: Any,
    sampler: str | Sampler | None = None,
    *,
    generator: torch.Generator | None = None,
    num_inference_steps: int | None = None,
    **sampler_options: Any,
) -> "LeRobotSampledPolicy":
    """``policy`` (a LeRobot ``DiffusionPolicy``) with its chunks drawn by ``sampler``.

    ``sampler``: a name for :func:`~policy_sampler.make_sampler` with ``sampler_options``, or a
    :class:`~policy_sampler.Sampler`; None samples the policy's own chain (``ddpm``, or ``ddim`` when
    LeRobot is configured with DDIM). ``generator``: where ``x_T`` and the per-step noise come from
    (None: torch's global RNG, in LeRobot's order, so ``sampler='ddpm'`` gives LeRobot's own chunks for
    the same ``torch.manual_seed``). ``num_inference_steps``: the schedule's length (None: LeRobot's).
    Bad arguments raise here, before any chunk is sampled.
    """
    return LeRobotSampledPolicy(policy, sampler, generator=generator, num_inference_steps=num_inference_steps,
                                **sampler_options)


class LeRobotSampledPolicy:
    """A LeRobot ``DiffusionPolicy`` sampled by one of this module's samplers (see the module docstring).

    Attributes it does not define (``config``, ``to``, ``eval``, ``forward``, ...) are the policy's.
    ``last_result``: the :class:`~policy_sampler.SampleResult` of the last chunk sampled (rounds, nfe),
    None before the first. One call at a time: a concurrent or re-entrant call raises ``RuntimeError``.
    """

    def __init__(self, policy: Any, sampler: str | Sampler | None = None, *, generator: torch.Generator | None = None,
                 num_inference_steps: int | None = None, **sampler_options: Any) -> None:
        check_lerobot_policy(policy)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        chain = LeRobotChain(policy.diffusion)
        self.__dict__.update(
            policy=policy,
            chain=chain,
            sampler=resolve_sampler(sampler, sampler_options, chain.deterministic),
            schedule=chain.schedule_for(num_inference_steps),
            generator=generator,
            last_result=None,
            _lock=threading.Lock(),
        )

    # ------------------------------------------------------------------ LeRobot's calls
    def select_action(self, batch: dict[str, Tensor], noise: Tensor | None = None) -> Tensor:
        """LeRobot's ``select_action`` (queues, one action per call); a new chunk comes from the sampler."""
        return self._with_sampler(self.policy.select_action, batch, noise=noise)

    def predict_action_chunk(self, batch: dict[str, Tensor], noise: Tensor | None = None) -> Tensor:
        """LeRobot's ``predict_action_chunk`` (``[B, n_action_steps, action_dim]``), drawn by the sampler."""
        return self._with_sampler(self.policy.predict_action_chunk, batch, noise=noise)

    def reset(self) -> None:
        """LeRobot's ``reset``: clear the observation and action queues (call on ``env.reset()``)."""
        self.policy.reset()

    def __getattr__(self, name: str) -> Any:
        if name == "policy":  # not set yet (a failed __init__): never recurse
            raise AttributeError(name)
        return getattr(self.policy, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("sampler", "generator", "schedule"):
            raise AttributeError(f"{name} is fixed at wrap time; call wrap_lerobot_policy again to change it")
        self.__dict__[name] = value

    def __repr__(self) -> str:
        return (f"LeRobotSampledPolicy(sampler={self.sampler!r}, num_inference_steps={self.schedule.num_steps}, "
                f"policy={type(self.policy).__name__})")

    # ------------------------------------------------------------------ the chain
    def _with_sampler(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        diffusion = self.policy.diffusion
        busy = RuntimeError("this LeRobot policy is already being sampled by a wrapper call (one call at a time)")
        if not self._lock.acquire(blocking=False):
            raise busy
        try:
            if "conditional_sample" in vars(diffusion):  # another wrapper of the same policy is inside a call
                raise busy
            vars(diffusion)["conditional_sample"] = self._conditional_sample  # shadows the method on this object only
            try:
                return method(*args, **kwargs)
            finally:
                del vars(diffusion)["conditional_sample"]
        finally:
            self._lock.release()

    @torch.no_grad()
    def _conditional_sample(self, batch_size: int, global_cond: Tensor | None = None,
                            generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
        """What LeRobot's ``DiffusionModel.conditional_sample`` returns (the normalized ``[B, horizon,
        action_dim]`` chunk), drawn by the sampler. ``noise`` is LeRobot's initial sample ``x_T``."""
        generator = generator if generator is not None else self.generator
        x_T, steps = self.chain.draw(batch_size, self.schedule, generator, x_T=noise)
        result: SampleResult = self.chain.sample(self.sampler, global_cond, self.schedule, x_T, steps, generator)
        self.__dict__["last_result"] = result
        return result.sample
