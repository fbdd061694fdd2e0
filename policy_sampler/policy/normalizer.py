"""Per-dimension min-max normalization to [-1, 1], stored inside the policy.

Diffusion Policy's ``LinearNormalizer`` in ``limits`` mode: each field (every observation key and
``"action"``) has a per-dimension ``min`` and ``max`` from the training data, and

    normalize(x)   = (x - center) * scale,   center = (max + min) / 2,   scale = 2 / (max - min)
    unnormalize(y) = y / scale + center

so the data range maps onto [-1, 1]. A dimension whose range is below ``min_range`` (constant in the
data) gets ``scale = 1``: it is centred, not blown up, so a slightly different value at test time stays
a small number. The statistics are registered buffers, so they travel with ``state_dict`` and
``.to(device)``; a policy cannot be run without them.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

__all__ = ["FieldNormalizer", "Normalizer"]


class FieldNormalizer(nn.Module):
    """Min-max normalization of one field (last dimension ``dim``)."""

    def __init__(self, dim: int, min_range: float = 1e-4) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if not min_range > 0:
            raise ValueError(f"min_range must be positive, got {min_range!r}")
        self.dim = dim
        self.min_range = float(min_range)
        # identity until fitted: min = -1, max = 1
        self.register_buffer("min", -torch.ones(dim))
        self.register_buffer("max", torch.ones(dim))

    def set_stats(self, min_value: Any, max_value: Any) -> None:
        lo = torch.as_tensor(min_value, dtype=torch.float32).reshape(-1)
        hi = torch.as_tensor(max_value, dtype=torch.float32).reshape(-1)
        if lo.shape != (self.dim,) or hi.shape != (self.dim,):
            raise ValueError(
                f"min/max must have {self.dim} entries, got {tuple(lo.shape)} and {tuple(hi.shape)}"
            )
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
            raise ValueError("min/max contain NaN or inf")
        if bool((hi < lo).any()):
            raise ValueError(f"max must be >= min in every dimension, got min={lo.tolist()} max={hi.tolist()}")
        with torch.no_grad():
            self.min.copy_(lo)
            self.max.copy_(hi)

    def _center_scale(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        lo, hi = self.min.to(torch.float64), self.max.to(torch.float64)
        span = hi - lo
        scale = torch.where(span < self.min_range, torch.ones_like(span), 2.0 / span.clamp(min=self.min_range))
        center = (hi + lo) / 2
        return center.to(dtype), scale.to(dtype)

    def _check(self, x: Tensor) -> None:
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected last dimension {self.dim}, got shape {tuple(x.shape)}")

    def normalize(self, x: Tensor) -> Tensor:
        self._check(x)
        center, scale = self._center_scale(x.dtype)
        return (x - center) * scale

    def unnormalize(self, y: Tensor) -> Tensor:
        self._check(y)
        center, scale = self._center_scale(y.dtype)
        return y / scale + center

    def extra_repr(self) -> str:
        return f"dim={self.dim}, min_range={self.min_range}"


class Normalizer(nn.Module):
    """A :class:`FieldNormalizer` per named field (observation keys and ``"action"``)."""

    def __init__(self, dims: Mapping[str, int], min_range: float = 1e-4) -> None:
        super().__init__()
        self.fields = nn.ModuleDict({name: FieldNormalizer(int(d), min_range) for name, d in dims.items()})
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def __contains__(self, name: str) -> bool:
        return name in self.fields

    def _field(self, name: str) -> FieldNormalizer:
        if name not in self.fields:
            raise ValueError(f"no normalizer for {name!r}; known fields: {list(self.fields)}")
        return self.fields[name]

    def fit(self, stats: Mapping[str, Mapping[str, Any]]) -> "Normalizer":
        """Set every field from ``stats[name] = {"min": [...], "max": [...]}`` (extra names ignored)."""
        missing = [name for name in self.fields if name not in stats]
        if missing:
            raise ValueError(f"dataset statistics lack field(s) {missing}; got {sorted(stats)}")
        for name, module in self.fields.items():
            entry = stats[name]
            try:
                module.set_stats(entry["min"], entry["max"])
            except (KeyError, TypeError) as exc:
                raise ValueError(f"statistics for {name!r} must be a dict with 'min' and 'max'") from exc
            except ValueError as exc:
                raise ValueError(f"statistics for {name!r}: {exc}") from exc
        self.fitted.fill_(True)
        return self

    def stats(self) -> dict[str, dict[str, list[float]]]:
        """The statistics as plain lists (what ``config.json`` records)."""
        return {
            name: {"min": m.min.tolist(), "max": m.max.tolist()} for name, m in self.fields.items()
        }

    def normalize(self, name: str, x: Tensor) -> Tensor:
        return self._field(name).normalize(x)

    def unnormalize(self, name: str, y: Tensor) -> Tensor:
        return self._field(name).unnormalize(y)
