"""A LeRobot policy directory as a policy of our own tools (``ChunkRunner``, the rollout, ``evaluate.py``).

``load_lerobot_policy(path)`` reads what LeRobot's ``save_pretrained`` writes (``config.json``,
``model.safetensors``, ``policy_preprocessor.json``, ``policy_postprocessor.json`` and their state
files) with LeRobot's own loaders and returns a :class:`LeRobotPolicy`: the interface our tools use
from a policy (``config.horizon / n_obs_steps / n_action_steps / action_dim / obs_keys``, ``device``,
``schedule``, ``schedule_for``, ``predict_action``, ``normalizer.normalize('action', ...)``,
``metadata``). Observations go through LeRobot's preprocessor (its normalization), the conditioning
is LeRobot's ``_prepare_global_conditioning``, the chain is LeRobot's U-Net and scheduler
(:class:`LeRobotChain`) and the chunk goes back through LeRobot's postprocessor.

Our tasks return one flat observation vector. A LeRobot DiffusionPolicy needs ``observation.state``
plus ``observation.environment_state`` or images, so ``policy_sampler.json`` beside the policy files
(written by ``scripts/train_lerobot.py``) can record how the flat vector splits into LeRobot's keys::

    {"task": "PolicySampler/ObstacleReach-v0",
     "observation_layout": [["observation.state", 4], ["observation.environment_state", 4]], ...}

With a layout the policy's ``obs_keys`` is ``("state",)`` (the flat vector); without one, its
``obs_keys`` are LeRobot's input keys and observations must come as a dict holding them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from policy_sampler.integrations.lerobot.chain import NO_DIFFUSION_CHAIN, LeRobotChain, require_lerobot, resolve_sampler
from policy_sampler.integrations.lerobot.wrapper import check_lerobot_policy
from policy_sampler.policy.diffusion_policy import PolicyOutput
from policy_sampler.samplers import Sampler
from policy_sampler.schedule import NoiseSchedule

__all__ = ["LAYOUT_FILE", "LeRobotPolicy", "LeRobotPolicyConfig", "is_lerobot_policy_dir", "load_lerobot_policy",
           "resolve_lerobot_policy_dir"]

LAYOUT_FILE = "policy_sampler.json"
FLAT_KEY = "state"  # our tasks' flat observation vector (policy_sampler.data.demos.OBS_KEY)
_PREPROCESSOR = "policy_preprocessor.json"
_POSTPROCESSOR = "policy_postprocessor.json"


def _is_policy_files(path: Path) -> bool:
    config = path / "config.json"
    if not (config.is_file() and (path / "model.safetensors").is_file() and (path / _PREPROCESSOR).is_file()):
        return False
    try:
        return "type" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


def resolve_lerobot_policy_dir(path: str | os.PathLike) -> Path | None:
    """The folder holding LeRobot's policy files: ``path`` itself, its ``pretrained_model/`` (a training
    checkpoint) or ``checkpoints/last/pretrained_model/`` (a training output folder); None if none is."""
    p = Path(path)
    for candidate in (p, p / "pretrained_model", p / "checkpoints" / "last" / "pretrained_model"):
        if _is_policy_files(candidate):
            return candidate
    return None


def is_lerobot_policy_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` (or a folder :func:`resolve_lerobot_policy_dir` finds under it) is a LeRobot policy."""
    return resolve_lerobot_policy_dir(path) is not None


@dataclass(frozen=True)
class LeRobotPolicyConfig:
    """What our tools read from a policy's config, taken from the LeRobot config."""

    horizon: int
    n_obs_steps: int
    n_action_steps: int
    action_dim: int
    obs_keys: tuple[str, ...]
    obs_key_dims: tuple[int, ...]
    num_inference_steps: int
    num_train_timesteps: int
    # our tools pass every LeRobot input (images included) as a flat entry of ``obs_keys``; LeRobot's
    # own preprocessor does the image handling, so no camera keys of ours (``DiffusionPolicyConfig.vision``)
    vision: None = None

    @property
    def image_keys(self) -> tuple[str, ...]:
        return ()

    @property
    def input_keys(self) -> tuple[str, ...]:
        return self.obs_keys

    @property
    def obs_dim(self) -> int:
        return sum(self.obs_key_dims)

    @property
    def action_slice(self) -> slice:
        """The executed part of the chunk: ``[n_obs_steps - 1, n_obs_steps - 1 + n_action_steps)``."""
        start = self.n_obs_steps - 1
        return slice(start, start + self.n_action_steps)


