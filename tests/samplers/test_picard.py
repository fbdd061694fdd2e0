"""Picard and ParaDiGMS reach the sequential chain's path for the same noise."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from policy_sampler import NoiseSchedule, make_sampler
from policy_sampler.reference import GaussianMixtureDenoiser
from policy_sampler.samplers.picard import _WindowSolver, chain_for
from policy_sampler.samplers.base import DenoiserCall
from sampler_helpers import ddpm_schedule, draws


SCHEDULES = {
    "ddpm-100-eps-clip": lambda: ddpm_schedule(),
    "ddpm-uneven-v": lambda: NoiseSchedule.from_diffusers(
        DDPMScheduler(num_train_timesteps=100, prediction_type="v_prediction", clip_sample=False),
        timesteps=[99, 97, 90, 80, 61, 40, 33, 20, 9, 3, 1, 0]),
    "ddpm-linspace-sample": lambda: ddpm_schedule(
        steps=13, timestep_spacing="linspace", prediction_type="sample", clip_sample_range=0.5),
    "ddpm-trailing-eps": lambda: ddpm_schedule(steps=30, timestep_spacing="trailing", clip_sample=False),
}


@pytest.mark.parametrize("schedule_name", sorted(SCHEDULES))
@pytest.mark.parametrize("options", [
    {"name": "picard"},
    {"name": "paradigms", "window": 1},
    {"name": "paradigms", "window": 5},
    {"name": "paradigms", "window": 8, "init": "copy"},
])
def test_tight_tolerance_reproduces_ddpm_path(schedule_name, options):
    schedule = SCHEDULES[schedule_name]()
    denoiser = GaussianMixtureDenoiser.random(schedule, dim=4, seed=1)
    x_T, noise = draws(schedule, batch=3, dim=4)
    cond = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 0.2
    reference = make_sampler("ddpm").sample(denoiser, schedule, x_T, cond=cond, noise=noise).sample
    options = dict(options)
    result = make_sampler(options.pop("name"), tolerance=1e-10, **options).sample(
        denoiser, schedule, x_T, cond=cond, noise=noise)
    torch.testing.assert_close(result.sample, reference, rtol=0, atol=1e-9)
    assert result.rounds <= schedule.num_steps + 1


@pytest.mark.parametrize("eta_chain", ["ddim"])
def test_tight_tolerance_reproduces_ddim_path(eta_chain):
    schedule = NoiseSchedule.from_diffusers(
        DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                      set_alpha_to_one=False, timestep_spacing="trailing"), num_inference_steps=20)
    denoiser = GaussianMixtureDenoiser.random(schedule, dim=3, seed=2)
    x_T, noise = draws(schedule, batch=2, dim=3)
    reference = make_sampler("ddim", eta=0.0).sample(denoiser, schedule, x_T, noise=noise).sample
    for name, options in [("picard", {}), ("paradigms", {"window": 6})]:
        result = make_sampler(name, tolerance=1e-10, chain=eta_chain, **options).sample(
            denoiser, schedule, x_T, noise=noise)
        torch.testing.assert_close(result.sample, reference, rtol=0, atol=1e-9)


def sequential_trajectory(chain, denoiser, x_T, noise):
    xs = [x_T]
    for k in range(chain.num_steps):
        t = chain.timesteps[k].expand(x_T.shape[0])
        mean, _ = chain.mean(denoiser(xs[-1], t, None), xs[-1], k)
        xs.append(mean + chain.sigma[k].to(x_T.dtype) * noise[k])
    return torch.stack(xs, 1)


@pytest.mark.parametrize("init", ["frozen_x0", "copy"])
def test_after_j_picard_sweeps_the_first_j_steps_are_exact(init):
    schedule = ddpm_schedule(steps=25)
    chain = chain_for(schedule, "ddpm")
    denoiser = GaussianMixtureDenoiser.random(schedule, dim=3, seed=3)
    x_T, noise = draws(schedule, batch=2, dim=3)
    truth = sequential_trajectory(chain, denoiser, x_T, noise)
    solver = _WindowSolver(chain, x_T, noise, p=schedule.num_steps, init=init)
    call = DenoiserCall(denoiser, None, x_T)
    rows, begin = torch.arange(2), torch.zeros(2, dtype=torch.long)
    for sweep in range(1, 8):
        solver.sweep(call, rows, begin, tol2=0.0)  # a full-trajectory Picard sweep, window pinned at 0
        error = (solver.buf[:, : schedule.num_steps + 1] - truth).abs().amax(-1)  # [B, K+1]
        assert error[:, : sweep + 1].max() < 1e-12, f"sweep {sweep}: first {sweep} steps not exact"
        assert error[:, sweep + 1:].max() > 1e-8, "later steps should not be exact yet"


def test_rows_slide_independently_and_match_sampling_alone():
    schedule = ddpm_schedule()
    denoiser = GaussianMixtureDenoiser.random(schedule, dim=8, seed=4)
    x_T, noise = draws(schedule, batch=6, dim=8, seed=7)
    sampler = make_sampler("paradigms", window=16)
    together = sampler.sample(denoiser, schedule, x_T, noise=noise)
    for row in range(6):
        alone = sampler.sample(denoiser, schedule, x_T[row:row + 1], noise=noise[:, row:row + 1])
        torch.testing.assert_close(together.sample[row:row + 1], alone.sample, rtol=0, atol=1e-12)
        assert together.rounds_per_row[row] <= together.rounds
    assert len(set(together.rounds_per_row)) > 1, "rows should finish at different rounds"
    assert together.rounds == max(together.rounds_per_row)
    # finished rows leave the batch: fewer rows than a fixed batch x window x rounds
    assert together.evaluations < 6 * 16 * together.rounds
    assert together.rows_per_call[0] == 6 * 16 and together.rows_per_call[-1] % 16 == 0


def pathwise_error(name, batch=64, dim=32, seed=11, **options):
    schedule = ddpm_schedule()
    denoiser = GaussianMixtureDenoiser.random(schedule, dim=dim, seed=0)
    x_T, noise = draws(schedule, batch=batch, dim=dim, seed=seed, dtype=torch.float32)
    reference = make_sampler("ddpm").sample(denoiser, schedule, x_T, noise=noise).sample
    result = make_sampler(name, **options).sample(denoiser, schedule, x_T, noise=noise)
    error = result.sample - reference
    mean_rounds = sum(result.rounds_per_row) / batch
    return error.pow(2).mean().sqrt().item(), error.abs().max().item(), mean_rounds, result


def test_default_settings_error_is_bounded_and_rounds_are_cut():
    """Defaults (window 64, tolerance 0.1) on a 32-d three-mode mixture (component std 0.1), 64
    conditions: the RMS distance to ddpm's sample on the same noise stays under 0.01 (a tenth of a
    mode's std) and every coordinate within 0.15; a condition needs about 16 rounds per 100 steps,
    against about 22 for the paper's initialization at the same window and tolerance."""
    rms, worst, rounds, result = pathwise_error("paradigms")
    assert rms < 0.01 and worst < 0.15, (rms, worst)
    assert rounds < 18, rounds
    assert result.rounds < 20
    paper_rms, _, paper_rounds, _ = pathwise_error("paradigms", init="copy")
    assert paper_rounds > rounds + 4, (paper_rounds, rounds)
    assert rms < 5 * paper_rms + 0.002, (rms, paper_rms)


