"""Projected latency of a sampling run from a measured per-call table of the denoiser on one device.

A sampler's latency on an accelerator is, to first order, the sum over its sequential denoiser calls
of one call's latency at that call's row count (the rest, the samplers' tensor work and host syncs, is
the *per-round overhead* that ``scripts/gpu_check.sh`` measures). :class:`CallTable` holds such a
per-call table and projects a run's ``rows_per_call`` through it, piecewise linear in rows.

Which table: the newest device report under ``docs/gpu/*/summary.json`` written by
``scripts/gpu_check.sh`` on a lent GPU (its ``per_call`` rows of the paper-sized U-Net in cuda_graph
mode), else :data:`H100_CALL_TABLE`, figures measured on an H100 outside this repository (issue 7).
Every projection names the device its table was measured on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GPU_REPORTS = REPO / "docs" / "gpu"


@dataclass(frozen=True)
class CallTable:
    """``points``: (rows per call, milliseconds per call), measured on ``device``; ``source`` says where
    the figures come from."""

    device: str
    points: tuple[tuple[int, float], ...]
    source: str

    def __post_init__(self) -> None:
        rows = [r for r, _ in self.points]
        if len(rows) < 2 or rows != sorted(set(rows)) or any(not ms > 0 for _, ms in self.points):
            raise ValueError(f"a call table needs >= 2 points with increasing rows and positive ms, got {self.points}")

    def call_ms(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Per-call latency at each row count: linear between measured points, along the last segment
        past the largest and flat below the smallest."""
        r = np.array([p[0] for p in self.points], dtype=float)
        ms = np.array([p[1] for p in self.points], dtype=float)
        calls = np.asarray(rows, dtype=float)
        latency = np.interp(calls, r, ms)
        beyond = calls > r[-1]
        slope = (ms[-1] - ms[-2]) / (r[-1] - r[-2])
        latency[beyond] = ms[-1] + slope * (calls[beyond] - r[-1])
        return latency

    def project(self, rows_per_call: Sequence[int]) -> float:
        """Projected latency (ms) of a run: the per-call latency summed over its sequential calls."""
        return float(self.call_ms(rows_per_call).sum()) if len(rows_per_call) else 0.0


# (rows per call, ms per call): 65.8M-parameter DiffusionPolicy U-Net, one CUDA graph per shape, measured
# on an H100 outside this repository (issue 7). Used only until a device report exists in docs/gpu/.
H100_CALL_TABLE = CallTable(
    device="NVIDIA H100",
    points=((1, 1.59), (100, 2.10), (256, 2.81), (1024, 6.57)),
    source="measured outside this repository (issue 7), 65.8M U-Net in CUDA graphs",
)


def table_from_report(report: dict[str, Any], model: str = "paper", mode: str = "cuda_graph",
                      precision: str = "fp32", source: str = "") -> CallTable | None:
    """The per-call table of ``model`` in ``mode`` and ``precision`` from a ``gpu_check`` summary, or
    None when it has fewer than two measured points."""
    points = sorted(
        (int(r["rows"]), float(r["p50_ms"])) for r in report.get("per_call", [])
        if r.get("model") == model and r.get("mode") == mode and r.get("precision") == precision
        and r.get("p50_ms") is not None
    )
    if len(points) < 2:
        return None
    return CallTable(device=str(report.get("device", "unknown device")), points=tuple(points),
                     source=source or f"measured by scripts/gpu_check.sh ({mode}, {precision})")


def device_call_table(reports: Path = GPU_REPORTS, precision: str = "fp32") -> CallTable:
    """The per-call table projections use: the newest GPU report in ``reports`` (by its
    ``measured_at``) with a paper-sized cuda_graph table, else :data:`H100_CALL_TABLE`."""
    found = []
    for path in sorted(reports.glob("*/summary.json")):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if report.get("cpu_mode") or report.get("device_type") != "cuda":
            continue
        table = table_from_report(report, precision=precision, source=f"{path.relative_to(reports.parent.parent)}")
        if table is not None:
            found.append((str(report.get("measured_at", "")), table))
    return max(found, key=lambda item: item[0])[1] if found else H100_CALL_TABLE
