"""DiffusionPolicy: observation history in, an unnormalized action chunk out, sampled by any sampler.

The policy owns everything a control loop needs so none of it can be forgotten: the configuration,
the min-max :class:`~policy_sampler.policy.normalizer.Normalizer`, the U-Net and an EMA copy of its
weights (the copy used for inference), the diffusers ``DDPMScheduler`` used in training and the
:class:`~policy_sampler.schedule.NoiseSchedule` the samplers run.

``predict_action`` follows Diffusion Policy's flow (Chi et al. 2023, ``predict_action``): normalize the
``n_obs_steps`` low-dim observations, encode the camera images of each step (vision policies: the EMA
vision encoder, center crops), concatenate and flatten them as the denoiser's global conditioning, sample
a normalized ``[B, horizon, action_dim]`` chunk from ``x_T ~ N(0, I)``, unnormalize it and execute
``chunk[:, n_obs_steps - 1 : n_obs_steps - 1 + n_action_steps]``. The conditioning is computed once per
chunk, before sampling: the samplers' denoiser calls never run the vision encoder. The denoiser is the
U-Net or the DP-T transformer (``config.model``).

Checkpoint directory (written atomically by :meth:`DiffusionPolicy.save`)::

    config.json         {"format": "policy_sampler.DiffusionPolicy", "format_version": 1,
                         "policy": DiffusionPolicyConfig.to_dict(),
                         "dataset_stats": {field: {"min": [...], "max": [...]}},
                         "metadata": {...}}                   (task, dataset, training step, losses)
    model.safetensors   "model.<name>": the EMA denoiser weights (U-Net or transformer),
                        "obs_encoder.<name>": the EMA vision encoder weights (vision policies),
                        "normalizer.<name>": the normalizer buffers (the source of truth for stats)
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policy_sampler.models.conditional_unet1d import ConditionalUnet1D
from policy_sampler.models.denoiser import NetworkDenoiser
from policy_sampler.models.transformer_for_diffusion import TransformerForDiffusion
from policy_sampler.models.vision_encoder import VisionEncoder, check_image
from policy_sampler.policy.config import DiffusionPolicyConfig
from policy_sampler.policy.normalizer import Normalizer
from policy_sampler.samplers import SampleResult, Sampler, as_sampler
from policy_sampler.schedule import NoiseSchedule
from policy_sampler.serialization import atomic_directory, jsonable
from policy_sampler.validation import check_int

if TYPE_CHECKING:  # the runtime imports torch._dynamo (about 1 s): only when a runtime is set
    from policy_sampler.runtime import DenoiserRuntime

__all__ = ["CHECKPOINT_FORMAT", "DiffusionPolicy", "PolicyOutput"]

CHECKPOINT_FORMAT = "policy_sampler.DiffusionPolicy"
CHECKPOINT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class PolicyOutput:
    """``actions`` [B, n_action_steps, action_dim] and ``chunk`` [B, horizon, action_dim], unnormalized;
    ``rounds`` (sequential denoiser calls) and ``nfe`` (evaluations per sample) of the sampler;
    ``info``: the sampler's name and counters."""

    actions: Tensor
    chunk: Tensor
    rounds: int
    nfe: int
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: SampleResult, chunk: Tensor, action_slice: slice, sampler: Sampler,
                    schedule: NoiseSchedule) -> "PolicyOutput":
        """The output for ``result`` whose unnormalized sample is ``chunk``: the executed ``action_slice``
        of it, and the sampler's counters with its name and the schedule's length in ``info``."""
        info = dict(result.info)
        info.update(sampler=sampler.name, evaluations=result.evaluations, rows_per_call=result.rows_per_call,
                    num_inference_steps=schedule.num_steps)
        return cls(actions=chunk[:, action_slice], chunk=chunk, rounds=result.rounds, nfe=result.nfe, info=info)


def _frozen_copy(module: nn.Module) -> nn.Module:
    copy_ = copy.deepcopy(module)
    copy_.requires_grad_(False)
    return copy_.eval()


