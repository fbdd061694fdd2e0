"""Noise schedules read from diffusers schedulers, and the Gaussian chains they define.

A :class:`NoiseSchedule` holds what a diffusers ``DDPMScheduler`` or ``DDIMScheduler`` knows after
``set_timesteps``: the cumulative alphas, the inference timesteps (any spacing, or custom), the
prediction type and the clipping of the predicted sample. :meth:`NoiseSchedule.ddpm_chain` and
:meth:`NoiseSchedule.ddim_chain` turn it into a :class:`GaussianChain`: per-step coefficients of

    x_{k+1} = c_x0[k] * x0_hat_k + c_eps[k] * eps_hat_k + c_x[k] * x_k + sigma[k] * z_k,

the same arithmetic as ``DDPMScheduler.step`` (Ho et al. 2020, eq. 7) and ``DDIMScheduler.step``
(Song et al. 2021, eq. 12), with the *real* previous timestep of every step.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from policy_sampler.validation import check_int, check_number

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
_MIN_VARIANCE = 1e-20  # diffusers clamps the posterior variance here


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete diffusion schedule: ``alphas_cumprod`` over training timesteps, the inference
    timesteps (noisy to clean), and how a model output becomes a clean-sample prediction."""

    alphas_cumprod: Tensor  # float64 [num_train_timesteps]
    timesteps: Tensor  # int64 [K], strictly decreasing
    prediction_type: str = "epsilon"
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    final_alpha_cumprod: float = 1.0  # alpha_bar after the last step
    # the chains built from this schedule (one GaussianChain per kind), so their tables are built once
    _chains: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_chains"}  # caches may hold CUDA tensors

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _chains={})

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type={self.prediction_type!r} is not supported; use one of {PREDICTION_TYPES}"
            )
        ts = self.timesteps
        if ts.ndim != 1 or ts.numel() == 0:
            raise ValueError("timesteps must be a non-empty 1-D sequence")
        if ts.dtype.is_floating_point:
            raise ValueError("timesteps must be integers (training timesteps)")
        if bool((ts[1:] >= ts[:-1]).any()):
            raise ValueError(f"timesteps must be strictly decreasing, got {ts.tolist()}")
        if int(ts.min()) < 0 or int(ts.max()) >= self.alphas_cumprod.numel():
            raise ValueError(
                f"timesteps must lie in [0, {self.alphas_cumprod.numel() - 1}], got {ts.tolist()}"
            )
        check_number("clip_sample_range", self.clip_sample_range, positive=True)
        a = self.alphas_cumprod
        if a.ndim != 1 or not a.dtype.is_floating_point or not bool(((a > 0) & (a <= 1)).all()):
            raise ValueError("alphas_cumprod must be a 1-D float tensor with every value in (0, 1]")
        check_number("final_alpha_cumprod", self.final_alpha_cumprod, positive=True, maximum=1)

    @property
    def num_steps(self) -> int:
        """K, the number of transitions (denoiser evaluations of a sequential sampler)."""
        return int(self.timesteps.numel())

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.numel())

    @classmethod
    def from_diffusers(
        cls,
        scheduler: Any,
        num_inference_steps: int | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> "NoiseSchedule":
        """Read a diffusers ``DDPMScheduler`` or ``DDIMScheduler``.

        The scheduler is not modified: timesteps come from ``num_inference_steps`` (with the config's
        ``timestep_spacing``), or from custom ``timesteps``, or from the scheduler's own
        ``set_timesteps`` state, or else every training timestep. Settings this module does not
        sample (thresholding, other variance types, other scheduler classes) raise ``ValueError``.
        """
        from diffusers import DDIMScheduler, DDPMScheduler

        if not isinstance(scheduler, (DDPMScheduler, DDIMScheduler)):
            raise ValueError(
                f"scheduler {type(scheduler).__name__} is not supported; use DDPMScheduler or DDIMScheduler"
            )
        config = scheduler.config
        if config.get("thresholding", False):
            raise ValueError("thresholding=True is not supported (dynamic thresholding is not a clip)")
        if isinstance(scheduler, DDPMScheduler) and config.get("variance_type", "fixed_small") != "fixed_small":
            raise ValueError(
                f"variance_type={config.variance_type!r} is not supported; only 'fixed_small' is"
            )
        if config.get("timestep_spacing", "leading") not in TIMESTEP_SPACINGS:
            raise ValueError(
                f"timestep_spacing={config.timestep_spacing!r} is not supported; use one of {TIMESTEP_SPACINGS}"
            )
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("pass num_inference_steps or timesteps, not both")
        num_inference_steps = check_int("num_inference_steps", num_inference_steps, minimum=1,
                                        maximum=int(config.num_train_timesteps), allow_none=True)

        if timesteps is not None:
            steps = torch.as_tensor(list(timesteps), dtype=torch.int64)
        elif num_inference_steps is not None:
            fresh = type(scheduler).from_config(config)
            fresh.set_timesteps(num_inference_steps)
            steps = fresh.timesteps.to(torch.int64).cpu()
        elif scheduler.num_inference_steps is not None or getattr(scheduler, "custom_timesteps", False):
            steps = scheduler.timesteps.to(torch.int64).cpu()
        else:
            steps = torch.arange(config.num_train_timesteps - 1, -1, -1, dtype=torch.int64)

        alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64).cpu()
        if isinstance(scheduler, DDIMScheduler):
            final = float(scheduler.final_alpha_cumprod)
        else:
            final = 1.0
        return cls(
            alphas_cumprod=alphas_cumprod,
            timesteps=steps,
            prediction_type=config.prediction_type,
            clip_sample=bool(config.clip_sample),
            clip_sample_range=float(config.get("clip_sample_range", 1.0)),
            final_alpha_cumprod=final,
        )

    def alpha_bar_pairs(self) -> tuple[Tensor, Tensor]:
        """(alpha_bar at t_k, alpha_bar at the real next timestep t_{k+1}), float64 [K] each."""
        a = self.alphas_cumprod[self.timesteps]
        a_prev = torch.cat([a[1:], torch.tensor([self.final_alpha_cumprod], dtype=torch.float64)])
        return a, a_prev

    def ddpm_chain(self) -> "GaussianChain":
        """The ancestral DDPM chain of ``DDPMScheduler.step`` with ``variance_type='fixed_small'``
        (built once per schedule)."""
        if "ddpm" not in self._chains:
            self._chains["ddpm"] = self._ddpm_chain()
        return self._chains["ddpm"]

    def _ddpm_chain(self) -> "GaussianChain":
        a, a_prev = self.alpha_bar_pairs()
        beta = 1 - a / a_prev
        c_x0 = a_prev.sqrt() * beta / (1 - a)
        c_x = (a / a_prev).sqrt() * (1 - a_prev) / (1 - a)
        sigma = _posterior_std(a, a_prev)
        return GaussianChain(self, c_x0=c_x0, c_eps=torch.zeros_like(a), c_x=c_x, sigma=sigma)

    def ddim_chain(self, eta: float = 0.0) -> "GaussianChain":
        """The DDIM chain of ``DDIMScheduler.step`` (Song et al. 2021, eq. 12) with the given ``eta``
        (built once per schedule and eta)."""
        eta = check_number("eta", eta, minimum=0)
        key = ("ddim", eta)
        if key not in self._chains:
            self._chains[key] = self._ddim_chain(eta)
        return self._chains[key]

    def _ddim_chain(self, eta: float) -> "GaussianChain":
        a, a_prev = self.alpha_bar_pairs()
        sigma = eta * _posterior_std(a, a_prev)
        c_x0 = a_prev.sqrt()
        c_eps = (1 - a_prev - sigma**2).clamp(min=0).sqrt()
        return GaussianChain(self, c_x0=c_x0, c_eps=c_eps, c_x=torch.zeros_like(a), sigma=sigma)


