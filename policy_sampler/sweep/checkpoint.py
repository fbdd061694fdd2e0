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

_CACHE: dict[tuple[str, str], object] = {}  # (digest, device) -> policy, per process


@dataclass(frozen=True)
class CheckpointBlob:
    """The files of a policy folder (``(name, bytes)`` pairs) and their SHA-256: a ``DiffusionPolicy``
    checkpoint's two files, or every file of a LeRobot policy folder (weights, config, processors)."""

    digest: str
    files: tuple[tuple[str, bytes], ...]

    @classmethod
    def read(cls, path: str | os.PathLike) -> "CheckpointBlob":
        """The policy at ``path`` (see ``policy_sampler.policy.resolve_policy_dir``); ``FileNotFoundError``
        when there is none."""
        from policy_sampler.policy.diffusion_policy import CONFIG_NAME, WEIGHTS_NAME
        from policy_sampler.policy.loading import resolve_policy_dir

        kind, folder = resolve_policy_dir(path)
        if kind == "policy_sampler":
            files = tuple((name, (folder / name).read_bytes()) for name in (CONFIG_NAME, WEIGHTS_NAME))
            digest = hashlib.sha256(b"".join(hashlib.sha256(data).digest() for _, data in files)).hexdigest()
        else:
            files = tuple((p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file())
            digest = hashlib.sha256(b"".join(
                hashlib.sha256(name.encode()).digest() + hashlib.sha256(data).digest() for name, data in files
            )).hexdigest()
        return cls(digest=digest, files=files)


def load_policy(digest: str, fetch: Callable[[], CheckpointBlob], device: str = "cpu"):
    """The policy of the checkpoint ``digest`` on ``device``, built by ``policy_sampler.policy.load_policy``
    from the files of ``fetch()`` (written to a temporary directory) and cached per process: a worker
    running many units fetches and loads it once. ``ValueError`` when the fetched bytes are another checkpoint."""
    from policy_sampler.policy.loading import load_policy as load_policy_dir

    key = (digest, str(device))
    if key not in _CACHE:
        blob = fetch()
        if blob.digest != digest:
            raise ValueError(f"checkpoint digest mismatch: the unit wants {digest[:12]}, got {blob.digest[:12]}")
        with tempfile.TemporaryDirectory(prefix="policy-sampler-ckpt-") as tmp:
            for name, data in blob.files:
                (Path(tmp) / name).write_bytes(data)
            _CACHE[key] = load_policy_dir(tmp, device=device)
    return _CACHE[key]
