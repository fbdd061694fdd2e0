"""A consistency-distilled student of a trained DiffusionPolicy: 1-3 network calls per action chunk.

What a user picks instead of an exact sampler when speed matters most (Consistency Policy, Prasad et
al., arXiv 2405.07503, after consistency distillation, Song et al. 2023, Alg. 2). It samples
*another* law than the teacher's DDPM chain; ``scripts/law_fidelity.py`` measures how far.

**Distillation.** The student ``f(x, t)`` maps a noisy chunk at training timestep ``t`` to the end of
the teacher's probability-flow ODE (deterministic DDIM with the teacher's clip). On a grid
``t_0 = 0 < t_1 < ... < t_N = T - 1`` of training timesteps, with ``x_{t_{n+1}}`` the forward process
applied to a demonstration chunk, one teacher DDIM step gives ``x^_{t_n}`` and the loss is

    || f_theta(x_{t_{n+1}}, t_{n+1}) - f_target(x^_{t_n}, t_n) ||^2                       (CD, eq. 7)

where ``f_target`` is an EMA of the student (rate ``target_decay``), except at ``n = 0`` where it is
the teacher's own clean prediction at ``x^_{t_0}`` (the ODE's end point: the boundary condition).
The student is the teacher's U-Net, initialized with the teacher's weights and read in v-form,
``f(x, t) = sqrt(a_t) x - sqrt(1 - a_t) F_theta(x, t)`` (a = alpha_bar): at low noise that is the
teacher's clean prediction at initialization, and no coefficient exceeds 1 at any noise level
(the epsilon form divides by sqrt(a_T) ~ 1e-2 at t = T).

**Sampling** (multistep consistency sampling, Song et al. 2023, Alg. 1): ``x0 = f(x_T, t_N)``; for
each further timestep ``s`` of the plan, ``x0 = f(sqrt(a_s) x0 + sqrt(1 - a_s) z, s)``. Outputs are
clipped to the teacher's ``clip_sample_range``.

The student is saved as a :class:`~policy_sampler.policy.DiffusionPolicy` checkpoint (the same
config and normalizer as the teacher, the student's weights) whose metadata ``consistency`` holds
the grid and the distillation settings; :class:`ConsistencyStudentSampler` loads it.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from policy_sampler.policy import DiffusionPolicy
from policy_sampler.samplers.base import DenoiserCall, SampleResult, Sampler, check_positive, register_baseline
from policy_sampler.schedule import NoiseSchedule

__all__ = ["ConsistencyStudentSampler", "DistillConfig", "distill", "load_student", "student_plan"]

METADATA_KEY = "consistency"


@dataclass
class DistillConfig:
    """Settings of :func:`distill` (the defaults are what docs/exactness.md reports)."""

    steps: int = 3000           # optimizer steps (about 35 min on one CPU thread at batch 256)
    batch_size: int = 256
    lr: float = 1e-4
    warmup_steps: int = 100
    grid_intervals: int = 20    # N: teacher DDIM steps between t = 0 and t = T - 1
    target_decay: float = 0.95  # EMA rate of the target network (CD's mu)
    seed: int = 0
    num_threads: int | None = None
    log_every: int = 250        # steps between progress lines (also when not on a terminal)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grid_intervals", "log_every"):
            check_positive(name, getattr(self, name), integer=True)
        check_positive("lr", self.lr)
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        if not (isinstance(self.target_decay, (int, float)) and 0 <= self.target_decay < 1):
            raise ValueError(f"target_decay must be in [0, 1), got {self.target_decay!r}")
        if self.num_threads is not None:
            check_positive("num_threads", self.num_threads, integer=True)


def distillation_grid(num_train_timesteps: int, intervals: int) -> list[int]:
    """``t_0 = 0 < ... < t_N = T - 1``: N + 1 evenly spaced training timesteps (ascending)."""
    if not 1 <= intervals < num_train_timesteps:
        raise ValueError(f"grid_intervals must be in [1, {num_train_timesteps - 1}], got {intervals}")
    return sorted({round(i * (num_train_timesteps - 1) / intervals) for i in range(intervals + 1)})


def student_plan(grid: list[int], steps: int) -> list[int]:
    """The timesteps a ``steps``-step sample evaluates the student at, descending from ``t_N``: evenly
    spaced grid points (1 step: [T - 1]; 3 steps on a 20-interval grid of 100: [99, 64, 30])."""
    check_positive("steps", steps, integer=True)
    n = len(grid) - 1
    if steps > n:
        raise ValueError(f"steps must be at most the grid's {n} intervals, got {steps}")
    return [grid[n - round(i * n / steps)] for i in range(steps)]


def _student_x0(model, x: Tensor, t: Tensor, cond: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """f(x, t) = sqrt(a_t) x - sqrt(1 - a_t) F(x, t) (unclipped)."""
    a = alphas_cumprod[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return a.sqrt() * x - (1 - a).sqrt() * model(x, t, cond)


def distill(teacher: DiffusionPolicy, dataset_path: str | os.PathLike, out_dir: str | os.PathLike,
            config: DistillConfig | None = None) -> Path:
    """Distill ``teacher`` on the demonstrations it was trained on (``dataset_path``, robomimic layout)
    and write the student checkpoint to ``out_dir`` (atomically); returns its path. Progress lines go
    to stdout every ``config.log_every`` steps."""
    from diffusers.optimization import get_scheduler

    from policy_sampler.training.trainer import load_windows

    config = config or DistillConfig()
    if not isinstance(teacher, DiffusionPolicy):
        raise ValueError(f"teacher must be a DiffusionPolicy, got {type(teacher).__name__}")
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    c = teacher.config
    windows = load_windows(dataset_path, c, "train")
    if windows is None:
        raise ValueError(f"{dataset_path} has no training demos (mask/train)")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    teacher = teacher.to("cpu").eval()
    student = _copy_policy(teacher)
    online, target = student.model, student.ema_model
    online.train()
    ac = teacher.schedule.alphas_cumprod.to(torch.float32)
    grid = torch.tensor(distillation_grid(c.num_train_timesteps, config.grid_intervals))
    clip = c.clip_sample_range if c.clip_sample else math.inf
    t_net = teacher.ema_model

    optimizer = torch.optim.AdamW(online.parameters(), lr=config.lr, betas=(0.95, 0.999), weight_decay=1e-6)
    scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=min(config.warmup_steps, config.steps),
                              num_training_steps=config.steps)
    n_windows = len(windows)
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        idx = torch.randint(0, n_windows, (min(config.batch_size, n_windows),), generator=gen).tolist()
        batch = windows.__getitems__(idx)
        with torch.no_grad():
            cond = teacher.global_cond(batch["obs"])
            x0 = teacher.normalizer.normalize("action", batch["action"])
            b = x0.shape[0]
            n = torch.randint(0, len(grid) - 1, (b,), generator=gen)
            t_hi, t_lo = grid[n + 1], grid[n]
            a_hi, a_lo = (ac[t].reshape(-1, 1, 1) for t in (t_hi, t_lo))
            eps = torch.randn(x0.shape, generator=gen)
            x_hi = a_hi.sqrt() * x0 + (1 - a_hi).sqrt() * eps
            # one teacher DDIM step t_hi -> t_lo (clipped clean prediction, unclipped noise prediction)
            e_t = t_net(x_hi, t_hi, cond)
            x0_t = ((x_hi - (1 - a_hi).sqrt() * e_t) / a_hi.sqrt()).clamp(-clip, clip)
            x_lo = a_lo.sqrt() * x0_t + (1 - a_lo).sqrt() * e_t
            # the target: the teacher's end point at t = 0, else the EMA student
            e_0 = t_net(x_lo, t_lo, cond)
            boundary = ((x_lo - (1 - a_lo).sqrt() * e_0) / a_lo.sqrt()).clamp(-clip, clip)
            ema_out = _student_x0(target, x_lo, t_lo, cond, ac).clamp(-clip, clip)
            goal = torch.where((n == 0).reshape(-1, 1, 1), boundary, ema_out)
        pred = _student_x0(online, x_hi, t_hi, cond, ac)
        loss = (pred - goal).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            for p_t, p_o in zip(target.parameters(), online.parameters()):
                p_t.mul_(config.target_decay).add_(p_o, alpha=1 - config.target_decay)
        losses.append(float(loss.detach()))
        if step % config.log_every == 0 or step == config.steps:
            recent = losses[-config.log_every:]
            print(f"distill step {step}/{config.steps} loss {sum(recent) / len(recent):.5f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    wall = time.perf_counter() - start
    target.load_state_dict(online.state_dict())  # the student is the trained network itself
    meta = {METADATA_KEY: {
        "grid": grid.tolist(), "parametrization": "v-form: f = sqrt(a) x - sqrt(1 - a) F",
        "config": asdict(config), "wall_s": wall, "final_loss": sum(losses[-config.log_every:]) / len(losses[-config.log_every:]),
        "teacher": dict(teacher.metadata),
    }}
    return student.save(out_dir, metadata=meta)


def _copy_policy(policy: DiffusionPolicy) -> DiffusionPolicy:
    """A new policy with ``policy``'s config, normalizer and EMA weights (in both U-Nets)."""
    copy = DiffusionPolicy(policy.config)
    copy.normalizer.load_state_dict(policy.normalizer.state_dict())
    state = policy.ema_model.state_dict()
    copy.model.load_state_dict(state)
    copy.ema_model.load_state_dict(state)
    copy.metadata = dict(policy.metadata)
    return copy


