"""Where chunks meet: the runner's smoothing, one of ``'none'``, ``'rtc'`` or ``'ensemble'``.

``'rtc'`` shapes the *next* chunk: it is inpainted toward the previous chunk's actions over their
overlap, the first ``n_obs_steps - 1 + lead`` positions (those that execute while it is computed)
frozen, with RTC's soft mask (:mod:`.real_time_chunking`). ``'ensemble'`` shapes the *executed
action*: where the previous chunk also predicts this tick, the two are averaged
(:mod:`.temporal_ensembling`).
"""

from __future__ import annotations

import numpy as np
import torch

from policy_sampler.control.chunk import Chunk
from policy_sampler.control.real_time_chunking import RealTimeChunking, soft_mask
from policy_sampler.control.temporal_ensembling import ensemble

__all__ = ["ChunkSmoothing"]


class ChunkSmoothing:
    """``mode`` with its settings, for a policy with ``horizon`` and ``n_obs_steps``."""

    def __init__(self, mode: str, horizon: int, n_obs_steps: int, rtc_max_guidance: float = 5.0,
                 rtc_jacobian: str = "full", ensemble_decay: float = 0.01) -> None:
        self.mode = mode
        self.horizon = horizon
        self.n_obs_steps = n_obs_steps
        self.rtc_max_guidance = rtc_max_guidance
        self.rtc_jacobian = rtc_jacobian
        self.ensemble_decay = ensemble_decay

    def guidance(self, previous: Chunk | None, shift: int, lead: int, envs: np.ndarray,
                 repeats: int) -> RealTimeChunking | None:
        """RTC guidance for a chunk started ``shift`` ticks after ``previous`` for the envs ``envs``
        (each row repeated ``repeats`` times), or None (no RTC, or nothing overlaps)."""
        if self.mode != "rtc" or previous is None or shift >= self.horizon:
            return None
        overlap = self.horizon - shift
        frozen = self.n_obs_steps - 1 + lead
        before = previous.normalized[torch.as_tensor(previous.positions(envs), device=previous.normalized.device)]
        target = torch.zeros((len(envs) * repeats, *before.shape[1:]), device=before.device, dtype=before.dtype)
        target[:, :overlap] = before[:, shift:].repeat_interleave(repeats, dim=0)
        weights = soft_mask(self.horizon, min(frozen, overlap), overlap)
        return RealTimeChunking(target, weights, self.rtc_max_guidance, self.rtc_jacobian)

    def action(self, previous: Chunk | None, current: Chunk, tick: int) -> np.ndarray:
        """The executed actions ``[R, action_dim]`` for ``current``'s rows at ``tick``."""
        now = current.at(tick)
        if self.mode != "ensemble" or previous is None or not previous.covers(tick):
            return now
        return ensemble([previous.at(tick)[previous.positions(current.rows)], now], self.ensemble_decay)
