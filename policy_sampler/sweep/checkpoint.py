"""A policy checkpoint as bytes: what a sweep ships once to its workers (Ray's object store) and what
every unit's policy is rebuilt from, so every launcher runs the very same weights."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["CheckpointBlob", "load_policy"]

_CACHE: dict[tuple[str, str], object] = {}  # (digest, device) -> DiffusionPolicy, per process


@dataclass(frozen=True)
class CheckpointBlob:
    """The two files of a ``DiffusionPolicy`` checkpoint directory, and the SHA-256 of both."""

    digest: str
    config: bytes
    weights: bytes

    @classmethod
    def read(cls, path: str | os.PathLike) -> "CheckpointBlob":
        """The checkpoint at ``path`` (a checkpoint or training run directory, see
        ``DiffusionPolicy.resolve_checkpoint``); ``FileNotFoundError`` when there is none."""
        from policy_sampler.policy.diffusion_policy import CONFIG_NAME, WEIGHTS_NAME, DiffusionPolicy

        ckpt = DiffusionPolicy.resolve_checkpoint(path)
        config = (ckpt / CONFIG_NAME).read_bytes()
        weights = (ckpt / WEIGHTS_NAME).read_bytes()
        digest = hashlib.sha256(hashlib.sha256(config).digest() + hashlib.sha256(weights).digest()).hexdigest()
        return cls(digest=digest, config=config, weights=weights)


def load_policy(digest: str, fetch: Callable[[], CheckpointBlob], device: str = "cpu"):
    """The policy of the checkpoint ``digest`` on ``device``, built by ``DiffusionPolicy.load`` from the
    bytes of ``fetch()`` (written to a temporary directory) and cached per process: a worker running
    many units fetches and loads it once. ``ValueError`` when the fetched bytes are another checkpoint."""
    from policy_sampler.policy.diffusion_policy import CONFIG_NAME, WEIGHTS_NAME, DiffusionPolicy

    key = (digest, str(device))
    if key not in _CACHE:
        blob = fetch()
        if blob.digest != digest:
            raise ValueError(f"checkpoint digest mismatch: the unit wants {digest[:12]}, got {blob.digest[:12]}")
        with tempfile.TemporaryDirectory(prefix="policy-sampler-ckpt-") as tmp:
            (Path(tmp) / CONFIG_NAME).write_bytes(blob.config)
            (Path(tmp) / WEIGHTS_NAME).write_bytes(blob.weights)
            _CACHE[key] = DiffusionPolicy.load(tmp, device=device)
    return _CACHE[key]
