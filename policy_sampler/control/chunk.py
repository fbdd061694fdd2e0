"""An action chunk as the runner holds it: which envs it answers, from which tick, and how it was sampled."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Chunk", "shift_in_time"]


@dataclass
class Chunk:
    """A sampled chunk for the envs ``rows`` (ascending env indices): ``actions[:, j]`` is for tick
    ``start + j`` (j = 0 is the tick of the observation it answers). Adopted at tick ``adopted``, it
    executes up to ``n_action_steps`` actions from there (those for ticks already past are dropped)."""

    start: int
    rows: np.ndarray  # [R] env indices
    actions: np.ndarray  # [R, L, action_dim], unnormalized, from the observation's tick on
    normalized: Tensor  # [R, horizon, action_dim]
    latency_s: float
    rounds: int
    nfe: int
    stopped_early: bool = False
    mean_accepted_length: float | None = None
    x_T: Tensor | None = None
    noise: Tensor | None = None
    trajectory: Tensor | None = None
    adopted: int = -1

    @property
    def length(self) -> int:
        """Ticks it has actions for, from ``start`` on."""
        return self.actions.shape[1]

    def covers(self, tick: int) -> bool:
        return self.start <= tick < self.start + self.length

    def executes(self, tick: int, n_action_steps: int) -> bool:
        return self.covers(tick) and self.adopted <= tick < self.adopted + n_action_steps

    def at(self, tick: int) -> np.ndarray:
        """The actions ``[R, action_dim]`` for ``tick``."""
        return self.actions[:, tick - self.start]

    def positions(self, envs: np.ndarray) -> np.ndarray:
        """Where the envs ``envs`` (a subset of ``rows``) sit among this chunk's rows."""
        return np.searchsorted(self.rows, envs)

    def log_entry(self, status: str) -> dict:
        """What the runner's ``chunk_log`` records of it; ``status`` is ``'adopted'`` or ``'dropped'``."""
        return {"status": status, "start": self.start, "length": self.length,
                "adopted": self.adopted if status == "adopted" else None,
                "batch": int(self.actions.shape[0]), "rows": self.rows.tolist(), "latency_s": self.latency_s,
                "rounds": self.rounds, "nfe": self.nfe, "stopped_early": self.stopped_early,
                "mean_accepted_length": self.mean_accepted_length}


def shift_in_time(x: Tensor, shift: int, dim: int) -> Tensor:
    """``x`` moved ``shift`` positions earlier along ``dim`` (the chunk's time axis), its last
    position repeated to fill the tail."""
    kept = x.narrow(dim, shift, x.shape[dim] - shift)
    shape = [-1] * x.ndim
    shape[dim] = shift
    return torch.cat([kept, kept.narrow(dim, kept.shape[dim] - 1, 1).expand(*shape)], dim=dim)
