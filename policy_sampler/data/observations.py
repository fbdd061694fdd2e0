"""Env observations as flat vectors: what demonstrations store and trajectory features read."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["flat_observation"]


def flat_observation(obs: Any) -> np.ndarray:
    """An env observation as one float32 vector (a dict's values concatenated in order)."""
    if isinstance(obs, Mapping):
        return np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in obs.values()])
    return np.asarray(obs, np.float32).reshape(-1)
