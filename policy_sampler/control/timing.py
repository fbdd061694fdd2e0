"""The runner's clock: the measured tick period, how early the next chunk starts, and deadlines.

With a simulated delay (``inference_delay=d``) there is no wall clock in the decisions: the next chunk
starts ``d`` ticks before the current one runs out. In real time the lead is the 90th percentile of
recent chunk latencies over the measured tick period, a chunk stopped at its deadline counting 1.5
times its latency, so the lead grows until anytime samplers can converge.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

__all__ = ["Timing"]


class Timing:
    """Tick timing of one runner. ``clock`` returns seconds (``time.perf_counter`` by default; tests
    pass a scripted one)."""

    def __init__(self, budget_s: float, period_s: float, n_action_steps: int, delay: int | None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.budget_s = float(budget_s)
        self.period_s = float(period_s)
        self.n_action_steps = int(n_action_steps)
        self.delay = delay
        self.clock = clock
        self._last_tick: float | None = None

    def reset(self) -> None:
        self._last_tick = None

    def tick(self) -> float:
        """The start time of this tick; in real time it also updates the period estimate."""
        now = self.clock()
        if self._last_tick is not None and self.delay is None:
            self.period_s = 0.8 * self.period_s + 0.2 * (now - self._last_tick)
        self._last_tick = now
        return now

    def lead(self, chunk_log: Sequence[dict]) -> int:
        """Ticks before the current chunk runs out at which the next one starts (see the module)."""
        if self.delay is not None:
            return self.delay
        if not chunk_log:
            return self.n_action_steps  # unknown yet: start at once
        recent = sorted(c["latency_s"] * (1.5 if c["stopped_early"] else 1.0) for c in chunk_log[-20:])
        slow = recent[min(len(recent) - 1, int(0.9 * len(recent)))]
        return max(1, min(self.n_action_steps, math.ceil(slow / self.period_s)))

    def deadline(self, tick_start: float, remaining_ticks: int) -> float:
        """When a chunk started now is due: after the ticks the current chunk still covers, within the
        budget of the tick that needs it (the deadline an anytime sampler gets)."""
        return tick_start + remaining_ticks * self.period_s + 0.9 * self.budget_s

    def wait_left(self, tick_start: float) -> float:
        """Seconds this tick may still wait for a chunk, keeping a margin to answer within the budget."""
        return self.budget_s - (self.clock() - tick_start) - max(0.002, 0.1 * self.budget_s)
