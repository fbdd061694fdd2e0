"""Configuration of :func:`~policy_sampler.training.train`, kept apart from the loop (as LeRobot does).

Defaults follow Diffusion Policy's recipe (Chi et al. 2023): AdamW with lr 1e-4, betas 0.95/0.999 and
weight decay 1e-6, a cosine learning rate after 500 warm-up steps, an EMA of the weights with power
decay 0.75 (up to 0.9999). ``configs/train.yaml``'s ``train:`` section maps onto :class:`TrainConfig`
field for field (its ``ema:`` onto :class:`EMAConfig`), so ``train.lr=3e-4`` overrides one from hydra.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from policy_sampler.validation import check_bool, check_choice, check_int, check_number

__all__ = ["EMAConfig", "TrainConfig"]


@dataclass
class EMAConfig:
    """The EMA of the weights (:class:`~policy_sampler.training.EMA`): ``decay(n) = min(1 - (1 + n /
    inv_gamma) ** -power, max_decay)`` after ``update_after_step`` steps (``power=None``: a fixed
    ``max_decay``); ``enabled=False`` makes the saved weights the trained ones."""

    enabled: bool = True
    power: float | None = 0.75
    inv_gamma: float = 1.0
    max_decay: float = 0.9999
    update_after_step: int = 0

    def __post_init__(self) -> None:
        check_bool("ema.enabled", self.enabled)
        self.power = check_number("ema.power", self.power, positive=True, allow_none=True)
        self.inv_gamma = check_number("ema.inv_gamma", self.inv_gamma, positive=True)
        self.max_decay = check_number("ema.max_decay", self.max_decay, minimum=0)
        if self.max_decay >= 1:
            raise ValueError(f"ema.max_decay must be in [0, 1), got {self.max_decay!r}")
        self.update_after_step = check_int("ema.update_after_step", self.update_after_step, minimum=0)


@dataclass
class TrainConfig:
    """Everything about a training run but the policy's architecture (``DiffusionPolicyConfig``).

    Length: ``steps`` optimizer steps, or ``epochs`` passes over the train windows (exactly one of
    them). ``val_every``: steps between validations and checkpoint saves (also at the end). ``seed``
    seeds the model's initialization, the batches and the noise. ``num_threads``: ``torch.set_num_threads``
    for the run (None leaves it; on a small shared CPU one thread is often fastest for small models).
    ``progress``: a progress bar (plain lines when not on a terminal).
    """

    steps: int | None = 3000
    epochs: int | None = None
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.95, 0.999)
    lr_scheduler: str = "cosine"
    warmup_steps: int = 500
    grad_clip_norm: float | None = None
    ema: EMAConfig = field(default_factory=EMAConfig)
    seed: int = 0
    device: str = "cpu"
    val_every: int = 500
    num_workers: int = 0
    num_threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"give exactly one of steps or epochs, got steps={self.steps!r} epochs={self.epochs!r}")
        self.steps = check_int("steps", self.steps, minimum=1, allow_none=True)
        self.epochs = check_int("epochs", self.epochs, minimum=1, allow_none=True)
        self.batch_size = check_int("batch_size", self.batch_size, minimum=1)
        self.lr = check_number("lr", self.lr, positive=True)
        self.weight_decay = check_number("weight_decay", self.weight_decay, minimum=0)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else ()
        if len(betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(check_number("betas", b, minimum=0) for b in betas)
        if max(self.betas) >= 1:
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        from diffusers.optimization import SchedulerType

        check_choice("lr_scheduler", self.lr_scheduler, [kind.value for kind in SchedulerType])
        self.warmup_steps = check_int("warmup_steps", self.warmup_steps, minimum=0)
        self.grad_clip_norm = check_number("grad_clip_norm", self.grad_clip_norm, positive=True, allow_none=True)
        if isinstance(self.ema, Mapping):
            self.ema = EMAConfig(**_known("ema", self.ema, EMAConfig))
        elif not isinstance(self.ema, EMAConfig):
            raise ValueError(f"ema must be an EMAConfig or a mapping of its fields, got {type(self.ema).__name__}")
        self.seed = check_int("seed", self.seed, minimum=0)
        self.device = str(self.device)
        self.val_every = check_int("val_every", self.val_every, minimum=1)
        self.num_workers = check_int("num_workers", self.num_workers, minimum=0)
        self.num_threads = check_int("num_threads", self.num_threads, minimum=1, allow_none=True)
        check_bool("progress", self.progress)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """From a mapping such as hydra's ``train:`` section (``ema`` a nested mapping); an unknown key
        is a ``ValueError`` listing the known ones."""
        return cls(**_known("train", data, cls))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out


def _known(section: str, data: Mapping[str, Any], kind: type) -> dict[str, Any]:
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {section} setting(s) {unknown}; known: {sorted(names)}")
    return dict(data)
