"""The sequential samplers ``ddpm`` and ``ddim`` against diffusers' own sampling loops.

``ddpm`` must reproduce ``for t in scheduler.timesteps: x = scheduler.step(model(x, t), t, x,
generator=g).prev_sample`` on the same noise. diffusers draws ``randn_tensor(shape, generator=g,
dtype=x.dtype)`` inside ``step`` only when ``t > 0``; the same draws are replayed from an identically
seeded generator in step order and handed to the sampler as ``noise`` ([K, *x_T.shape]).

The model is the exact float64 Gaussian-mixture denoiser (any prediction type), so both loops see
the same smooth, non-trivial model.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from policy_sampler import NoiseSchedule, make_sampler
from policy_sampler.reference import GaussianMixtureDenoiser
from policy_sampler.schedule import GaussianChain

CUSTOM = [99, 90, 70, 40, 20, 5, 0]
DIM = 3
BATCH = 4

# Tolerance for "reproduces diffusers to float32 rounding". diffusers computes each step in the
# sample's dtype from float32 alphas_cumprod (so even for float64 samples its coefficients carry
# float32 rounding, and beta_t = 1 - a_t/a_prev formed in float32 loses digits to cancellation near
# t = 0 and for 100-of-100 steps); the schedule forms the same coefficients in float64 from the same
# float32 alphas and applies them in the sample's dtype. Samples here are O(1) (mixture means within
# +-0.6, std 0.1). Measured worst |ours - diffusers| over the grids below: 2.6e-6 (ddpm, float32),
# 6.8e-7 (ddpm, float64), 1.2e-6 (ddim, float32), 4.2e-7 (ddim, float64), i.e. a few float32 ulps
# after up to 100 steps. 5e-5 absolute + 5e-5 relative leaves a ~20x margin, and is far below what a
# real discrepancy does (a wrong previous timestep or a misplaced noise draw moves the output > 1e-2).
ATOL = RTOL = 5e-5


def _make_scheduler(cls, case, prediction_type="epsilon", clip=False, **extra):
    """(scheduler ready to loop, its NoiseSchedule). ``case`` is (spacing, steps) or ('custom', None)."""
    spacing, steps = case
    config = dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type,
                  clip_sample=clip, clip_sample_range=0.5, **extra)
    if spacing != "custom":
        config["timestep_spacing"] = spacing
    scheduler = cls(**config)
    if spacing == "custom":
        scheduler.set_timesteps(timesteps=CUSTOM)
        schedule = NoiseSchedule.from_diffusers(scheduler, timesteps=CUSTOM)
    else:
        scheduler.set_timesteps(steps)
        schedule = NoiseSchedule.from_diffusers(scheduler, num_inference_steps=steps)
    assert schedule.timesteps.tolist() == scheduler.timesteps.tolist()
    return scheduler, schedule


def _x_T(dtype, batch=BATCH, seed=123):
    return torch.randn(batch, DIM, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _diffusers_ddpm(scheduler, model, x_T, cond=None, seed=7):
    g = torch.Generator().manual_seed(seed)
    x = x_T.clone()
    for t in scheduler.timesteps:
        out = model(x, t.expand(x.shape[0]), cond)
        x = scheduler.step(out, t, x, generator=g).prev_sample
    return x


def _replayed_noise(scheduler, x_T, seed=7):
    """diffusers' per-step draws in step order; the entry of a step with t == 0 is never drawn."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.zeros(len(scheduler.timesteps), *x_T.shape, dtype=x_T.dtype)
    for k, t in enumerate(scheduler.timesteps):
        if t > 0:
            noise[k] = randn_tensor(x_T.shape, generator=g, dtype=x_T.dtype)
    return noise


PREDICTIONS = ["epsilon", "sample", "v_prediction"]
F32, F64 = torch.float32, torch.float64


def _ids(value):
    if isinstance(value, tuple):
        return f"{value[0]}{value[1] or ''}"
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    return None


# every prediction type x clip on/off x (spacing, dtype); the 100-of-100 case (DiffusionPolicy's
# setting, the slowest) in float32 only, to keep the file fast
DDPM_GRID = [
    (case, dtype, prediction_type, clip)
    for case, dtypes in [(("leading", 10), (F32, F64)), (("trailing", 7), (F32, F64)), (("linspace", 7), (F32, F64)),
                         (("custom", None), (F32, F64)), (("trailing", 100), (F32,))]
    for dtype in dtypes
    for prediction_type in PREDICTIONS
    for clip in (False, True)
]


