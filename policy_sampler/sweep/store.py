"""Where a sweep keeps its finished units: ``<out_dir>/units/<unit_id>.json`` (the unit, its per-episode
and per-chunk records) and, when the unit produced arrays (video frames, trajectories),
``<unit_id>.npz`` beside it. Each file is written atomically as the unit finishes (the npz first, the
json last: a unit is done once its json exists), so an interrupted sweep loses only the units in flight,
a resumed one skips the units whose json exists, and a retried unit overwrites its own files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from policy_sampler.serialization import atomic_path, atomic_write_bytes, jsonable

__all__ = ["UnitStore"]


class UnitStore:
    """The ``units/`` folder of ``out_dir``."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"out_dir {out} exists and is not a directory")
        self.dir = out / "units"

    def json_path(self, unit_id: str) -> Path:
        return self.dir / f"{unit_id}.json"

    def npz_path(self, unit_id: str) -> Path:
        return self.dir / f"{unit_id}.npz"

    def done(self, unit_id: str) -> bool:
        return self.json_path(unit_id).is_file()

    def write(self, unit_id: str, record: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> Path:
        """Store a finished unit (replacing a previous result of the same unit)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        npz = self.npz_path(unit_id)
        if arrays:
            with atomic_path(npz) as tmp, open(tmp, "wb") as f:
                np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
        else:
            npz.unlink(missing_ok=True)
        document = dict(jsonable(dict(record)), has_arrays=bool(arrays))
        atomic_write_bytes(self.json_path(unit_id), (json.dumps(document, indent=1) + "\n").encode())
        return self.json_path(unit_id)

    def read(self, unit_id: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """A stored unit's record and arrays (``{}`` when it has none)."""
        path = self.json_path(unit_id)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read unit result {path}: {exc}") from exc
        arrays: dict[str, np.ndarray] = {}
        if record.get("has_arrays"):
            with np.load(self.npz_path(unit_id), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        return record, arrays
