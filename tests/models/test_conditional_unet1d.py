"""The Diffusion Policy conditional 1D U-Net: shapes, conditioning, the denoiser wrapper, argument checks,
training signal, determinism, and the parameter count of the paper-sized network."""

from __future__ import annotations

import pytest
import torch

from policy_sampler.models import (
    ConditionalUnet1D,
    ConditionalUnet1DConfig,
    ConditionalUnet1DDenoiser,
)

ACTION_DIM = 3
COND_DIM = 10
HORIZON = 16
SMALL = dict(down_dims=(32, 64, 128), diffusion_step_embed_dim=32)


def small_model(seed: int = 0, **overrides) -> ConditionalUnet1D:
    torch.manual_seed(seed)
    kwargs = dict(action_dim=ACTION_DIM, global_cond_dim=COND_DIM, **SMALL)
    kwargs.update(overrides)
    return ConditionalUnet1D(ConditionalUnet1DConfig(**kwargs)).eval()


def inputs(batch: int = 4, horizon: int = HORIZON, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, horizon, ACTION_DIM, generator=g)
    t = torch.randint(0, 100, (batch,), generator=g)
    cond = torch.randn(batch, COND_DIM, generator=g)
    return x, t, cond


def test_paper_sized_parameter_count():
    # Chi et al. 2023 CNN policy: down_dims (256, 512, 1024), kernel 5, 8 groups, step embed 256;
    # a 2-D action and 20-D global conditioning give the ~65.5M-parameter reference network.
    torch.manual_seed(0)
    model = ConditionalUnet1D(ConditionalUnet1DConfig(action_dim=2, global_cond_dim=20))
    n = model.num_parameters()
    assert n == sum(p.numel() for p in model.parameters())
    assert n == 65_496_578
    assert abs(n - 65.5e6) / 65.5e6 < 0.01


@pytest.mark.parametrize("cond_predict_scale", [True, False])
@pytest.mark.parametrize("horizon", [4, 8, 16, 24])
def test_output_shape(horizon, cond_predict_scale):
    model = small_model(cond_predict_scale=cond_predict_scale)
    x, t, cond = inputs(batch=2, horizon=horizon)
    with torch.no_grad():
        out = model(x, t, cond)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()


def test_two_level_and_one_level_networks():
    for dims in [(16, 32), (16,)]:
        model = small_model(down_dims=dims)
        x, t, cond = inputs(batch=2, horizon=6 if len(dims) == 2 else 5)
        with torch.no_grad():
            assert model(x, t, cond).shape == x.shape


def test_unconditional_network():
    model = small_model(global_cond_dim=0)
    x, t, _ = inputs()
    with torch.no_grad():
        a = model(x, t)
        b = model(x, t, None)
        c = model(x, t, torch.empty(x.shape[0], 0))
    assert a.shape == x.shape
    assert torch.equal(a, b) and torch.equal(a, c)
    with pytest.raises(ValueError, match="unconditional"):
        model(x, t, torch.randn(x.shape[0], 3))


def test_conditioning_changes_output():
    model = small_model()
    x, t, cond = inputs()
    with torch.no_grad():
        a = model(x, t, cond)
        b = model(x, t, cond + 1.0)
    assert (a - b).abs().amax(dim=(1, 2)).min() > 1e-4  # every row changes


def test_timestep_changes_output_and_scalar_broadcasts():
    model = small_model()
    x, _, cond = inputs()
    t = torch.full((x.shape[0],), 10, dtype=torch.long)
    with torch.no_grad():
        a = model(x, t, cond)
        b = model(x, t + 50, cond)
        scalar_int = model(x, 10, cond)
        scalar_tensor = model(x, torch.tensor(10), cond)
    assert (a - b).abs().amax(dim=(1, 2)).min() > 1e-4
    assert torch.equal(a, scalar_int) and torch.equal(a, scalar_tensor)


def test_rows_are_independent():
    # GroupNorm, not BatchNorm: a row's output does not depend on the other rows.
    model = small_model()
    x, t, cond = inputs(batch=4)
    with torch.no_grad():
        full = model(x, t, cond)
        one = model(x[2:3], t[2:3], cond[2:3])
    torch.testing.assert_close(full[2:3], one, rtol=1e-5, atol=1e-5)


