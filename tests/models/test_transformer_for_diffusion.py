"""DP-T: the paper network's size, causal masks (a later action token or observation cannot change an
earlier output), padding invariance, every sampler through it, compile without recompiles, dropout."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from policy_sampler.models import TransformerForDiffusion, TransformerForDiffusionConfig
from policy_sampler.runtime import DenoiserRuntime, pad_rows, sampler_buckets
from policy_sampler.samplers import available_samplers, make_sampler
from policy_sampler.schedule import NoiseSchedule

HORIZON, ACTION, TO, COND = 8, 2, 2, 5
SMALL = dict(action_dim=ACTION, horizon=HORIZON, n_obs_steps=TO, cond_dim=COND, n_layer=2, n_head=2, n_emb=16)
SAMPLERS = (("ddpm", {}), ("picard", {}), ("paradigms", {"window": 4}), ("speculative", {"lookahead": 4}),
            ("speculative_picard", {"window": 4}))


def small_model(seed: int = 0, **overrides) -> TransformerForDiffusion:
    torch.manual_seed(seed)
    return TransformerForDiffusion(TransformerForDiffusionConfig(**{**SMALL, **overrides})).eval()


def draw(rows: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, HORIZON, ACTION, generator=g), torch.randint(0, 100, (rows,), generator=g),
            torch.randn(rows, TO * COND, generator=g))


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    return NoiseSchedule.from_diffusers(scheduler, num_inference_steps=12)


def test_paper_network_matches_the_reference_size():
    # Diffusion Policy's low-dim Push-T transformer: 8 layers, 4 heads, width 256, obs 20, action 2.
    model = TransformerForDiffusion(TransformerForDiffusionConfig(action_dim=2, cond_dim=20))
    assert model.num_parameters() == 8_965_122
    out = model.eval()(torch.randn(3, 16, 2), torch.tensor([0, 5, 99]), torch.randn(3, 40))
    assert out.shape == (3, 16, 2)


def test_flat_and_token_conditioning_agree_and_scalar_timesteps_broadcast():
    model = small_model()
    x, t, c = draw(3)
    torch.testing.assert_close(model(x, t, c), model(x, t, c.reshape(3, TO, COND)), rtol=0, atol=0)
    torch.testing.assert_close(model(x, 7, c), model(x, torch.full((3,), 7), c), rtol=0, atol=0)
    assert model(x[:, :5], t, c).shape == (3, 5, ACTION)  # shorter chunks use the first positions


@pytest.mark.parametrize("causal", [True, False])
def test_a_later_action_token_cannot_change_an_earlier_output(causal):
    model = small_model(causal_attn=causal)
    x, t, c = draw(2)
    base = model(x, t, c)
    for j in range(1, HORIZON):
        moved = x.clone()
        moved[:, j] += 3.0
        out = model(moved, t, c)
        assert not torch.allclose(out[:, j], base[:, j])  # the token itself sees its change
        if causal:
            assert torch.equal(out[:, :j], base[:, :j])
        else:  # the wrong variant: without the mask earlier outputs move (the test has power)
            assert not torch.allclose(out[:, :j], base[:, :j])


def test_observation_k_reaches_action_tokens_from_k_on():
    """Memory mask: action token i sees the step token and observations 0..i (the reference's mask)."""
    model = small_model()
    x, t, c = draw(2)
    base = model(x, t, c)
    obs = c.reshape(2, TO, COND).clone()
    obs[:, 1] += 3.0
    out = model(x, t, obs)
    assert torch.equal(out[:, 0], base[:, 0]) and not torch.allclose(out[:, 1:], base[:, 1:])
    later_t = model(x, t + 1, c)
    assert not torch.allclose(later_t[:, 0], base[:, 0])  # every token sees the step token


def test_padding_rows_do_not_change_real_rows():
    denoiser = small_model().denoiser()
    x, t, c = draw(3)
    alone = denoiser(x, t, c)
    zero_pad = denoiser(pad_rows(x, 8), pad_rows(t, 8), pad_rows(c, 8))[:3]
    gx, gt, gc = draw(8, seed=1)
    gx[:3], gt[:3], gc[:3] = x, t, c
    assert torch.equal(zero_pad, denoiser(gx, gt, gc)[:3])
    torch.testing.assert_close(zero_pad, alone, rtol=0, atol=1e-6)


def run(sampler: str, options: dict, denoiser, schedule: NoiseSchedule, batch: int = 2):
    g = torch.Generator().manual_seed(3)
    x_T = torch.randn(batch, HORIZON, ACTION, generator=g)
    noise = torch.randn(schedule.num_steps, batch, HORIZON, ACTION, generator=g)
    cond = torch.randn(batch, TO * COND, generator=g)
    with torch.no_grad():
        return make_sampler(sampler, **options).sample(denoiser, schedule, x_T, cond=cond, noise=noise,
                                                       generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("name", available_samplers())
def test_every_sampler_runs_the_transformer(schedule, name):
    out = run(name, {}, small_model().denoiser(), schedule)
    assert out.sample.shape == (2, HORIZON, ACTION) and torch.isfinite(out.sample).all()
    assert out.rounds >= 1


def test_pathwise_samplers_reproduce_ddpm_on_shared_noise(schedule):
    """Picard and ParaDiGMS solve the same-noise DDPM chain (the speculative samplers are exact in law,
    not pathwise: the Gaussian-mixture tests cover them)."""
    denoiser = small_model().denoiser()
    ref = run("ddpm", {}, denoiser, schedule)
    for name, options in (("picard", {}), ("paradigms", {"window": 4})):
        out = run(name, {**options, "tolerance": 1e-5}, denoiser, schedule)
        torch.testing.assert_close(out.sample, ref.sample, rtol=0, atol=1e-3, msg=name)
        assert out.rounds <= ref.rounds


def test_compile_has_no_recompilation_after_warmup_and_matches_eager(schedule):
    torch._dynamo.reset()
    model = small_model()
    event, cond = (HORIZON, ACTION), (TO * COND,)
    buckets = sorted({b for name, opts in SAMPLERS
                      for b in sampler_buckets(make_sampler(name, **opts), schedule, event, [2], cond)})
    runtime = DenoiserRuntime(model.denoiser(), mode="compile", row_buckets=buckets, compile_backend="aot_eager")
    runtime.warmup(event, cond)
    assert runtime.compilations == len(buckets)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for name, options in SAMPLERS:
        compiled = run(name, options, runtime, schedule)
        eager = run(name, options, model.denoiser(), schedule)
        assert compiled.rounds == eager.rounds
        torch.testing.assert_close(compiled.sample, eager.sample, rtol=0, atol=1e-5)
    run("ddpm", {}, runtime, schedule, batch=1)
    assert runtime.compilations == len(buckets)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_dropout_only_in_train_mode_and_the_denoiser_refuses_it():
    model = small_model(p_drop_attn=0.3)
    x, t, c = draw(2)
    assert torch.equal(model(x, t, c), model(x, t, c))
    model.train()
    assert not torch.equal(model(x, t, c), model(x, t, c))
    with pytest.raises(ValueError, match="train mode with dropout"):
        model.denoiser()(x, t, c)
    small_model(p_drop_attn=0.0, p_drop_emb=0.0).train().denoiser()(x, t, c)  # no dropout: allowed


def test_parameter_groups_cover_every_parameter_once():
    model = small_model()
    groups = model.parameter_groups(1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    no_decay = {id(p) for p in groups[1]["params"]}
    assert id(model.pos_emb) in no_decay and id(model.ln_f.weight) in no_decay
    assert id(model.head.weight) not in no_decay


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x, t, c: m(x, t, c[:, :3]), "cond must have shape"),
        (lambda m, x, t, c: m(x, t, None), "cond is required"),
        (lambda m, x, t, c: m(x.float()[..., :1], t, c), "action_dim"),
        (lambda m, x, t, c: m(torch.randn(2, HORIZON + 1, ACTION), t, c), "horizon"),
        (lambda m, x, t, c: m(x, t.float(), c), "integer"),
        (lambda m, x, t, c: m(x, t[:1].repeat(3), c), "timestep"),
    ],
)
def test_bad_inputs_name_the_argument(call, match):
    x, t, c = draw(2)
    with pytest.raises(ValueError, match=match):
        call(small_model(), x, t, c)


@pytest.mark.parametrize(
    "overrides, match",
    [(dict(n_emb=15), "n_emb"), (dict(n_head=3), "n_emb"), (dict(p_drop_attn=1.0), "p_drop_attn"),
     (dict(horizon=0), "horizon"), (dict(cond_dim=-1), "cond_dim")],
)
def test_config_errors_name_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        TransformerForDiffusionConfig(**{**SMALL, **overrides})
