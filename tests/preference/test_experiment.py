"""scripts/preference_experiment.py end to end on a tiny quick run, and the learner's batch timing."""

import json
import subprocess
import sys
import time
from pathlib import Path

import importlib.util

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from policy_sampler.preference import PreferenceLearner

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_experiment_in_process(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("preference_experiment", ROOT / "scripts" / "preference_experiment.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="preference_experiment", overrides=[
            "tasks=[PolicySampler/ObstacleReach-v0]", "methods=[dpp,successive_elimination]", "n_trajectories=12",
            "n_queries=20", "seeds=2", "n_candidate_pairs=50", "posterior.n_samples=40", "posterior.burn_in=20",
            "posterior.thin=2", f"cache_dir={tmp_path}", "images_dir=''", "report_queries=[10,20]",
        ])
    assert script.run(cfg) == 0
    out = capsys.readouterr().out
    assert "| dpp |" in out and "| successive_elimination |" in out
    results = json.loads((tmp_path / "results.json").read_text())
    dpp = results["tasks"]["PolicySampler/ObstacleReach-v0"]["methods"]["dpp"]
    assert len(dpp["mean"]) == 3 and len(dpp["runs"]) == 2  # m after 0, 10, 20 queries; 2 seeds
    assert "Paired by seed: dpp minus method" in out and "| successive_elimination | " in out.split("Paired by seed")[1]
    paired = results["tasks"]["PolicySampler/ObstacleReach-v0"]["paired_differences"]["successive_elimination"]
    runs = results["tasks"]["PolicySampler/ObstacleReach-v0"]["methods"]
    diff = [np.mean(a["alignment"][1:]) - np.mean(b["alignment"][1:])
            for a, b in zip(runs["dpp"]["runs"], runs["successive_elimination"]["runs"])]
    assert paired["mean_over_run"]["t_ci95"][0] == pytest.approx(np.mean(diff))


@pytest.mark.slow
def test_quick_experiment_writes_tables_plots_and_results(tmp_path):
    args = [
        sys.executable, str(ROOT / "scripts" / "preference_experiment.py"), "quick=true",
        "tasks=[PolicySampler/ObstacleReach-v0]", "methods=[dpp,greedy]", "n_trajectories=20", "n_queries=20",
        f"cache_dir={tmp_path / 'cache'}", f"images_dir={tmp_path / 'img'}",
    ]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| dpp |" in done.stdout and "| greedy |" in done.stdout
    assert (tmp_path / "img" / "preference_obstaclereach_v0.png").stat().st_size > 10_000
    assert (tmp_path / "cache" / "obstaclereach_v0_20.npz").exists()
    results = json.loads((tmp_path / "cache" / "results.json").read_text())
    dpp = results["tasks"]["PolicySampler/ObstacleReach-v0"]["methods"]["dpp"]
    assert len(dpp["mean"]) == 3 and len(dpp["runs"]) == 2  # m after 0, 10, 20 queries; 2 seeds
    bad = subprocess.run(args[:2] + ["n_queries=15"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "multiple of batch_size" in bad.stderr


def test_next_batch_of_10_from_1000_candidate_pairs_in_milliseconds():
    feats = np.random.default_rng(0).standard_normal((300, 7))
    learner = PreferenceLearner(feats, batch_size=10, method="dpp", seed=0)
    learner.add_answers([(i, i + 1, 1) for i in range(0, 40, 2)])
    learner.posterior()  # the posterior is shared by every method; time the query selection
    start = time.perf_counter()
    batch = learner.next_batch()
    elapsed = time.perf_counter() - start
    print(f"next_batch (1000 candidate pairs, 200 posterior samples, dpp): {1000 * elapsed:.1f} ms")
    assert len(batch) == 10 and elapsed < 1.0  # loose: the machine is shared; measured figure printed above
