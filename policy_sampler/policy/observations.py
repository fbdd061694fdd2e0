"""Env observations as the policy's input: ``{key: [B, n_obs_steps, ...]}`` from per-env histories."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from policy_sampler.data.observations import flat_observation

__all__ = ["stack_observations"]


def _entry(value: Any) -> np.ndarray:
    """A low-dim entry as a float32 vector; a uint8 camera image ``[H, W, 3]`` as it is."""
    array = np.asarray(value)
    return array if array.dtype == np.uint8 and array.ndim == 3 else array.astype(np.float32).reshape(-1)


def stack_observations(obs_keys: Sequence[str], histories: Sequence[Sequence[Any]]) -> dict[str, Tensor]:
    """``{key: [B, n_obs_steps, d]}`` (float32) or, for uint8 camera images, ``{key: [B, n_obs_steps, H, W,
    3]}`` (uint8) from per-env histories of env observations (flat arrays, or dicts holding the policy's
    keys)."""
    first = histories[0][0]
    if isinstance(first, Mapping) and all(k in first for k in obs_keys):
        return {k: torch.as_tensor(np.stack([np.stack([_entry(o[k]) for o in h]) for h in histories]))
                for k in obs_keys}
    if len(obs_keys) != 1:
        got = list(first) if isinstance(first, Mapping) else type(first).__name__
        raise ValueError(f"the policy takes observation keys {list(obs_keys)}; the env returns {got}")
    return {obs_keys[0]: torch.as_tensor(np.stack([np.stack([flat_observation(o) for o in h]) for h in histories]))}
