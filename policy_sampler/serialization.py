"""Files written atomically and values made JSON-safe: what checkpoints and result tables share.

Every file the package writes goes through :func:`atomic_path` (or :func:`atomic_write_bytes` built on
it), and every checkpoint directory through :func:`atomic_directory`: a reader sees the old version
or the new one, never half of one, and a failure leaves no temporary file behind.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (``.<stem>.tmp-<pid><suffix>``: writers that pick a format by
    the suffix still see it) to write to: on a clean exit it is fsync'd and renamed onto ``path``, so
    a reader sees the old file or the new one, never half of one; on any error (or interrupt) it is
    removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        fsync_path(tmp)  # data on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary directory beside ``path`` to fill: on a clean exit its files are fsync'd and it
    replaces ``path`` (an existing directory is swapped out only once the new one is complete); on any
    error the old ``path`` (or nothing) stays and no temporary directory is left."""
    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} exists and is not a directory")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old: Path | None = None
    try:
        yield tmp
        for child in tmp.iterdir():
            fsync_path(child)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "previous")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "previous").exists() and not target.exists():
            os.replace(old / "previous", target)  # put the previous version back
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    fsync_path(target.parent)


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk; silently skipped where the platform
    cannot open or sync it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def scalar_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON scalars of a step's ``info`` (numpy scalars as Python ones, non-finite floats as None;
    arrays, nested values and objects left out)."""
    return {k: v for k, v in jsonable(dict(info)).items() if v is None or isinstance(v, (bool, int, float, str))}


def jsonable(value: Any) -> Any:
    """``value`` with tensors and arrays as lists, numpy scalars as Python ones, non-finite floats as
    None and anything else unknown as its string, so ``json.dumps`` accepts it."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
