"""The contract's bad-input errors, for every sampler registered (so later samplers are covered too).

Bad input is a clear error naming the argument, never silently sampled through: ``x_T``, ``cond`` and
``noise`` shapes and values, a denoiser output of the wrong shape (``ValueError`` naming the shape) or
non-finite (``FloatingPointError``), unknown sampler names and options, non-positive ``tolerance`` or
``window``; non-finite options, an empty batch, a generator that is not one, tensors without values
(the meta device), and a final sample that overflowed although every input was finite.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from diffusers import DDPMScheduler

from policy_sampler import NoiseSchedule, available_samplers, make_sampler
from policy_sampler.reference import GaussianMixtureDenoiser
from policy_sampler.samplers import sampler_options

B, D, K = 2, 3, 10


@pytest.fixture(scope="module")
def schedule():
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                              prediction_type="epsilon", variance_type="fixed_small")
    return NoiseSchedule.from_diffusers(scheduler, num_inference_steps=K)


@pytest.fixture(scope="module")
def model(schedule):
    return GaussianMixtureDenoiser.random(schedule, D, seed=0)


@pytest.fixture(params=available_samplers())
def name(request):
    return request.param


def _x_T(dtype=torch.float32):
    return torch.randn(B, D, generator=torch.Generator().manual_seed(0)).to(dtype)


def _sample(name, model, schedule, x_T=None, **kwargs):
    kwargs.setdefault("generator", torch.Generator().manual_seed(1))
    return make_sampler(name).sample(model, schedule, _x_T() if x_T is None else x_T, **kwargs)


def test_available_samplers():
    names = available_samplers()
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    assert {"ddpm", "ddim", "picard", "paradigms"} <= set(names)
    assert len(set(names)) == len(names)
    for n in names:
        sampler = make_sampler(n)
        assert sampler.name == n
        assert isinstance(sampler.exact, bool)


def test_good_input_samples(name, model, schedule):
    """The baseline every case below perturbs: valid input samples without error."""
    cond = torch.zeros(B, D)
    noise = torch.randn(K, B, D, generator=torch.Generator().manual_seed(2))
    result = _sample(name, model, schedule, cond=cond, noise=noise)
    assert result.sample.shape == (B, D)
    assert bool(torch.isfinite(result.sample).all())


# --------------------------------------------------------------------------------------------------
# x_T, cond, noise


@pytest.mark.parametrize(
    "x_T",
    [
        torch.zeros(B, D, dtype=torch.int64),
        torch.zeros(B, D, dtype=torch.bool),
        torch.zeros(B, D, dtype=torch.complex64),
        torch.zeros(D),  # no batch dimension
        torch.tensor(1.0),
        [[0.0] * D] * B,  # not a tensor
    ],
    ids=["int64", "bool", "complex", "1d", "0d", "list"],
)
def test_bad_x_T_rejected(name, model, schedule, x_T):
    with pytest.raises(ValueError, match="x_T"):
        _sample(name, model, schedule, x_T=x_T)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nonfinite_x_T_rejected(name, model, schedule, value):
    x_T = _x_T()
    x_T[1, 2] = value
    with pytest.raises(ValueError, match="x_T"):
        _sample(name, model, schedule, x_T=x_T)


@pytest.mark.parametrize(
    "cond",
    [torch.zeros(B + 1, D), torch.zeros(B - 1, D), torch.zeros(D, B), torch.tensor(0.0), [[0.0] * D] * B],
    ids=["batch+1", "batch-1", "transposed", "0d", "list"],
)
def test_bad_cond_rejected(name, model, schedule, cond):
    with pytest.raises(ValueError, match="cond"):
        _sample(name, model, schedule, cond=cond)


@pytest.mark.parametrize(
    "shape",
    [(K - 1, B, D), (K + 1, B, D), (K, B + 1, D), (K, B, D + 1), (B, D), (K * B, D), (1, K, B, D)],
    ids=["K-1", "K+1", "batch+1", "event+1", "no-K", "flat", "extra-dim"],
)
def test_noise_of_wrong_shape_rejected(name, model, schedule, shape):
    with pytest.raises(ValueError, match=r"noise.*\(10, 2, 3\)"):
        _sample(name, model, schedule, noise=torch.zeros(shape))


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nonfinite_noise_rejected(name, model, schedule, value):
    noise = torch.zeros(K, B, D)
    noise[3, 1, 0] = value
    with pytest.raises(ValueError, match="noise"):
        _sample(name, model, schedule, noise=noise)


def test_noise_that_is_not_a_tensor_rejected(name, model, schedule):
    with pytest.raises(ValueError, match="noise"):
        _sample(name, model, schedule, noise=[[[0.0] * D] * B] * K)


def test_schedule_that_is_not_a_noise_schedule_rejected(name, model):
    scheduler = DDPMScheduler(num_train_timesteps=100)
    with pytest.raises(TypeError, match="schedule"):
        make_sampler(name).sample(model, scheduler, _x_T())


# --------------------------------------------------------------------------------------------------
# The denoiser's output


class _Bad:
    """Wraps the model; ``how`` spoils its output (from call ``after`` on, or only at timestep ``at``)."""

    def __init__(self, model, how, at=None):
        self.model, self.how, self.at = model, how, at
        self.returned_shapes = []

    def __call__(self, x, t, cond):
        out = self.model(x, t, cond)
        if self.at is not None:
            mask = (t == self.at).reshape(-1, *([1] * (x.ndim - 1)))
        else:
            mask = torch.ones_like(out, dtype=torch.bool)
        if self.how == "nan":
            out = torch.where(mask, torch.full_like(out, math.nan), out)
        elif self.how == "inf":
            out = torch.where(mask, torch.full_like(out, math.inf), out)
        elif self.how == "-inf_one_entry":
            out = out.clone()
            out.view(-1)[0] = -math.inf
        elif self.how == "narrow":
            out = out[..., :-1]
        elif self.how == "wide":
            out = torch.cat([out, out], dim=-1)
        elif self.how == "extra_dim":
            out = out.unsqueeze(-1)
        elif self.how == "missing_row":
            out = out[:-1]
        elif self.how == "ndarray":
            out = out.numpy()
        if hasattr(out, "shape"):
            self.returned_shapes.append(tuple(out.shape))
        return out


@pytest.mark.parametrize("how", ["narrow", "wide", "extra_dim", "missing_row"])
def test_denoiser_output_of_wrong_shape_rejected(name, model, schedule, how):
    bad = _Bad(model, how)
    with pytest.raises(ValueError, match="shape") as info:
        _sample(name, bad, schedule)
    assert str(bad.returned_shapes[-1]) in str(info.value), "the message names the shape returned"


def test_denoiser_output_that_is_not_a_tensor_rejected(name, model, schedule):
    with pytest.raises(ValueError, match="denoiser"):
        _sample(name, _Bad(model, "ndarray"), schedule)


@pytest.mark.parametrize(
    "how,at",
    [("nan", None), ("inf", None), ("-inf_one_entry", None), ("nan", "first"), ("inf", "last"), ("nan", "middle")],
    ids=["nan-all", "inf-all", "one-entry", "nan-first-step", "inf-last-step", "nan-middle-step"],
)
def test_nonfinite_denoiser_output_raises(name, model, schedule, how, at):
    """NaN/inf from the denoiser at any step (even only the first or only the last) is a
    FloatingPointError, never a sample."""
    steps = schedule.timesteps.tolist()
    t = {None: None, "first": steps[0], "last": steps[-1], "middle": steps[K // 2]}[at]
    with pytest.raises(FloatingPointError):
        _sample(name, _Bad(model, how, t), schedule)


# --------------------------------------------------------------------------------------------------
# make_sampler


@pytest.mark.parametrize("bad", ["nope", "DDPM", "", "paradigm"])
def test_unknown_sampler_name_lists_available(bad):
    with pytest.raises(ValueError) as info:
        make_sampler(bad)
    message = str(info.value)
    assert repr(bad) in message or bad in message
    for n in available_samplers():
        assert n in message


def test_unknown_option_lists_valid_options(name):
    valid = sampler_options(name)
    with pytest.raises(ValueError) as info:
        make_sampler(name, not_an_option=1)
    message = str(info.value)
    assert "not_an_option" in message
    for option in valid:
        assert option in message
    if not valid:
        assert "none" in message


def test_options_are_keyword_arguments_with_defaults(name):
    for option, default in sampler_options(name).items():
        assert default is not inspect.Parameter.empty, f"{name}'s option {option} has no default"
        make_sampler(name, **{option: default})  # every default round-trips


@pytest.mark.parametrize("value", [0, 0.0, -0.1, -1, math.nan, math.inf, True, "0.1", None])
def test_non_positive_tolerance_rejected(name, value):
    if "tolerance" not in sampler_options(name):
        pytest.skip(f"{name} takes no tolerance")
    if value is None and sampler_options(name)["tolerance"] is None:
        pytest.skip(f"None is {name}'s default tolerance (its 'unset' value)")
    with pytest.raises(ValueError, match="tolerance"):
        make_sampler(name, tolerance=value)


@pytest.mark.parametrize("value", [0, -1, 2.5, math.nan, True, "4", None])
def test_non_positive_or_non_integer_window_rejected(name, value):
    if "window" not in sampler_options(name):
        pytest.skip(f"{name} takes no window")
    if value is None and sampler_options(name)["window"] is None:
        pytest.skip(f"None is {name}'s default window (its 'unset' value)")
    with pytest.raises(ValueError, match="window"):
        make_sampler(name, window=value)


@pytest.mark.parametrize("tolerance_sampler", ["picard", "paradigms"])
def test_picard_and_paradigms_take_tolerance(tolerance_sampler):
    assert "tolerance" in sampler_options(tolerance_sampler)
    assert make_sampler(tolerance_sampler, tolerance=0.05).tolerance == 0.05
    assert "window" in sampler_options("paradigms")
    assert make_sampler("paradigms", window=4).window == 4


@pytest.mark.parametrize("value", [-0.5, math.nan, math.inf, "1"])
def test_bad_ddim_eta_rejected(value):
    with pytest.raises(ValueError, match="eta"):
        make_sampler("ddim", eta=value)


# --------------------------------------------------------------------------------------------------
# Hostile input (issue 16): silent garbage and obscure crashes become clear errors


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nonfinite_cond_rejected(name, model, schedule, value):
    cond = torch.zeros(B, D)
    cond[0, 1] = value
    with pytest.raises(ValueError, match="cond contains NaN or inf"):
        _sample(name, model, schedule, cond=cond)


class _Huge:
    """A finite but enormous epsilon prediction: the chain's arithmetic overflows to inf."""

    def __call__(self, x, t, cond):
        return torch.full_like(x, 3e38)


