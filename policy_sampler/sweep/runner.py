"""Run a planned sweep: skip the units already stored (``resume``), hand the rest to a launcher, store
each result as it arrives and report progress (units done / total, an ETA from the units done so far)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence, TextIO

import numpy as np

from policy_sampler.sweep.checkpoint import CheckpointBlob
from policy_sampler.sweep.launchers import Launcher, UnitFn, make_launcher
from policy_sampler.sweep.store import UnitStore
from policy_sampler.sweep.units import Unit, run_unit

__all__ = ["Progress", "run_sweep"]

Results = dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]


class Progress:
    """One line per finished unit: ``sweep: 3/12 units (1 resumed) | <unit> 2.1 s | 6.3 s, ETA 18.9 s``.
    The ETA is the mean wall time per unit finished in this run times the units left."""

    def __init__(self, total: int, resumed: int = 0, stream: TextIO | None = None) -> None:
        self.total, self.resumed, self.done = int(total), int(resumed), int(resumed)
        self.stream = stream
        self.start = time.perf_counter()

    def eta_s(self) -> float | None:
        ran = self.done - self.resumed
        if ran == 0:
            return None
        return (time.perf_counter() - self.start) / ran * (self.total - self.done)

    def update(self, unit: Unit, wall_s: float) -> str:
        self.done += 1
        eta = self.eta_s()
        line = (f"sweep: {self.done}/{self.total} units" + (f" ({self.resumed} resumed)" if self.resumed else "")
                + f" | {unit.describe()} in {wall_s:.1f} s | {time.perf_counter() - self.start:.1f} s elapsed"
                + (f", ETA {eta:.1f} s" if eta is not None else ""))
        print(line, file=self.stream or sys.stdout, flush=True)
        return line


def run_sweep(
    units: Sequence[Unit],
    checkpoints: Mapping[str, CheckpointBlob],
    launcher: str | Launcher = "local",
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool | TextIO = False,
    unit_fn: UnitFn = run_unit,
    on_unit: Callable[[Unit, dict[str, Any]], None] | None = None,
) -> Results:
    """Run ``units`` (checkpoints by digest in ``checkpoints``) and return ``{unit_id: (record, arrays)}``
    in plan order.

    With ``out_dir`` every finished unit is stored in ``<out_dir>/units/`` as it arrives; with ``resume``
    the units already stored there are read back instead of run again. ``on_unit(unit, record)`` is
    called after each unit is stored (an exception there, e.g. ``KeyboardInterrupt``, stops the sweep,
    cancelling the units in flight; what was stored stays). ``progress``: True for lines on stdout, or a
    stream. ``unit_fn`` replaces :func:`~policy_sampler.sweep.units.run_unit` (tests inject faults).
    """
    ids = [u.unit_id for u in units]
    if len(set(ids)) != len(ids):
        raise ValueError("the sweep has two units with the same content")
    if resume and out_dir is None:
        raise ValueError("resume needs an out_dir holding the units of the interrupted sweep")
    store = UnitStore(out_dir) if out_dir is not None else None
    launcher = make_launcher(launcher)
    todo = [u for u in units if not (resume and store is not None and store.done(u.unit_id))]
    results: Results = {}
    meter = Progress(len(units), len(units) - len(todo), progress if progress not in (True, False) else None)
    if todo:
        finished = launcher.run(todo, checkpoints, unit_fn)
        try:
            for unit, record, arrays in finished:
                if store is not None:
                    store.write(unit.unit_id, record, arrays)
                results[unit.unit_id] = (record, arrays)
                if progress is not False:
                    meter.update(unit, float(record.get("wall_s", 0.0)))
                if on_unit is not None:
                    on_unit(unit, record)
        finally:
            finished.close()
    for uid in ids:
        if uid not in results:
            if store is None or not store.done(uid):
                raise RuntimeError(f"unit {uid} has no result")
            results[uid] = store.read(uid)
    return {uid: results[uid] for uid in ids}
