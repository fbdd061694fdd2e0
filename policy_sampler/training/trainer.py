"""Train a :class:`~policy_sampler.policy.DiffusionPolicy` on robomimic-layout demonstrations.

Diffusion Policy's recipe (Chi et al. 2023): AdamW (lr 1e-4, betas 0.95/0.999, weight decay 1e-6), a
cosine learning rate with linear warm-up (diffusers' ``get_scheduler``), epsilon-prediction DDPM loss,
an EMA copy of the weights (power decay, see :mod:`policy_sampler.training.ema`) that is what gets
saved and evaluated. Windows come from robomimic's ``SequenceDataset`` (through
:func:`policy_sampler.data.demos.load_sequence_dataset`), sliced as DiffusionPolicy does: the first
``n_obs_steps`` observation frames and the first ``horizon`` action frames of each padded sequence.

Output directory::

    <out_dir>/last/   the checkpoint at the end (and at every validation)
    <out_dir>/best/   the checkpoint with the lowest validation loss (EMA weights); the lowest
                      training loss (running mean over the validation interval) without a valid split
    <out_dir>/train_log.json   losses per validation, settings, timing
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from policy_sampler.policy import DiffusionPolicy, DiffusionPolicyConfig
from policy_sampler.serialization import atomic_write_bytes
from policy_sampler.training.config import TrainConfig

__all__ = ["TrainResult", "WindowDataset", "dataset_dims", "load_windows", "policy_stats", "train"]


# ----------------------------------------------------------------------------- data
def dataset_dims(path: str | os.PathLike, obs_keys: tuple[str, ...] = ("state",)) -> dict[str, int]:
    """Last-dimension sizes of each observation key and of ``"action"`` in the first demo."""
    with h5py.File(path, "r") as f:
        if "data" not in f or not len(f["data"]):
            raise ValueError(f"{path} has no data/demo_<i> groups")
        demo = f["data"][sorted(f["data"].keys(), key=lambda n: int(n.rsplit("_", 1)[1]))[0]]
        out = {}
        for key in obs_keys:
            if f"obs/{key}" not in demo:
                raise ValueError(f"{path} has no observation key {key!r} (data/<demo>/obs/{key})")
            out[key] = int(np.prod(demo[f"obs/{key}"].shape[1:]))
        out["action"] = int(np.prod(demo["actions"].shape[1:]))
    return out


class WindowDataset(Dataset):
    """DiffusionPolicy training windows held as tensors: ``obs[key]`` [N, n_obs_steps, d] and
    ``action`` [N, horizon, A]. ``__getitems__`` returns a whole batch (the DataLoader passes it through)."""

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


def _passthrough(batch: Any) -> Any:
    return batch


def load_windows(
    path: str | os.PathLike, config: DiffusionPolicyConfig, split: str = "train"
) -> WindowDataset | None:
    """Every window of ``split`` (None when the split has no demos), read through robomimic's
    ``SequenceDataset`` and sliced as DiffusionPolicy does."""
    from policy_sampler.data.demos import demo_names, load_sequence_dataset

    if not demo_names(path, split):
        return None
    extra: dict[str, Any] = {}
    if tuple(config.obs_keys) != ("state",):
        import robomimic.utils.obs_utils as ObsUtils

        ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": list(config.obs_keys)}})
        extra["obs_keys"] = tuple(config.obs_keys)
    seq = load_sequence_dataset(
        path, n_obs_steps=config.n_obs_steps, horizon=config.horizon, split=split, **extra
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
    action = torch.from_numpy(np.stack(act_parts).astype(np.float32))
    return WindowDataset(obs, action)


def policy_stats(path: str | os.PathLike, config: DiffusionPolicyConfig, windows: WindowDataset) -> dict:
    """Normalizer statistics ``{key: {"min", "max"}, "action": {...}}`` of the train split: from
    :func:`policy_sampler.data.demos.dataset_statistics` for ``state`` and the actions, from the train
    windows (which cover every frame) for any other observation key."""
    from policy_sampler.data.demos import dataset_statistics

    raw = dataset_statistics(path, split="train")
    stats: dict[str, dict[str, Any]] = {"action": dict(raw["actions"])}
    for key in config.obs_keys:
        if key in raw.get("obs", {}):
            stats[key] = dict(raw["obs"][key])
        else:
            flat = windows.obs[key].reshape(-1, windows.obs[key].shape[-1])
            stats[key] = {"min": flat.min(0).values.numpy(), "max": flat.max(0).values.numpy()}
    return stats


# ----------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    out_dir: Path
    best_path: Path
    last_path: Path
    steps: int
    train_losses: list[float]  # per optimizer step
    val_losses: list[tuple[int, float]]  # (step, loss)
    best_loss: float
    seconds: float
    steps_per_second: float
    log: dict[str, Any] = field(default_factory=dict)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _resolve_config(
    config: DiffusionPolicyConfig | Mapping[str, Any], dims: dict[str, int]
) -> DiffusionPolicyConfig:
    if isinstance(config, DiffusionPolicyConfig):
        data = config.to_dict()
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        raise ValueError(f"config must be a DiffusionPolicyConfig or a dict, got {type(config).__name__}")
    obs_keys = tuple(data.get("obs_keys", ("state",)))
    obs_dims = tuple(dims[k] for k in obs_keys)
    for name, value in (("obs_dim", sum(obs_dims)), ("action_dim", dims["action"])):
        if data.get(name) is None:
            data[name] = value
        elif int(data[name]) != value:
            raise ValueError(f"policy {name}={data[name]} does not match the dataset's {value}")
    if data.get("obs_key_dims") is None:
        data["obs_key_dims"] = list(obs_dims)
    return DiffusionPolicyConfig.from_dict(data)


@torch.no_grad()
def evaluate_loss(
    policy: DiffusionPolicy, windows: WindowDataset, batch_size: int, seed: int = 0, use_ema: bool = True
) -> float:
    """Mean denoising loss over ``windows`` with fixed noise and timesteps (``seed``), using the EMA
    weights by default (what the checkpoint holds)."""
    model = policy.model
    if use_ema:
        policy.model = policy.ema_model
    was_training = policy.training
    policy.eval()
    try:
        gen = torch.Generator(device=policy.device).manual_seed(seed)
        total, count = 0.0, 0
        for start in range(0, len(windows), batch_size):
            batch = windows.__getitems__(list(range(start, min(start + batch_size, len(windows)))))
            batch = _to_device(batch, policy.device)
            n = batch["action"].shape[0]
            total += float(policy.compute_loss(batch, generator=gen)) * n
            count += n
    finally:
        policy.model = model
        policy.train(was_training)
    return total / max(count, 1)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        "obs": {k: v.to(device, non_blocking=True) for k, v in batch["obs"].items()},
        "action": batch["action"].to(device, non_blocking=True),
    }


def train(
    config: DiffusionPolicyConfig | Mapping[str, Any],
    dataset_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    train_config: TrainConfig | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train a policy on ``dataset_path`` and write ``out_dir/best`` and ``out_dir/last``.

    ``config``: a :class:`DiffusionPolicyConfig` or a dict of its fields; ``obs_dim``, ``action_dim``
    (and ``obs_key_dims``) may be left out and are read from the dataset. ``train_config``: the run's
    :class:`TrainConfig` (default: its defaults). ``metadata`` is recorded in the checkpoints.
    """
    from diffusers.optimization import get_scheduler
    from tqdm import tqdm

    from policy_sampler.training.ema import EMA

    t = TrainConfig() if train_config is None else train_config
    if not isinstance(t, TrainConfig):
        raise ValueError(f"train_config must be a TrainConfig, got {type(t).__name__}")
    dataset_path = Path(dataset_path)
    if not dataset_path.is_file():
        raise FileNotFoundError(f"dataset {dataset_path} does not exist")
    out = Path(out_dir)
    device = torch.device(t.device)
    if t.num_threads is not None:
        torch.set_num_threads(t.num_threads)

    obs_keys = tuple(config.obs_keys if isinstance(config, DiffusionPolicyConfig) else config.get("obs_keys", ("state",)))
    policy_config = _resolve_config(config, dataset_dims(dataset_path, obs_keys))
    _seed_everything(t.seed)

    train_windows = load_windows(dataset_path, policy_config, "train")
    if train_windows is None:
        raise ValueError(f"{dataset_path} has no training demos (mask/train)")
    valid_windows = load_windows(dataset_path, policy_config, "valid")
    stats = policy_stats(dataset_path, policy_config, train_windows)
    out.mkdir(parents=True, exist_ok=True)  # only once the settings and the data have checked out

    policy = DiffusionPolicy(policy_config, dataset_stats=stats).to(device)
    policy.train()
    loader_gen = torch.Generator().manual_seed(t.seed)
    loader = DataLoader(
        train_windows, batch_size=min(t.batch_size, len(train_windows)), shuffle=True, drop_last=True,
        generator=loader_gen, collate_fn=_passthrough, num_workers=t.num_workers,
    )
    total_steps = t.steps if t.steps is not None else t.epochs * len(loader)

    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    scheduler = get_scheduler(
        t.lr_scheduler, optimizer=optimizer, num_warmup_steps=min(t.warmup_steps, total_steps),
        num_training_steps=total_steps,
    )
    e = t.ema
    ema = EMA(
        policy.model, policy.ema_model, power=e.power if e.enabled else None,
        inv_gamma=e.inv_gamma, max_decay=e.max_decay if e.enabled else 0.0,
        update_after_step=e.update_after_step,
    )
    noise_gen = torch.Generator(device=device).manual_seed(t.seed + 1)

    meta = {
        **dict(metadata or {}),
        "dataset": str(dataset_path.resolve()),
        "train": {**t.to_dict(), "steps": total_steps, "train_windows": len(train_windows),
                  "valid_windows": len(valid_windows) if valid_windows else 0},
    }
    train_losses: list[float] = []
    val_losses: list[tuple[int, float]] = []
    best = math.inf
    best_path, last_path = out / "best", out / "last"
    log_entries: list[dict[str, Any]] = []

    def checkpoint(step: int) -> None:
        nonlocal best
        recent = train_losses[-t.val_every:]
        train_mean = float(np.mean(recent)) if recent else math.nan
        if valid_windows is not None:
            score = evaluate_loss(policy, valid_windows, t.batch_size, seed=t.seed)
            val_losses.append((step, score))
        else:
            score = train_mean
        entry = {"step": step, "train_loss": train_mean, "val_loss": score if valid_windows is not None else None,
                 "lr": scheduler.get_last_lr()[0], "ema_decay": ema.decay}
        log_entries.append(entry)
        step_meta = {**meta, "step": step, "train_loss": train_mean,
                     "val_loss": score if valid_windows is not None else None}
        policy.save(last_path, metadata=step_meta)
        if score < best or not best_path.exists():
            best = min(best, score)
            policy.save(best_path, metadata={**step_meta, "best": True})

    start = time.perf_counter()
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not t.progress, dynamic_ncols=True)
    step = 0
    try:
        while step < total_steps:
            for batch in loader:
                batch = _to_device(batch, device)
                loss = policy.compute_loss(batch, generator=noise_gen)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if t.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(policy.model.parameters(), t.grad_clip_norm)
                optimizer.step()
                scheduler.step()
                ema.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"training loss became {value} at step {step + 1}")
                train_losses.append(value)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
                if step % t.val_every == 0 or step == total_steps:
                    checkpoint(step)
                    if val_losses and val_losses[-1][0] == step:
                        bar.set_postfix(loss=f"{value:.4f}", val=f"{val_losses[-1][1]:.4f}", refresh=False)
                if step >= total_steps:
                    break
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    log = {
        "policy": policy_config.to_dict(),
        "metadata": meta,
        "entries": log_entries,
        "seconds": seconds,
        "steps_per_second": step / seconds if seconds > 0 else math.nan,
        "best_loss": best,
    }
    atomic_write_bytes(out / "train_log.json", (json.dumps(log, indent=2, default=float) + "\n").encode())
    return TrainResult(
        out_dir=out, best_path=best_path, last_path=last_path, steps=step, train_losses=train_losses,
        val_losses=val_losses, best_loss=best, seconds=seconds, steps_per_second=log["steps_per_second"], log=log,
    )
