"""The exact speculative samplers: ``speculative``, ``autospeculative`` and ``speculative_picard``.

Law tests compare against sequential ``ddpm`` on the analytic Gaussian mixture with independent
seeds per arm (mode weights by chi-square, per-mode means and the pooled within-mode variance by
z-tests, random 1-D projections by KS; Bonferroni over everything). Their power is proven on the
same sample sizes by deliberately wrong variants kept here: 5% too much noise, the "resample from
the target on rejection" coupling, and adaptive windows that peek at the round's acceptance or
depend on the noise being verified.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from scipy import stats

from policy_sampler import NoiseSchedule, available_samplers, make_sampler
from policy_sampler.reference.gaussian_mixture import GaussianMixtureDenoiser
from policy_sampler.samplers.coupling import CouplingResult, reflection_coupling
from policy_sampler.samplers.speculative import SpeculativePicardSampler, SpeculativeSampler
from policy_sampler.samplers.windows import AdaptiveWindow

ALPHA = 1e-3  # family-wise level of one law comparison


@lru_cache(maxsize=None)
def schedule(steps: int = 100, clip: bool = True, prediction_type: str = "epsilon") -> NoiseSchedule:
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=clip,
                              prediction_type=prediction_type)
    return NoiseSchedule.from_diffusers(scheduler, num_inference_steps=steps)


@lru_cache(maxsize=None)
def mixture(dim: int, steps: int = 100, clip: bool = True, prediction_type: str = "epsilon") -> GaussianMixtureDenoiser:
    return GaussianMixtureDenoiser.random(schedule(steps, clip, prediction_type), dim, seed=1)


def wrong_mixture(dim: int, steps: int, clip: bool) -> GaussianMixtureDenoiser:
    """A deliberately wrong 'independent' draft model: the mixture with shifted means."""
    den = mixture(dim, steps, clip)
    return GaussianMixtureDenoiser(den.means + 0.15, den.stds, None, schedule(steps, clip))


# --- deliberately wrong variants (negative controls proving the law tests' power) -------------

def _resample_on_rejection(draft, p, q, sigma, z, u, event_dims):
    res = reflection_coupling(draft, p, q, sigma, z, u, event_dims)
    g = torch.Generator().manual_seed(int(u.reshape(-1)[0].item() * 2**31))
    fresh = torch.randn(z.shape, generator=g, dtype=z.dtype)
    sig = sigma.to(draft.dtype).reshape(*sigma.shape, *([1] * event_dims))
    mask = res.accepted.reshape(*res.accepted.shape, *([1] * event_dims))
    return CouplingResult(torch.where(mask, draft, q + sig * fresh), res.accepted, res.delta, res.s, res.log_ratio)


class ResampleOnRejection(SpeculativeSampler):
    """WRONG: a fresh target draw instead of the reflection."""
    coupling = staticmethod(_resample_on_rejection)


class TooNoisy(SpeculativeSampler):
    """WRONG: every sigma 5% too large."""
    def _chain(self, schedule):
        chain = schedule.ddpm_chain()
        return dataclasses.replace(chain, sigma=chain.sigma * 1.05, _cache={})


class PeekingWindow(SpeculativePicardSampler):
    """WRONG: an adaptive window that peeks at the current round's acceptance: when a transition is
    rejected, the window is cut to end just before it (that step is re-drafted next round) instead of
    committing the reflection."""

    def _verify(self, state, active):
        verified = super()._verify(state, active)
        cut = [m if 0 < m < n else n for m, n in zip(verified.m.tolist(), active.n)]
        if cut == active.n:
            return verified
        return super()._verify(state, dataclasses.replace(active, n=cut))


class NoiseSizedWindow(SpeculativePicardSampler):
    """WRONG: a window schedule that depends on the noise being verified: each row's window ends
    just before the first later step whose standard normal draw has a negative first coordinate."""

    def _verify(self, state, active):
        cut = []
        for r, k, n in zip(state.row_list, active.k, active.n):
            z = state.noise_rows[r, k + 1:k + n].flatten(1)[:, 0]
            bad = (z < 0).nonzero()
            cut.append(int(bad[0]) + 1 if len(bad) else n)
        return super()._verify(state, dataclasses.replace(active, n=cut))


# --- the law comparison -----------------------------------------------------------------------

def law_pvalues(a: torch.Tensor, b: torch.Tensor, den: GaussianMixtureDenoiser, n_proj: int = 4) -> dict:
    out = {}
    la, lb = den.component_of(a), den.component_of(b)
    C = den.means.shape[0]
    table = np.stack([torch.bincount(la, minlength=C).numpy(), torch.bincount(lb, minlength=C).numpy()])
    table = table[:, table.sum(0) > 0]
    out["modes_chi2"] = stats.chi2_contingency(table)[1] if table.shape[1] > 1 else 1.0
    d = a.shape[1]
    ra, rb = [], []
    for c in range(C):
        xa, xb = a[la == c], b[lb == c]
        if len(xa) < 30 or len(xb) < 30:
            continue
        z = (xa.mean(0) - xb.mean(0)) / torch.sqrt(xa.var(0) / len(xa) + xb.var(0) / len(xb))
        out[f"mean_{c}"] = stats.chi2.sf(float((z**2).sum()), d)  # sum of d squared z's
        ra.append(((xa - xa.mean(0)) ** 2).mean(1))
        rb.append(((xb - xb.mean(0)) ** 2).mean(1))
    ra, rb = torch.cat(ra), torch.cat(rb)
    zv = (ra.mean() - rb.mean()) / torch.sqrt(ra.var() / len(ra) + rb.var() / len(rb))
    out["pooled_var"] = 2 * stats.norm.sf(abs(float(zv)))
    g = torch.Generator().manual_seed(123)
    for i in range(n_proj):
        v = torch.randn(d, generator=g, dtype=torch.float64)
        v /= v.norm()
        out[f"ks_{i}"] = stats.ks_2samp((a @ v).numpy(), (b @ v).numpy()).pvalue
    return out


def same_law(a, b, den) -> tuple[bool, dict]:
    p = law_pvalues(a, b, den)
    return min(p.values()) * len(p) > ALPHA, p


def draw(sampler, den, sch, n: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, dim, generator=g, dtype=torch.float64)
    return sampler.sample(den, sch, x_T, generator=g)


@lru_cache(maxsize=None)
def reference(dim: int, steps: int, clip: bool, n: int) -> torch.Tensor:
    return draw(make_sampler("ddpm"), mixture(dim, steps, clip), schedule(steps, clip), n, dim, seed=1).sample


def check_law(sampler, dim: int, steps: int, clip: bool, n: int, seed: int = 2) -> tuple[bool, dict]:
    res = draw(sampler, mixture(dim, steps, clip), schedule(steps, clip), n, dim, seed)
    assert torch.isfinite(res.sample).all()
    return same_law(reference(dim, steps, clip, n), res.sample, mixture(dim, steps, clip))


# --- default law tests (fast) -----------------------------------------------------------------

FAST_CONFIGS = [(16, True, 4000), (16, False, 4000), (2, True, 10000)]  # (dim, clip, n), 20 steps
FAST_IDS = ["d16-clip", "d16-noclip", "d2-clip"]


class Guessed:
    """A sampler whose first draft assumes a fixed (noise-independent) x0_guess: still exactly the
    ddpm law."""

    def __init__(self, sampler, value: float):
        self.sampler, self.value = sampler, value

    def sample(self, den, sch, x_T, generator=None):
        return self.sampler.sample(den, sch, x_T, generator=generator, x0_guess=torch.full_like(x_T, self.value))


def _fast_samplers(dim, clip):
    return {
        "default-picard": make_sampler("speculative_picard"),  # adaptive windows, probes every 2nd state
        "guessed-default-picard": Guessed(make_sampler("speculative_picard"), 0.3),
        "adaptive-noprobe-picard-8": make_sampler("speculative_picard", window=8, adaptive_window=True,
                                                  probe_every=None),
        "adaptive-probe3-frozen-picard": make_sampler("speculative_picard", probe_every=3, prior_precision=None),
        "fixed-picard-None": make_sampler("speculative_picard", adaptive_window=False),
        "guessed-speculative-None": Guessed(make_sampler("speculative"), 0.7),
        "guessed-picard-8": Guessed(make_sampler("speculative_picard", window=8), -0.5),
        "trimmed-tau10-picard-None": make_sampler("speculative_picard", prior_precision=10.0, adaptive_window=False,
                                                  trim_window=True),
        "trimmed-guessed-picard-8": Guessed(make_sampler("speculative_picard", window=8, trim_window=True), 0.3),
        "speculative-None": make_sampler("speculative"),
        "fixed-speculative-None": make_sampler("speculative", adaptive_window=False),
        "speculative-1": make_sampler("speculative", lookahead=1),
        "autospeculative-4": make_sampler("autospeculative", spec_len=4),
        "picard-8": make_sampler("speculative_picard", window=8),
        "frozen-picard-8": make_sampler("speculative_picard", window=8, prior_precision=None),
        "gauss10-speculative-None": make_sampler("speculative", prior_precision=10.0),
        "gauss1-picard-8": make_sampler("speculative_picard", window=8, prior_precision=1.0),
        "independent-wrong-4": make_sampler("speculative", lookahead=4, draft="independent",
                                            draft_denoiser=wrong_mixture(dim, 20, clip)),
    }


@pytest.mark.parametrize("dim,clip,n", FAST_CONFIGS, ids=FAST_IDS)
def test_law_matches_ddpm_fast(dim, clip, n):
    failures = {}
    for name, sampler in _fast_samplers(dim, clip).items():
        ok, p = check_law(sampler, dim=dim, steps=20, clip=clip, n=n)
        if not ok:
            failures[name] = p
    assert not failures, failures


@pytest.mark.parametrize("dim,clip,n", FAST_CONFIGS, ids=FAST_IDS)
def test_law_test_has_power_fast(dim, clip, n):
    """The same comparison, sample sizes and threshold reject the wrong variants: a wrong coupling,
    too much noise, and an adaptive window that peeks at the round's acceptance (plus, at d = 2, a
    window that depends on the noise being verified)."""
    wrongs = [ResampleOnRejection(lookahead=4), ResampleOnRejection(), TooNoisy(lookahead=4), PeekingWindow()]
    if dim == 2:
        wrongs.append(NoiseSizedWindow())
    for wrong in wrongs:
        ok, p = check_law(wrong, dim=dim, steps=20, clip=clip, n=n)
        assert not ok, (type(wrong).__name__, vars(wrong), p)


# --- large law tests --------------------------------------------------------------------------

SLOW_CONFIGS = [(dim, clip, steps) for dim in (2, 16) for clip in (True, False) for steps in (20, 100)]
SLOW_SAMPLERS = ["speculative-1", "speculative-4", "speculative-None", "independent-1", "independent-None",
                 "autospeculative-None", "picard-4", "picard-None",
                 "gauss-speculative-4", "gauss-speculative-None", "gauss-picard-None", "frozen-picard-None",
                 "default-picard", "default-speculative", "adaptive-picard-8", "fixed-picard-None"]
WRONG_SAMPLERS = ["resample-4", "resample-None", "resample-independent-4", "noisy-None"]
# The wrong adaptive windows, where these sizes reject them: peeking at the round's acceptance biases a
# 20-step chain measurably (at 100 steps each step moves less: check_law did not reject it in any of
# the four 100-step configurations, measured); a noise-sized window at d = 2.
WRONG_WINDOW_CASES = ([(dim, clip, 20, "peek-default") for dim in (2, 16) for clip in (True, False)]
                      + [(2, clip, steps, "noise-sized-default") for clip in (True, False) for steps in (20, 100)])


def slow_n(dim: int, steps: int) -> int:
    return 10000 if (dim, steps) == (16, 100) else 20000  # d=16 has 8x the variance power


def _slow_sampler(name: str, dim: int, steps: int, clip: bool):
    wrong = wrong_mixture(dim, steps, clip)
    return {
        "speculative-1": lambda: make_sampler("speculative", lookahead=1),
        "speculative-4": lambda: make_sampler("speculative", lookahead=4),
        "speculative-None": lambda: make_sampler("speculative"),
        "independent-1": lambda: make_sampler("speculative", lookahead=1, draft="independent", draft_denoiser=wrong),
        "independent-None": lambda: make_sampler("speculative", draft="independent", draft_denoiser=wrong),
        "autospeculative-None": lambda: make_sampler("autospeculative"),
        "picard-4": lambda: make_sampler("speculative_picard", window=4),
        "picard-None": lambda: make_sampler("speculative_picard", prior_precision=10.0, probe_every=None),
        "frozen-picard-None": lambda: make_sampler("speculative_picard", prior_precision=None),
        "gauss-speculative-4": lambda: make_sampler("speculative", lookahead=4, prior_precision=3.0),
        "gauss-speculative-None": lambda: make_sampler("speculative", prior_precision=10.0),
        "gauss-picard-None": lambda: make_sampler("speculative_picard", prior_precision=10.0),
        "default-picard": lambda: make_sampler("speculative_picard"),
        "default-speculative": lambda: make_sampler("speculative"),
        "adaptive-picard-8": lambda: make_sampler("speculative_picard", window=8, adaptive_window=True),
        "fixed-picard-None": lambda: make_sampler("speculative_picard", adaptive_window=False),
        "peek-default": lambda: PeekingWindow(),
        "noise-sized-default": lambda: NoiseSizedWindow(),
        "resample-4": lambda: ResampleOnRejection(lookahead=4),
        "resample-None": lambda: ResampleOnRejection(),
        "resample-independent-4": lambda: ResampleOnRejection(draft="independent", draft_denoiser=wrong, lookahead=4),
        "noisy-None": lambda: TooNoisy(),
    }[name]()


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_SAMPLERS)
@pytest.mark.parametrize("dim,clip,steps", SLOW_CONFIGS)
def test_law_matches_ddpm_large(dim, clip, steps, name):
    ok, p = check_law(_slow_sampler(name, dim, steps, clip), dim, steps, clip, slow_n(dim, steps))
    assert ok, p


@pytest.mark.slow
@pytest.mark.parametrize("dim,clip,steps,name",
                         [(*config, name) for name in WRONG_SAMPLERS for config in SLOW_CONFIGS] + WRONG_WINDOW_CASES)
def test_law_test_has_power_large(dim, clip, steps, name):
    ok, p = check_law(_slow_sampler(name, dim, steps, clip), dim, steps, clip, slow_n(dim, steps))
    assert not ok, p


# --- pathwise and bookkeeping -----------------------------------------------------------------

class Counting:
    def __init__(self, den):
        self.den, self.sizes = den, []

    def __call__(self, x, t, cond=None):
        self.sizes.append(x.shape[0])
        return self.den(x, t, cond)


@pytest.mark.parametrize("lookahead", [1, 4, 7, None])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_target_draft_reproduces_ddpm_path(lookahead, prediction_type):
    sch = schedule(100, True, prediction_type)
    den = mixture(4, 100, True, prediction_type)
    g = torch.Generator().manual_seed(7)
    x_T = torch.randn(6, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(sch.num_steps, 6, 4, generator=g, dtype=torch.float64)
    ref = make_sampler("ddpm").sample(den, sch, x_T, noise=noise)
    counted = Counting(den)
    res = make_sampler("speculative", lookahead=lookahead, draft="independent", draft_denoiser=den,
                       adaptive_window=False).sample(counted, sch, x_T, noise=noise,
                                                     generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.sample, ref.sample, rtol=1e-12, atol=1e-12)
    L = sch.num_steps if lookahead is None else lookahead
    assert res.rounds == math.ceil((sch.num_steps - 1) / L) == len(counted.sizes)
    assert res.info["mean_accepted_length"] == pytest.approx((sch.num_steps - 1) / res.rounds)
    assert res.info["draft_rounds"] > 0
    # adaptive windows accept everything too: 16, then 3 x 16 = 48, then the remaining 35 (capped at L)
    adaptive = make_sampler("speculative", lookahead=lookahead, draft="independent", draft_denoiser=den,
                            adaptive_window=True).sample(den, sch, x_T, noise=noise)
    torch.testing.assert_close(adaptive.sample, ref.sample, rtol=1e-12, atol=1e-12)
    windows, done = [], 0
    while done < sch.num_steps - 1:
        w = min(16 if not windows else 3 * windows[-1], L, sch.num_steps - 1 - done)
        windows.append(w)
        done += w
    assert adaptive.rounds == len(windows) and adaptive.rows_per_call == [6 * (w + 1) for w in windows]


def test_target_draft_with_conditioning():
    sch = schedule(20)
    den = mixture(3, 20)
    g = torch.Generator().manual_seed(3)
    x_T = torch.randn(5, 3, generator=g, dtype=torch.float64)
    cond = torch.randn(5, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(sch.num_steps, 5, 3, generator=g, dtype=torch.float64)
    ref = make_sampler("ddpm").sample(den, sch, x_T, cond=cond, noise=noise)
    res = make_sampler("speculative", lookahead=3, draft="independent", draft_denoiser=den).sample(
        den, sch, x_T, cond=cond, noise=noise)
    torch.testing.assert_close(res.sample, ref.sample, rtol=1e-12, atol=1e-12)
    # frozen drafts with conditioning: a mixed-up condition would land in the wrong modes
    out = make_sampler("autospeculative").sample(den, sch, x_T, cond=cond, generator=g).sample
    dist = (out.unsqueeze(1) - (den.means.unsqueeze(0) + cond.unsqueeze(1))).norm(dim=-1).min(1).values
    assert bool((dist < 0.6).all()), dist


@pytest.mark.parametrize("name,options", [
    ("speculative", {"lookahead": 4}), ("speculative", {"adaptive_window": False}),
    ("autospeculative", {"spec_len": 16}), ("speculative_picard", {"window": 8}),
    ("speculative_picard", {"adaptive_window": False}),
    ("speculative", {"prior_precision": 10.0, "adaptive_window": False}),
    ("speculative_picard", {"prior_precision": 10.0, "adaptive_window": False}),
])
def test_rounds_counted_and_finished_rows_leave(name, options):
    sch = schedule(100)
    den = Counting(mixture(16, 100))
    g = torch.Generator().manual_seed(11)
    x_T = torch.randn(32, 16, generator=g, dtype=torch.float64)
    res = make_sampler(name, **options).sample(den, sch, x_T, generator=g)
    W = res.info["window"]
    assert res.rounds == len(den.sizes) < sch.num_steps
    assert max(res.rounds_per_row) == res.rounds and min(res.rounds_per_row) >= 1
    assert all(s % (W + 1) == 0 for s in den.sizes)  # fixed window shapes: W + 1 states per row
    assert den.sizes == sorted(den.sizes, reverse=True) and den.sizes[0] == 32 * (W + 1)
    if min(res.rounds_per_row) < res.rounds:
        assert den.sizes[-1] < den.sizes[0]  # finished rows stopped costing evaluations
    assert res.evaluations == sum(den.sizes) and res.nfe == math.ceil(sum(den.sizes) / 32)
    assert 0 < res.info["mean_accepted_length"] <= W
    assert torch.isfinite(res.sample).all() and res.sample.shape == x_T.shape


def test_adaptive_window_rule():
    rule = AdaptiveWindow(2, initial=16, growth=3, minimum=4, maximum=40)
    assert rule.windows == [16, 16]
    rule.record(0, 2, 16)  # rejected after 2 accepted: 3 x (2 + 1)
    rule.record(1, 16, 16)  # all 16 accepted: 3 x 16, capped at 40
    assert rule.windows == [9, 40]
    rule.record(0, 0, 9)  # rejected at once: 3, raised to the minimum
    assert rule.windows[0] == 4


@pytest.mark.parametrize("probe_every", [None, 2, 5])
def test_adaptive_windows_evaluate_their_window_and_probes_only(probe_every):
    """The first round evaluates the 16-transition window's 17 states, and with probes every
    ``probe_every``-th state past it up to the last stochastic step (99) and that one; later rounds
    evaluate fewer rows than a full window, and the whole run far fewer than fixed full windows."""
    sch = schedule(100)
    den = Counting(mixture(16, 100))
    x_T = torch.randn(1, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    res = make_sampler("speculative_picard", probe_every=probe_every).sample(
        den, sch, x_T, generator=torch.Generator().manual_seed(3))
    probes = 0 if probe_every is None else math.ceil((99 - 16) / probe_every)
    assert den.sizes[0] == 17 + probes and res.rows_per_call == den.sizes
    assert res.evaluations == sum(den.sizes) and max(den.sizes) <= 100
    fixed = make_sampler("speculative_picard", adaptive_window=False).sample(
        mixture(16, 100), sch, x_T, generator=torch.Generator().manual_seed(3))
    assert res.nfe < fixed.nfe / 2, (res.nfe, fixed.nfe)


def test_float32_input_and_dtype():
    sch = schedule(50)
    den = mixture(8, 50)
    x_T = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    for name in ["speculative", "autospeculative", "speculative_picard"]:
        res = make_sampler(name).sample(den, sch, x_T, generator=torch.Generator().manual_seed(1))
        assert res.sample.dtype == torch.float32 and torch.isfinite(res.sample).all()


def test_uniforms_come_from_generator():
    sch = schedule(50)
    den = mixture(8, 50)
    x_T = torch.randn(4, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = torch.randn(50, 4, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    runs = [make_sampler("speculative").sample(den, sch, x_T, noise=noise, generator=torch.Generator().manual_seed(s))
            for s in (5, 5)]
    assert torch.equal(runs[0].sample, runs[1].sample) and runs[0].rounds == runs[1].rounds


def test_exact_registered_and_options():
    names = available_samplers()
    for name in ["speculative", "autospeculative", "speculative_picard"]:
        assert name in names
        assert make_sampler(name).exact is True
    den = mixture(2, 20)
    for bad in [0, -1, 1.5, True]:
        with pytest.raises(ValueError, match="lookahead"):
            make_sampler("speculative", lookahead=bad)
        with pytest.raises(ValueError, match="spec_len"):
            make_sampler("autospeculative", spec_len=bad)
        with pytest.raises(ValueError, match="window"):
            make_sampler("speculative_picard", window=bad)
    for bad in [0, -1.0, float("inf"), float("nan"), True, "10"]:
        for name in ["speculative", "speculative_picard"]:
            with pytest.raises(ValueError, match="prior_precision"):
                make_sampler(name, prior_precision=bad)
    with pytest.raises(ValueError, match="prior_precision"):
        make_sampler("speculative", draft="independent", draft_denoiser=den, prior_precision=1.0)
    with pytest.raises(ValueError, match="draft"):
        make_sampler("speculative", draft="eagle")
    with pytest.raises(ValueError, match="draft_denoiser"):
        make_sampler("speculative", draft="independent")
    with pytest.raises(ValueError):
        make_sampler("autospeculative", draft="independent")  # not an option of ASD
    assert isinstance(make_sampler("speculative", draft="independent", draft_denoiser=den), SpeculativeSampler)
    assert isinstance(make_sampler("speculative_picard"), SpeculativePicardSampler)


def test_schedule_without_stochastic_step_is_rejected():
    sch = NoiseSchedule.from_diffusers(
        DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2"), timesteps=[0])
    assert not bool(sch.ddpm_chain().stochastic.any())
    den = GaussianMixtureDenoiser.random(sch, 2)
    for name in ["speculative", "autospeculative", "speculative_picard"]:
        with pytest.raises(ValueError, match="stochastic"):
            make_sampler(name).sample(den, sch, torch.zeros(2, 2, dtype=torch.float64))


def test_short_schedules_and_window_longer_than_chain():
    for steps in [2, 3, 5]:
        sch = schedule(steps)
        den = mixture(2, steps)
        x_T = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        for name, opt in [("speculative", {"lookahead": 50}), ("speculative_picard", {"window": 1})]:
            res = make_sampler(name, **opt).sample(den, sch, x_T, generator=torch.Generator().manual_seed(0))
            assert torch.isfinite(res.sample).all() and res.rounds <= steps


def test_stochastic_localization_identity():
    """In y = sqrt(a)/(1-a) x at t = a/(1-a), the DDPM fixed_small step is y' = y + eta x0 + sqrt(eta) z:
    the identity that makes ASD's draft the frozen-x0 draft."""
    sch = schedule(100)
    chain = sch.ddpm_chain()
    a, a_prev = sch.alpha_bar_pairs()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(99, 16, generator=g, dtype=torch.float64)
    x0 = torch.randn(99, 16, generator=g, dtype=torch.float64).clamp(-1, 1)
    z = torch.randn(99, 16, generator=g, dtype=torch.float64)
    k = torch.arange(99)  # every stochastic step (the last one lands on a = 1: t = inf)
    c0, c1, sig = chain.c_x0[k, None], chain.c_x[k, None], chain.sigma[k, None]
    x_next = c0 * x0 + c1 * x + sig * z
    scale = lambda al: al.sqrt() / (1 - al)  # noqa: E731
    t, t_next = a[k] / (1 - a[k]), a_prev[k] / (1 - a_prev[k])
    eta = (t_next - t)[:, None]
    y, y_next = scale(a[k])[:, None] * x, scale(a_prev[k])[:, None] * x_next
    rel = (y_next - (y + eta * x0 + eta.sqrt() * z)).abs() / (1 + y_next.abs())
    assert rel.max() < 1e-12, rel.max()
    # and the frozen draft is the step with x0_hat held: the draft coefficients are the chain's own
    d0, d1 = chain.draft_coefficients()
    torch.testing.assert_close(d0, chain.c_x0, rtol=0, atol=0)
    torch.testing.assert_close(d1, chain.c_x, rtol=0, atol=0)


