"""Warm starts (``trajectory_guess``) and deadlines (anytime sampling) of the Picard family."""

import time
from types import SimpleNamespace

import pytest
import torch

from policy_sampler import make_sampler
from policy_sampler.reference import GaussianMixtureDenoiser
from policy_sampler.samplers import base as sampler_base
from sampler_helpers import ddpm_schedule, draws


@pytest.fixture(scope="module")
def problem():
    schedule = ddpm_schedule()
    denoiser = GaussianMixtureDenoiser.random(schedule, dim=8, seed=3)
    x_T, noise = draws(schedule, batch=4, dim=8, seed=7)
    reference = make_sampler("ddpm").sample(denoiser, schedule, x_T, noise=noise).sample
    return schedule, denoiser, x_T, noise, reference


def path(problem, cond_shift=0.0):
    schedule, denoiser, x_T, noise, _ = problem
    cond = torch.full((x_T.shape[0], 8), cond_shift, dtype=x_T.dtype)
    return make_sampler("picard", tolerance=1e-10).sample(denoiser, schedule, x_T, cond=cond, noise=noise)


@pytest.mark.parametrize("name", ["picard", "paradigms"])
def test_warm_start_keeps_the_fixed_point(problem, name):
    schedule, denoiser, x_T, noise, reference = problem
    guess = torch.randn((schedule.num_steps + 1, *x_T.shape), dtype=x_T.dtype, generator=torch.Generator().manual_seed(1))
    out = make_sampler(name, tolerance=1e-10).sample(denoiser, schedule, x_T, noise=noise, trajectory_guess=guess)
    torch.testing.assert_close(out.sample, reference, rtol=0, atol=1e-9)


def test_trajectory_is_the_ddpm_path(problem):
    schedule, denoiser, x_T, noise, reference = problem
    traj = path(problem).info["trajectory"]
    assert traj.shape == (schedule.num_steps + 1, *x_T.shape)
    torch.testing.assert_close(traj[0], x_T, rtol=0, atol=0)
    torch.testing.assert_close(traj[-1], reference, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["picard", "paradigms"])
def test_a_nearby_path_saves_rounds(problem, name):
    """Warm-started from the same-noise path of a nearby conditioning (consecutive chunks of a control
    loop), the sampler needs fewer rounds; from the exact path, two at most."""
    schedule, denoiser, x_T, noise, _ = problem
    cond = torch.full((x_T.shape[0], 8), 0.05, dtype=x_T.dtype)
    sampler = make_sampler(name)
    cold = sampler.sample(denoiser, schedule, x_T, cond=cond, noise=noise)
    near = sampler.sample(denoiser, schedule, x_T, cond=cond, noise=noise, trajectory_guess=path(problem).info["trajectory"])
    exact = sampler.sample(denoiser, schedule, x_T, cond=cond, noise=noise,
                           trajectory_guess=path(problem, 0.05).info["trajectory"])
    assert exact.rounds <= 2 < near.rounds < cold.rounds, (exact.rounds, near.rounds, cold.rounds)


def test_deadline_in_the_past_returns_after_one_round(problem):
    schedule, denoiser, x_T, noise, reference = problem
    out = make_sampler("paradigms").sample(denoiser, schedule, x_T, noise=noise, deadline=time.perf_counter())
    assert out.rounds == 1 and out.info["stopped_early"] and out.info["unfinished_rows"] == 4
    assert out.sample.shape == x_T.shape and torch.isfinite(out.sample).all()
    assert out.rounds_per_row == [1] * 4


def test_far_deadline_changes_nothing(problem):
    schedule, denoiser, x_T, noise, reference = problem
    sampler = make_sampler("paradigms")
    plain = sampler.sample(denoiser, schedule, x_T, noise=noise)
    timed = sampler.sample(denoiser, schedule, x_T, noise=noise, deadline=time.perf_counter() + 3600)
    assert not timed.info["stopped_early"] and timed.rounds == plain.rounds
    torch.testing.assert_close(timed.sample, plain.sample, rtol=0, atol=0)


def test_deadline_is_kept_with_a_slow_denoiser(problem, monkeypatch):
    """On a scripted clock each denoiser call takes 20 ms: the sampler measures its rounds (one batched
    call each), stops before the round that would overrun 150 ms (the 8th would end at 160 ms) and
    returns its best iterate, nearer the ddpm answer than the initial noise. (Scripted rather than
    slept: with real sleeps an OS stall on a loaded machine overran the deadline. The patched clock is
    ``time.perf_counter``, the clock ``deadline`` is documented in.)"""
    schedule, denoiser, x_T, noise, reference = problem
    now = [100.0]
    monkeypatch.setattr(sampler_base, "time", SimpleNamespace(perf_counter=lambda: now[0]))

    def slow(x, t, cond):
        now[0] += 0.02
        return denoiser(x, t, cond)

    out = make_sampler("picard").sample(slow, schedule, x_T, noise=noise, deadline=100.0 + 0.15)
    assert out.info["stopped_early"] and out.rounds == 7 and now[0] - 100.0 <= 0.15
    assert (out.sample - reference).norm() < (x_T - reference).norm()


@pytest.mark.parametrize("name,kwargs,message", [
    ("ddpm", {"trajectory_guess": torch.zeros(101, 4, 8, dtype=torch.float64)}, "no trajectory_guess"),
    ("speculative", {"trajectory_guess": torch.zeros(101, 4, 8, dtype=torch.float64)}, "no trajectory_guess"),
    ("speculative", {"deadline": 0.0}, "cannot stop at a deadline"),
    ("paradigms", {"x0_guess": torch.zeros(4, 8, dtype=torch.float64)}, "takes no x0_guess"),
    ("speculative", {"x0_guess": torch.zeros(4, 7, dtype=torch.float64)}, "x0_guess must have the shape"),
    ("speculative_picard", {"x0_guess": torch.full((4, 8), float("inf"), dtype=torch.float64)}, "NaN or inf"),
    ("paradigms", {"trajectory_guess": torch.zeros(100, 4, 8, dtype=torch.float64)}, "trajectory_guess must have shape"),
    ("paradigms", {"trajectory_guess": torch.full((101, 4, 8), float("nan"), dtype=torch.float64)}, "NaN"),
    ("paradigms", {"deadline": "soon"}, "deadline must be"),
])
def test_bad_warm_start_or_deadline(problem, name, kwargs, message):
    schedule, denoiser, x_T, noise, _ = problem
    with pytest.raises(ValueError, match=message):
        make_sampler(name).sample(denoiser, schedule, x_T, noise=noise, **kwargs)
