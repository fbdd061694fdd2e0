"""Exponential moving average of a model's weights, with Diffusion Policy's power-decay schedule.

After optimizer step ``n`` (counted from 1, after ``update_after_step`` warm-up steps) the EMA moves
towards the trained weights with

    decay(n) = clamp(1 - (1 + n / inv_gamma) ** -power, min_decay, max_decay)
    ema      = decay * ema + (1 - decay) * weights

the schedule of Diffusion Policy's ``EMAModel`` (power 0.75, inv_gamma 1, max 0.9999 in its configs).
The decay starts at 0 (the EMA is a copy of the weights) and grows as ``1 - n ** -0.75``: about 0.82 at
10 steps, 0.97 at 100, 0.995 at 1000 and 0.9999 after about 200k steps, so short runs are not stuck
with the random initial weights. ``power=None`` gives a fixed ``max_decay`` instead. Buffers are copied.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Keeps ``ema_model`` an exponential moving average of ``model`` (same architecture)."""

    def __init__(
        self,
        model: nn.Module,
        ema_model: nn.Module,
        power: float | None = 0.75,
        inv_gamma: float = 1.0,
        min_decay: float = 0.0,
        max_decay: float = 0.9999,
        update_after_step: int = 0,
    ) -> None:
        if power is not None and not power > 0:
            raise ValueError(f"power must be positive or None, got {power!r}")
        if not inv_gamma > 0:
            raise ValueError(f"inv_gamma must be positive, got {inv_gamma!r}")
        if not 0.0 <= min_decay <= max_decay < 1.0:
            raise ValueError(
                f"need 0 <= min_decay <= max_decay < 1, got min_decay={min_decay!r} max_decay={max_decay!r}"
            )
        if not isinstance(update_after_step, int) or update_after_step < 0:
            raise ValueError(f"update_after_step must be a non-negative int, got {update_after_step!r}")
        names = [n for n, _ in model.named_parameters()]
        ema_names = [n for n, _ in ema_model.named_parameters()]
        if names != ema_names:
            raise ValueError("model and ema_model must have the same parameters")
        self.model = model
        self.ema_model = ema_model
        self.power = power
        self.inv_gamma = float(inv_gamma)
        self.min_decay = float(min_decay)
        self.max_decay = float(max_decay)
        self.update_after_step = update_after_step
        self.optimization_step = 0
        self.decay = 0.0

    def get_decay(self, optimization_step: int) -> float:
        step = optimization_step - self.update_after_step - 1
        if step < 0:
            return 0.0
        if self.power is None:
            return self.max_decay
        value = 1.0 - (1.0 + step / self.inv_gamma) ** -self.power
        return min(max(value, self.min_decay), self.max_decay)

    @torch.no_grad()
    def step(self) -> float:
        """Update the EMA after an optimizer step; returns the decay used."""
        self.optimization_step += 1
        decay = self.get_decay(self.optimization_step)
        self.decay = decay
        for ema_p, p in zip(self.ema_model.parameters(), self.model.parameters()):
            if decay == 0.0:
                ema_p.copy_(p.detach())
            else:
                ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - decay)
        for ema_b, b in zip(self.ema_model.buffers(), self.model.buffers()):
            ema_b.copy_(b)
        return decay

    def state_dict(self) -> dict:
        return {"optimization_step": self.optimization_step, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.optimization_step = int(state["optimization_step"])
        self.decay = float(state["decay"])
