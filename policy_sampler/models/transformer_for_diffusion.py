"""The time-series diffusion transformer of Diffusion Policy (DP-T), a denoiser over action chunks.

Chi et al. 2023, Sec. 3.3 ("Time-series diffusion transformer") and Appendix: a minGPT-style
encoder-decoder. The noisy actions are the decoder's tokens; the conditioning is a short memory of
tokens the decoder cross-attends to: the diffusion step's sinusoidal embedding as the first token,
then one token per observation step::

    memory = MLP([SinusoidalEmbedding(t); Linear(cond_dim, E)(obs_1..obs_To)] + learned positions)
                                                                              [B, 1 + To, E]
    x      = Dropout(Linear(action_dim, E)(x_t) + learned positions)         [B, horizon, E]
    x      = n_layer x DecoderLayer(x, memory)
    eps    = Linear(E, action_dim)(LayerNorm(x))                             [B, horizon, action_dim]

    DecoderLayer (pre-LayerNorm, as the reference, "important for stability"):
        x = x + Dropout(SelfAttention(LN(x)))            causal: token i attends to tokens j <= i
        x = x + Dropout(CrossAttention(LN(x), memory))   causal: token i attends to memory s <= i + 1
        x = x + Dropout(Linear(4E, E)(Dropout(GELU(Linear(E, 4E)(LN(x))))))

With ``causal_attn`` an action token never sees later action tokens, and action token ``i`` sees the
step token and the observation tokens ``1 .. i + 1`` (so the first token sees the first observation, the
reference network's memory mask). ``n_cond_layers > 0`` replaces the memory MLP with that many pre-LN
transformer encoder layers. Every operation acts within one batch row, so rows are independent (a
runtime may pad the batch). Configuration defaults are the paper's low-dim network (8 layers, 4 heads,
width 256, attention dropout 0.01: about 9M parameters); ``configs/policy/transformer_small.yaml`` has a
CPU-sized one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policy_sampler.models.conditional_unet1d import SinusoidalStepEmbedding
from policy_sampler.models.denoiser import NetworkDenoiser

__all__ = ["TransformerForDiffusion", "TransformerForDiffusionConfig", "TransformerForDiffusionDenoiser"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class TransformerForDiffusionConfig:
    """Hyper-parameters of :class:`TransformerForDiffusion` (defaults: the paper's low-dim DP-T).

    ``action_dim``: size of each action token; ``horizon``: action tokens (learned positions);
    ``n_obs_steps``: observation tokens; ``cond_dim``: features per observation step (0: the memory holds
    the step token only); ``n_layer``/``n_head``/``n_emb``: decoder depth, heads and width (``n_emb``
    even and divisible by ``n_head``); ``p_drop_emb``/``p_drop_attn``: dropout on the embeddings and in
    the layers (training only); ``causal_attn``: the causal masks above; ``n_cond_layers``: encoder layers
    over the memory (0: an MLP).
    """

    action_dim: int
    horizon: int = 16
    n_obs_steps: int = 2
    cond_dim: int = 0
    n_layer: int = 8
    n_head: int = 4
    n_emb: int = 256
    p_drop_emb: float = 0.0
    p_drop_attn: float = 0.01
    causal_attn: bool = True
    n_cond_layers: int = 0

    def __post_init__(self) -> None:
        for name in ("action_dim", "horizon", "n_obs_steps", "n_layer", "n_head", "n_emb"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("cond_dim", "n_cond_layers"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.n_emb % 2 or self.n_emb % self.n_head:
            raise ValueError(f"n_emb={self.n_emb} must be even and divisible by n_head={self.n_head}")
        for name in ("p_drop_emb", "p_drop_attn"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
            setattr(self, name, float(value))
        if not isinstance(self.causal_attn, bool):
            raise ValueError(f"causal_attn must be a bool, got {self.causal_attn!r}")

    @property
    def global_cond_dim(self) -> int:
        """Size of the flat conditioning the denoiser takes: ``n_obs_steps * cond_dim``."""
        return self.n_obs_steps * self.cond_dim

    @property
    def memory_tokens(self) -> int:
        return 1 + (self.n_obs_steps if self.cond_dim > 0 else 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TransformerForDiffusionConfig":
        return cls(**dict(data))


class Attention(nn.Module):
    """Multi-head attention of ``query`` tokens over ``context`` tokens with a boolean mask (True: attend)."""

    def __init__(self, n_emb: int, n_head: int, p_drop: float) -> None:
        super().__init__()
        self.n_head, self.p_drop = n_head, p_drop
        self.query = nn.Linear(n_emb, n_emb)
        self.key_value = nn.Linear(n_emb, 2 * n_emb)
        self.out = nn.Linear(n_emb, n_emb)

    def forward(self, query: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        b, t, e = query.shape
        heads = lambda z: z.reshape(b, z.shape[1], self.n_head, e // self.n_head).transpose(1, 2)  # noqa: E731
        k, v = self.key_value(context).chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(heads(self.query(query)), heads(k), heads(v), attn_mask=mask,
                                           dropout_p=self.p_drop if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, e))


class FeedForward(nn.Sequential):
    def __init__(self, n_emb: int, p_drop: float) -> None:
        super().__init__(nn.Linear(n_emb, 4 * n_emb), nn.GELU(), nn.Dropout(p_drop), nn.Linear(4 * n_emb, n_emb))


class EncoderLayer(nn.Module):
    """Pre-LN self-attention (unmasked) and feed-forward over the memory tokens."""

    def __init__(self, n_emb: int, n_head: int, p_drop: float) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(n_emb), Attention(n_emb, n_head, p_drop)
        self.norm2, self.mlp = nn.LayerNorm(n_emb), FeedForward(n_emb, p_drop)
        self.drop = nn.Dropout(p_drop)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, None))
        return x + self.drop(self.mlp(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Pre-LN masked self-attention, cross-attention to the memory and feed-forward."""

    def __init__(self, n_emb: int, n_head: int, p_drop: float) -> None:
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(n_emb), Attention(n_emb, n_head, p_drop)
        self.norm2, self.cross_attn = nn.LayerNorm(n_emb), Attention(n_emb, n_head, p_drop)
        self.norm3, self.mlp = nn.LayerNorm(n_emb), FeedForward(n_emb, p_drop)
        self.drop = nn.Dropout(p_drop)

    def forward(self, x: Tensor, memory: Tensor, self_mask: Tensor | None, memory_mask: Tensor | None) -> Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, self_mask))
        x = x + self.drop(self.cross_attn(self.norm2(x), memory, memory_mask))
        return x + self.drop(self.mlp(self.norm3(x)))


