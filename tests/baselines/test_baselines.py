"""The baselines: DPM-Solver++ in its own loop and the consistency student (sampling, registration,
distillation end to end on a tiny policy)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from policy_sampler import NoiseSchedule, available_samplers, make_sampler
from policy_sampler.baselines import ConsistencyStudentSampler, dpm_solver_sample, dpm_solver_scheduler, student_plan
from policy_sampler.baselines.consistency import distillation_grid
from policy_sampler.reference import chunk_mixture
from policy_sampler.samplers.base import Sampler, register_baseline


def ddpm_scheduler(**config) -> DDPMScheduler:
    return DDPMScheduler(**{"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2", "clip_sample": True,
                            "prediction_type": "epsilon", **config})


def test_dpm_solver_integrates_the_probability_flow_ode():
    """DPM-Solver++ approaches deterministic DDIM with 100 steps (the same ODE) as its steps grow."""
    scheduler = ddpm_scheduler()
    schedule = NoiseSchedule.from_diffusers(scheduler, num_inference_steps=100)
    mixture = chunk_mixture(schedule)
    x_T = torch.randn(8, 16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ode = make_sampler("ddim").sample(mixture, schedule, x_T).sample
    errors = [float((dpm_solver_sample(mixture, scheduler, x_T, None, n) - ode).abs().max()) for n in (5, 20, 99)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-2, errors


def test_dpm_solver_clips_like_the_policy():
    """The thresholding stands in for clip_sample: a denoiser whose clean prediction is far outside
    [-1, 1] still gives samples inside it (without the clip they reach about 5)."""
    scheduler = ddpm_scheduler()
    x_T = torch.randn(4, 16, 2, generator=torch.Generator().manual_seed(1))

    def far(x, t, cond):  # epsilon whose clean prediction is 5 everywhere
        a = scheduler.alphas_cumprod[t].reshape(-1, 1, 1)
        return (x - a.sqrt() * 5.0) / (1 - a).sqrt()

    assert float(dpm_solver_sample(far, scheduler, x_T, None, 10).abs().max()) <= 1.0 + 1e-5
    unclipped = ddpm_scheduler(clip_sample=False)
    assert float(dpm_solver_sample(far, unclipped, x_T, None, 10).abs().max()) > 4.0
    with pytest.raises(ValueError, match="clip_sample_range"):
        dpm_solver_scheduler(ddpm_scheduler(clip_sample_range=2.0), 10)


def test_student_plan_and_grid():
    grid = distillation_grid(100, 20)
    assert grid[0] == 0 and grid[-1] == 99 and len(grid) == 21
    assert student_plan(grid, 1) == [99] and student_plan(grid, 3) == [99, 64, 35]
    assert len(student_plan(grid, 20)) == 20
    with pytest.raises(ValueError, match="steps"):
        student_plan(grid, 21)
    with pytest.raises(ValueError, match="grid_intervals"):
        distillation_grid(100, 100)


def test_student_sampling_with_a_perfect_student():
    """A network whose v-form output is exactly the data point c (a point mass) samples c in 1 and in
    3 steps, whatever the noise: the re-noising and the v-form read-out are right."""
    scheduler = ddpm_scheduler(clip_sample=False)
    schedule = NoiseSchedule.from_diffusers(scheduler, num_inference_steps=100)
    c = torch.linspace(-0.5, 0.5, 32).reshape(16, 2)

    def perfect(x, t, cond):  # f(x, t) = sqrt(a) x - sqrt(1 - a) F = c
        a = schedule.alphas_cumprod[t].to(x.dtype).reshape(-1, 1, 1)
        return (a.sqrt() * x - c) / (1 - a).sqrt()

    x_T = torch.randn(5, 16, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for steps in (1, 3):
        res = make_sampler("consistency_student", steps=steps).sample(
            perfect, schedule, x_T, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(res.sample, c.expand(5, 16, 2).double(), rtol=0, atol=1e-9)
        assert res.rounds == res.nfe == steps and res.info["plan"] == student_plan(distillation_grid(100, 20), steps)


def test_student_is_a_baseline_not_one_of_ours():
    assert "consistency_student" not in available_samplers()
    sampler = make_sampler("consistency_student", steps=3)
    assert isinstance(sampler, ConsistencyStudentSampler) and sampler.exact is False
    with pytest.raises(ValueError, match="steps"):
        make_sampler("consistency_student", steps=0)
    with pytest.raises(ValueError, match="checkpoint"):
        make_sampler("consistency_student", checkpoint=3)

    class Exact(Sampler):
        name, exact = "exact_baseline", True

        def _sample(self, *args, **kwargs):
            raise NotImplementedError

    with pytest.raises(ValueError, match="exact = False"):
        register_baseline(Exact)


def _policy_test_module():
    """tests/policy/test_policy.py, for its synthetic demo file and tiny policy settings."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "policy" / "test_policy.py"
    spec = importlib.util.spec_from_file_location("policy_test_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_distill_writes_a_student_that_evaluate_can_run(tmp_path):
    """Distillation end to end on a tiny teacher: the student checkpoint records its grid and settings,
    loads as the ``consistency_student`` baseline (its network replacing the teacher's), and a plain
    policy checkpoint is refused as a student."""
    from policy_sampler import DiffusionPolicy
    from policy_sampler.baselines import DistillConfig, distill
    from policy_sampler.baselines.consistency import read_metadata
    from policy_sampler.training import TrainConfig, train

    fixtures = _policy_test_module()
    demos = fixtures.write_fixture(tmp_path / "demos.hdf5")
    teacher_run = train(dict(fixtures.TINY), demos, tmp_path / "teacher",
                        TrainConfig(steps=10, batch_size=32, lr=2e-3, warmup_steps=2, val_every=10, progress=False))
    teacher = DiffusionPolicy.load(teacher_run.last_path)
    path = distill(teacher, demos, tmp_path / "student",
                   DistillConfig(steps=6, batch_size=16, grid_intervals=5, warmup_steps=1, log_every=3))
    meta = read_metadata(path)
    assert meta["grid"] == [0, 4, 8, 11, 15, 19] and meta["config"]["steps"] == 6 and meta["wall_s"] > 0
    obs = fixtures.make_obs(3)
    for steps in (1, 3):
        out = teacher.predict_action(obs, sampler="consistency_student", checkpoint=str(path), steps=steps,
                                     generator=torch.Generator().manual_seed(0))
        assert out.rounds == out.nfe == steps and torch.isfinite(out.chunk).all()
    with pytest.raises(ValueError, match="not a consistency student"):
        make_sampler("consistency_student", checkpoint=str(teacher_run.last_path))
    with pytest.raises(ValueError, match="steps"):
        make_sampler("consistency_student", checkpoint=str(path), steps=6)
