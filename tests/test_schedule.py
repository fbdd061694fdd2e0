"""NoiseSchedule.from_diffusers and the DDPM GaussianChain against diffusers' own schedulers.

The reference is diffusers itself: timesteps after ``set_timesteps`` for every spacing (divisible and
not), custom timesteps, ``steps_offset`` and DDIM's ``set_alpha_to_one``; and one
``DDPMScheduler.step`` at a time, whose mean and variance are separated by replaying its noise draw.
"""

from __future__ import annotations

import copy
import math
import pickle

import diffusers.schedulers.scheduling_ddpm as ddpm_module
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

from policy_sampler import NoiseSchedule

SPACINGS = ("linspace", "leading", "trailing")
CUSTOM = [99, 90, 70, 40, 20, 5, 0]  # uneven on purpose: no constant stride


def _scheduler(cls, train=100, **config):
    config.setdefault("beta_schedule", "squaredcos_cap_v2")
    return cls(num_train_timesteps=train, **config)


# --------------------------------------------------------------------------------------------------
# Timesteps


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("train,steps", [(100, 10), (100, 7), (100, 100), (1000, 50), (1000, 7)])
def test_timesteps_equal_set_timesteps(cls, spacing, train, steps):
    """Every spacing, step counts that divide num_train_timesteps and ones that do not."""
    scheduler = _scheduler(cls, train, timestep_spacing=spacing)
    schedule = NoiseSchedule.from_diffusers(scheduler, num_inference_steps=steps)
    reference = _scheduler(cls, train, timestep_spacing=spacing)
    reference.set_timesteps(steps)
    assert schedule.timesteps.dtype == torch.int64
    assert schedule.timesteps.tolist() == reference.timesteps.tolist()
    assert schedule.num_steps == steps
    assert schedule.num_train_timesteps == train
    torch.testing.assert_close(schedule.alphas_cumprod, reference.alphas_cumprod.to(torch.float64), rtol=0, atol=0)


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_timesteps_read_from_the_schedulers_own_state(cls, spacing):
    """With no argument, a scheduler on which set_timesteps was called gives its own timesteps."""
    scheduler = _scheduler(cls, timestep_spacing=spacing)
    scheduler.set_timesteps(7)
    schedule = NoiseSchedule.from_diffusers(scheduler)
    assert schedule.timesteps.tolist() == scheduler.timesteps.tolist()


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
@pytest.mark.parametrize("steps_offset", [0, 1])
def test_unset_scheduler_gives_every_training_timestep(cls, steps_offset):
    """Docstring: with nothing set, 'every training timestep' (what the unset scheduler holds: T-1 .. 0).
    With leading spacing and steps_offset=1, set_timesteps(T) would give T .. 1, one past the table."""
    scheduler = _scheduler(cls, steps_offset=steps_offset)
    schedule = NoiseSchedule.from_diffusers(scheduler)
    assert schedule.timesteps.tolist() == list(range(99, -1, -1))


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
@pytest.mark.parametrize("steps", [10, 7])
def test_steps_offset(cls, steps):
    scheduler = _scheduler(cls, timestep_spacing="leading", steps_offset=1)
    schedule = NoiseSchedule.from_diffusers(scheduler, num_inference_steps=steps)
    reference = copy.deepcopy(scheduler)
    reference.set_timesteps(steps)
    assert schedule.timesteps.tolist() == reference.timesteps.tolist()
    assert schedule.timesteps[-1].item() == 1  # the offset really moved the grid


def test_custom_timesteps_argument():
    for cls in (DDPMScheduler, DDIMScheduler):
        schedule = NoiseSchedule.from_diffusers(_scheduler(cls), timesteps=CUSTOM)
        assert schedule.timesteps.tolist() == CUSTOM
        assert schedule.timesteps.dtype == torch.int64
    # a tensor works as well as a list
    schedule = NoiseSchedule.from_diffusers(_scheduler(DDPMScheduler), timesteps=torch.tensor(CUSTOM))
    assert schedule.timesteps.tolist() == CUSTOM


def test_custom_timesteps_set_on_the_scheduler():
    """DDPMScheduler.set_timesteps(timesteps=[...]) on a fresh scheduler: diffusers leaves
    num_inference_steps None and sets custom_timesteps; the schedule must follow scheduler.timesteps."""
    scheduler = _scheduler(DDPMScheduler)
    scheduler.set_timesteps(timesteps=CUSTOM)
    assert scheduler.timesteps.tolist() == CUSTOM
    schedule = NoiseSchedule.from_diffusers(scheduler)
    assert schedule.timesteps.tolist() == CUSTOM, (
        "from_diffusers ignored the custom timesteps set on the scheduler"
    )