class TransformerForDiffusion(nn.Module):
    """DP-T (see the module docstring): ``forward(sample [B, T, action_dim], timestep LongTensor[B] | int,
    cond [B, n_obs_steps * cond_dim] | [B, n_obs_steps, cond_dim] | None) -> [B, T, action_dim]``,
    ``T <= horizon``."""

    def __init__(self, config: TransformerForDiffusionConfig) -> None:
        super().__init__()
        if not isinstance(config, TransformerForDiffusionConfig):
            raise ValueError(f"config must be a TransformerForDiffusionConfig, got {type(config).__name__}")
        self.config = c = config
        e = c.n_emb
        self.input_emb = nn.Linear(c.action_dim, e)
        self.pos_emb = nn.Parameter(torch.zeros(1, c.horizon, e))
        self.time_emb = SinusoidalStepEmbedding(e)
        self.cond_obs_emb = nn.Linear(c.cond_dim, e) if c.cond_dim > 0 else None
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, c.memory_tokens, e))
        self.drop = nn.Dropout(c.p_drop_emb)
        if c.n_cond_layers > 0:
            self.memory_encoder: nn.Module = nn.Sequential(
                *(EncoderLayer(e, c.n_head, c.p_drop_attn) for _ in range(c.n_cond_layers)))
        else:
            self.memory_encoder = nn.Sequential(nn.Linear(e, 4 * e), nn.Mish(), nn.Linear(4 * e, e))
        self.layers = nn.ModuleList(DecoderLayer(e, c.n_head, c.p_drop_attn) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(e)
        self.head = nn.Linear(e, c.action_dim)

        steps, slots = torch.arange(c.horizon)[:, None], torch.arange(c.memory_tokens)[None, :]
        self.register_buffer("self_mask", steps >= steps.T if c.causal_attn else None, persistent=False)
        self.register_buffer("memory_mask", slots <= steps + 1 if c.causal_attn else None, persistent=False)
        self.apply(self._init_weights)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.cond_pos_emb, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def denoiser(self, differentiable: bool = False) -> "TransformerForDiffusionDenoiser":
        """This network as a sampler denoiser ``(x, t, cond) -> Tensor like x`` (``differentiable``: its
        output keeps the autograd graph when grad is enabled)."""
        return TransformerForDiffusionDenoiser(self, differentiable)

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups as the reference trains DP-T: linear weights decay, biases, LayerNorms and the
        position embeddings do not."""
        decay = [p for m in self.modules() if isinstance(m, nn.Linear) for p in (m.weight,)]
        ids = {id(p) for p in decay}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]

    def _memory_tokens(self, t: Tensor, cond: Tensor | None, b: int) -> Tensor:
        c = self.config
        tokens = self.time_emb(t).to(self.pos_emb.dtype)[:, None, :]  # [B, 1, E]
        if self.cond_obs_emb is not None:
            if cond is None:
                raise ValueError(
                    f"cond is required: [B={b}, n_obs_steps * cond_dim = {c.global_cond_dim}] or "
                    f"[B, {c.n_obs_steps}, {c.cond_dim}], got None"
                )
            if tuple(cond.shape) == (b, c.global_cond_dim):
                cond = cond.reshape(b, c.n_obs_steps, c.cond_dim)
            elif tuple(cond.shape) != (b, c.n_obs_steps, c.cond_dim):
                raise ValueError(
                    f"cond must have shape [B={b}, {c.global_cond_dim}] or [B, {c.n_obs_steps}, {c.cond_dim}], "
                    f"got {list(cond.shape)}"
                )
            tokens = torch.cat((tokens, self.cond_obs_emb(cond.to(tokens.dtype))), dim=1)
        elif cond is not None and cond.numel() != 0:
            raise ValueError(f"this network takes no observations (cond_dim=0): cond must be None, got {list(cond.shape)}")
        return self.memory_encoder(self.drop(tokens + self.cond_pos_emb))

    def forward(self, sample: Tensor, timestep: Tensor | int, cond: Tensor | None = None) -> Tensor:
        c = self.config
        if not isinstance(sample, Tensor) or sample.dim() != 3 or sample.shape[-1] != c.action_dim \
                or not 0 < sample.shape[1] <= c.horizon:
            got = list(sample.shape) if isinstance(sample, Tensor) else type(sample).__name__
            raise ValueError(f"sample must be [B, T <= horizon={c.horizon}, action_dim={c.action_dim}], got {got}")
        b, steps = sample.shape[:2]
        if isinstance(timestep, Tensor):
            if timestep.is_floating_point() or timestep.is_complex():
                raise ValueError(f"timestep must be an integer tensor, got dtype {timestep.dtype}")
            t = timestep.to(device=sample.device, dtype=torch.long)
        elif _is_int(timestep):
            t = torch.tensor(timestep, device=sample.device)
        else:
            raise ValueError(f"timestep must be an int or an integer tensor, got {type(timestep).__name__}")
        if t.dim() == 0 or t.shape == (1,):
            t = t.reshape(1).expand(b)
        elif t.shape != (b,):
            raise ValueError(f"timestep must be a scalar or have shape [B={b}], got {list(t.shape)}")

        memory = self._memory_tokens(t, cond, b)
        x = self.drop(self.input_emb(sample.to(self.pos_emb.dtype)) + self.pos_emb[:, :steps])
        self_mask = None if self.self_mask is None else self.self_mask[:steps, :steps]
        memory_mask = None if self.memory_mask is None else self.memory_mask[:steps]
        for layer in self.layers:
            x = layer(x, memory, self_mask, memory_mask)
        return self.head(self.ln_f(x)).to(sample.dtype)


class TransformerForDiffusionDenoiser(NetworkDenoiser):
    """A :class:`TransformerForDiffusion` as the samplers' denoiser ``(x [N, T, action_dim], t
    LongTensor[N], cond [N, n_obs_steps * cond_dim] | None) -> Tensor like x`` (see
    :class:`~policy_sampler.models.denoiser.NetworkDenoiser`). The network must be in eval mode when it
    has dropout: a denoiser whose output is random would make every sampler's result random."""

    network_type = TransformerForDiffusion

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        c = self.model.config
        if self.model.training and (c.p_drop_attn > 0 or c.p_drop_emb > 0):
            raise ValueError("the transformer is in train mode with dropout: call model.eval() before sampling")
        return super().__call__(x, t, cond)
