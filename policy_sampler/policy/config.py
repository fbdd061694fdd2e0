"""Configuration of :class:`~policy_sampler.policy.DiffusionPolicy`, kept apart from the modeling code.

Defaults follow Diffusion Policy's low-dim U-Net configs (Chi et al. 2023): horizon 16, 2 observation
steps, 8 executed action steps, a 256/512/1024 U-Net, and diffusers' ``DDPMScheduler`` with 100
training and 100 inference steps, ``squaredcos_cap_v2`` betas, epsilon prediction and ``clip_sample``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from policy_sampler.models.conditional_unet1d import ConditionalUnet1DConfig
from policy_sampler.validation import check_bool, check_int, check_number, is_int

__all__ = ["DiffusionPolicyConfig"]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class DiffusionPolicyConfig:
    """Everything needed to rebuild a policy (the normalizer's statistics live in the checkpoint).

    Observations: ``obs_keys`` name the low-dimensional observation entries (each ``[B, n_obs_steps,
    d_k]``), concatenated in that order; ``obs_dim`` is the total ``sum(d_k)``. With more than one key,
    ``obs_key_dims`` gives each ``d_k``; with one key it defaults to ``(obs_dim,)``.

    Chunking: the policy predicts ``horizon`` actions whose first ``n_obs_steps`` align with the
    observation history; it executes ``n_action_steps`` of them starting at index ``n_obs_steps - 1``.

    ``normalizer_min_range``: a dimension whose data range is below this is treated as constant: it is
    only centred (scale 1) instead of stretched to [-1, 1].
    """

    obs_dim: int
    action_dim: int
    obs_keys: tuple[str, ...] = ("state",)
    obs_key_dims: tuple[int, ...] | None = None
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    # U-Net (ConditionalUnet1DConfig fields)
    down_dims: tuple[int, ...] = field(default=(256, 512, 1024))
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 256
    cond_predict_scale: bool = True
    # noise scheduler (diffusers DDPMScheduler)
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    num_inference_steps: int = 100
    # normalization
    normalizer_min_range: float = 1e-4

    def __post_init__(self) -> None:
        check_int("obs_dim", self.obs_dim, minimum=1)
        check_int("action_dim", self.action_dim, minimum=1)
        if isinstance(self.obs_keys, str) or not hasattr(self.obs_keys, "__iter__"):
            raise ValueError(f"obs_keys must be a sequence of names, got {self.obs_keys!r}")
        self.obs_keys = tuple(self.obs_keys)
        if not self.obs_keys:
            raise ValueError("obs_keys must name at least one observation key")
        for key in self.obs_keys:
            if not isinstance(key, str) or not _KEY_RE.match(key) or key == "action":
                raise ValueError(
                    f"obs_keys entries must be identifiers (letters, digits, '_') other than 'action', got {key!r}"
                )
        if len(set(self.obs_keys)) != len(self.obs_keys):
            raise ValueError(f"obs_keys must be distinct, got {self.obs_keys}")
        if self.obs_key_dims is None:
            if len(self.obs_keys) > 1:
                raise ValueError(
                    f"obs_key_dims is required with several obs_keys {self.obs_keys} (one dim per key)"
                )
            self.obs_key_dims = (self.obs_dim,)
        else:
            if isinstance(self.obs_key_dims, (str, bytes)) or not hasattr(self.obs_key_dims, "__iter__"):
                raise ValueError(f"obs_key_dims must be a sequence of positive ints, got {self.obs_key_dims!r}")
            self.obs_key_dims = tuple(self.obs_key_dims)
            if len(self.obs_key_dims) != len(self.obs_keys) or not all(
                is_int(d) and d > 0 for d in self.obs_key_dims
            ):
                raise ValueError(
                    f"obs_key_dims must hold one positive int per obs key {self.obs_keys}, got {self.obs_key_dims}"
                )
            if sum(self.obs_key_dims) != self.obs_dim:
                raise ValueError(
                    f"obs_dim={self.obs_dim} must equal sum(obs_key_dims)={sum(self.obs_key_dims)}"
                )

        check_int("horizon", self.horizon, minimum=1)
        check_int("n_obs_steps", self.n_obs_steps, minimum=1)
        check_int("n_action_steps", self.n_action_steps, minimum=1)
        if self.n_obs_steps > self.horizon:
            raise ValueError(f"n_obs_steps={self.n_obs_steps} must not exceed horizon={self.horizon}")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ValueError(
                f"n_action_steps={self.n_action_steps} too large: the executed actions "
                f"[n_obs_steps-1, n_obs_steps-1+n_action_steps) = [{self.n_obs_steps - 1}, "
                f"{self.n_obs_steps - 1 + self.n_action_steps}) must fit in horizon={self.horizon}"
            )

        if isinstance(self.down_dims, (str, bytes)) or not hasattr(self.down_dims, "__iter__"):
            raise ValueError(f"down_dims must be a sequence of positive ints, got {self.down_dims!r}")
        self.down_dims = tuple(self.down_dims)
        unet = self.unet_config()  # validates the U-Net fields (ValueErrors name them)
        if self.horizon % unet.horizon_multiple != 0:
            raise ValueError(
                f"horizon={self.horizon} must be a multiple of {unet.horizon_multiple} "
                f"(2 ** (len(down_dims) - 1) with down_dims={list(self.down_dims)})"
            )

        check_int("num_train_timesteps", self.num_train_timesteps, minimum=1)
        check_int("num_inference_steps", self.num_inference_steps, minimum=1)
        if self.num_inference_steps > self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps={self.num_inference_steps} must not exceed "
                f"num_train_timesteps={self.num_train_timesteps}"
            )
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        for name in ("beta_start", "beta_end", "clip_sample_range", "normalizer_min_range"):
            setattr(self, name, check_number(name, getattr(self, name), positive=True))
        check_bool("clip_sample", self.clip_sample)

    # ------------------------------------------------------------------ derived
    @property
    def global_cond_dim(self) -> int:
        """Size of the flattened observation history fed to the U-Net: ``n_obs_steps * obs_dim``."""
        return self.n_obs_steps * self.obs_dim

    @property
    def action_slice(self) -> slice:
        """The executed part of the chunk: ``[n_obs_steps - 1, n_obs_steps - 1 + n_action_steps)``."""
        start = self.n_obs_steps - 1
        return slice(start, start + self.n_action_steps)

    def unet_config(self) -> ConditionalUnet1DConfig:
        return ConditionalUnet1DConfig(
            action_dim=self.action_dim,
            global_cond_dim=self.global_cond_dim,
            down_dims=self.down_dims,
            kernel_size=self.kernel_size,
            n_groups=self.n_groups,
            diffusion_step_embed_dim=self.diffusion_step_embed_dim,
            cond_predict_scale=self.cond_predict_scale,
        )

    def make_noise_scheduler(self):
        """A fresh diffusers ``DDPMScheduler`` (``variance_type='fixed_small'``) for these settings."""
        from diffusers import DDPMScheduler

        return DDPMScheduler(
            num_train_timesteps=self.num_train_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            beta_schedule=self.beta_schedule,
            variance_type="fixed_small",
            clip_sample=self.clip_sample,
            clip_sample_range=self.clip_sample_range,
            prediction_type=self.prediction_type,
        )

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("obs_keys", "obs_key_dims", "down_dims"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DiffusionPolicyConfig":
        if not isinstance(data, dict):
            raise ValueError(f"a policy config must be a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown policy config field(s) {unknown}; valid fields: {sorted(known)}")
        missing = sorted(f for f in ("obs_dim", "action_dim") if f not in data)
        if missing:
            raise ValueError(f"policy config is missing required field(s) {missing}")
        return cls(**data)