def test_denoiser_matches_forward_and_preserves_dtype():
    model = small_model()
    x, t, cond = inputs()
    with torch.no_grad():
        ref = model(x, t, cond)
    for den in (model.denoiser(),):
        assert isinstance(den, ConditionalUnet1DDenoiser)
        out = den(x, t, cond)
        assert torch.equal(out, ref)
        assert not out.requires_grad

        out64 = den(x.double(), t, cond.double())  # float64 in, float32 model: cast in and back
        assert out64.dtype == torch.float64 and out64.shape == x.shape
        torch.testing.assert_close(out64, ref.double())

    # A float64 model: float32 input is cast to float64 for the network and back to float32.
    model64 = small_model().double()
    out = model64.denoiser()(x, t, cond)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_denoiser_with_a_sampler():
    from diffusers import DDPMScheduler

    from policy_sampler import NoiseSchedule, make_sampler

    model = small_model()
    schedule = NoiseSchedule.from_diffusers(DDPMScheduler(num_train_timesteps=100), num_inference_steps=10)
    x_T = torch.randn(2, HORIZON, ACTION_DIM, generator=torch.Generator().manual_seed(3))
    cond = torch.randn(2, COND_DIM, generator=torch.Generator().manual_seed(4))
    result = make_sampler("ddpm").sample(
        model.denoiser(), schedule, x_T, cond=cond, generator=torch.Generator().manual_seed(5)
    )
    assert result.sample.shape == x_T.shape and torch.isfinite(result.sample).all()
    assert result.nfe == 10


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(action_dim=0), "action_dim"),
        (dict(action_dim=2.0), "action_dim"),
        (dict(action_dim=True), "action_dim"),
        (dict(action_dim=2, global_cond_dim=-1), "global_cond_dim"),
        (dict(action_dim=2, down_dims=()), "down_dims"),
        (dict(action_dim=2, down_dims=(32, 0)), "down_dims"),
        (dict(action_dim=2, down_dims=32), "down_dims"),
        (dict(action_dim=2, down_dims=(32, 60)), "down_dims"),  # 60 not divisible by 8 groups
        (dict(action_dim=2, kernel_size=0), "kernel_size"),
        (dict(action_dim=2, kernel_size=4), "kernel_size"),
        (dict(action_dim=2, n_groups=0), "n_groups"),
        (dict(action_dim=2, diffusion_step_embed_dim=0), "diffusion_step_embed_dim"),
        (dict(action_dim=2, diffusion_step_embed_dim=33), "diffusion_step_embed_dim"),
        (dict(action_dim=2, cond_predict_scale=1), "cond_predict_scale"),
    ],
)
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ConditionalUnet1DConfig(**kwargs)


def test_config_round_trip_and_list_dims():
    cfg = ConditionalUnet1DConfig(action_dim=2, global_cond_dim=4, down_dims=[16, 32])
    assert cfg.down_dims == (16, 32)
    assert ConditionalUnet1DConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.cond_dim == 256 + 4 and cfg.horizon_multiple == 2


def test_forward_argument_errors():
    model = small_model()
    x, t, cond = inputs()
    with pytest.raises(ValueError, match="horizon 10"):
        model(torch.randn(2, 10, ACTION_DIM), t[:2], cond[:2])  # not a multiple of 4
    with pytest.raises(ValueError, match="horizon"):
        model(torch.randn(2, 0, ACTION_DIM), t[:2], cond[:2])
    with pytest.raises(ValueError, match="action_dim"):
        model(torch.randn(4, HORIZON, ACTION_DIM + 1), t, cond)
    with pytest.raises(ValueError, match="action_dim"):
        model(x.transpose(1, 2), t, cond)  # channels first by mistake
    with pytest.raises(ValueError, match="sample"):
        model(x[0], t, cond)
    with pytest.raises(ValueError, match="global_cond is required"):
        model(x, t)
    with pytest.raises(ValueError, match="global_cond must have shape"):
        model(x, t, cond[:, :-1])
    with pytest.raises(ValueError, match="global_cond must have shape"):
        model(x, t, cond[:2])
    with pytest.raises(ValueError, match="timestep"):
        model(x, t[:2], cond)
    with pytest.raises(ValueError, match="timestep"):
        model(x, t.float(), cond)
    with pytest.raises(ValueError, match="timestep"):
        model(x, 1.5, cond)


def test_training_step_reduces_loss():
    model = small_model().train()
    x, t, cond = inputs(batch=8)
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x, t, cond), target)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    named = dict(model.named_parameters())
    # Every parameter gets a gradient (nothing is disconnected).
    missing = [k for k, p in named.items() if p.grad is None]
    assert missing == []
    assert named["diffusion_step_encoder.1.weight"].grad.abs().sum() > 0
    assert losses[-1] < 0.8 * losses[0], losses


def test_eval_determinism():
    a = small_model(seed=3)
    b = small_model(seed=3)
    x, t, cond = inputs()
    with torch.no_grad():
        out1 = a(x, t, cond)
        out2 = a(x, t, cond)
        out3 = b(x, t, cond)
    assert torch.equal(out1, out2)
    assert torch.equal(out1, out3)