@pytest.mark.parametrize("case,dtype,prediction_type,clip", DDPM_GRID, ids=_ids)
def test_ddpm_reproduces_diffusers_loop(case, dtype, prediction_type, clip):
    scheduler, schedule = _make_scheduler(DDPMScheduler, case, prediction_type, clip, variance_type="fixed_small")
    model = GaussianMixtureDenoiser.random(schedule, DIM, seed=1)
    x_T = _x_T(dtype)
    expected = _diffusers_ddpm(scheduler, model, x_T)
    noise = _replayed_noise(scheduler, x_T)
    result = make_sampler("ddpm").sample(model, schedule, x_T, noise=noise)
    assert result.sample.dtype == dtype
    torch.testing.assert_close(result.sample, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("case", [("leading", 10), ("custom", None)], ids=_ids)
def test_ddpm_match_is_not_vacuous(case):
    """Other draws, or the same draws shifted by one step, give another sample."""
    scheduler, schedule = _make_scheduler(DDPMScheduler, case, "epsilon", True)
    model = GaussianMixtureDenoiser.random(schedule, DIM, seed=1)
    x_T = _x_T(F32)
    expected = _diffusers_ddpm(scheduler, model, x_T)
    noise = _replayed_noise(scheduler, x_T)
    for bad in (torch.randn_like(noise), noise.roll(1, dims=0)):
        other = make_sampler("ddpm").sample(model, schedule, x_T, noise=bad)
        assert (other.sample - expected).abs().max() > 1e-2


def test_ddpm_float64_matches_diffusers_in_float64_tightly():
    """With diffusers' alphas upcast to float64 too, the only difference is the order of operations."""
    scheduler, schedule = _make_scheduler(DDPMScheduler, ("linspace", 7), "v_prediction", True)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    model = GaussianMixtureDenoiser.random(schedule, DIM, seed=2)
    x_T = _x_T(torch.float64)
    expected = _diffusers_ddpm(scheduler, model, x_T)
    result = make_sampler("ddpm").sample(model, schedule, x_T, noise=_replayed_noise(scheduler, x_T))
    torch.testing.assert_close(result.sample, expected, atol=1e-9, rtol=1e-9)


def test_ddpm_noise_entry_of_the_t0_step_is_unused():
    scheduler, schedule = _make_scheduler(DDPMScheduler, ("linspace", 7))
    assert int(schedule.timesteps[-1]) == 0
    model = GaussianMixtureDenoiser.random(schedule, DIM, seed=3)
    x_T = _x_T(torch.float64)
    noise = _replayed_noise(scheduler, x_T)
    a = make_sampler("ddpm").sample(model, schedule, x_T, noise=noise).sample
    noise[-1] = 100.0
    b = make_sampler("ddpm").sample(model, schedule, x_T, noise=noise).sample
    assert torch.equal(a, b)
    noise[-2] += 1.0  # every earlier entry is used
    c = make_sampler("ddpm").sample(model, schedule, x_T, noise=noise).sample
    assert not torch.allclose(a, c)


class _Conditional:
    """The mixture with cond shifting every component mean by cond[i]; records the cond it sees."""

    def __init__(self, model):
        self.model = model
        self.seen = []

    def __call__(self, x, t, cond):
        assert cond is not None and cond.shape[0] == x.shape[0]
        self.seen.append(cond.clone())
        return self.model(x, t, cond)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_conditional_batch_keeps_rows_with_their_conditioning(name):
    scheduler, schedule = _make_scheduler(DDPMScheduler if name == "ddpm" else DDIMScheduler, ("leading", 10),
                                          "epsilon", False)
    base = GaussianMixtureDenoiser.random(schedule, DIM, n_components=2, std=0.05, seed=4)
    cond = torch.tensor([[3.0, 0.0, 0.0], [0.0, -3.0, 0.0], [0.0, 0.0, 3.0], [-3.0, 3.0, 0.0]], dtype=torch.float64)
    x_T = _x_T(torch.float64)
    model = _Conditional(base)
    if name == "ddpm":
        expected = _diffusers_ddpm(scheduler, base, x_T, cond)
        noise = _replayed_noise(scheduler, x_T)
    else:
        x = x_T.clone()
        for t in scheduler.timesteps:
            x = scheduler.step(base(x, t.expand(BATCH), cond), t, x, eta=0.0).prev_sample
        expected = x
        noise = torch.randn(schedule.num_steps, *x_T.shape, dtype=torch.float64)
    result = make_sampler(name).sample(model, schedule, x_T, cond=cond, noise=noise)
    torch.testing.assert_close(result.sample, expected, atol=ATOL, rtol=RTOL)
    # every call saw the batch's conditioning, in batch order
    assert len(model.seen) == schedule.num_steps
    for seen in model.seen:
        assert torch.equal(seen, cond)
    # each row lands near a mode of its own condition (the shift is far larger than the spread)
    modes = base.means.unsqueeze(0) + cond.unsqueeze(1)  # [B, C, D]
    dist = (result.sample.unsqueeze(1) - modes).norm(dim=-1).min(1).values
    assert bool((dist < 0.5).all()), dist
    # a row run alone gives the same answer as in the batch
    for i in range(BATCH):
        alone = make_sampler(name).sample(base, schedule, x_T[i : i + 1], cond=cond[i : i + 1], noise=noise[:, i : i + 1])
        torch.testing.assert_close(alone.sample[0], result.sample[i], atol=1e-10, rtol=1e-10)
    # permuting rows, their conditions and their noise permutes the output
    perm = torch.tensor([2, 0, 3, 1])
    permuted = make_sampler(name).sample(base, schedule, x_T[perm], cond=cond[perm], noise=noise[:, perm])
    torch.testing.assert_close(permuted.sample, result.sample[perm], atol=1e-10, rtol=1e-10)


# --------------------------------------------------------------------------------------------------
# DDIM


def _diffusers_ddim(scheduler, model, x_T, eta, noise):
    x = x_T.clone()
    for k, t in enumerate(scheduler.timesteps):
        out = model(x, t.expand(x.shape[0]), None)
        x = scheduler.step(out, t, x, eta=eta, variance_noise=noise[k] if eta > 0 else None).prev_sample
    return x


# (case, set_alpha_to_one, dtype), each crossed with eta x prediction type x clip
DDIM_GRID = [
    (case, set_alpha_to_one, dtype, eta, prediction_type, clip)
    for case, set_alpha_to_one, dtype in [(("leading", 10), True, F32), (("leading", 7), False, F64),
                                          (("trailing", 10), False, F32), (("trailing", 100), True, F32),
                                          (("trailing", 100), False, F64)]
    for eta in (0.0, 0.5)
    for prediction_type in PREDICTIONS
    for clip in (False, True)
    if case[1] != 100 or not clip or prediction_type == "epsilon"
]


@pytest.mark.parametrize("case,set_alpha_to_one,dtype,eta,prediction_type,clip", DDIM_GRID, ids=_ids)
def test_ddim_reproduces_diffusers_where_its_stride_is_right(case, set_alpha_to_one, dtype, eta, prediction_type, clip):
    """Leading spacing, and trailing when K divides num_train_timesteps: t - T // K is the real
    previous timestep, so diffusers' DDIM loop is the reference."""
    scheduler, schedule = _make_scheduler(DDIMScheduler, case, prediction_type, clip,
                                          set_alpha_to_one=set_alpha_to_one)
    stride = 100 // case[1]
    ts = schedule.timesteps.tolist()
    assert all(a - b == stride for a, b in zip(ts, ts[1:])) and ts[-1] - stride < 0
    model = GaussianMixtureDenoiser.random(schedule, DIM, seed=5)
    x_T = _x_T(dtype)
    noise = torch.randn(schedule.num_steps, *x_T.shape, generator=torch.Generator().manual_seed(9), dtype=dtype)
    expected = _diffusers_ddim(scheduler, model, x_T, eta, noise)
    result = make_sampler("ddim", eta=eta).sample(model, schedule, x_T, noise=noise)
    assert result.sample.dtype == dtype
    torch.testing.assert_close(result.sample, expected, atol=ATOL, rtol=RTOL)
    if eta > 0:  # the noise is really used
        other = make_sampler("ddim", eta=eta).sample(model, schedule, x_T, noise=-noise)
        assert (other.sample - expected).abs().max() > 1e-2


def _eq12_step(alphas_cumprod, final_alpha, model_output, x, t, prev_t, prediction_type, eta, z):
    """DDIM, Song et al. 2021, eq. 12, by hand in float64 (no clipping)."""
    a = alphas_cumprod[t].double()
    a_prev = alphas_cumprod[prev_t].double() if prev_t >= 0 else torch.tensor(final_alpha, dtype=torch.float64)
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    elif prediction_type == "sample":
        x0 = model_output
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
    else:
        x0 = a.sqrt() * x - (1 - a).sqrt() * model_output
        eps = a.sqrt() * model_output + (1 - a).sqrt() * x
    sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).sqrt() * eps + sigma * z