@lru_cache(maxsize=4)
def load_student(path: str) -> DiffusionPolicy:
    """The student saved by :func:`distill` at ``path`` (cached per path); ``ValueError`` if ``path`` is
    a plain policy checkpoint."""
    policy = DiffusionPolicy.load(path)
    if METADATA_KEY not in policy.metadata:
        raise ValueError(f"{path} is not a consistency student (no {METADATA_KEY!r} in its metadata)")
    return policy


@register_baseline
class ConsistencyStudentSampler(Sampler):
    """A consistency student's 1-3 step sample (a baseline: another law than ``ddpm``'s).

    ``checkpoint``: a student written by :func:`distill`; its network replaces the denoiser the
    sampler is handed (the teacher's), with the same conditioning, so the student runs wherever a
    sampler name does (``scripts/evaluate.py``). ``checkpoint=None`` reads the denoiser it is handed
    as the student (e.g. ``predict_action`` of the student checkpoint itself). ``steps``: network
    calls per chunk. The re-noising draws of steps 2.. are ``noise[0], noise[1], ...``."""

    name = "consistency_student"
    exact = False

    def __init__(self, checkpoint: str | None = None, steps: int = 1) -> None:
        check_positive("steps", steps, integer=True)
        if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
            raise ValueError(f"checkpoint must be a path or None, got {checkpoint!r}")
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.steps = steps
        if self.checkpoint is not None:
            student = load_student(self.checkpoint)
            student_plan(student.metadata[METADATA_KEY]["grid"], steps)  # too many steps fails here

    def _sample(self, call: DenoiserCall, schedule: NoiseSchedule, x_T: Tensor, noise: Tensor,
                generator: torch.Generator | None) -> SampleResult:
        T = schedule.num_train_timesteps
        if self.checkpoint is None:
            grid = distillation_grid(T, DistillConfig.grid_intervals)
            net = call
        else:
            student = load_student(self.checkpoint)
            grid = student.metadata[METADATA_KEY]["grid"]
            net = DenoiserCall(student.ema_model.to(x_T.device).denoiser(), call.cond, x_T)
        if max(grid) != T - 1:
            raise ValueError(f"the student's grid ends at {max(grid)}, the schedule has {T} training timesteps")
        plan = student_plan(grid, self.steps)
        ac = schedule.alphas_cumprod.to(device=x_T.device, dtype=x_T.dtype)
        r = schedule.clip_sample_range if schedule.clip_sample else math.inf
        B = x_T.shape[0]
        x, x0 = x_T, None
        for i, t in enumerate(plan):
            a = ac[t]
            if x0 is not None:  # later steps re-noise the last estimate to this step's level
                x = a.sqrt() * x0 + (1 - a).sqrt() * noise[i - 1]
            tt = torch.full((B,), t, dtype=torch.long, device=x_T.device)
            x0 = (a.sqrt() * x - (1 - a).sqrt() * net(x, tt)).clamp(-r, r)
        if net is not call:
            call.rows_per_call.extend(net.rows_per_call)
            net.raise_if_nonfinite()  # the student's outputs (one host read; a baseline of 1-3 calls)
        return call.result(x0, [len(plan)] * B, plan=plan)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``consistency`` metadata of a student checkpoint (grid, settings, wall time, final loss)."""
    with open(DiffusionPolicy.resolve_checkpoint(path) / "config.json") as f:
        return json.load(f)["metadata"][METADATA_KEY]
