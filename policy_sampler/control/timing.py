"""The runner's time: the clock, the measured tick period, how long a tick may wait, and deadlines.

A tick is one ``act`` call. It starts at ``t0`` and must return by ``t0 + budget_s``. It may wait for a
chunk in flight until ``t0 + budget_s - margin_s`` (:meth:`Timing.wait_end`). The margin is the time
left to take the GIL back from a worker thread and answer. CPython hands the GIL over only after a
waiting thread has asked for it for one switch interval (``sys.getswitchinterval()``, 5 ms by
default), so a margin under one interval cannot hold while a worker runs Python code. The default
margin is two intervals or 10% of the budget, whichever is larger.

Chunk latencies are converted to ticks with the measured period: a chunk that takes ``latency``
seconds is ready ``ceil(latency / period)`` ticks after the tick that started it
(:meth:`Timing.ticks_for`). With a simulated delay (``inference_delay=d``) no wall clock enters any
decision.
"""

from __future__ import annotations

import math
import sys
import time
from concurrent.futures import wait
from typing import Any

from policy_sampler.control.workers import Job, ThreadWorker

__all__ = ["Timing", "WallClock", "default_margin"]


class WallClock:
    """Real time: ``now()`` in ``time.perf_counter`` seconds, chunks computed on background threads
    (:meth:`worker`), :meth:`wait` blocking until a chunk is done or the timeout passes.

    The runner takes any object with these three methods as its ``clock``; the tests pass a scripted
    one whose time advances only when told, so every decision can be checked exactly."""

    def now(self) -> float:
        return time.perf_counter()

    def worker(self, name: str) -> ThreadWorker:
        return ThreadWorker(name)

    def wait(self, job: Job, timeout: float) -> None:
        if timeout > 0:
            wait([job.future], timeout=timeout)


def default_margin(budget_s: float) -> float:
    """Two thread switch intervals or 10% of the budget, whichever is larger."""
    return max(2 * sys.getswitchinterval(), 0.1 * budget_s)


class Timing:
    """Tick timing of one runner: ``budget_s`` per tick, the tick period, the wait margin (None:
    :func:`default_margin`), ``delay`` (simulated ticks, or None for real time).

    ``period_s`` is the period assumed before one is measured. A ``configured`` period is averaged
    with the measured intervals; a guessed one (the task's ``dt``, or the budget) is replaced by the
    first measured interval. Until the period is configured or measured, :attr:`period_known` is false
    and no chunk is judged doomed."""

    def __init__(self, budget_s: float, period_s: float, delay: int | None, clock: Any,
                 margin_s: float | None = None, configured: bool = True) -> None:
        self.budget_s = float(budget_s)
        self.period_s = float(period_s)
        self.configured = bool(configured)
        self.delay = delay
        self.clock = clock
        self.margin_s = default_margin(self.budget_s) if margin_s is None else float(margin_s)
        self._last_tick: float | None = None
        self._measured = False

    @property
    def period_known(self) -> bool:
        return self.configured or self._measured

    @property
    def simulated(self) -> bool:
        return self.delay is not None

    def reset(self) -> None:
        """A new episode: the next tick does not count the pause since the last one as a period."""
        self._last_tick = None

    def now(self) -> float:
        return self.clock.now()

    def tick(self) -> float:
        """The start time of this tick; in real time it also updates the period estimate (an
        exponential average of the intervals between ticks, weight 0.2 on the newest)."""
        now = self.clock.now()
        if self._last_tick is not None and self.delay is None:
            interval = now - self._last_tick
            known = self.period_known
            self.period_s = 0.8 * self.period_s + 0.2 * interval if known else interval
            self._measured = True
        self._last_tick = now
        return now

    def ticks_for(self, latency_s: float) -> int:
        """Ticks after the starting tick at which a chunk taking ``latency_s`` seconds is ready."""
        return max(0, math.ceil(latency_s / self.period_s - 1e-9))

    def wait_end(self, t0: float) -> float:
        """Until when the tick that started at ``t0`` may wait for a chunk."""
        return t0 + self.budget_s - self.margin_s

    def due(self, t0: float, ticks_ahead: int) -> float:
        """When a chunk needed ``ticks_ahead`` ticks after the tick that started at ``t0`` must be
        ready: the end of that tick's wait (the deadline an anytime sampler gets)."""
        return self.wait_end(t0) + ticks_ahead * self.period_s

    def sampler_deadline(self, t: float) -> float:
        """``t`` on this clock as a ``time.perf_counter()`` value (what anytime samplers compare with)."""
        return time.perf_counter() + (t - self.clock.now())
