"""Temporal ensembling of overlapping action chunks (ACT, Zhao et al., arXiv 2304.13705, sec. 3.3).

Every chunk that predicts an action for the current tick votes; the action executed is the weighted
mean with weights exp(-m * i), i = 0 for the oldest prediction (ACT's convention: older predictions
weigh more, so the arm does not jump to each new chunk)."""

from __future__ import annotations

import numpy as np

__all__ = ["ensemble"]


def ensemble(predictions: list[np.ndarray], decay: float) -> np.ndarray:
    """Weighted mean of ``predictions`` (oldest first, each ``[..., action_dim]``)."""
    if not predictions:
        raise ValueError("ensemble needs at least one prediction")
    if not decay >= 0:
        raise ValueError(f"decay must be >= 0, got {decay!r}")
    weights = np.exp(-decay * np.arange(len(predictions)))
    stacked = np.stack(predictions)
    return np.tensordot(weights / weights.sum(), stacked, axes=1).astype(stacked.dtype)
