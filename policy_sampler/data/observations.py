"""Env observations as flat vectors: what demonstrations store and trajectory features read.

A camera-mode observation (``obs_mode="pixels_state"``) is a dict whose ``"state"`` entry is the very
vector the task returns in state mode; its other entries are views of the robot's own state or camera
images. :func:`flat_observation` reads such a dict as its ``"state"``, so trajectories, features and
demos' ``obs/state`` are the same in both modes; :func:`split_observation` also returns the rest.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["STATE_KEY", "flat_observation", "is_image", "split_observation"]

STATE_KEY = "state"


def flat_observation(obs: Any) -> np.ndarray:
    """An env observation as one float32 vector: a dict's ``"state"`` entry when it has one, else its
    values concatenated in order; an array flattened."""
    if isinstance(obs, Mapping):
        if STATE_KEY in obs:
            return np.asarray(obs[STATE_KEY], np.float32).reshape(-1)
        return np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in obs.values()])
    return np.asarray(obs, np.float32).reshape(-1)


def is_image(array: np.ndarray) -> bool:
    """A camera image (or a sequence of them): uint8 with 3 channels last."""
    return array.dtype == np.uint8 and array.ndim >= 3 and array.shape[-1] == 3


def split_observation(obs: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`flat_observation` and, for a dict with a ``"state"`` entry, its other entries (images kept
    uint8, low-dim entries as float32 vectors); no other entries otherwise."""
    extra: dict[str, np.ndarray] = {}
    if isinstance(obs, Mapping) and STATE_KEY in obs:
        for key, value in obs.items():
            if key != STATE_KEY:
                array = np.asarray(value)
                extra[str(key)] = array if is_image(array) else array.astype(np.float32).reshape(-1)
    return flat_observation(obs), extra
