"""scripts/benchmark_latency.py end to end on the small model: table, JSON and plot written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from policy_sampler.projection import device_call_table

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_latency_smoke(tmp_path):
    out = tmp_path / "latency"
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark_latency.py"), "--model", "small", "--batches", "1",
           "--repeats", "1", "--modes", "eager", "--samplers", "ddpm", "speculative_picard", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ms (projected)" in done.stdout and "exact (law)" in done.stdout
    report = json.loads((out / "latency_small_cpu.json").read_text())
    rows = {r["sampler"]: r for r in report["rows"]}
    assert set(rows) == {"ddpm", "speculative_picard"}
    assert rows["ddpm"]["rounds"] == 100 and rows["ddpm"]["max_err_vs_ddpm"] == 0.0
    table = device_call_table()
    assert rows["ddpm"]["projected_on"] == table.device == report["projection"]["device"]
    assert abs(rows["ddpm"]["projected_ms"] - table.project([1] * 100)) < 1e-6  # 100 one-row calls
    assert rows["speculative_picard"]["rounds"] < 100
    assert (out / "latency_small_cpu_vs_rounds.png").stat().st_size > 0