@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_uneven_spacing_uses_the_real_previous_timestep(eta, prediction_type):
    """linspace with 7 of 100 steps: 99, 82, 66, 50, 33, 16, 0. diffusers' DDIMScheduler.step takes
    prev = t - 100 // 7 = t - 14 (85 after 99: wrong); ours follows eq. 12 with the real one (82)."""
    scheduler, schedule = _make_scheduler(DDIMScheduler, ("linspace", 7), prediction_type, False)
    ts = schedule.timesteps.tolist()
    assert ts == [99, 82, 66, 50, 33, 16, 0]
    ac = scheduler.alphas_cumprod
    final = float(scheduler.final_alpha_cumprod)
    model = GaussianMixtureDenoiser.random(schedule, DIM, seed=6)
    x_T = _x_T(torch.float64)
    noise = torch.randn(len(ts), *x_T.shape, generator=torch.Generator().manual_seed(10), dtype=torch.float64)

    # diffusers' single step from t = 99 is eq. 12 with the wrong previous timestep 85
    s64 = DDIMScheduler.from_config(scheduler.config)
    s64.set_timesteps(7)
    s64.alphas_cumprod = s64.alphas_cumprod.to(torch.float64)
    s64.final_alpha_cumprod = torch.tensor(final, dtype=torch.float64)
    out = model(x_T, torch.full((BATCH,), 99), None)
    theirs = s64.step(out, 99, x_T, eta=eta, variance_noise=noise[0] if eta > 0 else None).prev_sample
    wrong = _eq12_step(ac, final, out, x_T, 99, 85, prediction_type, eta, noise[0])
    real = _eq12_step(ac, final, out, x_T, 99, 82, prediction_type, eta, noise[0])
    torch.testing.assert_close(theirs, wrong, atol=1e-10, rtol=1e-10)
    assert (theirs - real).abs().max() > 1e-3

    # ours is the eq. 12 loop over the real previous timesteps
    x = x_T.clone()
    for k, t in enumerate(ts):
        prev_t = ts[k + 1] if k + 1 < len(ts) else -1
        x = _eq12_step(ac, final, model(x, torch.full((BATCH,), t), None), x, t, prev_t, prediction_type, eta, noise[k])
    result = make_sampler("ddim", eta=eta).sample(model, schedule, x_T, noise=noise)
    torch.testing.assert_close(result.sample, x, atol=1e-9, rtol=1e-9)
    # and differs from diffusers' loop
    diffusers_loop = _diffusers_ddim(scheduler, model, x_T, eta, noise)
    assert (result.sample - diffusers_loop).abs().max() > 1e-3

    # the chain's own first-step coefficients are those of eq. 12 at (99, 82)
    chain = schedule.ddim_chain(eta)
    a, a_prev = schedule.alpha_bar_pairs()
    assert a_prev[0].item() == pytest.approx(float(ac[82]), rel=1e-12)
    assert chain.c_x0[0].item() == pytest.approx(float(ac[82]) ** 0.5, rel=1e-12)


