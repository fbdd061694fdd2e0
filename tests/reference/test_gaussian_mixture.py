"""The analytic mixture denoiser is the posterior mean E[x0 | x_t] (the Bayes-optimal denoiser)."""

import pytest
import torch
from diffusers import DDPMScheduler

from policy_sampler import NoiseSchedule
from policy_sampler.reference import GaussianMixtureDenoiser


@pytest.mark.parametrize("t", [5, 40, 80])
def test_prediction_is_the_posterior_mean(t):
    """Orthogonality principle: the residual x0 - E[x0 | x_t] is uncorrelated with any function of x_t
    (here x_t itself and the prediction), which fails for a wrong posterior (e.g. std used as variance)."""
    schedule = NoiseSchedule.from_diffusers(
        DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type="sample"))
    denoiser = GaussianMixtureDenoiser([[-0.5, 0.2], [0.4, -0.3]], [0.1, 0.3], [1.0, 2.0], schedule)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    component = torch.multinomial(torch.tensor([1.0, 2.0]), n, replacement=True, generator=g)
    x0 = denoiser.means[component] + denoiser.stds[component, None] * torch.randn(n, 2, generator=g, dtype=torch.float64)
    a = schedule.alphas_cumprod[t]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(n, 2, generator=g, dtype=torch.float64)
    prediction = denoiser(x_t, torch.full((n,), t), None)
    residual = x0 - prediction
    for feature in (x_t, prediction, x_t.pow(2)):
        products = residual * (feature - feature.mean(0))
        z = products.mean(0) / (products.std(0) / n**0.5)
        assert z.abs().max() < 4.5, z
    assert residual.mean(0).abs().max() < 4.5 * residual.std(0).max() / n**0.5


def test_wrong_variance_is_caught():
    """The same check on a denoiser whose component stds are off by their square root fails."""
    schedule = NoiseSchedule.from_diffusers(
        DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type="sample"))
    right = GaussianMixtureDenoiser([[0.0]], [0.1], None, schedule)
    wrong = GaussianMixtureDenoiser([[0.0]], [0.1**0.5], None, schedule)
    g = torch.Generator().manual_seed(1)
    n, t = 200_000, 40
    x0 = 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    a = schedule.alphas_cumprod[t]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(n, 1, generator=g, dtype=torch.float64)
    steps = torch.full((n,), t)
    for denoiser, ok in ((right, True), (wrong, False)):
        products = (x0 - denoiser(x_t, steps, None)) * x_t
        z = float(products.mean() / (products.std() / n**0.5))
        assert (abs(z) < 4.5) == ok, z
