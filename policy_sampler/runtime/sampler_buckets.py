"""The row counts a sampler's denoiser calls can have, so a runtime captures exactly those shapes.

A fixed-width sampler evaluates the same number of states per active batch row in each call (its
*row width*: 1 for ddpm and ddim, the window for picard and paradigms, the lookahead + 1 for the
speculative samplers with a fixed window), and finished rows leave the batch, so a call at batch size
B has ``width * R`` rows for some R in 1..B. The width is read off one batch-1 run with a stand-in
denoiser (a zero output: no network is evaluated), through the samplers' public interface.

Samplers that size each row's window per round (``adaptive_window``, the speculative samplers'
default, or ``trim_window``) call with any count of states per row from 1 to K + 1 (K steps), summed
over the active rows: their buckets are the powers of two up to B * (K + 1), so a call pads by at
most 2x.
"""

from __future__ import annotations

from typing import Sequence

import torch

from policy_sampler.runtime.denoiser_runtime import pow2_buckets
from policy_sampler.samplers import Sampler
from policy_sampler.schedule import NoiseSchedule


def sizes_windows_per_row(sampler: Sampler) -> bool:
    """Whether ``sampler`` sizes each row's window per round (its calls have no fixed row width)."""
    return bool(getattr(sampler, "adaptive_window", False) or getattr(sampler, "trim_window", False))


def sampler_row_width(sampler: Sampler, schedule: NoiseSchedule, event_shape: Sequence[int],
                      cond_shape: Sequence[int] | None = None) -> int:
    """Rows per active batch row in each of ``sampler``'s denoiser calls on ``schedule`` (a fixed-width
    sampler; a ``ValueError`` for one that sizes its windows per row)."""
    if not isinstance(sampler, Sampler):
        raise ValueError(f"sampler must be a Sampler, got {type(sampler).__name__}")
    if sizes_windows_per_row(sampler):
        raise ValueError(f"{sampler!r} sizes each row's window per round: its calls have no fixed row width")
    x_T = torch.zeros(1, *event_shape)
    cond = None if cond_shape is None else torch.zeros(1, *cond_shape)
    result = sampler.sample(lambda x, t, c: torch.zeros_like(x), schedule, x_T, cond=cond,
                            generator=torch.Generator().manual_seed(0))
    widths = set(result.rows_per_call)
    if len(widths) != 1:
        raise ValueError(f"{sampler!r} made calls of {sorted(widths)} rows at batch 1; expected one width")
    return widths.pop()


def sampler_buckets(sampler: Sampler, schedule: NoiseSchedule, event_shape: Sequence[int],
                    batch_sizes: Sequence[int], cond_shape: Sequence[int] | None = None) -> tuple[int, ...]:
    """Every row count ``sampler`` can call its denoiser with at the given batch sizes: width * R, or
    for a sampler that sizes its windows per row the powers of two up to max(batch_sizes) * (K + 1)."""
    sizes = list(batch_sizes)
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise ValueError(f"batch_sizes must be positive ints, got {batch_sizes!r}")
    if isinstance(sampler, Sampler) and sizes_windows_per_row(sampler):
        return pow2_buckets(max(sizes) * (schedule.num_steps + 1))
    width = sampler_row_width(sampler, schedule, event_shape, cond_shape)
    return tuple(sorted({width * r for b in sizes for r in range(1, b + 1)}))


def coalesce_buckets(buckets: Sequence[int], slack: float = 0.05) -> tuple[int, ...]:
    """Drop each bucket whose next larger one is at most ``slack`` (a fraction) bigger: fewer shapes to
    compile or capture, for at most that much padding."""
    if not slack >= 0:
        raise ValueError(f"slack must be >= 0, got {slack!r}")
    ordered = sorted(set(buckets))
    return tuple(b for b, nxt in zip(ordered, ordered[1:] + [None]) if nxt is None or nxt > b * (1 + slack))