def test_picard_is_paradigms_with_the_whole_trajectory_as_window():
    schedule = ddpm_schedule(steps=40)
    denoiser = GaussianMixtureDenoiser.random(schedule, dim=5, seed=6)
    x_T, noise = draws(schedule, batch=2, dim=5)
    a = make_sampler("picard", tolerance=0.05).sample(denoiser, schedule, x_T, noise=noise)
    b = make_sampler("paradigms", window=40, tolerance=0.05).sample(denoiser, schedule, x_T, noise=noise)
    torch.testing.assert_close(a.sample, b.sample, rtol=0, atol=0)
    assert a.rows_per_call == b.rows_per_call and set(a.rows_per_call) <= {40, 80}


def test_float16_model_keeps_float32_sums():
    schedule = ddpm_schedule(steps=20)
    mixture = GaussianMixtureDenoiser.random(schedule, dim=4, seed=8)
    seen = []

    def half_denoiser(x, t, cond):
        seen.append(x.dtype)
        return mixture(x.float(), t, cond).half()

    x_T, noise = draws(schedule, batch=2, dim=4, dtype=torch.float32)
    result = make_sampler("paradigms", window=8).sample(half_denoiser, schedule, x_T.half(), noise=noise)
    assert result.sample.dtype == torch.float16 and set(seen) == {torch.float16}
    reference = make_sampler("ddpm").sample(mixture, schedule, x_T, noise=noise).sample
    assert (result.sample.float() - reference).abs().max() < 0.05


def test_exact_flags():
    assert make_sampler("picard").exact is False
    assert make_sampler("paradigms").exact is False
    assert make_sampler("ddpm").exact is True
