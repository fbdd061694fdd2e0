"""Real-time chunking's guidance goes through the network: checked on a denoiser whose Jacobian is known."""

import pytest
import torch

from policy_sampler import DiffusionPolicy
from policy_sampler.control import RealTimeChunking
from policy_sampler.policy.config import DiffusionPolicyConfig
from policy_sampler.samplers import SampleResult, make_sampler

OBS_DIM, ACTION_DIM, HORIZON = 4, 2, 16
C = 0.6  # the denoiser eps(x) = C * x has Jacobian C * I


@pytest.fixture()
def linear_policy(monkeypatch) -> DiffusionPolicy:
    cfg = DiffusionPolicyConfig(obs_dim=OBS_DIM, action_dim=ACTION_DIM, down_dims=(16, 32), diffusion_step_embed_dim=16)
    stats = {"state": {"min": [-1.0] * OBS_DIM, "max": [1.0] * OBS_DIM},
             "action": {"min": [-1.0] * ACTION_DIM, "max": [1.0] * ACTION_DIM}}
    policy = DiffusionPolicy(cfg, stats)
    monkeypatch.setattr(policy.ema_model, "forward", lambda x, t, cond=None: C * x)
    return policy


def bound_denoiser(policy: DiffusionPolicy, guidance: RealTimeChunking):
    """The guided denoiser and conditioning predict_action hands its sampler."""
    sampler = make_sampler("ddpm")
    seen = {}

    def capture(denoiser, schedule, x_T, cond=None, **_):
        seen.update(denoiser=denoiser, cond=cond)
        return SampleResult(sample=x_T, rounds=0, nfe=0, evaluations=0, rows_per_call=[], rounds_per_row=[])

    sampler.sample = capture
    policy.predict_action({"state": torch.zeros(2, 2, OBS_DIM)}, sampler=sampler, guidance=guidance,
                          generator=torch.Generator().manual_seed(0))
    return seen["denoiser"], seen["cond"]


def expected(x, t, target, weights, policy, jacobian_of_eps, max_guidance=5.0):
    """eps - min(beta, 1 / (1 - a)) sqrt(1 - a) g with g = (d x0 / dx)^T W (Y - x0) and
    d x0 / dx = (1 - sqrt(1 - a) * J) / sqrt(a) for an eps Jacobian J = jacobian_of_eps * I."""
    a = policy.schedule.alphas_cumprod[t].double().view(-1, 1, 1)
    s = (1 - a).sqrt()
    eps = C * x
    x0 = (x - s * eps) / a.sqrt()
    w = weights.view(1, -1, 1)
    grad = w * (target - x0) * (1 - s * jacobian_of_eps) / a.sqrt()
    return eps - torch.clamp(1 / (1 - a), max=max_guidance) * s * grad


@pytest.mark.parametrize("jacobian,jacobian_of_eps", [("full", C), ("identity", 0.0)])
def test_guidance_uses_the_network_jacobian(linear_policy, jacobian, jacobian_of_eps):
    """jacobian='full' differentiates through the network (here its Jacobian is C * I); 'identity'
    takes it as zero. Binding the guidance to a denoiser that runs under no_grad (the bug this test was
    written for) gives the identity result for both, and fails the 'full' case."""
    g = torch.Generator().manual_seed(1)
    target = torch.randn(2, HORIZON, ACTION_DIM, generator=g, dtype=torch.float64)
    weights = torch.linspace(1.0, 0.0, HORIZON, dtype=torch.float64)
    guidance = RealTimeChunking(target.float(), weights, jacobian=jacobian)
    denoiser, cond = bound_denoiser(linear_policy, guidance)
    x = torch.randn(2, HORIZON, ACTION_DIM, generator=g)
    t = torch.tensor([10, 70])
    with torch.no_grad():  # as inside predict_action
        got = denoiser(x, t, cond)
    want = expected(x.double(), t, target.float().double(), weights, linear_policy, jacobian_of_eps)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    other = expected(x.double(), t, target.float().double(), weights, linear_policy, C - jacobian_of_eps)
    assert (got.double() - other).abs().max() > 1e-2  # the two Jacobians give measurably different guidance


def test_full_jacobian_needs_a_differentiable_denoiser(linear_policy):
    target = torch.zeros(1, HORIZON, ACTION_DIM)
    guided, cond = RealTimeChunking(target, torch.ones(HORIZON, dtype=torch.float64)).bind(
        linear_policy.denoiser(), linear_policy.schedule, None)  # the no_grad denoiser
    with pytest.raises(ValueError, match="differentiable"):
        guided(torch.zeros(1, HORIZON, ACTION_DIM), torch.tensor([5]), cond)


def test_bad_jacobian_name():
    with pytest.raises(ValueError, match="jacobian"):
        RealTimeChunking(torch.zeros(1, HORIZON, ACTION_DIM), torch.ones(HORIZON), jacobian="diagonal")
