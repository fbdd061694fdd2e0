"""DiffusionPolicy's training windows from robomimic-layout demos, read through robomimic's loader.

Every window is one demo step ``t``: the ``n_obs_steps`` observation frames ``t - n_obs_steps + 1 .. t``
and the ``horizon`` actions from ``t - n_obs_steps + 1`` on, padded by repetition at the demo's ends, as
robomimic's ``SequenceDataset`` yields them (:func:`policy_sampler.data.demos.load_sequence_dataset`).
Low-dim keys come from one ``SequenceDataset`` (cached in memory, the full sequence sliced as
DiffusionPolicy does); camera keys from a second one over the same demos that reads only the
``n_obs_steps`` frames each window needs (``seq_length=1``, not cached: a frame is read once per window),
so ``item i`` of both is the same step. Images stay uint8 ``[N, n_obs_steps, H, W, 3]``; the policy's
vision encoder scales and crops them.
"""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from policy_sampler.data.demos import dataset_statistics, demo_names, load_sequence_dataset
from policy_sampler.data.observations import is_image
from policy_sampler.policy import DiffusionPolicyConfig

__all__ = ["WindowDataset", "dataset_dims", "dataset_images", "load_windows", "policy_stats"]


def _first_demo(f: h5py.File, path: str | os.PathLike) -> h5py.Group:
    if "data" not in f or not len(f["data"]):
        raise ValueError(f"{path} has no data/demo_<i> groups")
    return f["data"][sorted(f["data"].keys(), key=lambda n: int(n.rsplit("_", 1)[1]))[0]]


def dataset_dims(path: str | os.PathLike, obs_keys: tuple[str, ...] = ("state",)) -> dict[str, int]:
    """Last-dimension sizes of each observation key and of ``"action"`` in the first demo."""
    with h5py.File(path, "r") as f:
        demo = _first_demo(f, path)
        out = {}
        for key in obs_keys:
            if f"obs/{key}" not in demo:
                raise ValueError(f"{path} has no observation key {key!r} (data/<demo>/obs/{key})")
            out[key] = int(np.prod(demo[f"obs/{key}"].shape[1:]))
        out["action"] = int(np.prod(demo["actions"].shape[1:]))
    return out


def dataset_images(path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """``{key: (height, width)}`` of the camera images (uint8 ``(T, H, W, 3)``) in the first demo."""
    with h5py.File(path, "r") as f:
        obs = _first_demo(f, path)["obs"]
        return {k: tuple(obs[k].shape[1:3]) for k in obs
                if obs[k].dtype == np.uint8 and obs[k].ndim == 4 and obs[k].shape[-1] == 3}


class WindowDataset(Dataset):
    """DiffusionPolicy training windows held as tensors: ``obs[key]`` [N, n_obs_steps, d] (float32) or
    [N, n_obs_steps, H, W, 3] (uint8 images) and ``action`` [N, horizon, A]. ``__getitems__`` returns a
    whole batch (the DataLoader passes it through)."""

    def __init__(self, obs: dict[str, torch.Tensor], action: torch.Tensor) -> None:
        self.obs = obs
        self.action = action

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"obs": {k: v[index] for k, v in self.obs.items()}, "action": self.action[index]}

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {"obs": {k: v[idx] for k, v in self.obs.items()}, "action": self.action[idx]}


def _image_windows(path: str | os.PathLike, config: DiffusionPolicyConfig, split: str) -> dict[str, torch.Tensor]:
    seq = load_sequence_dataset(path, n_obs_steps=config.n_obs_steps, horizon=1, split=split,
                                obs_keys=config.image_keys, hdf5_cache_mode=None, get_pad_mask=False)
    shape = (config.n_obs_steps, *config.vision.image_shape, 3)
    out = {k: np.empty((len(seq), *shape), dtype=np.uint8) for k in config.image_keys}
    for i in range(len(seq)):
        item = seq[i]["obs"]
        for k in config.image_keys:
            frames = np.asarray(item[k])
            if not is_image(frames) or frames.shape != shape:
                raise ValueError(f"{path}: obs/{k} must hold uint8 images of shape {list(shape[1:])} (the policy's "
                                 f"vision.image_shape), got {frames.dtype} {list(frames.shape[1:])}")
            out[k][i] = frames
    return {k: torch.from_numpy(v) for k, v in out.items()}


def load_windows(
    path: str | os.PathLike, config: DiffusionPolicyConfig, split: str = "train"
) -> WindowDataset | None:
    """Every window of ``split`` (None when the split has no demos), read through robomimic's
    ``SequenceDataset`` and sliced as DiffusionPolicy does (see the module docstring)."""
    if not demo_names(path, split):
        return None
    seq = load_sequence_dataset(
        path, n_obs_steps=config.n_obs_steps, horizon=config.horizon, split=split, obs_keys=tuple(config.obs_keys)
    )
    to, h = config.n_obs_steps, config.horizon
    obs_parts: dict[str, list[np.ndarray]] = {k: [] for k in config.obs_keys}
    act_parts: list[np.ndarray] = []
    for i in range(len(seq)):
        item = seq[i]
        for k in config.obs_keys:
            frames = np.asarray(item["obs"][k])
            obs_parts[k].append(frames[:to].reshape(to, -1))
        act_parts.append(np.asarray(item["actions"])[:h].reshape(h, -1))
    if not act_parts:
        return None
    obs = {k: torch.from_numpy(np.stack(v).astype(np.float32)) for k, v in obs_parts.items()}
    if config.image_keys:
        obs.update(_image_windows(path, config, split))
    action = torch.from_numpy(np.stack(act_parts).astype(np.float32))
    return WindowDataset(obs, action)


def policy_stats(path: str | os.PathLike, config: DiffusionPolicyConfig, windows: WindowDataset) -> dict:
    """Normalizer statistics ``{key: {"min", "max"}, "action": {...}}`` of the train split: from
    :func:`policy_sampler.data.demos.dataset_statistics` for ``state`` and the actions, from the train
    windows (which cover every frame) for any other low-dim key (images are not normalized here: the
    vision encoder maps 0..255 to [-1, 1])."""
    raw = dataset_statistics(path, split="train")
    stats: dict[str, dict[str, Any]] = {"action": dict(raw["actions"])}
    for key in config.obs_keys:
        if key in raw.get("obs", {}):
            stats[key] = dict(raw["obs"][key])
        else:
            flat = windows.obs[key].reshape(-1, windows.obs[key].shape[-1])
            stats[key] = {"min": flat.min(0).values.numpy(), "max": flat.max(0).values.numpy()}
    return stats