class _ActionNormalizer:
    """``normalize('action', x)`` / ``unnormalize('action', y)`` through LeRobot's own processors: the
    preprocessor's normalizer step (the pipeline itself wants an observation) and the postprocessor."""

    def __init__(self, preprocessor: Any, postprocessor: Any) -> None:
        from lerobot.processor import NormalizerProcessorStep

        steps = [s for s in preprocessor.steps if isinstance(s, NormalizerProcessorStep)]
        if len(steps) != 1:
            raise ValueError(f"the LeRobot preprocessor must have one normalizer step, found {len(steps)}")
        self._step, self._post = steps[0], postprocessor

    def normalize(self, name: str, x: Tensor) -> Tensor:
        from lerobot.processor import TransitionKey, create_transition

        self._check(name)
        device = getattr(self._step, "device", None)
        x = x.to(device) if device is not None else x
        return self._step(create_transition(action=x))[TransitionKey.ACTION]

    def unnormalize(self, name: str, y: Tensor) -> Tensor:
        self._check(name)
        return self._post(y)

    @staticmethod
    def _check(name: str) -> None:
        if name != "action":
            raise ValueError(f"a LeRobot policy's normalizer here handles 'action' only, got {name!r} "
                             "(observations go through LeRobot's preprocessor)")


class LeRobotPolicy:
    """A LeRobot ``DiffusionPolicy`` with its processors, behind our policy interface (module docstring).

    ``policy``: the LeRobot policy; ``preprocessor`` / ``postprocessor``: its processor pipelines;
    ``layout``: ``[(lerobot_key, dim), ...]`` splitting our flat observation, or None; ``metadata``:
    ``policy_sampler.json``'s content plus what the policy is.
    """

    def __init__(self, policy: Any, preprocessor: Any, postprocessor: Any,
                 layout: list[tuple[str, int]] | None = None, metadata: Mapping[str, Any] | None = None) -> None:
        check_lerobot_policy(policy)
        self.policy = policy
        self.preprocessor, self.postprocessor = preprocessor, postprocessor
        self.chain = LeRobotChain(policy.diffusion)
        lc = policy.config
        self._features = {key: tuple(ft.shape) for key, ft in lc.input_features.items()}
        self._image_keys = list(lc.image_features)
        if layout is not None:
            layout = [(str(k), int(d)) for k, d in layout]
            self._check_layout(layout)
            keys, dims = (FLAT_KEY,), (sum(d for _, d in layout),)
        else:
            keys = tuple(self._features)
            dims = tuple(int(np.prod(s)) for s in self._features.values())
        self.layout = layout
        self.config = LeRobotPolicyConfig(
            horizon=int(lc.horizon), n_obs_steps=int(lc.n_obs_steps), n_action_steps=int(lc.n_action_steps),
            action_dim=int(lc.action_feature.shape[0]), obs_keys=keys, obs_key_dims=dims,
            num_inference_steps=self.chain.num_inference_steps, num_train_timesteps=self.chain.num_train_timesteps,
        )
        self.normalizer = _ActionNormalizer(preprocessor, postprocessor)
        self.schedule = self.chain.schedule_for(None)
        self.metadata: dict[str, Any] = {"format": "lerobot", "policy_type": str(getattr(policy, "name", "")),
                                         **dict(metadata or {})}

    def _check_layout(self, layout: list[tuple[str, int]]) -> None:
        keys = [k for k, _ in layout]
        expected = {k: int(np.prod(s)) for k, s in self._features.items()}
        if self._image_keys or sorted(keys) != sorted(expected) or any(d != expected[k] for k, d in layout):
            raise ValueError(
                f"{LAYOUT_FILE}'s observation_layout {layout} must split the flat observation into exactly the "
                f"policy's non-image input features {expected}"
            )

    # ------------------------------------------------------------------ our policy interface
    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def schedule_for(self, num_inference_steps: int | None = None) -> NoiseSchedule:
        """The schedule of LeRobot's scheduler with ``num_inference_steps`` steps (None: the policy's own)."""
        return self.chain.schedule_for(num_inference_steps)

    def lerobot_batch(self, obs: Any) -> dict[str, Tensor]:
        """``obs`` (``{key: [B, n_obs_steps, d_key]}`` in our ``obs_keys``) as LeRobot's raw batch
        ``{lerobot_key: [B, n_obs_steps, *feature_shape]}`` (float32, not yet normalized)."""
        c = self.config
        if not isinstance(obs, Mapping):
            raise ValueError(f"obs must be a dict of tensors keyed by {list(c.obs_keys)}, got {type(obs).__name__}")
        missing = [k for k in c.obs_keys if k not in obs]
        if missing:
            raise ValueError(f"obs is missing key(s) {missing}; expected keys {list(c.obs_keys)}, got {list(obs)}")
        checked: dict[str, Tensor] = {}
        batch_size = None
        for key, dim in zip(c.obs_keys, c.obs_key_dims):
            value = obs[key]
            value = torch.from_numpy(value) if isinstance(value, np.ndarray) else value
            if not isinstance(value, Tensor) or not value.dtype.is_floating_point:
                raise ValueError(f"obs[{key!r}] must be a floating-point tensor, got {getattr(value, 'dtype', type(value).__name__)}")
            if value.ndim < 3 or value.shape[1] != c.n_obs_steps or value[0, 0].numel() != dim or value.shape[0] == 0 or (
                batch_size is not None and value.shape[0] != batch_size
            ):
                raise ValueError(f"obs[{key!r}] must have shape [B, n_obs_steps={c.n_obs_steps}, ...] with {dim} values "
                                 f"per step, got {tuple(value.shape)}")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"obs[{key!r}] contains NaN or inf")
            batch_size = value.shape[0]
            checked[key] = value.to(torch.float32).reshape(batch_size, c.n_obs_steps, -1)
        if self.layout is not None:
            parts = torch.split(checked[FLAT_KEY], [d for _, d in self.layout], dim=-1)
            return {k: part for (k, _), part in zip(self.layout, parts)}
        return {k: v.reshape(v.shape[0], v.shape[1], *self._features[k]) for k, v in checked.items()}

    def global_cond(self, obs: Any) -> Tensor:
        """LeRobot's conditioning of the observation history: its preprocessor, image stacking and
        ``_prepare_global_conditioning``: ``[B, global_cond_dim]``."""
        batch = self.preprocessor(self.lerobot_batch(obs))
        if self._image_keys:
            batch["observation.images"] = torch.stack([batch[k] for k in self._image_keys], dim=-4)
        return self.policy.diffusion._prepare_global_conditioning(batch)

    @torch.no_grad()
    def predict_action(
        self,
        obs: Any,
        sampler: str | Sampler | None = None,
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
        """Sample a chunk as ``DiffusionPolicy.predict_action`` does (same arguments and output), with
        LeRobot's processors, conditioning, U-Net and scheduler. ``sampler=None`` is the policy's own chain.
        ``x_T`` and ``noise`` not given are drawn in LeRobot's order from ``generator`` (torch's global RNG
        when None: then ``ddpm`` gives LeRobot's own ``predict_action_chunk`` for the same seed)."""
        c = self.config
        schedule = self.schedule_for(num_inference_steps)
        chosen = resolve_sampler(sampler, sampler_options, self.chain.deterministic)
        cond = self.global_cond(obs)
        x_T, drawn = self.chain.draw(cond.shape[0], schedule, generator, x_T=x_T, noise=noise is None)
        if noise is None:
            noise = drawn
        elif not isinstance(noise, Tensor):
            raise ValueError(f"noise must be a tensor, got {type(noise).__name__}")
        result = self.chain.sample(chosen, cond, schedule, x_T, noise, generator, guidance=guidance,
                                   trajectory_guess=trajectory_guess, deadline=deadline, x0_guess=x0_guess)
        chunk = self.postprocessor(result.sample)
        return PolicyOutput.from_result(result, chunk, c.action_slice, chosen, schedule)

    def __repr__(self) -> str:
        return f"LeRobotPolicy({type(self.policy).__name__}, obs_keys={self.config.obs_keys}, device={self.device})"


def load_lerobot_policy(path: str | os.PathLike, device: str | torch.device = "cpu") -> LeRobotPolicy:
    """The LeRobot DiffusionPolicy saved at ``path`` (see :func:`resolve_lerobot_policy_dir`), with its
    processors, in eval mode on ``device``, as a :class:`LeRobotPolicy`. Reads local files only."""
    require_lerobot()
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy as LeRobotDiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    folder = resolve_lerobot_policy_dir(path)
    if folder is None:
        raise FileNotFoundError(
            f"no LeRobot policy at {path}: expected config.json, model.safetensors and {_PREPROCESSOR} there, "
            "in its pretrained_model/ or in checkpoints/last/pretrained_model/"
        )
    kind = json.loads((folder / "config.json").read_text()).get("type")
    if kind != "diffusion":
        why = NO_DIFFUSION_CHAIN.get(kind, "it is not a diffusion policy")
        raise ValueError(f"the LeRobot policy at {folder} has type {kind!r}, which is not supported: {why}; "
                         "only type 'diffusion' has a diffusion chain to sample")
    device = str(torch.device(device))
    config = PreTrainedConfig.from_pretrained(str(folder))
    config.device = device
    # LeRobot's default image backbone asks torchvision for ImageNet weights while the model is built,
    # before model.safetensors replaces every weight: build it without them, so loading never downloads.
    config.pretrained_backbone_weights = None
    policy = LeRobotDiffusionPolicy.from_pretrained(str(folder), config=config)
    policy.to(device).eval()
    overrides = {"device_processor": {"device": device}}
    preprocessor, postprocessor = make_pre_post_processors(config, pretrained_path=str(folder),
                                                           preprocessor_overrides=overrides)
    extra: dict[str, Any] = {}
    if (folder / LAYOUT_FILE).is_file():
        extra = json.loads((folder / LAYOUT_FILE).read_text())
        if not isinstance(extra, dict):
            raise ValueError(f"{folder / LAYOUT_FILE} must hold a JSON object, got {type(extra).__name__}")
    layout = extra.get("observation_layout")
    return LeRobotPolicy(policy, preprocessor, postprocessor, layout=layout,
                         metadata={**extra, "path": str(folder)})
