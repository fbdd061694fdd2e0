"""A denoising network as the samplers' denoiser: ``(x [N, *event], t LongTensor[N], cond) -> Tensor like x``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["NetworkDenoiser"]


class NetworkDenoiser:
    """Wraps a network ``model(sample, timestep, cond) -> prediction`` for the samplers.

    Runs under ``torch.no_grad`` unless ``differentiable`` (then autograd can differentiate the output
    with respect to ``x``, e.g. for guidance); ``x`` and ``cond`` are moved and cast to the model's device and dtype
    (of its first parameter), ``t`` to the model's device (its integer dtype is checked by the network),
    and the output is cast back to ``x``'s dtype and device. It does not change the model's train/eval
    mode. Subclasses name the network class they accept in ``network_type``.
    """

    network_type: type[nn.Module] = nn.Module

    def __init__(self, model: nn.Module, differentiable: bool = False) -> None:
        if not isinstance(model, self.network_type):
            raise ValueError(f"model must be a {self.network_type.__name__}, got {type(model).__name__}")
        self.model = model
        self.differentiable = bool(differentiable)

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        p = next(self.model.parameters())
        xm = x.to(device=p.device, dtype=p.dtype)
        tm = t.to(device=p.device) if isinstance(t, Tensor) else t
        cm = cond.to(device=p.device, dtype=p.dtype) if cond is not None else None
        with torch.set_grad_enabled(self.differentiable and torch.is_grad_enabled()):
            out = self.model(xm, tm, cm)
        return out.to(device=x.device, dtype=x.dtype)