def test_custom_timesteps_after_an_earlier_set_timesteps():
    scheduler = _scheduler(DDPMScheduler)
    scheduler.set_timesteps(10)
    scheduler.set_timesteps(timesteps=CUSTOM)
    assert NoiseSchedule.from_diffusers(scheduler).timesteps.tolist() == CUSTOM


@pytest.mark.parametrize("set_alpha_to_one", [True, False])
def test_ddim_final_alpha(set_alpha_to_one):
    scheduler = _scheduler(DDIMScheduler, set_alpha_to_one=set_alpha_to_one)
    schedule = NoiseSchedule.from_diffusers(scheduler, num_inference_steps=10)
    expected = 1.0 if set_alpha_to_one else float(scheduler.alphas_cumprod[0])
    assert schedule.final_alpha_cumprod == pytest.approx(expected, rel=0, abs=0)
    assert schedule.final_alpha_cumprod == float(scheduler.final_alpha_cumprod)
    _, a_prev = schedule.alpha_bar_pairs()
    assert a_prev[-1].item() == expected
    if not set_alpha_to_one:
        assert expected < 1.0


def test_ddpm_final_alpha_is_one():
    schedule = NoiseSchedule.from_diffusers(_scheduler(DDPMScheduler), num_inference_steps=10)
    assert schedule.final_alpha_cumprod == 1.0


def test_settings_read_from_config():
    scheduler = _scheduler(DDPMScheduler, prediction_type="v_prediction", clip_sample=True, clip_sample_range=0.7)
    schedule = NoiseSchedule.from_diffusers(scheduler, num_inference_steps=10)
    assert schedule.prediction_type == "v_prediction"
    assert schedule.clip_sample is True
    assert schedule.clip_sample_range == pytest.approx(0.7)
    schedule = NoiseSchedule.from_diffusers(_scheduler(DDIMScheduler, clip_sample=False), num_inference_steps=10)
    assert schedule.clip_sample is False


def _state(scheduler):
    return (
        None if scheduler.num_inference_steps is None else int(scheduler.num_inference_steps),
        scheduler.timesteps.clone(),
        scheduler.alphas_cumprod.clone(),
        scheduler.alphas_cumprod.dtype,
        getattr(scheduler, "custom_timesteps", None),
        dict(scheduler.config),
    )


def _assert_same_state(before, after):
    assert before[0] == after[0]
    assert torch.equal(before[1], after[1])
    assert torch.equal(before[2], after[2])
    assert before[3:] == after[3:]


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
def test_from_diffusers_does_not_mutate_the_scheduler(cls):
    for prepare in (lambda s: None, lambda s: s.set_timesteps(10)):
        scheduler = _scheduler(cls, timestep_spacing="trailing")
        prepare(scheduler)
        before = _state(scheduler)
        NoiseSchedule.from_diffusers(scheduler, num_inference_steps=7)
        NoiseSchedule.from_diffusers(scheduler, timesteps=CUSTOM)
        NoiseSchedule.from_diffusers(scheduler)
        _assert_same_state(before, _state(scheduler))
    # nor does reading a scheduler whose custom timesteps were set
    scheduler = _scheduler(DDPMScheduler)
    scheduler.set_timesteps(timesteps=CUSTOM)
    before = _state(scheduler)
    NoiseSchedule.from_diffusers(scheduler, num_inference_steps=10)
    _assert_same_state(before, _state(scheduler))


# --------------------------------------------------------------------------------------------------
# One DDPM step against DDPMScheduler.step


class _ReplayNoise:
    """Stands in for diffusers' randn_tensor inside scheduling_ddpm: returns a given draw."""

    def __init__(self, value):
        self.value = value
        self.calls = 0

    def __call__(self, shape, generator=None, device=None, dtype=None, **kwargs):
        self.calls += 1
        assert tuple(shape) == tuple(self.value.shape)
        return self.value.to(dtype=dtype)


