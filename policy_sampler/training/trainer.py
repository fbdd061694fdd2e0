"""Train a :class:`~policy_sampler.policy.DiffusionPolicy` on robomimic-layout demonstrations.

Diffusion Policy's recipe (Chi et al. 2023): AdamW (lr 1e-4, betas 0.95/0.999, weight decay 1e-6), a
cosine learning rate with linear warm-up (diffusers' ``get_scheduler``), epsilon-prediction DDPM loss,
an EMA copy of the weights (power decay, see :mod:`policy_sampler.training.ema`) that is what gets
saved and evaluated. Windows come from robomimic's ``SequenceDataset``
(:mod:`policy_sampler.training.windows`), sliced as DiffusionPolicy does: the first ``n_obs_steps``
observation frames and the first ``horizon`` action frames of each padded sequence. What trains is
:meth:`DiffusionPolicy.trained_modules` (the denoiser, U-Net or transformer, and a vision policy's
encoder, augmented by random crops), with :meth:`DiffusionPolicy.optimizer_groups` (DP-T's biases,
LayerNorms and position embeddings are not decayed) and one EMA over all of it.

Output directory::

    <out_dir>/last/   the checkpoint at the end (and at every validation)
    <out_dir>/best/   the checkpoint with the lowest validation loss (EMA weights); the lowest
                      training loss (running mean over the validation interval) without a valid split
    <out_dir>/train_log.json   losses per validation, settings, timing (steps and samples per second,
                               the process's peak resident memory, parameters per trained network)
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader

from policy_sampler.policy import DiffusionPolicy, DiffusionPolicyConfig
from policy_sampler.serialization import atomic_write_bytes
from policy_sampler.training.config import TrainConfig
from policy_sampler.training.windows import (
    WindowDataset,
    dataset_dims,
    dataset_images,
    load_windows,
    policy_stats,
)

__all__ = ["TrainResult", "TrainStep", "train"]


def _passthrough(batch: Any) -> Any:
    return batch


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


def _resolve_config(config: DiffusionPolicyConfig | Mapping[str, Any], path: Path) -> DiffusionPolicyConfig:
    """The policy config with what the dataset decides filled in: ``obs_dim``, ``action_dim``,
    ``obs_key_dims`` and, for a vision policy, ``vision.image_keys`` (every camera of the demos) and
    ``vision.image_shape``; given values must match the dataset."""
    if isinstance(config, DiffusionPolicyConfig):
        data = config.to_dict()
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        raise ValueError(f"config must be a DiffusionPolicyConfig or a dict, got {type(config).__name__}")
    obs_keys = tuple(data.get("obs_keys", ("state",)))
    dims = dataset_dims(path, obs_keys)
    if data.get("vision") is not None:
        data["vision"] = _resolve_vision(dict(data["vision"]), dataset_images(path), path)
    obs_dims = tuple(dims[k] for k in obs_keys)
    for name, value in (("obs_dim", sum(obs_dims)), ("action_dim", dims["action"])):
        if data.get(name) is None:
            data[name] = value
        elif int(data[name]) != value:
            raise ValueError(f"policy {name}={data[name]} does not match the dataset's {value}")
    if data.get("obs_key_dims") is None:
        data["obs_key_dims"] = list(obs_dims)
    return DiffusionPolicyConfig.from_dict(data)


def _resolve_vision(vision: dict[str, Any], images: dict[str, tuple[int, int]], path: Path) -> dict[str, Any]:
    if not images:
        raise ValueError(f"a vision policy needs camera images, but {path} has no uint8 obs/<camera>_image "
                         "(collect demos with env_kwargs.obs_mode=pixels_state)")
    keys = vision.get("image_keys") or sorted(images)
    missing = [k for k in keys if k not in images]
    if missing:
        raise ValueError(f"vision.image_keys {missing} are not camera images of {path}; it has {sorted(images)}")
    shapes = {images[k] for k in keys}
    if len(shapes) != 1:
        raise ValueError(f"the cameras {keys} of {path} have different image sizes {sorted(shapes)}")
    shape = list(shapes.pop())
    if vision.get("image_shape") not in (None, shape):
        raise ValueError(f"vision.image_shape={vision['image_shape']} does not match the dataset's images {shape}")
    return {**vision, "image_keys": list(keys), "image_shape": shape}


@torch.no_grad()
def evaluate_loss(
    policy: DiffusionPolicy, windows: WindowDataset, batch_size: int, seed: int = 0, use_ema: bool = True
) -> float:
    """Mean denoising loss over ``windows`` with fixed noise and timesteps (``seed``), using the EMA
    weights by default (what the checkpoint holds; center crops for a vision policy)."""
    was_training = policy.training
    policy.eval()
    try:
        gen = torch.Generator(device=policy.device).manual_seed(seed)
        total, count = 0.0, 0
        for start in range(0, len(windows), batch_size):
            batch = windows.__getitems__(list(range(start, min(start + batch_size, len(windows)))))
            batch = _to_device(batch, policy.device)
            n = batch["action"].shape[0]
            total += float(policy.compute_loss(batch, generator=gen, use_ema=use_ema)) * n
            count += n
    finally:
        policy.train(was_training)
    return total / max(count, 1)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        "obs": {k: v.to(device, non_blocking=True) for k, v in batch["obs"].items()},
        "action": batch["action"].to(device, non_blocking=True),
    }


class TrainStep:
    """One optimizer step of the recipe on a batch: the DDPM loss of the trained networks (random crops
    for a vision policy), backward, optional gradient clipping, AdamW over
    :meth:`DiffusionPolicy.optimizer_groups`, the learning-rate schedule (``total_steps`` long) and the
    EMA of :meth:`DiffusionPolicy.trained_modules`. ``step(batch, generator)`` returns the loss."""

    def __init__(self, policy: DiffusionPolicy, config: TrainConfig, total_steps: int) -> None:
        from diffusers.optimization import get_scheduler

        from policy_sampler.training.ema import EMA

        self.policy, self.config = policy, config
        self.optimizer = torch.optim.AdamW(policy.optimizer_groups(config.weight_decay), lr=config.lr,
                                           betas=config.betas)
        self.scheduler = get_scheduler(
            config.lr_scheduler, optimizer=self.optimizer, num_warmup_steps=min(config.warmup_steps, total_steps),
            num_training_steps=total_steps,
        )
        e = config.ema
        self.ema = EMA(
            policy.trained_modules(), policy.ema_modules(), power=e.power if e.enabled else None,
            inv_gamma=e.inv_gamma, max_decay=e.max_decay if e.enabled else 0.0,
            update_after_step=e.update_after_step,
        )

    def __call__(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> float:
        loss = self.policy.compute_loss(batch, generator=generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.policy.trained_modules().parameters(), self.config.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.step()
        return float(loss.detach())


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
    from tqdm import tqdm

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

    policy_config = _resolve_config(config, dataset_path)
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

    train_step = TrainStep(policy, t, total_steps)
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
                 "lr": train_step.scheduler.get_last_lr()[0], "ema_decay": train_step.ema.decay}
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
                value = train_step(batch, noise_gen)
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
        "samples_per_second": step * loader.batch_size / seconds if seconds > 0 else math.nan,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports KiB
        "parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in policy.trained_modules().items()},
        "best_loss": best,
    }
    atomic_write_bytes(out / "train_log.json", (json.dumps(log, indent=2, default=float) + "\n").encode())
    return TrainResult(
        out_dir=out, best_path=best_path, last_path=last_path, steps=step, train_losses=train_losses,
        val_losses=val_losses, best_loss=best, seconds=seconds, steps_per_second=log["steps_per_second"], log=log,
    )
