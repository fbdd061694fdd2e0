"""scripts/gpu_check.sh --cpu --tiny end to end: the device check's code paths run here, so the script
cannot rot between GPU draws. It writes the contract's summary.json (``device`` and ``samplers`` rows
with name, rounds, p50_ms, p99_ms, projected_ms) and a markdown report, every section ok."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "assets" / "policies" / "obstacle_reach_small"


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    if not (CHECKPOINT / "model.safetensors").is_file():
        pytest.skip(f"the trained checkpoint {CHECKPOINT} is not in this tree")
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", GPU_WHEELS=str(out / "no_wheels"))
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu", "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text()), done.stdout


def test_every_section_runs(checked):
    _, summary, stdout = checked
    status = {s["name"]: s["status"] for s in summary["sections"]}
    assert set(status.values()) == {"ok"}, summary["sections"]
    assert {"per-call latency (eager, cuda_graph)", "samplers (random weights)", "host-sync audit",
            "samplers (trained policy)", "ChunkRunner episode at 10 Hz", "per-call latency (compile)"} <= set(status)
    assert "audit: 16 ok, 0 failed, 0 skipped" in stdout


def test_summary_has_the_contract_fields(checked):
    _, summary, _ = checked
    assert summary["device"] and summary["device_type"] == "cpu" and summary["cpu_mode"] is True
    rows = [r for r in summary["samplers"] if r.get("status") == "ok"]
    names = {r["sampler"] for r in rows}
    from policy_sampler.samplers import available_samplers

    assert set(available_samplers()) <= names  # every sampler, on random weights and on the trained policy
    for r in rows:
        assert {"name", "rounds", "p50_ms", "p99_ms", "projected_ms"} <= set(r)
        assert r["rounds"] >= 1 and 0 < r["p50_ms"] <= r["p99_ms"]
    trained = [r for r in rows if r["model"].startswith("trained")]
    assert {r["batch"] for r in trained} == {1, 2} and all(r["projected_ms"] > 0 for r in trained)
    assert {(r["mode"], r["precision"]) for r in summary["per_call"] if r.get("status") == "ok"} >= {
        ("eager", "fp32"), ("eager", "bf16"), ("compile", "fp32")}
    episode = summary["episode"]
    assert episode["ticks"] >= 1 and "misses" in episode["stats"]
    assert all(a["status"] == "ok" and a["syncs"] <= a["rounds"] + 6 for a in summary["audit"])


def test_report_names_the_machine_and_labels_projections(checked):
    out, summary, _ = checked
    report = (out / "report.md").read_text()
    assert summary["environment"]["machine"] in report
    for heading in ("## Per-call latency of the denoiser", "## Per-chunk latency of every sampler",
                    "## ChunkRunner episode", "## Host-sync audit"):
        assert heading in report
    assert "projected ms" in report and "Projected:" in report
