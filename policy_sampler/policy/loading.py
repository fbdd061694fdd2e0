"""One loader for every policy our tools run: our own checkpoints and LeRobot policy folders.

    policy = load_policy("checkpoints/reach")                       # scripts/train.py's checkpoint
    policy = load_policy("outputs/train/reach_lerobot")             # LeRobot's save_pretrained folder

Both answer the same interface (``config``, ``device``, ``schedule``, ``schedule_for``,
``predict_action``, ``normalizer.normalize('action', ...)``, ``metadata``), so ``ChunkRunner``, the
rollout and ``scripts/evaluate.py`` take either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_policy", "resolve_policy_dir"]


def resolve_policy_dir(path: str | os.PathLike) -> tuple[str, Path]:
    """``("policy_sampler" | "lerobot", folder)`` for the policy at ``path``: one of our checkpoints (or
    a training run folder holding ``best/`` or ``last/``), or a LeRobot policy folder (or a LeRobot
    training output holding one). ``FileNotFoundError`` saying what was looked for when it is neither."""
    from policy_sampler.integrations.lerobot.adapter import resolve_lerobot_policy_dir
    from policy_sampler.policy.diffusion_policy import DiffusionPolicy

    lerobot_dir = resolve_lerobot_policy_dir(path)
    if lerobot_dir is not None:
        return "lerobot", lerobot_dir
    try:
        return "policy_sampler", DiffusionPolicy.resolve_checkpoint(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{exc}; nor a LeRobot policy folder (config.json, model.safetensors and policy_preprocessor.json, "
            "there or in pretrained_model/ or checkpoints/last/pretrained_model/)"
        ) from None


def load_policy(path: str | os.PathLike, device: str | torch.device = "cpu") -> Any:
    """The policy at ``path`` (see :func:`resolve_policy_dir`) in eval mode on ``device``: a
    :class:`~policy_sampler.policy.DiffusionPolicy`, or a
    :class:`~policy_sampler.integrations.lerobot.LeRobotPolicy` (an ``ImportError`` saying how to
    install LeRobot when it is missing)."""
    kind, folder = resolve_policy_dir(path)
    if kind == "lerobot":
        from policy_sampler.integrations.lerobot import load_lerobot_policy

        return load_lerobot_policy(folder, device=device)
    from policy_sampler.policy.diffusion_policy import DiffusionPolicy

    return DiffusionPolicy.load(folder, device=device)