def test_autospeculative_is_frozen_speculative():
    sch = schedule(50)
    den = mixture(8, 50)
    x_T = torch.randn(6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = make_sampler("autospeculative", spec_len=5).sample(den, sch, x_T, generator=torch.Generator().manual_seed(9))
    b = make_sampler("speculative", lookahead=5).sample(den, sch, x_T, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.sample, b.sample) and a.rounds == b.rounds


def test_schedule_whose_last_step_is_stochastic():
    """final_alpha_cumprod < 1: no deterministic tail; the window may end at x_0 itself."""
    base = schedule(10)
    sch = NoiseSchedule(alphas_cumprod=base.alphas_cumprod, timesteps=base.timesteps, clip_sample=True,
                        final_alpha_cumprod=1 - (1 - float(base.alphas_cumprod[0])) / 2)
    assert bool(sch.ddpm_chain().stochastic.all())
    den = GaussianMixtureDenoiser.random(sch, 3, seed=1)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(4, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(10, 4, 3, generator=g, dtype=torch.float64)
    ref = make_sampler("ddpm").sample(den, sch, x_T, noise=noise)
    for L in [3, None]:
        res = make_sampler("speculative", lookahead=L, draft="independent", draft_denoiser=den).sample(
            den, sch, x_T, noise=noise)
        torch.testing.assert_close(res.sample, ref.sample, rtol=1e-12, atol=1e-12)
        assert res.rounds == (4 if L == 3 else 1)
    res = make_sampler("speculative_picard").sample(den, sch, x_T, noise=noise, generator=g)
    assert torch.isfinite(res.sample).all()


def test_gaussian_local_draft_is_exact_for_gaussian_data():
    """With one Gaussian component of precision tau and no clipping, the Gaussian-local draft is the
    target itself after the first round (the source then pins mu): 2 rounds and no rejection."""
    sch = schedule(100, clip=False)
    std = 1.0  # unit variance (std == variance: independent of how the reference reads ``stds``)
    den = GaussianMixtureDenoiser(torch.full((1, 8), 0.2, dtype=torch.float64), std, None, sch)
    x_T = torch.randn(3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name in ["speculative", "speculative_picard"]:
        res = make_sampler(name, prior_precision=1 / std**2, adaptive_window=False).sample(
            den, sch, x_T, generator=torch.Generator().manual_seed(1))
        assert res.rounds == 2 and torch.isfinite(res.sample).all(), (name, res.rounds)
        frozen = make_sampler(name, prior_precision=None, adaptive_window=False).sample(
            den, sch, x_T, generator=torch.Generator().manual_seed(1))
        assert frozen.rounds > res.rounds