STEP_CASES = [
    # (spacing or custom, steps)
    ("leading", 10),
    ("trailing", 7),
    ("linspace", 7),
    ("custom", None),
    ("leading", 100),
]


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("case", STEP_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_ddpm_chain_step_mean_and_variance(monkeypatch, prediction_type, clip, case):
    spacing, steps = case
    config = dict(prediction_type=prediction_type, clip_sample=clip, clip_sample_range=0.5,
                  variance_type="fixed_small", beta_schedule="linear")
    if spacing != "custom":
        config["timestep_spacing"] = spacing
    scheduler = _scheduler(DDPMScheduler, **config)
    if spacing == "custom":
        scheduler.set_timesteps(timesteps=CUSTOM)
        schedule = NoiseSchedule.from_diffusers(copy.deepcopy(scheduler), timesteps=CUSTOM)
    else:
        scheduler.set_timesteps(steps)
        schedule = NoiseSchedule.from_diffusers(scheduler, num_inference_steps=steps)
    assert schedule.timesteps.tolist() == scheduler.timesteps.tolist()
    # diffusers keeps alphas_cumprod in float32 and forms beta_t = 1 - a_t / a_prev in float32, which
    # for 100-of-100 steps loses ~3 digits to cancellation. The schedule holds the same float32 values
    # as float64; so that this compares arithmetic and not rounding, diffusers gets them as float64 too.
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    chain = schedule.ddpm_chain()
    a, a_prev = schedule.alpha_bar_pairs()

    g = torch.Generator().manual_seed(0)
    shape = (3, 4)
    ks = range(schedule.num_steps) if schedule.num_steps <= 10 else [0, 1, 50, 98, 99]
    for k in ks:
        t = int(schedule.timesteps[k])
        # the chain's previous timestep is diffusers' real one
        prev_t = int(scheduler.previous_timestep(t))
        expected_prev = int(schedule.timesteps[k + 1]) if k + 1 < schedule.num_steps else -1
        assert prev_t == expected_prev
        expected_a_prev = 1.0 if prev_t < 0 else float(scheduler.alphas_cumprod[prev_t])
        assert a_prev[k].item() == pytest.approx(expected_a_prev, rel=1e-12, abs=0)
        assert a[k].item() == float(scheduler.alphas_cumprod[t])

        x = torch.randn(shape, generator=g, dtype=torch.float64) * 1.5
        out = torch.randn(shape, generator=g, dtype=torch.float64)
        z = torch.randn(shape, generator=g, dtype=torch.float64)

        # diffusers' mean: its noise draw replaced by zeros; then the full step with z
        monkeypatch.setattr(ddpm_module, "randn_tensor", _ReplayNoise(torch.zeros(shape, dtype=torch.float64)))
        mean_ref, x0_ref = scheduler.step(out, t, x, return_dict=False)
        replay = _ReplayNoise(z)
        monkeypatch.setattr(ddpm_module, "randn_tensor", replay)
        full_ref, _ = scheduler.step(out, t, x, return_dict=False)
        assert replay.calls == (1 if t > 0 else 0)

        mean, x0 = chain.mean(out, x, k)
        # both in float64 from the same alphas: only the order of operations differs
        torch.testing.assert_close(x0, x0_ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(mean, mean_ref, rtol=1e-10, atol=1e-10)
        if clip:
            assert x0.abs().max().item() <= 0.5 + 1e-12
        var_ref = float(scheduler._get_variance(t)) if t > 0 else 0.0
        sigma = chain.sigma[k].item()
        if prev_t < 0:
            # the step onto alpha_bar = 1 has zero variance (diffusers adds sqrt(1e-20) * z there)
            assert sigma == 0.0
            assert var_ref <= 1e-20
        else:
            assert sigma**2 == pytest.approx(var_ref, rel=1e-10)
            assert sigma > 0
        torch.testing.assert_close(mean + sigma * z, full_ref, rtol=1e-10, atol=1e-9)
        # the mean is the plain posterior mean of Ho et al. eq. 7 with the real previous timestep
        beta = 1 - a[k] / a_prev[k]
        eq7 = (a_prev[k].sqrt() * beta / (1 - a[k])) * x0 + ((a[k] / a_prev[k]).sqrt() * (1 - a_prev[k]) / (1 - a[k])) * x
        torch.testing.assert_close(mean, eq7, rtol=1e-12, atol=1e-12)


def test_chain_predict_uses_unclipped_eps():
    """eps is read from the unclipped prediction (DDIM's use_clipped_model_output=False)."""
    scheduler = _scheduler(DDIMScheduler, clip_sample=True, clip_sample_range=0.1)
    schedule = NoiseSchedule.from_diffusers(scheduler, num_inference_steps=10)
    chain = schedule.ddim_chain(0.0)
    out = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x0, eps = chain.predict(out, x, 3)
    torch.testing.assert_close(eps, out)
    assert x0.abs().max().item() <= 0.1


# --------------------------------------------------------------------------------------------------
# Unsupported settings


def _raises(match, fn, *args, **kwargs):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
def test_thresholding_rejected(cls):
    _raises("thresholding", NoiseSchedule.from_diffusers, _scheduler(cls, thresholding=True), num_inference_steps=10)


@pytest.mark.parametrize("variance_type", ["fixed_large", "learned_range", "fixed_small_log", "learned", "fixed_large_log"])
def test_variance_type_rejected(variance_type):
    scheduler = _scheduler(DDPMScheduler, variance_type=variance_type)
    _raises(f"variance_type.*{variance_type}", NoiseSchedule.from_diffusers, scheduler, num_inference_steps=10)


def test_unsupported_scheduler_class_rejected():
    scheduler = EulerDiscreteScheduler(num_train_timesteps=100)
    _raises("EulerDiscreteScheduler", NoiseSchedule.from_diffusers, scheduler, num_inference_steps=10)
    _raises("scheduler", NoiseSchedule.from_diffusers, object(), num_inference_steps=10)


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
def test_unsupported_prediction_type_rejected(cls):
    scheduler = _scheduler(cls, prediction_type="flow")
    _raises("prediction_type.*flow", NoiseSchedule.from_diffusers, scheduler, num_inference_steps=10)


@pytest.mark.parametrize(
    "timesteps,match",
    [
        ([0, 50, 99], "decreasing"),
        ([90, 50, 50, 0], "decreasing"),
        ([50, 60, 0], "decreasing"),
        ([100, 50, 0], r"timesteps.*\[0, 99\]"),
        ([50, 10, -1], r"timesteps.*\[0, 99\]"),
        ([], "timesteps"),
    ],
)
def test_bad_custom_timesteps_rejected(timesteps, match):
    _raises(match, NoiseSchedule.from_diffusers, _scheduler(DDPMScheduler), timesteps=timesteps)


def test_both_num_inference_steps_and_timesteps_rejected():
    _raises("num_inference_steps.*timesteps", NoiseSchedule.from_diffusers, _scheduler(DDPMScheduler),
            num_inference_steps=7, timesteps=CUSTOM)


def test_unsupported_spacing_rejected():
    scheduler = _scheduler(DDIMScheduler)
    scheduler.register_to_config(timestep_spacing="karras")
    _raises("timestep_spacing.*karras", NoiseSchedule.from_diffusers, scheduler, num_inference_steps=10)


def test_negative_eta_rejected():
    schedule = NoiseSchedule.from_diffusers(_scheduler(DDIMScheduler), num_inference_steps=10)
    _raises("eta", schedule.ddim_chain, -0.1)


@pytest.mark.parametrize("eta", [math.nan, math.inf, "1"])
def test_nonfinite_eta_rejected(eta):
    schedule = NoiseSchedule.from_diffusers(_scheduler(DDIMScheduler), num_inference_steps=10)
    _raises("eta", schedule.ddim_chain, eta)


@pytest.mark.parametrize("field,value,match", [
    ("clip_sample_range", math.nan, "clip_sample_range"),
    ("clip_sample_range", math.inf, "clip_sample_range"),
    ("final_alpha_cumprod", math.nan, "final_alpha_cumprod"),
    ("final_alpha_cumprod", 0.0, "final_alpha_cumprod"),
    ("alphas_cumprod", "nan", "alphas_cumprod"),
    ("alphas_cumprod", "zero", "alphas_cumprod"),
])
def test_nonfinite_schedule_fields_rejected(field, value, match):
    good = NoiseSchedule.from_diffusers(_scheduler(DDPMScheduler), num_inference_steps=10)
    fields = dict(alphas_cumprod=good.alphas_cumprod.clone(), timesteps=good.timesteps,
                  clip_sample_range=1.0, final_alpha_cumprod=1.0)
    if field == "alphas_cumprod":
        fields[field][5] = math.nan if value == "nan" else 0.0
    else:
        fields[field] = value
    _raises(match, NoiseSchedule, **fields)


def test_chains_are_built_once_and_tables_copied_once():
    """Sampling calls reuse the schedule's chains and their device tables: no rebuild, no new copy
    (on CUDA each copy was a blocking host-to-device transfer per call)."""
    schedule = NoiseSchedule.from_diffusers(_scheduler(DDPMScheduler), num_inference_steps=10)
    assert schedule.ddpm_chain() is schedule.ddpm_chain()
    assert schedule.ddim_chain(0.0) is schedule.ddim_chain(0) and schedule.ddim_chain(0.5) is not schedule.ddim_chain(0)
    first = schedule.ddpm_chain().tensors(torch.device("cpu"), torch.float32)
    again = NoiseSchedule.from_diffusers(_scheduler(DDPMScheduler), num_inference_steps=10).ddpm_chain()
    second = again.tensors(torch.device("cpu"), torch.float32)  # another chain, same content
    assert all(second[k] is first[k] for k in first)
    assert second["timesteps"].dtype == torch.int64
    restored = pickle.loads(pickle.dumps(schedule))
    assert torch.equal(restored.timesteps, schedule.timesteps) and restored._chains == {}  # caches never travel
