"""The exact denoiser of an isotropic Gaussian mixture under the DDPM forward process.

Data x0 ~ sum_c w_c N(mu_c, s_c^2 I); forward x_t = sqrt(a) x0 + sqrt(1 - a) eps with a = alpha_bar_t.
Then x_t | c ~ N(sqrt(a) mu_c, (a s_c^2 + 1 - a) I) and
E[x0 | x_t, c] = mu_c + sqrt(a) s_c^2 / (a s_c^2 + 1 - a) (x_t - sqrt(a) mu_c),
so E[x0 | x_t] is the posterior-weighted average: the Bayes-optimal denoiser, computed in float64.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from policy_sampler.schedule import NoiseSchedule


class GaussianMixtureDenoiser:
    """``denoiser(x, t, cond)`` returning the analytic prediction in ``prediction_type``.

    ``cond``, when given, is ``[N, *event]`` and shifts every component mean of row i by ``cond[i]``:
    a conditional mixture, so that a sampler mixing up rows and conditions is caught.
    """

    def __init__(
        self,
        means: Tensor | Sequence,
        stds: Tensor | Sequence | float,
        weights: Tensor | Sequence | None,
        schedule: NoiseSchedule,
    ) -> None:
        self.means = torch.as_tensor(means, dtype=torch.float64)  # [C, *event]
        n = self.means.shape[0]
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand(n).clone()
        w = torch.ones(n, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (n,) or bool((w <= 0).any()):
            raise ValueError(f"weights must be {n} positive numbers")
        self.log_weights = (w / w.sum()).log()
        self.alphas_cumprod = schedule.alphas_cumprod
        self.prediction_type = schedule.prediction_type

    @classmethod
    def random(
        cls, schedule: NoiseSchedule, dim: int, n_components: int = 3, std: float = 0.1,
        spread: float = 0.6, seed: int = 0,
    ) -> "GaussianMixtureDenoiser":
        """Components with means uniform in [-spread, spread]^dim, unequal weights, common std."""
        g = torch.Generator().manual_seed(seed)
        means = (torch.rand(n_components, dim, generator=g, dtype=torch.float64) * 2 - 1) * spread
        weights = torch.linspace(1.0, 2.0, n_components, dtype=torch.float64)
        return cls(means, std, weights, schedule)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.means.shape[1:])

    def posterior(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(E[x0 | x_t], component responsibilities [N, C]) in float64."""
        x = x.to(torch.float64)
        a = self.alphas_cumprod.to(x.device)[t.to(x.device)].reshape(-1, *([1] * (x.ndim - 1)))
        mu = self.means.to(x.device).unsqueeze(0)  # [1, C, *event]
        if cond is not None:
            mu = mu + cond.to(torch.float64).unsqueeze(1)
        s2 = self.stds.to(x.device).pow(2).reshape(1, -1, *([1] * (x.ndim - 1)))
        a_ = a.unsqueeze(1)
        var = a_ * s2 + 1 - a_  # [N, C, 1...]
        diff = x.unsqueeze(1) - a_.sqrt() * mu
        d = x[0].numel()
        sq = diff.pow(2).flatten(2).sum(-1)
        log_lik = -0.5 * sq / var.flatten(2)[..., 0] - 0.5 * d * var.flatten(2)[..., 0].log()
        logits = self.log_weights.to(x.device) + log_lik
        resp = torch.softmax(logits, dim=1)
        comp_mean = mu + a_.sqrt() * s2 / var * diff
        x0 = (resp.reshape(*resp.shape, *([1] * (x.ndim - 1))) * comp_mean).sum(1)
        return x0, resp

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        x0, _ = self.posterior(x, t, cond)
        x64 = x.to(torch.float64)
        a = self.alphas_cumprod.to(x.device)[t.to(x.device)].reshape(-1, *([1] * (x.ndim - 1)))
        eps = (x64 - a.sqrt() * x0) / (1 - a).sqrt()
        if self.prediction_type == "epsilon":
            out = eps
        elif self.prediction_type == "sample":
            out = x0
        else:
            out = a.sqrt() * eps - (1 - a).sqrt() * x0
        return out.to(x.dtype)

    def component_of(self, x0: Tensor, cond: Tensor | None = None) -> Tensor:
        """Index of the nearest component mean for each clean sample [N, *event] (for mode statistics)."""
        mu = self.means.to(x0.device).unsqueeze(0)
        if cond is not None:
            mu = mu + cond.to(torch.float64).unsqueeze(1)
        return (x0.to(torch.float64).unsqueeze(1) - mu).pow(2).flatten(2).sum(-1).argmin(1)


def chunk_mixture(schedule: NoiseSchedule, horizon: int = 16, action_dim: int = 2, seed: int = 0) -> GaussianMixtureDenoiser:
    """The action-chunk benchmark mixture: :meth:`GaussianMixtureDenoiser.random` in ``horizon * action_dim``
    dimensions (3 modes, std 0.1) with its means shaped ``[horizon, action_dim]`` like a DiffusionPolicy chunk."""
    flat = GaussianMixtureDenoiser.random(schedule, dim=horizon * action_dim, seed=seed)
    return GaussianMixtureDenoiser(flat.means.reshape(-1, horizon, action_dim), flat.stds, flat.log_weights.exp(),
                                   schedule)