def _posterior_std(a: Tensor, a_prev: Tensor) -> Tensor:
    """sqrt of the DDPM posterior variance (1 - a')/(1 - a) * (1 - a/a'), clamped as diffusers does;
    exactly zero where the variance is zero (the final step onto alpha_bar = 1)."""
    var = (1 - a_prev) / (1 - a) * (1 - a / a_prev)
    return torch.where(var > 0, var.clamp(min=_MIN_VARIANCE), torch.zeros_like(var)).sqrt()


@dataclass(frozen=True)
class GaussianChain:
    """Per-step coefficients (float64 [K]) of a Gaussian Markov chain driven by a denoiser.

    Step k maps x_k to ``mean_k(x_k) + sigma[k] * z_k`` with
    ``mean_k(x) = c_x0[k] * x0_hat + c_eps[k] * eps_hat + c_x[k] * x``, where ``x0_hat`` is the
    (clipped) clean-sample prediction and ``eps_hat`` the noise prediction, both read off the model
    output as diffusers does. ``noise_scale[k]`` is the DDPM posterior std of step k whatever the
    chain, the scale on which the Picard family measures convergence.
    """

    schedule: NoiseSchedule
    c_x0: Tensor
    c_eps: Tensor
    c_x: Tensor
    sigma: Tensor
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    @property
    def timesteps(self) -> Tensor:
        return self.schedule.timesteps

    def _memo(self, key: str, compute: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    @property
    def uses_eps(self) -> bool:
        return self._memo("uses_eps", lambda: bool((self.c_eps != 0).any()))

    @property
    def uses_x(self) -> bool:
        return self._memo("uses_x", lambda: bool((self.c_x != 0).any()))

    @property
    def stochastic_steps(self) -> list[bool]:
        """Whether each step adds noise, as a host list (read once per chain)."""
        return self._memo("stochastic_steps", lambda: self.stochastic.tolist())

    @property
    def stochastic(self) -> Tensor:
        """bool [K]: steps that add noise."""
        return self.sigma > 0

    @property
    def noise_scale(self) -> Tensor:
        a, a_prev = self.schedule.alpha_bar_pairs()
        return _posterior_std(a, a_prev)

    def draft_coefficients(self) -> tuple[Tensor, Tensor]:
        """(d0, d1), float64 [K]: the step's mean written as ``d0 * x0_hat + d1 * x`` with the noise
        prediction re-derived from x0_hat, ``eps = (x - sqrt(a) x0_hat) / sqrt(1 - a)``. Holding
        x0_hat fixed makes the chain linear in x: the frozen-x0 draft."""
        a, _ = self.schedule.alpha_bar_pairs()
        d0 = self.c_x0 - self.c_eps * a.sqrt() / (1 - a).sqrt()
        d1 = self.c_x + self.c_eps / (1 - a).sqrt()
        return d0, d1

    def tensors(self, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        """The coefficient tables on ``device`` in ``dtype``, plus the timesteps (int64): copied to a
        device once (:func:`device_table`), never per sampling call. Read-only."""
        key = (str(device), dtype)
        if key not in self._cache:
            a, _ = self.schedule.alpha_bar_pairs()
            d0, d1 = self.draft_coefficients()
            tables = {
                "sqrt_a": a.sqrt(),
                "sqrt_1ma": (1 - a).sqrt(),
                "c_x0": self.c_x0,
                "c_eps": self.c_eps,
                "c_x": self.c_x,
                "sigma": self.sigma,
                "noise_scale": self.noise_scale,
                "d0": d0,
                "d1": d1,
            }
            out = {name: device_table(value, device, dtype) for name, value in tables.items()}
            out["timesteps"] = device_table(self.timesteps, device, torch.int64)
            self._cache[key] = out
        return self._cache[key]

    def predict(self, model_output: Tensor, x: Tensor, k: Tensor | int) -> tuple[Tensor, Tensor]:
        """(x0_hat clipped, eps_hat) from a model output at step(s) ``k`` (int, or int64 per row of x).

        Same arithmetic as diffusers: x0 from the prediction type, then the clip; eps from the
        unclipped prediction (DDIM's ``use_clipped_model_output=False``).
        """
        tab = self.tensors(x.device, x.dtype)
        sqrt_a, sqrt_1ma = _per_row(tab["sqrt_a"], k, x), _per_row(tab["sqrt_1ma"], k, x)
        kind = self.schedule.prediction_type
        if kind == "epsilon":
            eps = model_output
            x0 = (x - sqrt_1ma * model_output) / sqrt_a
        elif kind == "sample":
            x0 = model_output
            eps = (x - sqrt_a * model_output) / sqrt_1ma
        else:
            x0 = sqrt_a * x - sqrt_1ma * model_output
            eps = sqrt_a * model_output + sqrt_1ma * x
        if self.schedule.clip_sample:
            r = self.schedule.clip_sample_range
            x0 = x0.clamp(-r, r)
        return x0, eps

    def mean(self, model_output: Tensor, x: Tensor, k: Tensor | int) -> tuple[Tensor, Tensor]:
        """(transition mean of step(s) k at x, x0_hat)."""
        tab = self.tensors(x.device, x.dtype)
        x0, eps = self.predict(model_output, x, k)
        out = _per_row(tab["c_x0"], k, x) * x0
        if self.uses_eps:
            out = out + _per_row(tab["c_eps"], k, x) * eps
        if self.uses_x:
            out = out + _per_row(tab["c_x"], k, x) * x
        return out, x0


def _per_row(table: Tensor, k: Tensor | int, like: Tensor) -> Tensor:
    """table[k] shaped to broadcast against ``like`` (k an int, or int64 over like's leading dims)."""
    if isinstance(k, int):
        return table[k]
    value = table[k]
    return value.reshape(value.shape + (1,) * (like.ndim - value.ndim))


_DEVICE_TABLES: "OrderedDict[tuple, Tensor]" = OrderedDict()
_DEVICE_TABLES_LOCK = threading.Lock()
_DEVICE_TABLES_MAX = 512


def device_table(values: Tensor, device: torch.device | str, dtype: torch.dtype) -> Tensor:
    """``values`` (a small host table: schedule coefficients, step indices) on ``device`` in ``dtype``.

    Copied once per content, device and dtype, then served from a bounded cache: sampling calls make
    no host-to-device copy (a blocking one on CUDA, which also breaks graph capture) for their tables.
    The result is shared: never modify it in place."""
    if values.device.type != "cpu":
        return values.to(device=device, dtype=dtype)
    host = values.detach().contiguous()
    key = (str(torch.device(device)), dtype, host.dtype, tuple(host.shape), host.reshape(-1).view(torch.uint8).numpy().tobytes())
    with _DEVICE_TABLES_LOCK:
        table = _DEVICE_TABLES.get(key)
        if table is not None:
            _DEVICE_TABLES.move_to_end(key)
            return table
    table = host.to(device=device, dtype=dtype)
    with _DEVICE_TABLES_LOCK:
        _DEVICE_TABLES[key] = table
        while len(_DEVICE_TABLES) > _DEVICE_TABLES_MAX:
            _DEVICE_TABLES.popitem(last=False)
    return table
