"""LeRobot's reverse diffusion chain as this module's samplers see it.

LeRobot 0.6.1 runs its reverse chain only in ``DiffusionModel.conditional_sample`` (Chi et al. 2023,
Alg. 1 with diffusers' schedulers): ``x_T ~ N(0, I)`` drawn with ``torch.randn`` on the model's device
and dtype, then for each scheduler timestep ``t`` one ``unet(x, t, global_cond=...)`` and one
``noise_scheduler.step``. ``DDPMScheduler.step`` draws one standard normal per step with ``t > 0``;
LeRobot's ``DDIMScheduler`` steps with ``eta = 0`` draw nothing. :class:`LeRobotChain` reads that
scheduler as a :class:`~policy_sampler.schedule.NoiseSchedule`, calls the same U-Net as a
``denoiser(x, t, cond)`` and draws ``x_T`` and the per-step noise in LeRobot's order, so ``ddpm``
(DDPM-configured) or ``ddim`` (DDIM-configured) on it reproduces LeRobot's own sampling for the same
random state, and the other samplers run on the same path (see the sampler contract's ``noise``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from policy_sampler.samplers import SampleResult, Sampler, as_sampler
from policy_sampler.schedule import NoiseSchedule
from policy_sampler.validation import check_int

__all__ = ["INSTALL_HINT", "NO_DIFFUSION_CHAIN", "LeRobotChain", "require_lerobot", "resolve_sampler"]

INSTALL_HINT = (
    "the LeRobot integration needs LeRobot (lerobot[diffusion]==0.6.1, which needs Python 3.12; its training "
    "extra for datasets and lerobot-train): run `bash scripts/setup.sh --lerobot` and use "
    ".venv-lerobot/bin/python, or in a Python 3.12 environment `pip install \"lerobot[diffusion,training]==0.6.1\"` "
    "and `pip install -e <this repository>`"
)

# LeRobot policies without a diffusion chain to sample, by their registered type name
NO_DIFFUSION_CHAIN = {
    "act": "ACT decodes its action chunk in one pass of a transformer (no diffusion chain)",
    "vqbet": "VQ-BeT picks discrete codes with a GPT and decodes them (no diffusion chain)",
    "tdmpc": "TD-MPC plans with MPPI on a learned world model (no diffusion chain)",
}


def require_lerobot() -> Any:
    """LeRobot's ``DiffusionPolicy`` class; an ``ImportError`` saying how to install LeRobot if it is missing."""
    try:
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    except ImportError as exc:
        raise ImportError(f"LeRobot is not importable here ({exc}); {INSTALL_HINT}") from exc
    return DiffusionPolicy


def samples_deterministic_ddim(sampler: Sampler) -> bool:
    """True when ``sampler`` samples the deterministic DDIM chain (``ddim`` with ``eta=0``, or
    ``picard``/``paradigms`` with ``chain='ddim'``): the law of a DDIM-configured LeRobot policy."""
    if sampler.name == "ddim":
        return float(getattr(sampler, "eta", 0.0)) == 0.0
    return getattr(sampler, "chain", None) == "ddim"


def resolve_sampler(sampler: str | Sampler | None, options: dict[str, Any], deterministic: bool) -> Sampler:
    """The sampler to run: ``None`` is the policy's own chain (``ddpm``, or ``ddim`` for a
    DDIM-configured policy); a name goes through :func:`make_sampler` (its errors list the valid names
    and options). A DDIM-configured policy samples a deterministic map, so only samplers of that
    chain are accepted there (anything else would sample another law)."""
    if sampler is None:
        sampler = "ddim" if deterministic else "ddpm"
    chosen = as_sampler(sampler, options)
    if deterministic and not samples_deterministic_ddim(chosen):
        raise ValueError(
            f"sampler {chosen!r} samples the DDPM chain, but this LeRobot policy is configured with "
            "noise_scheduler_type='DDIM' (a deterministic chain): use sampler='ddim' (eta=0), or "
            "'picard'/'paradigms' with chain='ddim'; or set the policy's noise_scheduler_type to 'DDPM'"
        )
    return chosen