class DiffusionPolicy(nn.Module):
    """Diffusion Policy (U-Net or transformer denoiser; low-dim and camera observations as global
    conditioning) with pluggable samplers."""

    def __init__(self, config: DiffusionPolicyConfig, dataset_stats: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(config, DiffusionPolicyConfig):
            raise ValueError(f"config must be a DiffusionPolicyConfig, got {type(config).__name__}")
        self.config = config
        dims = dict(zip(config.obs_keys, config.obs_key_dims))
        dims["action"] = config.action_dim
        self.normalizer = Normalizer(dims, min_range=config.normalizer_min_range)
        if dataset_stats is not None:
            self.normalizer.fit(dataset_stats)
        self.model: nn.Module = (TransformerForDiffusion(config.transformer_config()) if config.model == "transformer"
                                 else ConditionalUnet1D(config.unet_config()))
        self.ema_model = _frozen_copy(self.model)
        self.obs_encoder = VisionEncoder(config.vision) if config.vision is not None else None
        self.ema_obs_encoder = _frozen_copy(self.obs_encoder) if self.obs_encoder is not None else None
        self.noise_scheduler = config.make_noise_scheduler()
        self.schedule = NoiseSchedule.from_diffusers(
            self.noise_scheduler, num_inference_steps=config.num_inference_steps
        )
        self.metadata: dict[str, Any] = {}

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        return next(self.ema_model.parameters()).device

    def denoiser(self, differentiable: bool = False) -> NetworkDenoiser:
        """The EMA denoiser as the samplers' denoiser ``(x [N, horizon, action_dim], t [N], cond) -> eps``;
        ``differentiable``: autograd can differentiate its output with respect to ``x`` (guidance)."""
        return self.ema_model.denoiser(differentiable)

    def trained_modules(self) -> nn.ModuleDict:
        """What training updates: the denoiser and, for vision policies, the vision encoder."""
        return nn.ModuleDict({"model": self.model, **({"obs_encoder": self.obs_encoder} if self.obs_encoder is not None else {})})

    def ema_modules(self) -> nn.ModuleDict:
        """The EMA copies of :meth:`trained_modules`, in the same order (what checkpoints hold)."""
        ema = {"model": self.ema_model, **({"obs_encoder": self.ema_obs_encoder} if self.ema_obs_encoder is not None else {})}
        return nn.ModuleDict(ema)

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups of :meth:`trained_modules`: every parameter decays, except the
        transformer's biases, LayerNorms and position embeddings (as Diffusion Policy trains DP-T)."""
        if isinstance(self.model, TransformerForDiffusion):
            groups = self.model.parameter_groups(weight_decay)
        else:
            groups = [{"params": list(self.model.parameters()), "weight_decay": weight_decay}]
        if self.obs_encoder is not None:
            groups[0]["params"] = [*groups[0]["params"], *self.obs_encoder.parameters()]
        return groups

    def set_runtime(self, mode: str | None = "eager", **options: Any) -> DenoiserRuntime | None:
        """Run :meth:`predict_action`'s denoiser calls through a
        :class:`~policy_sampler.runtime.DenoiserRuntime` (``mode`` 'eager', 'compile' or 'cuda_graph';
        ``options`` as its keyword arguments) wrapping the EMA U-Net on the policy's current device;
        ``mode=None`` removes it. Call it again after moving the policy to another device."""
        from policy_sampler.runtime import DenoiserRuntime

        runtime = None if mode is None else DenoiserRuntime(self.denoiser(), mode=mode, **options)
        self.__dict__["_runtime"] = runtime
        self.__dict__["_runtime_device"] = self.device
        return runtime

    @property
    def runtime(self) -> DenoiserRuntime | None:
        """The runtime set by :meth:`set_runtime`, or None (plain eager calls)."""
        return self.__dict__.get("_runtime")

    def sampling_denoiser(self) -> Any:
        """What :meth:`predict_action` hands the sampler: the runtime if one is set, else :meth:`denoiser`."""
        runtime = self.runtime
        if runtime is None:
            return self.denoiser()
        if self.__dict__["_runtime_device"] != self.device:
            raise ValueError(
                f"the runtime was set on {self.__dict__['_runtime_device']} but the policy is on {self.device}; "
                "call set_runtime again after moving the policy"
            )
        return runtime

    def train(self, mode: bool = True) -> "DiffusionPolicy":
        super().train(mode)
        self.ema_model.eval()  # the EMA copies are never trained
        if self.ema_obs_encoder is not None:
            self.ema_obs_encoder.eval()  # center crops
        return self

    # ------------------------------------------------------------------ observations
    def _check_obs(self, obs: Any, batch_size: int | None = None) -> dict[str, Tensor]:
        """Each low-dim key as a float tensor [B, n_obs_steps, d_k] and each image key as a uint8 tensor
        [B, n_obs_steps, H, W, 3]; a ValueError names the key and what is wrong."""
        c = self.config
        if not isinstance(obs, Mapping):
            raise ValueError(f"obs must be a dict of tensors keyed by {list(c.input_keys)}, got {type(obs).__name__}")
        missing = [k for k in c.input_keys if k not in obs]
        if missing:
            raise ValueError(f"obs is missing key(s) {missing}; expected keys {list(c.input_keys)}, got {list(obs)}")
        out: dict[str, Tensor] = {}
        for key, dim in zip(c.obs_keys, c.obs_key_dims):
            value = obs[key]
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            if not isinstance(value, Tensor):
                raise ValueError(f"obs[{key!r}] must be a tensor, got {type(value).__name__}")
            if not value.dtype.is_floating_point:
                raise ValueError(f"obs[{key!r}] must be a floating-point tensor, got dtype {value.dtype}")
            expected = (batch_size if batch_size is not None else "B", c.n_obs_steps, dim)
            if value.ndim != 3 or value.shape[1:] != (c.n_obs_steps, dim) or (
                batch_size is not None and value.shape[0] != batch_size
            ) or value.shape[0] == 0:
                raise ValueError(
                    f"obs[{key!r}] must have shape [B, n_obs_steps, {key}_dim] = "
                    f"[{expected[0]}, {c.n_obs_steps}, {dim}], got {tuple(value.shape)}"
                )
            if batch_size is None:
                batch_size = value.shape[0]
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"obs[{key!r}] contains NaN or inf")
            out[key] = value
        for key in c.image_keys:
            leading = (batch_size if batch_size is not None else "B", c.n_obs_steps)
            out[key] = check_image(f"obs[{key!r}]", obs[key], c.vision.image_shape, leading)
            batch_size = out[key].shape[0]
        return out

    def global_cond(self, obs: Mapping[str, Tensor], use_ema: bool = True) -> Tensor:
        """Normalized low-dim observations and (vision policies) image features of every observation
        step, concatenated and flattened: [B, n_obs_steps * obs_feature_dim]. The images go through the
        EMA encoder (eval mode: center crops) by default, the trained one with ``use_ema=False``."""
        obs = self._check_obs(obs)
        device = self.device
        parts = [
            self.normalizer.normalize(k, obs[k].to(device=device, dtype=torch.float32))
            for k in self.config.obs_keys
        ]
        b, steps = parts[0].shape[:2]
        if self.config.vision is not None:
            encoder = self.ema_obs_encoder if use_ema else self.obs_encoder
            frames = {k: obs[k].reshape(b * steps, *obs[k].shape[2:]) for k in self.config.image_keys}
            parts.append(encoder(frames).reshape(b, steps, -1))
        x = torch.cat(parts, dim=-1)
        return x.reshape(b, -1)

    # ------------------------------------------------------------------ training
    def compute_loss(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None, use_ema: bool = False
    ) -> Tensor:
        """DDPM training loss on a batch ``{"obs": {key: [B, n_obs_steps, ...]}, "action": [B, horizon, A]}``
        of raw (unnormalized) data: uniform random timesteps, ``DDPMScheduler.add_noise``, MSE between the
        denoiser's output and the target of ``prediction_type`` (the noise, for epsilon). The trained
        networks (random crops while in train mode), or the EMA copies with ``use_ema=True``."""
        c = self.config
        if "obs" not in batch or "action" not in batch:
            raise ValueError(f"batch must have 'obs' and 'action', got {list(batch)}")
        cond = self.global_cond(batch["obs"], use_ema=use_ema)
        action = batch["action"]
        if not isinstance(action, Tensor) or tuple(action.shape) != (cond.shape[0], c.horizon, c.action_dim):
            shape = tuple(action.shape) if isinstance(action, Tensor) else type(action).__name__
            raise ValueError(
                f"batch['action'] must have shape [B, horizon, action_dim] = "
                f"[{cond.shape[0]}, {c.horizon}, {c.action_dim}], got {shape}"
            )
        device = cond.device
        x0 = self.normalizer.normalize("action", action.to(device=device, dtype=torch.float32))
        b = x0.shape[0]
        gen_device = generator.device if generator is not None else device
        noise = torch.randn(x0.shape, generator=generator, device=gen_device).to(device)
        t = torch.randint(0, c.num_train_timesteps, (b,), generator=generator, device=gen_device).to(device)
        noisy = self.noise_scheduler.add_noise(x0, noise, t)
        pred = (self.ema_model if use_ema else self.model)(noisy, t, cond)
        if c.prediction_type == "epsilon":
            target = noise
        elif c.prediction_type == "sample":
            target = x0
        else:
            target = self.noise_scheduler.get_velocity(x0, noise, t)
        return F.mse_loss(pred, target)

    # ------------------------------------------------------------------ inference
    def schedule_for(self, num_inference_steps: int | None = None) -> NoiseSchedule:
        """The :class:`NoiseSchedule` with ``num_inference_steps`` steps of the policy's training scheduler
        (built once per step count and cached); ``None`` (or the configured count) is ``self.schedule``."""
        if num_inference_steps is None:
            return self.schedule
        n = check_int("num_inference_steps", num_inference_steps, minimum=1,
                      maximum=self.config.num_train_timesteps)  # at most num_train_timesteps
        if n == self.schedule.num_steps:
            return self.schedule
        cache = self.__dict__.setdefault("_schedule_cache", {})
        if n not in cache:
            cache[n] = NoiseSchedule.from_diffusers(self.noise_scheduler, num_inference_steps=n)
        return cache[n]

    @torch.no_grad()
    def predict_action(
        self,
        obs: Mapping[str, Tensor],
        sampler: str | Sampler = "ddpm",
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        x_T: Tensor | None = None,
        num_inference_steps: int | None = None,
        *,
        trajectory_guess: Tensor | None = None,
        deadline: float | None = None,
        x0_guess: Tensor | None = None,
        guidance: Any = None,
        **sampler_options: Any,
    ) -> PolicyOutput:
        """Sample an action chunk for a batch of observation histories.

        ``obs``: ``{key: [B, n_obs_steps, d_key]}`` float tensors and, for vision policies, ``{image_key:
        [B, n_obs_steps, H, W, 3]}`` uint8 tensors (extra keys are ignored). The conditioning (and the
        vision encoder) is computed once, before the sampler runs.
        ``sampler``: a name for :func:`make_sampler` (with ``sampler_options``) or a ``Sampler``.
        ``x_T`` ([B, horizon, action_dim]) fixes the initial noise, else it is drawn from ``generator``;
        ``noise`` ([K, B, horizon, action_dim]) fixes the per-step draws (see the sampler contract).
        ``num_inference_steps``: run the sampler on a schedule with this many steps, built from the
        policy's training scheduler (e.g. 16 for a DDIM-16 baseline; this changes the sampled law);
        ``None`` uses the policy's own schedule (``config.num_inference_steps``).
        ``trajectory_guess``, ``x0_guess`` and ``deadline`` go to samplers that take them (warm start, anytime; see
        :meth:`Sampler.sample`); both live in the normalized action space the sampler runs in.
        ``guidance``: an object with ``bind(denoiser, schedule, cond) -> (denoiser, cond)`` that steers
        the EMA denoiser (e.g. :class:`~policy_sampler.control.RealTimeChunking`'s inpainting), or None;
        it gets the differentiable denoiser when its ``differentiable`` attribute is true (the default),
        else the sampling denoiser (the runtime, when one is set).
        Uses the EMA weights. Returns unnormalized ``actions`` and ``chunk``.
        """
        c = self.config
        schedule = self.schedule_for(num_inference_steps)
        cond = self.global_cond(obs)
        b = cond.shape[0]
        device = cond.device
        shape = (b, c.horizon, c.action_dim)
        if x_T is None:
            gen_device = generator.device if generator is not None else device
            x_T = torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32).to(device)
        elif not isinstance(x_T, Tensor) or tuple(x_T.shape) != shape:
            got = tuple(x_T.shape) if isinstance(x_T, Tensor) else type(x_T).__name__
            raise ValueError(f"x_T must have shape [B, horizon, action_dim] = {list(shape)}, got {got}")
        else:
            x_T = x_T.to(device)
        if noise is not None:
            if not isinstance(noise, Tensor):
                raise ValueError(f"noise must be a tensor, got {type(noise).__name__}")
            noise = noise.to(device)

        chosen = as_sampler(sampler, sampler_options)

        if guidance is None:
            denoiser = self.sampling_denoiser()
        elif getattr(guidance, "differentiable", True):
            denoiser, cond = guidance.bind(self.denoiser(differentiable=True), schedule, cond)
        else:
            denoiser, cond = guidance.bind(self.sampling_denoiser(), schedule, cond)
        result = chosen.sample(denoiser, schedule, x_T, cond=cond, noise=noise, generator=generator,
                               trajectory_guess=trajectory_guess, deadline=deadline, x0_guess=x0_guess)
        chunk = self.normalizer.unnormalize("action", result.sample)
        return PolicyOutput.from_result(result, chunk, c.action_slice, chosen, schedule)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Tensor]:
        """What ``model.safetensors`` holds: the EMA networks' weights and the normalizer buffers."""
        state = {f"{name}.{k}": v for name, module in self.ema_modules().items()
                 for k, v in module.state_dict().items()}
        state.update({f"normalizer.{k}": v for k, v in self.normalizer.state_dict().items()})
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}

    def save(self, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the checkpoint directory ``path`` atomically: everything goes into a temporary directory
        beside it, which then replaces ``path`` (an existing checkpoint is swapped out only once the new
        one is complete; a failure leaves the old one, or nothing, and no temporary directory)."""
        from safetensors.torch import save_file

        target = Path(path).absolute()
        meta = dict(self.metadata)
        if metadata:
            meta.update(metadata)
        document = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "policy": self.config.to_dict(),
            "dataset_stats": self.normalizer.stats(),
            "normalizer_fitted": bool(self.normalizer.fitted),
            "metadata": jsonable(meta),
        }
        with atomic_directory(target) as tmp:
            save_file(self.checkpoint_state(), str(tmp / WEIGHTS_NAME), metadata={"format": CHECKPOINT_FORMAT})
            (tmp / CONFIG_NAME).write_text(json.dumps(document, indent=2) + "\n")
        return target

    @staticmethod
    def resolve_checkpoint(path: str | os.PathLike) -> Path:
        """``path`` itself if it holds ``config.json``, else its ``best/`` or ``last/`` checkpoint (a
        training run directory written by ``scripts/train.py``)."""
        p = Path(path)
        if (p / CONFIG_NAME).is_file():
            return p
        for sub in ("best", "last"):
            if (p / sub / CONFIG_NAME).is_file():
                return p / sub
        raise FileNotFoundError(
            f"no checkpoint at {p}: expected {CONFIG_NAME} and {WEIGHTS_NAME} there or in {p}/best or {p}/last"
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "DiffusionPolicy":
        """Rebuild a policy from a checkpoint directory (or a training run directory, see
        :meth:`resolve_checkpoint`) in eval mode on ``device``. Both the trained and EMA networks get the
        saved EMA weights."""
        ckpt = cls.resolve_checkpoint(path)
        config_path, weights_path = ckpt / CONFIG_NAME, ckpt / WEIGHTS_NAME
        document = _read_checkpoint_config(config_path)
        try:
            config = DiffusionPolicyConfig.from_dict(document["policy"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{config_path}: its 'policy' entry is not a valid policy config: {exc}") from exc
        policy = cls(config)
        policy.metadata = dict(document.get("metadata") or {})
        state = _read_checkpoint_weights(weights_path)
        prefixes = ("normalizer.", *(f"{name}." for name in policy.ema_modules()))
        stray = [k for k in state if not k.startswith(prefixes)]
        if stray:
            raise ValueError(f"unexpected tensors in {weights_path}: {stray[:5]}")

        def part(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

        try:
            for name, module in policy.ema_modules().items():
                module.load_state_dict(part(f"{name}."), strict=True)
                policy.trained_modules()[name].load_state_dict(part(f"{name}."), strict=True)
            policy.normalizer.load_state_dict(part("normalizer."), strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{weights_path} does not match the policy config in {config_path}: {exc}") from exc
        return policy.to(device).eval()


def _read_checkpoint_config(path: Path) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict; a ``ValueError`` names the file and what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"{path} must hold a JSON object, got a JSON {type(document).__name__}")
    if document.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint (its 'format' is {document.get('format')!r})")
    version = document.get("format_version", -1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{path}: format_version must be an int, got {version!r}")
    if version > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint format_version {version} is newer than this code ({CHECKPOINT_VERSION})")
    if "policy" not in document:
        raise ValueError(f"{path} has no 'policy' entry (the policy config)")
    return document


def _read_checkpoint_weights(path: Path) -> dict[str, Tensor]:
    """The checkpoint's tensors; a ``ValueError`` names the file when it is missing, truncated or
    corrupted, or holds NaN or inf (refused at load, not at the first prediction)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"no weights file {path} beside {path.parent / CONFIG_NAME}")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {exc}") from exc
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path} holds NaN or inf in {len(bad)} tensor(s), e.g. {bad[:3]}")
    return state

