"""The conditional 1D temporal U-Net of Diffusion Policy (CNN-based variant).

Architecture of Chi et al. 2023, "Diffusion Policy: Visuomotor Policy Learning via Action Diffusion"
(Sec. 3.3-3.4 and Appendix, "CNN-based Diffusion Policy"): a 1D convolutional U-Net over the action
horizon whose residual blocks are modulated by FiLM from a conditioning vector; the conditioning vector
is the concatenation of a diffusion-step embedding (sinusoidal features followed by an MLP) and the
flattened observation features of the last ``n_obs_steps`` steps ("global conditioning").

Layout (channels written as ``C_i = down_dims[i]``, ``n = len(down_dims)``)::

    step t -> SinusoidalEmbedding(E) -> Linear(E, 4E) -> Mish -> Linear(4E, E)   (E = step embed dim)
    cond   = concat(step embedding, global_cond)                                  [B, E + global_cond_dim]
    encoder level i (in -> C_i):   ResBlock(in, C_i), ResBlock(C_i, C_i), Conv1d(C_i, C_i, 3, stride 2)
                                   (no downsampling on the last level)
    mid:                           ResBlock(C_{n-1}, C_{n-1}) x 2
    decoder level i = n-2 .. 0:    concat skip -> ResBlock(2 C_{i+1}, C_i), ResBlock(C_i, C_i),
                                   ConvTranspose1d(C_i, C_i, 4, stride 2, padding 1)
    head:                          Conv1d(C_0, C_0, k) -> GroupNorm -> Mish, Conv1d(C_0, action_dim, 1)

    ResBlock(in, out): Conv1d(k) -> GroupNorm -> Mish, FiLM (scale * h + bias, or h + bias) from
                       Mish -> Linear(cond_dim, 2 out or out), Conv1d(k) -> GroupNorm -> Mish,
                       plus the residual (1x1 Conv1d when in != out).

    The decoder concatenates the outputs of encoder levels n-1 .. 1 (deepest first); as in the reference
    implementation, the output of encoder level 0 is not used as a skip.

Configuration (:class:`ConditionalUnet1DConfig`) is kept apart from the modeling class
(:class:`ConditionalUnet1D`), as in LeRobot and diffusers. The parameter count is
``model.num_parameters()`` (equivalently ``sum(p.numel() for p in model.parameters())``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from policy_sampler.validation import is_int

__all__ = [
    "ConditionalUnet1D",
    "ConditionalUnet1DConfig",
    "ConditionalUnet1DDenoiser",
]


@dataclass
class ConditionalUnet1DConfig:
    """Hyper-parameters of :class:`ConditionalUnet1D`.

    ``action_dim``: channels of the denoised sequence (the action dimension).
    ``global_cond_dim``: size of the global conditioning vector (observation feature dim x
    ``n_obs_steps``); 0 for an unconditional network.
    ``down_dims``: channels of each U-Net level, shallow to deep; ``len(down_dims) - 1`` downsamplings,
    so the horizon must be a multiple of ``2 ** (len(down_dims) - 1)``.
    ``kernel_size``: odd temporal kernel of the residual-block convolutions (keeps the length).
    ``n_groups``: GroupNorm groups; must divide every entry of ``down_dims``.
    ``diffusion_step_embed_dim``: even size of the sinusoidal step embedding and of the MLP output.
    ``cond_predict_scale``: FiLM with per-channel scale and bias (True) or bias only (False).
    """

    action_dim: int
    global_cond_dim: int = 0
    down_dims: tuple[int, ...] = field(default=(256, 512, 1024))
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 256
    cond_predict_scale: bool = True

    def __post_init__(self) -> None:
        if not is_int(self.action_dim) or self.action_dim <= 0:
            raise ValueError(f"action_dim must be a positive int, got {self.action_dim!r}")
        if not is_int(self.global_cond_dim) or self.global_cond_dim < 0:
            raise ValueError(f"global_cond_dim must be a non-negative int, got {self.global_cond_dim!r}")
        if isinstance(self.down_dims, (str, bytes)) or not hasattr(self.down_dims, "__iter__"):
            raise ValueError(f"down_dims must be a non-empty sequence of positive ints, got {self.down_dims!r}")
        self.down_dims = tuple(self.down_dims)
        if len(self.down_dims) == 0 or not all(is_int(d) and d > 0 for d in self.down_dims):
            raise ValueError(f"down_dims must be a non-empty sequence of positive ints, got {self.down_dims!r}")
        if not is_int(self.kernel_size) or self.kernel_size <= 0 or self.kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be a positive odd int (so convolutions keep the horizon), "
                f"got {self.kernel_size!r}"
            )
        if not is_int(self.n_groups) or self.n_groups <= 0:
            raise ValueError(f"n_groups must be a positive int, got {self.n_groups!r}")
        bad = [d for d in self.down_dims if d % self.n_groups != 0]
        if bad:
            raise ValueError(
                f"down_dims entries must be divisible by n_groups={self.n_groups} (GroupNorm), got {bad}"
            )
        d = self.diffusion_step_embed_dim
        if not is_int(d) or d <= 0 or d % 2 != 0:
            raise ValueError(f"diffusion_step_embed_dim must be a positive even int, got {d!r}")
        if not isinstance(self.cond_predict_scale, bool):
            raise ValueError(f"cond_predict_scale must be a bool, got {self.cond_predict_scale!r}")

    @property
    def cond_dim(self) -> int:
        """Size of the FiLM conditioning vector: step embedding + global conditioning."""
        return self.diffusion_step_embed_dim + self.global_cond_dim

    @property
    def horizon_multiple(self) -> int:
        """The horizon must be a positive multiple of this (``2 ** (len(down_dims) - 1)``)."""
        return 2 ** (len(self.down_dims) - 1)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["down_dims"] = list(self.down_dims)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConditionalUnet1DConfig":
        return cls(**data)


class SinusoidalStepEmbedding(nn.Module):
    """Transformer-style sinusoidal features of the (integer) diffusion step: ``[sin(t w_j), cos(t w_j)]``
    with ``w_j = 10000 ** (-j / (half - 1))``, ``j = 0 .. half - 1``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        scale = math.log(10000.0) / max(half - 1, 1)
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -scale)
        args = t.to(torch.float32)[:, None] * freqs[None, :]
        return torch.cat((args.sin(), args.cos()), dim=-1)


