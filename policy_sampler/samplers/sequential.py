"""The sequential references: ancestral DDPM and DDIM, one denoiser call per step."""

from __future__ import annotations

from torch import Tensor

from policy_sampler.samplers.base import DenoiserCall, SampleResult, Sampler, register_sampler
from policy_sampler.schedule import GaussianChain, NoiseSchedule
from policy_sampler.validation import check_number


def run_chain(call: DenoiserCall, chain: GaussianChain, x: Tensor, noise: Tensor) -> Tensor:
    """x_{k+1} = mean_k(x_k) + sigma_k * noise[k] for every step, as diffusers' ``step`` loop does."""
    tab = chain.tensors(x.device, x.dtype)
    batch = x.shape[0]
    stochastic = chain.stochastic_steps
    for k in range(chain.num_steps):
        t = tab["timesteps"][k].expand(batch)
        mean, _ = chain.mean(call(x, t), x, k)
        x = mean + tab["sigma"][k] * noise[k] if stochastic[k] else mean
    return x


@register_sampler
class DDPMSampler(Sampler):
    """Ancestral DDPM (Ho et al. 2020, Alg. 2; posterior mean of eq. 7), step for step
    ``DDPMScheduler.step`` with ``variance_type='fixed_small'``. The reference law of every sampler."""

    name = "ddpm"
    exact = True

    def __init__(self) -> None:
        pass

    def _sample(self, call, schedule: NoiseSchedule, x_T, noise, generator) -> SampleResult:
        x0 = run_chain(call, schedule.ddpm_chain(), x_T, noise)
        return call.result(x0, [call.rounds] * x_T.shape[0])


@register_sampler
class DDIMSampler(Sampler):
    """DDIM (Song et al. 2021, eq. 12), step for step ``DDIMScheduler.step``; ``eta`` scales the
    noise (0: deterministic; 1: the DDPM posterior variance, with the DDIM mean)."""

    name = "ddim"
    exact = False

    def __init__(self, eta: float = 0.0) -> None:
        self.eta = check_number("eta", eta, minimum=0)

    def _sample(self, call, schedule: NoiseSchedule, x_T, noise, generator) -> SampleResult:
        x0 = run_chain(call, schedule.ddim_chain(self.eta), x_T, noise)
        return call.result(x0, [call.rounds] * x_T.shape[0])