class LeRobotChain:
    """The reverse chain of a LeRobot ``DiffusionModel`` (``policy.diffusion``): its schedules, its
    U-Net as a denoiser, LeRobot's order of random draws, and a sampler run on them."""

    def __init__(self, model: Any) -> None:
        from diffusers import DDIMScheduler

        for name in ("unet", "noise_scheduler", "num_inference_steps", "conditional_sample"):
            if not hasattr(model, name):
                raise ValueError(
                    f"policy.diffusion has no {name!r}: not the DiffusionModel of LeRobot 0.6.1's DiffusionPolicy"
                )
        self.model = model
        # LeRobot steps DDIMScheduler with eta = 0: no per-step draws, a deterministic chain
        self.deterministic = isinstance(model.noise_scheduler, DDIMScheduler)
        self._schedules: dict[int, NoiseSchedule] = {}

    @property
    def num_inference_steps(self) -> int:
        """LeRobot's own step count (``config.num_inference_steps``, or every training step)."""
        return int(self.model.num_inference_steps)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.model.noise_scheduler.config.num_train_timesteps)

    def schedule_for(self, num_inference_steps: int | None = None) -> NoiseSchedule:
        """The schedule LeRobot's scheduler runs with ``num_inference_steps`` steps (None: LeRobot's own)."""
        n = check_int("num_inference_steps", num_inference_steps, minimum=1, maximum=self.num_train_timesteps,
                      allow_none=True)
        n = self.num_inference_steps if n is None else n
        if n not in self._schedules:
            self._schedules[n] = NoiseSchedule.from_diffusers(self.model.noise_scheduler, num_inference_steps=n)
        return self._schedules[n]

    def denoiser(self, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        """LeRobot's U-Net as ``denoiser(x [N, horizon, action_dim], t [N], cond [N, global_cond_dim])``."""
        return self.model.unet(x, t, global_cond=cond)

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        param = next(self.model.parameters())
        return param.device, param.dtype

    def draw(
        self, batch_size: int, schedule: NoiseSchedule, generator: torch.Generator | None = None,
        x_T: Tensor | None = None, noise: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """``(x_T, noise)`` drawn in LeRobot's order: ``x_T`` (unless given; then its shape is checked),
        then, with ``noise``, one ``[B, horizon, action_dim]`` draw per step where LeRobot's scheduler
        draws (DDPM, ``t > 0``) and zeros elsewhere, where the chain adds no noise (else None). From
        ``generator``, or torch's global RNG when it is None, on the model's device and dtype."""
        device, dtype = self._device_dtype()
        shape = (batch_size, self.model.config.horizon, self.model.config.action_feature.shape[0])
        gen_device = generator.device if generator is not None else device

        def randn() -> Tensor:
            return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)

        if x_T is None:
            x_T = randn()
        elif not isinstance(x_T, Tensor) or tuple(x_T.shape) != shape:
            got = tuple(x_T.shape) if isinstance(x_T, Tensor) else type(x_T).__name__
            raise ValueError(f"x_T (LeRobot's noise) must have shape [B, horizon, action_dim] = {list(shape)}, got {got}")
        x_T = x_T.to(device=device, dtype=dtype)
        if not noise:
            return x_T, None
        steps = torch.zeros((schedule.num_steps, *shape), device=device, dtype=dtype)
        if not self.deterministic:
            for k, t in enumerate(schedule.timesteps.tolist()):
                if t > 0:
                    steps[k] = randn()
        return x_T, steps

    def sample(
        self,
        sampler: Sampler,
        global_cond: Tensor | None,
        schedule: NoiseSchedule,
        x_T: Tensor,
        noise: Tensor | None,
        generator: torch.Generator | None = None,
        guidance: Any = None,
        **extras: Any,
    ) -> SampleResult:
        """Run ``sampler`` from ``x_T`` conditioned on LeRobot's ``global_cond``; ``guidance`` (an object
        with ``bind(denoiser, schedule, cond)``) steers the U-Net; ``extras`` are
        :meth:`Sampler.sample`'s keyword-only arguments."""
        denoiser, cond = self.denoiser, global_cond
        if guidance is not None:
            denoiser, cond = guidance.bind(denoiser, schedule, cond)
        return sampler.sample(denoiser, schedule, x_T, cond=cond, noise=noise, generator=generator, **extras)
