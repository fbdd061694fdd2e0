"""scripts/vision_transformer_tables.py on a small study folder, scripts/benchmark_training.py on one policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MACHINE = "CPU test, 1 torch threads"


def _sampler(label: str, rounds: list[int], exact: bool = True) -> dict:
    return {"summary": {"label": label, "exact": exact, "baseline": False, "nfe_mean": 10.0 * sum(rounds) / len(rounds)},
            "chunks": [{"rounds": r} for r in rounds]}


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_tables_side_by_side_from_a_study_folder(tmp_path):
    # the rounds of two runs (a run's ddpm row is the table's fixed one, never repeated); one eval; one training log
    _write(tmp_path / "rounds_reach_unet" / "results.json", {"machine": MACHINE, "samplers": [
        _sampler("ddpm", [100, 100]), _sampler("speculative_picard", [6, 7, 5])]})
    _write(tmp_path / "rounds_reach_vision" / "results.json", {"machine": MACHINE, "samplers": [
        _sampler("speculative_picard", [9, 11]), _sampler("paradigms", [17, 19], exact=False)]})
    row = {"label": "ddpm", "baseline": False, "successes": 3, "n_episodes": 4, "success_rate": 0.75,
           "success_ci_low": 0.3, "success_ci_high": 0.95, "rounds_mean": 100.0, "nfe_mean": 100.0, "mean_batch": 4.0}
    _write(tmp_path / "eval_reach_unet" / "results.json", {"machine": MACHINE, "results": [row],
                                                           "env_seeds": [1000, 1003], "n_episodes": 4, "max_steps": None})
    _write(tmp_path / "reach_vision" / "train_log.json", {
        "metadata": {"train": {"steps": 300, "batch_size": 64}}, "seconds": 90.0, "samples_per_second": 213.3,
        "peak_rss_mb": 600.0, "parameters": {"model": 1_270_000, "obs_encoder": 80_000}, "best_loss": 0.5})
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "vision_transformer_tables.py"), "--out", str(tmp_path),
                           "--runs", "reach_unet", "reach_vision", "metaworld_vision"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "tables.md").read_text()
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("| ddpm | yes |")] == [
        "| ddpm | yes | 100 / 100 / 100 (NFE 100) | 100 / 100 / 100 (NFE 100) |"]
    assert "| speculative_picard | yes | 6.00 / 6 / 7 (NFE 60; 3 chunks) | 10.00 / 10 / 11 (NFE 100; 2 chunks) |" in lines
    assert "| paradigms | no (tolerance) | - | 18.00 / 18 / 19 (NFE 180; 2 chunks) |" in lines
    assert "| state U-Net (ObstacleReach) | ddpm | 3/4 = 0.75 [0.30, 0.95] | 100.0 | 100.0 | 4.0 |" in lines
    assert "| vision U-Net (ObstacleReach, top camera) | 300 x 64 | 1.5 | 213.3 | 600 | 1.270M + 0.080M | 0.5000 |" in lines
    assert "Meta-World" not in text  # a run with no outputs adds no column or row

    empty = tmp_path / "nothing_yet"
    empty.mkdir()
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "vision_transformer_tables.py"), "--out", str(empty)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and "None" not in (empty / "tables.md").read_text()  # no table without its data


@pytest.mark.slow  # a fresh process importing torch and training one step: 10-26 s on 2 shared cores
def test_training_benchmark_writes_its_table(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark_training.py"), "--only", "state_unet",
                           "--steps", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads((tmp_path / "training_benchmark.json").read_text())
    assert row["name"] == "state_unet" and row["batch_size"] == 256 and row["samples_per_second"] > 0
    assert row["peak_rss_mb"] > 50 and row["parameters"]["model"] > 0
    assert "| state U-Net (small) | 256 |" in (tmp_path / "training_benchmark.md").read_text()
