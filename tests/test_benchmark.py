"""The benchmark's projection and its side-by-side table."""

import pytest
import torch
from diffusers import DDPMScheduler

from policy_sampler import NoiseSchedule
from policy_sampler.benchmark import Case, format_table, machine_name, paradigms_sweep, projected_h100_ms, run_case
from policy_sampler.projection import H100_CALL_TABLE
from policy_sampler.reference import GaussianMixtureDenoiser


def test_projection_interpolates_the_measured_h100_table():
    assert projected_h100_ms([1]) == pytest.approx(1.59)
    assert projected_h100_ms([100, 256, 1024]) == pytest.approx(2.10 + 2.81 + 6.57)
    assert projected_h100_ms([178]) == pytest.approx((2.10 + 2.81) / 2)
    slope = (6.57 - 2.81) / (1024 - 256)
    assert projected_h100_ms([2048]) == pytest.approx(6.57 + slope * 1024)
    assert projected_h100_ms([1] * 100) == pytest.approx(159.0)  # sequential ddpm, one row per call


def test_run_case_compares_samplers_on_the_same_noise():
    schedule = NoiseSchedule.from_diffusers(
        DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True),
        num_inference_steps=30)
    case = Case("mixture", GaussianMixtureDenoiser.random(schedule, dim=4), schedule, (4,), seeds=2)
    configs = [("ddpm", "ddpm", {}), ("tight paradigms", "paradigms", {"tolerance": 1e-6, "window": 8}),
               ("not registered", "no_such_sampler", {})]
    rows = run_case(case, configs, projection=H100_CALL_TABLE)
    assert [r.label for r in rows] == ["ddpm", "tight paradigms"]
    ddpm, para = rows
    assert ddpm.rounds_mean == 30 and ddpm.nfe_mean == 30 and ddpm.max_error == 0
    assert ddpm.projected_ms == pytest.approx(30 * 1.59) and ddpm.projected_on == "NVIDIA H100"
    assert para.max_error < 1e-4 and para.rounds_mean <= 31
    table = format_table(case, rows, machine_name(torch.device("cpu")), torch.device("cpu"))
    assert "projection" in table and "| tight paradigms | no |" in table


def test_paradigms_sweep_lists_every_setting():
    schedule = NoiseSchedule.from_diffusers(
        DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True),
        num_inference_steps=20)
    table = paradigms_sweep(GaussianMixtureDenoiser.random(schedule, dim=4), schedule, (4,), conditions=4,
                            windows=(4, 20), tolerances=(0.1, 1e-6))
    rows = [line for line in table.splitlines() if line.startswith("| frozen_x0") or line.startswith("| copy")]
    assert len(rows) == 8
    tight = [row for row in rows if "| 1e-06 |" in row]
    assert all(float(row.split("|")[-2]) < 1e-4 for row in tight)  # max error at a tight tolerance


def _report(device, measured_at, points, device_type="cuda", precision="fp32"):
    return {"device": device, "device_type": device_type, "cpu_mode": device_type != "cuda", "measured_at": measured_at,
            "per_call": [{"model": "paper", "mode": "cuda_graph", "precision": precision, "rows": r, "p50_ms": ms}
                         for r, ms in points]}


def test_projection_uses_the_newest_gpu_report(tmp_path):
    """Once scripts/gpu_check.sh has written a report under docs/gpu/, projections use its measured table
    and name its device; CPU reports and other precisions are never used; without one, the H100 table."""
    import json

    from policy_sampler.projection import device_call_table, table_from_report

    assert device_call_table(tmp_path) is H100_CALL_TABLE
    for name, report in {
        "old": _report("NVIDIA H100 80GB HBM3", "2026-11-01T00:00:00+00:00", [(1, 1.0), (101, 2.0)]),
        "new": _report("NVIDIA H200", "2026-12-02T00:00:00+00:00", [(1, 0.5), (101, 1.5), (1024, 4.0)]),
        "cpu": _report("CPU", "2026-12-03T00:00:00+00:00", [(1, 9.0), (101, 90.0)], device_type="cpu"),
        "bf16": _report("NVIDIA B200", "2026-12-04T00:00:00+00:00", [(1, 0.1), (101, 0.2)], precision="bf16"),
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(report))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    table = device_call_table(tmp_path)
    assert table.device == "NVIDIA H200" and table.points == ((1, 0.5), (101, 1.5), (1024, 4.0))
    assert table.project([1] * 100) == pytest.approx(50.0)
    assert table.project([51]) == pytest.approx(1.0)  # halfway between 1 and 101 rows
    assert table_from_report(_report("x", "", [(1, 1.0)])) is None  # one point is no table
    with pytest.raises(ValueError, match="call table"):
        type(table)("x", ((8, 1.0), (1, 2.0)), "unsorted")