def test_ddim_trailing_not_divisible_also_uses_real_previous_timestep():
    scheduler, schedule = _make_scheduler(DDIMScheduler, ("trailing", 7), "epsilon", False)
    ts = schedule.timesteps.tolist()
    assert len({a - b for a, b in zip(ts, ts[1:])}) > 1  # uneven
    ac, final = scheduler.alphas_cumprod, float(scheduler.final_alpha_cumprod)
    model = GaussianMixtureDenoiser.random(schedule, DIM, seed=7)
    x_T = _x_T(torch.float64)
    noise = torch.randn(len(ts), *x_T.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    x = x_T.clone()
    for k, t in enumerate(ts):
        prev_t = ts[k + 1] if k + 1 < len(ts) else -1
        x = _eq12_step(ac, final, model(x, torch.full((BATCH,), t), None), x, t, prev_t, "epsilon", 0.5, noise[k])
    result = make_sampler("ddim", eta=0.5).sample(model, schedule, x_T, noise=noise)
    torch.testing.assert_close(result.sample, x, atol=1e-9, rtol=1e-9)


def test_ddim_eta_one_has_the_ddpm_variance():
    _, schedule = _make_scheduler(DDIMScheduler, ("linspace", 7))
    ddim, ddpm = schedule.ddim_chain(1.0), schedule.ddpm_chain()
    torch.testing.assert_close(ddim.sigma, ddpm.sigma, rtol=1e-12, atol=0)
    assert bool((schedule.ddim_chain(0.0).sigma == 0).all())


# --------------------------------------------------------------------------------------------------
# Counters, flags, dtype and device


class _Counting:
    def __init__(self, model):
        self.model, self.calls, self.rows, self.dtypes = model, 0, 0, []

    def __call__(self, x, t, cond):
        self.calls += 1
        self.rows += x.shape[0]
        self.dtypes.append(x.dtype)
        assert t.dtype == torch.int64 and t.shape == (x.shape[0],)
        return self.model(x, t, cond)


@pytest.mark.parametrize("name,options", [("ddpm", {}), ("ddim", {"eta": 0.0}), ("ddim", {"eta": 0.5})])
@pytest.mark.parametrize("case", [("leading", 10), ("linspace", 7), ("custom", None)], ids=lambda c: c[0])
def test_rounds_nfe_and_exact(name, options, case):
    _, schedule = _make_scheduler(DDPMScheduler, case)
    model = _Counting(GaussianMixtureDenoiser.random(schedule, DIM, seed=8))
    sampler = make_sampler(name, **options)
    result = sampler.sample(model, schedule, _x_T(torch.float32), generator=torch.Generator().manual_seed(0))
    K = schedule.num_steps
    assert result.rounds == result.nfe == K == model.calls
    assert result.evaluations == K * BATCH == model.rows
    assert result.rounds_per_row == [K] * BATCH
    assert sampler.exact is (name == "ddpm")
    assert type(sampler).exact is (name == "ddpm")


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 3), (2, 4, 3)])
def test_output_shape_dtype_device(name, dtype, shape):
    _, schedule = _make_scheduler(DDPMScheduler, ("leading", 10))
    event = shape[1:]
    means = torch.linspace(-0.5, 0.5, 2 * int(torch.tensor(event).prod())).reshape(2, *event)
    model = GaussianMixtureDenoiser(means, 0.1, None, schedule)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    result = make_sampler(name).sample(model, schedule, x_T, generator=torch.Generator().manual_seed(1))
    assert result.sample.shape == x_T.shape
    assert result.sample.dtype == x_T.dtype
    assert result.sample.device == x_T.device
    assert bool(torch.isfinite(result.sample).all())


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_float16_keeps_float16_output_with_a_float32_state(name, monkeypatch):
    """The denoiser gets the model's dtype (float16); the chain state it is applied to is float32."""
    scheduler, schedule = _make_scheduler(DDPMScheduler, ("trailing", 100))
    base = GaussianMixtureDenoiser.random(schedule, DIM, seed=9)
    model = _Counting(base)
    states = []
    original_mean = GaussianChain.mean

    def spy(self, model_output, x, k):
        states.append((x.dtype, model_output.dtype))
        return original_mean(self, model_output, x, k)

    monkeypatch.setattr(GaussianChain, "mean", spy)
    x_T = _x_T(torch.float32).to(torch.float16)
    noise = torch.randn(schedule.num_steps, *x_T.shape, generator=torch.Generator().manual_seed(3)).to(torch.float16)
    options = {"eta": 0.5} if name == "ddim" else {}
    result = make_sampler(name, **options).sample(model, schedule, x_T, noise=noise)
    assert result.sample.dtype == torch.float16
    assert set(model.dtypes) == {torch.float16}
    assert states and set(states) == {(torch.float32, torch.float32)}

    # the same run by hand with a float32 state and float16 model calls
    monkeypatch.setattr(GaussianChain, "mean", original_mean)
    chain = schedule.ddpm_chain() if name == "ddpm" else schedule.ddim_chain(0.5)
    x, n32 = x_T.float(), noise.float()
    for k, t in enumerate(schedule.timesteps):
        out = base(x.half(), t.expand(BATCH), None).float()
        mean, _ = chain.mean(out, x, k)
        x = mean + chain.sigma[k].float() * n32[k]
    torch.testing.assert_close(result.sample, x.half(), atol=0, rtol=0)
    # a float16 state would drift: the same loop kept in float16
    xh = x_T.clone()
    for k, t in enumerate(schedule.timesteps):
        tab = chain.tensors(xh.device, torch.float16)
        mean, _ = chain.mean(base(xh, t.expand(BATCH), None), xh, k)
        xh = mean + tab["sigma"][k] * noise[k]
    assert not torch.equal(xh, result.sample)
