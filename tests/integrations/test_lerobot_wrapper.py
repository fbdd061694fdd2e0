"""wrap_lerobot_policy against LeRobot's own sampling (run with .venv-lerobot; skipped without LeRobot)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lerobot", reason="LeRobot is not installed (bash scripts/setup.sh --lerobot)")

from lerobot_helpers import lerobot_policy, observation  # noqa: E402

from policy_sampler import available_samplers, make_sampler  # noqa: E402
from policy_sampler.integrations.lerobot import wrap_lerobot_policy  # noqa: E402

PARITY = 1e-4  # float32 rounding over 100 steps (measured: ~5e-6)


@pytest.fixture(scope="module")
def policy():
    return lerobot_policy()


def history(obs: dict, n_obs_steps: int = 2) -> dict:
    """An offline batch for predict_action_chunk: each key repeated over the observation steps."""
    return {k: torch.stack([v] * n_obs_steps, dim=1) for k, v in obs.items()}


def chunk(p, batch: dict, seed: int) -> torch.Tensor:
    p.reset()
    torch.manual_seed(seed)
    return p.predict_action_chunk(dict(batch))


def ticks(p, obs: dict, n: int, seed: int) -> list[torch.Tensor]:
    p.reset()
    torch.manual_seed(seed)
    return [p.select_action(dict(obs)) for _ in range(n)]


def max_gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("seed", [0, 1])
def test_ddpm_chunks_equal_lerobots_own(policy, seed):
    batch = history(observation(3, seed=seed))
    reference = chunk(policy, batch, seed)
    fast = wrap_lerobot_policy(policy, sampler="ddpm")
    ours = chunk(fast, batch, seed)
    assert ours.shape == reference.shape == (3, 8, 2)
    assert float((ours - reference).abs().max()) < PARITY
    assert (fast.last_result.rounds, fast.last_result.nfe) == (100, 100)
    # the global RNG is left where LeRobot leaves it
    torch.manual_seed(seed)
    policy.reset()
    policy.predict_action_chunk(dict(batch))
    after_lerobot = torch.rand(3)
    chunk(fast, batch, seed)
    assert torch.equal(torch.rand(3), after_lerobot)


@pytest.mark.parametrize("wrong", ["x_T after the step noise", "a draw at t = 0 too"])
def test_parity_checks_catch_draws_in_another_order(policy, wrong):
    """Wrong variants of LeRobot's order of draws (same law, other numbers or another RNG state after the
    chunk) must fail the checks above. (One randn call for all steps is NOT wrong: on CPU it yields the
    same numbers as one call per step, so it is not a variant to catch.)"""
    batch = history(observation(3))
    reference = chunk(policy, batch, 0)
    after_lerobot = torch.rand(3)
    fast = wrap_lerobot_policy(policy, sampler="ddpm")
    right_draw = fast.chain.draw

    def wrong_draw(batch_size, schedule, generator=None, x_T=None, noise=True):
        if wrong == "x_T after the step noise":
            _, steps = right_draw(batch_size, schedule, generator, x_T=torch.zeros(batch_size, 16, 2))
            return right_draw(batch_size, schedule, generator, noise=False)[0], steps
        x_T, steps = right_draw(batch_size, schedule, generator, x_T=x_T)
        torch.randn(x_T.shape)  # diffusers draws nothing at t = 0
        return x_T, steps

    fast.chain.draw = wrong_draw
    gap = float((chunk(fast, batch, 0) - reference).abs().max())
    rng_same = torch.equal(torch.rand(3), after_lerobot)
    assert gap > 100 * PARITY or not rng_same


def test_select_action_equals_lerobots_tick_by_tick(policy):
    obs = observation(2, seed=3)
    reference = ticks(policy, obs, 20, seed=7)  # 3 chunks of 8 actions
    fast = wrap_lerobot_policy(policy, sampler="ddpm")
    ours = ticks(fast, obs, 20, seed=7)
    assert max_gap(ours, reference) < PARITY
    assert ours[0].shape == (2, 2)
    # LeRobot's queues, on the same policy object: 20 ticks leave 4 of the third chunk's 8 actions
    assert len(fast._queues["action"]) == len(policy._queues["action"]) == 4
    assert "conditional_sample" not in vars(policy.diffusion)  # the policy is LeRobot's again


def test_ddim_configured_policy_matches_lerobots_ddim():
    policy = lerobot_policy(noise_scheduler_type="DDIM", num_inference_steps=10)
    obs = observation(2, seed=4)
    reference = ticks(policy, obs, 20, seed=5)
    fast = wrap_lerobot_policy(policy)  # the policy's own chain: ddim
    assert fast.sampler.name == "ddim" and fast.schedule.num_steps == 10
    assert max_gap(ticks(fast, obs, 20, seed=5), reference) < PARITY
    assert fast.last_result.rounds == 10
    # Picard on the same deterministic chain converges to the same actions (measured gap 2.4e-5)
    picard = wrap_lerobot_policy(policy, sampler="paradigms", chain="ddim", tolerance=1e-3)
    assert max_gap(ticks(picard, obs, 20, seed=5), reference) < 1e-3
    assert picard.last_result.rounds <= 10


def test_image_policy_sampled_as_lerobot_does():
    policy = lerobot_policy(image=True, env_state=False, num_inference_steps=20)
    obs = observation(2, image=True, env_state=False, seed=6)
    reference = ticks(policy, obs, 10, seed=8)
    fast = wrap_lerobot_policy(policy, sampler="ddpm")
    assert max_gap(ticks(fast, obs, 10, seed=8), reference) < PARITY
    fast = wrap_lerobot_policy(policy, sampler="speculative_picard")
    actions = ticks(fast, obs, 10, seed=8)
    assert all(a.shape == (2, 2) and bool(torch.isfinite(a).all()) for a in actions)
    assert 1 <= fast.last_result.rounds < 20


@pytest.mark.parametrize("name", available_samplers())
def test_every_sampler_runs_in_lerobots_loop(policy, name):
    obs = observation(2, seed=9)
    reference = ticks(policy, obs, 9, seed=1)
    options = {"tolerance": 1e-3} if name in ("picard", "paradigms") else {}
    fast = wrap_lerobot_policy(policy, sampler=name, **options)
    actions = ticks(fast, obs, 9, seed=1)  # two chunks
    assert all(a.shape == (2, 2) and bool(torch.isfinite(a).all()) for a in actions)
    result = fast.last_result
    assert result.rounds >= 1 and result.nfe >= result.rounds
    if name in ("picard", "paradigms"):  # same noise, same path: LeRobot's actions up to the tolerance
        assert max_gap(actions, reference) < 0.05
        assert result.rounds < 100


def test_generator_gives_reproducible_chunks_and_leaves_the_global_rng_alone(policy):
    batch = history(observation(2))
    a = chunk(wrap_lerobot_policy(policy, "ddpm", generator=torch.Generator().manual_seed(3)), batch, 0)
    torch.manual_seed(0)
    expected = torch.rand(2)
    fast = wrap_lerobot_policy(policy, "ddpm", generator=torch.Generator().manual_seed(3))
    b = chunk(fast, batch, 0)
    assert torch.equal(torch.rand(2), expected)
    assert torch.equal(a, b)


def test_initial_noise_passed_as_lerobot_does(policy):
    batch = history(observation(2))
    x_T = torch.randn(2, 16, 2, generator=torch.Generator().manual_seed(1))
    policy.reset()
    torch.manual_seed(2)
    reference = policy.predict_action_chunk(dict(batch), noise=x_T)
    fast = wrap_lerobot_policy(policy, "ddpm")
    fast.reset()
    torch.manual_seed(2)
    assert float((fast.predict_action_chunk(dict(batch), noise=x_T) - reference).abs().max()) < PARITY
    with pytest.raises(ValueError, match=r"x_T \(LeRobot's noise\) must have shape"):
        fast.predict_action_chunk(dict(batch), noise=torch.zeros(2, 8, 2))
    assert "conditional_sample" not in vars(policy.diffusion)  # removed after the failed call too


def test_one_call_at_a_time(policy):
    fast = wrap_lerobot_policy(policy, "ddpm")
    vars(policy.diffusion)["conditional_sample"] = lambda *a, **k: None  # another wrapper mid-call
    try:
        with pytest.raises(RuntimeError, match="one call at a time"):
            fast.predict_action_chunk(history(observation(1)))
    finally:
        del vars(policy.diffusion)["conditional_sample"]


def test_clear_errors(policy):
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.vqbet.configuration_vqbet import VQBeTConfig
    from lerobot.policies.vqbet.modeling_vqbet import VQBeTPolicy

    with pytest.raises(ValueError, match="policy must be a LeRobot DiffusionPolicy.*builtins.object"):
        wrap_lerobot_policy(object())
    from policy_sampler import DiffusionPolicy
    from policy_sampler.policy import DiffusionPolicyConfig

    ours = DiffusionPolicy(DiffusionPolicyConfig(obs_dim=4, action_dim=2, down_dims=(16, 32)))
    with pytest.raises(ValueError, match="policy_sampler's own DiffusionPolicy.*predict_action"):
        wrap_lerobot_policy(ours)
    state = {"observation.state": PolicyFeature(FeatureType.STATE, (4,))}
    action = {"action": PolicyFeature(FeatureType.ACTION, (2,))}
    act = ACTPolicy(ACTConfig(input_features={**state, "observation.environment_state": PolicyFeature(FeatureType.ENV, (4,))},
                              output_features=action, dim_model=16, n_heads=2, dim_feedforward=32, n_encoder_layers=1,
                              n_decoder_layers=1, use_vae=False, pretrained_backbone_weights=None, device="cpu"))
    with pytest.raises(ValueError, match=r"LeRobot ACTPolicy \(type 'act'\).*not supported.*no diffusion chain"):
        wrap_lerobot_policy(act)
    vqbet = VQBeTPolicy(VQBeTConfig(input_features={**state, "observation.image": PolicyFeature(FeatureType.VISUAL, (3, 96, 96))},
                                    output_features=action, pretrained_backbone_weights=None, gpt_n_layer=1, gpt_n_head=1,
                                    gpt_hidden_dim=32, vqvae_embedding_dim=32, vqvae_enc_hidden_dim=32, device="cpu"))
    with pytest.raises(ValueError, match=r"LeRobot VQBeTPolicy \(type 'vqbet'\).*not supported"):
        wrap_lerobot_policy(vqbet)

    with pytest.raises(ValueError, match="unknown sampler 'fastest'; available samplers"):
        wrap_lerobot_policy(policy, sampler="fastest")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['window'\] for sampler 'ddpm'"):
        wrap_lerobot_policy(policy, sampler="ddpm", window=4)
    with pytest.raises(ValueError, match="cannot be given with a Sampler instance"):
        wrap_lerobot_policy(policy, sampler=make_sampler("paradigms"), tolerance=0.1)
    with pytest.raises(ValueError, match="sampler must be a sampler name or a Sampler"):
        wrap_lerobot_policy(policy, sampler=3)
    with pytest.raises(ValueError, match="tolerance"):
        wrap_lerobot_policy(policy, sampler="paradigms", tolerance=-1.0)
    with pytest.raises(ValueError, match=r"num_inference_steps must be an integer in \[1, 100\]"):
        wrap_lerobot_policy(policy, sampler="ddpm", num_inference_steps=0)
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        wrap_lerobot_policy(policy, sampler="ddpm", generator=0)
    ddim = lerobot_policy(noise_scheduler_type="DDIM", num_inference_steps=10)
    with pytest.raises(ValueError, match="configured with noise_scheduler_type='DDIM'.*use sampler='ddim'"):
        wrap_lerobot_policy(ddim, sampler="speculative_picard")
    with pytest.raises(AttributeError, match="fixed at wrap time"):
        wrap_lerobot_policy(policy).sampler = make_sampler("ddpm")
