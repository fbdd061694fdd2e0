"""Every observation the runner is given, checked on every tick (a few microseconds) and copied.

The first observation of an episode fixes its layout:

* a flat array (``obs_dim`` numbers), for a policy with one observation key;
* a dict holding every one of the policy's ``obs_keys`` (``obs_key_dims[i]`` numbers each; other keys
  are ignored);
* for a policy with one key, a dict with several entries and none of them the policy's key: an env's
  structured observation, flattened in its key order (as demonstrations store it).

A one-entry dict whose key is not the policy's is a misnamed key, not a structure to flatten. Every
later observation must have the same layout, numeric values, the same sizes and finite values; a
``ValueError`` names the tick, the env and what is wrong. The runner keeps float32 copies, so an
observation buffer the caller reuses cannot change the history.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["ObservationCheck"]


class ObservationCheck:
    """Checks observations for a policy with ``obs_keys`` of sizes ``obs_key_dims`` (``obs_dim`` in all)."""

    def __init__(self, obs_keys: Sequence[str], obs_key_dims: Sequence[int], obs_dim: int,
                 image_keys: Sequence[str] = ()) -> None:
        self.obs_keys = tuple(obs_keys)
        self.image_keys = tuple(image_keys)  # camera frames pass through as given; the policy checks them
        self.obs_key_dims = tuple(int(d) for d in obs_key_dims)
        self.obs_dim = int(obs_dim)
        self.reset()

    def reset(self) -> None:
        """Forget the layout: the next observation fixes it again."""
        self.layout: str | tuple[str, ...] | None = None  # 'flat', 'keyed' or the flattened dict's keys

    def __call__(self, obs: Any, where: str) -> Any:
        """``obs`` checked and copied (a float32 vector, or a dict of float32 vectors per policy key);
        ``where`` names it in errors (e.g. 'tick 3, env 1')."""
        if self.layout is None:
            self.layout = self._layout_of(obs, where)
        if self.layout == "flat":
            if isinstance(obs, Mapping):
                raise ValueError(f"observation at {where}: got a dict with keys {list(obs)}, but this episode's "
                                 f"observations are flat arrays")
            return self._vector(obs, self.obs_dim, where, "observation")
        if not isinstance(obs, Mapping):
            raise ValueError(f"observation at {where}: got {type(obs).__name__}, but this episode's observations "
                             f"are dicts")
        if self.layout == "keyed":
            missing = [k for k in self.obs_keys if k not in obs]
            if missing:
                raise ValueError(f"observation at {where}: missing key(s) {missing}; the policy takes "
                                 f"{list(self.obs_keys)}, got {list(obs)}")
            missing = [k for k in self.image_keys if k not in obs]
            if missing:
                raise ValueError(f"observation at {where}: missing camera key(s) {missing}; the policy takes "
                                 f"{list(self.obs_keys + self.image_keys)}, got {list(obs)}")
            return {**{k: self._vector(obs[k], d, where, f"observation[{k!r}]")
                       for k, d in zip(self.obs_keys, self.obs_key_dims)},
                    **{k: np.asarray(obs[k]) for k in self.image_keys}}
        if tuple(obs) != self.layout:
            raise ValueError(f"observation at {where}: keys {list(obs)} differ from the episode's first "
                             f"observation's {list(self.layout)}")
        parts = [self._vector(obs[k], None, where, f"observation[{k!r}]") for k in self.layout]
        flat = np.concatenate(parts)
        if flat.size != self.obs_dim:
            raise ValueError(f"observation at {where}: the dict flattens to {flat.size} numbers, the policy takes "
                             f"obs_dim={self.obs_dim}")
        return flat

    def _layout_of(self, obs: Any, where: str) -> str | tuple[str, ...]:
        if not isinstance(obs, Mapping):
            if len(self.obs_keys) != 1:
                raise ValueError(f"observation at {where}: the policy takes observation keys {list(self.obs_keys)}; "
                                 f"pass a dict holding them, got {type(obs).__name__}")
            return "flat"
        if all(k in obs for k in self.obs_keys):
            return "keyed"
        if len(self.obs_keys) == 1 and len(obs) > 1 and not any(k in obs for k in self.obs_keys):
            return tuple(obs)
        missing = [k for k in self.obs_keys if k not in obs]
        raise ValueError(f"observation at {where}: a dict with keys {list(obs)} is missing the policy's key(s) "
                         f"{missing} (the policy takes {list(self.obs_keys)})")

    @staticmethod
    def _vector(value: Any, size: int | None, where: str, name: str) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{name} at {where} must hold numbers, got dtype {array.dtype}")
        if size is not None and array.size != size:
            raise ValueError(f"{name} at {where} must have {size} numbers, got shape {array.shape}")
        out = array.astype(np.float32).reshape(-1)  # a copy
        if not np.isfinite(out).all():
            raise ValueError(f"{name} at {where} contains NaN or inf")
        return out
