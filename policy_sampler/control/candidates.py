"""Best-of-N: the policy samples N candidate chunks per env in one batched call and a selector picks one.

The selector (e.g. :class:`~policy_sampler.preference.RewardSelector`) scores each candidate against
the episode so far, so this collaborator keeps each env's observations of the episode and hands them,
with the executed actions, over with the candidates: ``selector.choose(past_obs, past_actions,
candidates [R, N, L, action_dim], rng) -> index [R]``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from policy_sampler.data.observations import flat_observation

__all__ = ["BestOfN"]


class BestOfN:
    """``num_candidates`` chunks per env, one picked by ``selector``."""

    def __init__(self, selector: Any, num_candidates: int, action_dim: int) -> None:
        if not hasattr(selector, "choose"):
            raise ValueError(f"selector must have choose(past_obs, past_actions, candidates, rng), got "
                             f"{type(selector).__name__}")
        self.selector = selector
        self.n = int(num_candidates)
        self.action_dim = int(action_dim)
        self.reset(0)

    def reset(self, seed: int) -> None:
        """A new episode, the selector's draws seeded by ``seed``."""
        self.rng = np.random.default_rng(seed)
        self.forget_observations()

    def forget_observations(self) -> None:
        self._observations: list[list[np.ndarray]] | None = None

    def observe(self, observations: Sequence[Any]) -> None:
        """This tick's observation of every env (None for an env that has finished)."""
        if self._observations is None:
            self._observations = [[] for _ in observations]
        for seen, obs in zip(self._observations, observations):
            if obs is not None:
                seen.append(flat_observation(obs))

    def expand(self, obs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each env's observation history repeated N times (rows ``r * N + n``)."""
        return {k: v.repeat_interleave(self.n, dim=0) for k, v in obs.items()}

    def choose(self, chunk: Tensor, envs: np.ndarray, first: int, executed: Sequence[np.ndarray]) -> Tensor:
        """One of each env's N candidates (``chunk`` ``[R * N, horizon, action_dim]``, unnormalized;
        the selector sees each from position ``first``, the observation's tick, on), given the
        ``executed`` actions so far (one ``[num_envs, action_dim]`` per tick): ``[R, horizon,
        action_dim]``."""
        candidates = chunk.view(-1, self.n, *chunk.shape[1:])
        past = (np.stack(executed, axis=1) if len(executed)
                else np.zeros((len(self._observations), 0, self.action_dim), np.float32))
        picks = self.selector.choose([np.stack(self._observations[e]) for e in envs], [past[e] for e in envs],
                                     candidates[:, :, first:].cpu().numpy(), self.rng)
        rows = torch.arange(candidates.shape[0], device=chunk.device)
        return candidates[rows, torch.as_tensor(picks, device=chunk.device)]