class Conv1dBlock(nn.Module):
    """Conv1d (same length) -> GroupNorm -> Mish."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two :class:`Conv1dBlock` with FiLM from the conditioning vector after the first, plus a residual."""

    def __init__(
        self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int, n_groups: int,
        cond_predict_scale: bool,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.cond_predict_scale = cond_predict_scale
        self.conv1 = Conv1dBlock(in_channels, out_channels, kernel_size, n_groups)
        self.conv2 = Conv1dBlock(out_channels, out_channels, kernel_size, n_groups)
        film_channels = 2 * out_channels if cond_predict_scale else out_channels
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, film_channels))
        self.residual_conv: nn.Module = (
            nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.conv1(x)
        film = self.cond_encoder(cond).unsqueeze(-1)  # [B, film_channels, 1]
        if self.cond_predict_scale:
            scale, bias = film.chunk(2, dim=1)
            h = scale * h + bias
        else:
            h = h + film
        h = self.conv2(h)
        return h + self.residual_conv(x)


class ConditionalUnet1D(nn.Module):
    """Diffusion Policy's conditional 1D U-Net (Chi et al. 2023, Sec. 3 / Appendix).

    ``forward(sample [B, horizon, action_dim], timestep LongTensor[B] | scalar, global_cond
    [B, global_cond_dim] | None) -> [B, horizon, action_dim]``: channels last, as in Diffusion Policy;
    the prediction is whatever the network was trained for (epsilon or sample).
    """

    def __init__(self, config: ConditionalUnet1DConfig) -> None:
        super().__init__()
        if not isinstance(config, ConditionalUnet1DConfig):
            raise ValueError(f"config must be a ConditionalUnet1DConfig, got {type(config).__name__}")
        self.config = config
        c = config
        e = c.diffusion_step_embed_dim
        cond_dim = c.cond_dim

        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalStepEmbedding(e),
            nn.Linear(e, 4 * e),
            nn.Mish(),
            nn.Linear(4 * e, e),
        )

        def res(cin: int, cout: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(
                cin, cout, cond_dim, c.kernel_size, c.n_groups, c.cond_predict_scale
            )

        dims = (c.action_dim, *c.down_dims)
        levels = list(zip(dims[:-1], dims[1:]))
        n = len(levels)

        self.down_modules = nn.ModuleList()
        for i, (cin, cout) in enumerate(levels):
            last = i == n - 1
            self.down_modules.append(nn.ModuleList([
                res(cin, cout),
                res(cout, cout),
                nn.Identity() if last else nn.Conv1d(cout, cout, 3, stride=2, padding=1),
            ]))

        mid = c.down_dims[-1]
        self.mid_modules = nn.ModuleList([res(mid, mid), res(mid, mid)])

        # Decoder: from the deepest level back to the first, each level doubles the length.
        self.up_modules = nn.ModuleList()
        for cin, cout in reversed(levels[1:]):
            # cout: channels of the deeper level (and of its skip), cin: channels of this level.
            self.up_modules.append(nn.ModuleList([
                res(2 * cout, cin),
                res(cin, cin),
                nn.ConvTranspose1d(cin, cin, 4, stride=2, padding=1),
            ]))

        first = c.down_dims[0]
        self.final_conv = nn.Sequential(
            Conv1dBlock(first, first, c.kernel_size, c.n_groups),
            nn.Conv1d(first, c.action_dim, 1),
        )

    # ------------------------------------------------------------------ helpers
    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (``sum(p.numel() for p in self.parameters())``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def denoiser(self, differentiable: bool = False) -> "ConditionalUnet1DDenoiser":
        """This network as a sampler denoiser ``(x, t, cond) -> Tensor like x`` (``differentiable``: its
        output keeps the autograd graph when grad is enabled)."""
        return ConditionalUnet1DDenoiser(self, differentiable)

    def _check_inputs(
        self, sample: Tensor, timestep: Tensor | int, global_cond: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        c = self.config
        if not isinstance(sample, Tensor) or sample.dim() != 3:
            shape = tuple(sample.shape) if isinstance(sample, Tensor) else type(sample).__name__
            raise ValueError(f"sample must be [B, horizon, action_dim={c.action_dim}], got {shape}")
        b, horizon, a = sample.shape
        if a != c.action_dim:
            raise ValueError(
                f"sample has action_dim {a} in its last dimension, expected action_dim={c.action_dim} "
                f"(sample is channels last: [B, horizon, action_dim])"
            )
        m = c.horizon_multiple
        if horizon <= 0 or horizon % m != 0:
            raise ValueError(
                f"horizon {horizon} cannot be downsampled {len(c.down_dims) - 1} times and upsampled back: "
                f"it must be a positive multiple of {m} (2 ** (len(down_dims) - 1))"
            )

        if isinstance(timestep, Tensor):
            t = timestep
            if t.is_floating_point() or t.is_complex():
                raise ValueError(f"timestep must be an integer tensor, got dtype {t.dtype}")
        elif is_int(timestep):
            t = torch.tensor(timestep)
        else:
            raise ValueError(f"timestep must be an int or an integer tensor, got {type(timestep).__name__}")
        t = t.to(device=sample.device, dtype=torch.long)
        if t.dim() == 0 or t.shape == (1,):
            t = t.reshape(1).expand(b)
        elif t.shape != (b,):
            raise ValueError(f"timestep must be a scalar or have shape [B={b}], got {tuple(t.shape)}")

        if c.global_cond_dim == 0:
            if global_cond is not None and not (
                isinstance(global_cond, Tensor) and global_cond.dim() == 2
                and global_cond.shape == (b, 0)
            ):
                raise ValueError(
                    "this network is unconditional (global_cond_dim=0): global_cond must be None, got "
                    f"{tuple(global_cond.shape) if isinstance(global_cond, Tensor) else type(global_cond).__name__}"
                )
            global_cond = None
        else:
            if global_cond is None:
                raise ValueError(
                    f"global_cond is required: expected [B={b}, global_cond_dim={c.global_cond_dim}], got None"
                )
            if not isinstance(global_cond, Tensor) or tuple(global_cond.shape) != (b, c.global_cond_dim):
                shape = tuple(global_cond.shape) if isinstance(global_cond, Tensor) else type(global_cond).__name__
                raise ValueError(
                    f"global_cond must have shape [B={b}, global_cond_dim={c.global_cond_dim}], got {shape}"
                )
        return t, global_cond

    # ------------------------------------------------------------------ forward
    def forward(
        self, sample: Tensor, timestep: Tensor | int, global_cond: Tensor | None = None
    ) -> Tensor:
        """``sample`` [B, horizon, action_dim], ``timestep`` LongTensor[B] or a scalar, ``global_cond``
        [B, global_cond_dim] (None when ``global_cond_dim == 0``) -> [B, horizon, action_dim]."""
        t, global_cond = self._check_inputs(sample, timestep, global_cond)
        x = sample.transpose(1, 2)  # [B, action_dim, horizon]

        step_features = self.diffusion_step_encoder[0](t)  # float32 sinusoids
        cond = self.diffusion_step_encoder[1:](step_features.to(self.diffusion_step_encoder[1].weight.dtype))
        cond = cond.to(x.dtype)
        if global_cond is not None:
            cond = torch.cat((cond, global_cond.to(x.dtype)), dim=-1)

        skips: list[Tensor] = []
        for res1, res2, down in self.down_modules:
            x = res1(x, cond)
            x = res2(x, cond)
            skips.append(x)
            x = down(x)

        for block in self.mid_modules:
            x = block(x, cond)

        # Skips are consumed deepest first; there is one decoder level fewer than encoder levels, so
        # the first (full-resolution) encoder level's skip is unused, as in the reference network.
        for res1, res2, up in self.up_modules:
            x = torch.cat((x, skips.pop()), dim=1)
            x = res1(x, cond)
            x = res2(x, cond)
            x = up(x)

        x = self.final_conv(x)
        return x.transpose(1, 2)


class ConditionalUnet1DDenoiser:
    """A :class:`ConditionalUnet1D` as the samplers' denoiser: ``(x [N, horizon, action_dim],
    t LongTensor[N], cond [N, global_cond_dim] | None) -> Tensor like x``.

    Runs under ``torch.no_grad`` unless ``differentiable`` (then autograd can differentiate the output
    with respect to ``x``, e.g. for guidance); ``x`` and ``cond`` are moved and cast to the model's device and dtype
    (of its first parameter), ``t`` to the model's device as int64, and the output is cast back to ``x``'s
    dtype and device. It does not change the model's train/eval mode (the network has no dropout or
    batch statistics, so the mode does not change its output; call ``model.eval()`` anyway).
    """

    def __init__(self, model: ConditionalUnet1D, differentiable: bool = False) -> None:
        if not isinstance(model, ConditionalUnet1D):
            raise ValueError(f"model must be a ConditionalUnet1D, got {type(model).__name__}")
        self.model = model
        self.differentiable = bool(differentiable)

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        p = next(self.model.parameters())
        xm = x.to(device=p.device, dtype=p.dtype)
        tm = t.to(device=p.device) if isinstance(t, Tensor) else t  # dtype checked by forward
        cm = cond.to(device=p.device, dtype=p.dtype) if cond is not None else None
        with torch.set_grad_enabled(self.differentiable and torch.is_grad_enabled()):
            out = self.model(xm, tm, cm)
        return out.to(device=x.device, dtype=x.dtype)