def test_overflowing_sample_raises_not_returned(name):
    """Every denoiser output is finite, yet x0 = (x - sqrt(1 - a) eps) / sqrt(a) overflows: the one final
    check catches it (today's samplers returned the inf sample)."""
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    schedule = NoiseSchedule.from_diffusers(scheduler, num_inference_steps=K)
    with pytest.raises(FloatingPointError, match="sample contains NaN or inf"):
        _sample(name, _Huge(), schedule)


def test_inputs_are_checked_before_the_denoiser_output(name, model, schedule):
    """A NaN input is named as such, even though it also makes the denoiser's output NaN."""
    x_T = _x_T()
    x_T[0, 0] = math.nan
    with pytest.raises(ValueError, match="x_T contains NaN"):
        _sample(name, lambda x, t, c: x * 0 + x.sum(), schedule, x_T=x_T)


@pytest.mark.parametrize("shape", [(0, D), (B, 0), (0,)], ids=["empty-batch", "empty-event", "empty-1d"])
def test_empty_x_T_rejected(name, model, schedule, shape):
    with pytest.raises(ValueError, match="x_T"):
        _sample(name, model, schedule, x_T=torch.zeros(shape))


@pytest.mark.parametrize("generator", [0, 1.5, "seed", torch.Generator().manual_seed(0).get_state()],
                         ids=["int", "float", "str", "state-tensor"])
def test_generator_that_is_not_one_rejected(name, model, schedule, generator):
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        _sample(name, model, schedule, generator=generator)


@pytest.mark.parametrize("argument", ["x_T", "cond", "noise"])
def test_meta_tensors_rejected(name, model, schedule, argument):
    kwargs = {"x_T": _x_T(), "cond": torch.zeros(B, D), "noise": torch.zeros(K, B, D)}
    kwargs[argument] = kwargs[argument].to("meta")
    with pytest.raises(ValueError, match=f"{argument} is on the meta device"):
        _sample(name, model, schedule, **kwargs)


@pytest.mark.parametrize("steps", [0, -1, 101, 2.0, True], ids=["zero", "negative", "too-many", "float", "bool"])
def test_bad_num_inference_steps_rejected(steps):
    scheduler = DDPMScheduler(num_train_timesteps=100)
    with pytest.raises(ValueError, match="num_inference_steps"):
        NoiseSchedule.from_diffusers(scheduler, num_inference_steps=steps)

