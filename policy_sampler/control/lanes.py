"""One sampler's stream of chunks: the chunk in use, the one in flight, and what their latencies tell.

The runner has two lanes: the main sampler's and the few-step DDIM fallback's. A lane starts a chunk
``lead`` ticks before its current chunk's window (``n_action_steps`` ticks from the tick it was
adopted) runs out, so that it is ready in time. It adopts a finished chunk at once, drops one whose
every action is for a tick already past, and rejects one holding NaN or inf.

Latencies are measured from launch to result on the runner's clock and are forgotten at each
episode. From the 90th percentile of the recent ones (``expected_latency``) the lane knows how many
ticks a chunk needs. A chunk that needs at least ``chunk_length`` ticks is *doomed*: its last action
is for a tick already past (or being served) when it arrives, so it can never execute. A doomed lane
launches nothing more this episode. A chunk in flight is abandoned (cancelled) as soon as its last
tick has passed, and counts as a latency of ``chunk_length`` ticks (a lower bound): one such chunk
among many fast ones leaves the 90th percentile alone, a slow sampler is doomed by it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from policy_sampler.control.chunk import Chunk
from policy_sampler.control.timing import Timing

__all__ = ["InFlight", "Lane"]

#: recent latencies the predictions use
HISTORY = 20
#: a chunk an anytime sampler stopped at its deadline counts this many times its latency in the lead,
#: so the lead grows until the sampler can converge
EARLY_STOP_FACTOR = 1.5


@dataclass
class InFlight:
    """A chunk being computed: started at tick ``start`` (the observation it answers), at clock time
    ``launched_at``. Real time: ``job`` (a worker's job) and the anytime ``deadline`` (clock time).
    Simulated: ``outcome`` (the chunk, or the error computing it raised), usable from ``ready_tick``."""

    start: int
    launched_at: float
    job: Any = None
    deadline: float | None = None
    outcome: Any = None
    ready_tick: int = 0
    missed: bool = False
    waited: bool = False


class Lane:
    """Chunks of one sampler. ``compute(tick, inputs, launched_at, cancelled) -> Chunk`` samples a chunk
    (raising ``FloatingPointError`` for NaN or inf); ``delay``: None in real time (chunks computed on
    this lane's worker thread), else the simulated delay in ticks (computed at launch, usable ``delay``
    ticks later)."""

    def __init__(self, name: str, compute: Callable[..., Chunk], timing: Timing, n_action_steps: int,
                 chunk_length: int, delay: int | None = None) -> None:
        self.name = name
        self.compute = compute
        self.timing = timing
        self.n_action_steps = n_action_steps
        self.chunk_length = chunk_length
        self.delay = delay
        self.pending: InFlight | None = None
        self._worker: Any = None if delay is not None else timing.clock.worker(f"chunk-runner-{name}")
        self.counts: dict[str, int] = {"cancelled": 0}
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """A new episode: the chunk in flight is cancelled, chunks, latencies and counts forgotten."""
        self.cancel()
        self.current: Chunk | None = None
        self.previous: Chunk | None = None
        self.latencies: deque[tuple[float, bool]] = deque(maxlen=HISTORY)
        self.log: list[dict[str, Any]] = []  # finished chunks with a result: adopted or dropped
        self.counts = dict(launched=0, adopted=0, dropped=0, failed=0, cancelled=0, dropped_actions=0,
                           early_stops=0, misses=0, doomed_ticks=0)
        self.doomed_at: int | None = None  # the tick a launch was first skipped as doomed (set by the runner)

    def cancel(self) -> None:
        """Cancel the chunk in flight (it stops at its next denoiser call); it counts as ``cancelled``."""
        if self.pending is not None:
            if self.pending.job is not None:
                self.pending.job.cancel()
            self.counts["cancelled"] += 1
        self.pending = None

    def close(self, wait: bool = False) -> None:
        """Cancel the chunk in flight and stop the worker (``wait``: until its thread has stopped)."""
        self.cancel()
        if self._worker is not None:
            self._worker.shutdown(wait)
            self._worker = None

    # ------------------------------------------------------------------ predictions
    def expected_latency(self) -> float | None:
        """90th percentile of the recent latencies (None before the first)."""
        if not self.latencies:
            return None
        return _p90([lat for lat, _ in self.latencies])

    def lead(self) -> int:
        """Ticks before the current chunk's window runs out at which the next chunk starts: the
        simulated delay, else the ticks the 90th percentile latency needs, in [1, n_action_steps]
        (n_action_steps, i.e. at once, before any latency is known)."""
        if self.delay is not None:
            return self.delay
        if not self.latencies:
            return self.n_action_steps
        slow = _p90([lat * (EARLY_STOP_FACTOR if early else 1.0) for lat, early in self.latencies])
        return max(1, min(self.n_action_steps, self.timing.ticks_for(slow)))

    def doomed(self) -> bool:
        """Whether a chunk started now is expected to arrive only after its last action's tick: the
        expected latency needs ``chunk_length`` ticks (judged once the period is known). Once judged
        (``doomed_at``), it stays so for the episode."""
        if self.doomed_at is not None:
            return True
        expected = self.expected_latency()
        return (self.delay is None and expected is not None and self.timing.period_known
                and self.timing.ticks_for(expected) >= self.chunk_length)

    def expected_ready_time(self) -> float | None:
        """When the chunk in flight is expected (launch plus the expected latency, no later than an
        anytime sampler's deadline); None when nothing is measured yet."""
        p, expected = self.pending, self.expected_latency()
        if p is None or expected is None:
            return None
        ready = p.launched_at + expected
        return ready if p.deadline is None else min(ready, p.deadline)

    def expected_arrival_tick(self, tick: int) -> int | None:
        """The tick from which the next chunk is expected to execute (None: unknown, or the chunk in
        flight is overdue)."""
        p = self.pending
        if p is not None and self.delay is not None:
            return p.ready_tick
        expected = self.expected_latency()
        if expected is None:
            return None
        start = p.start if p is not None else tick + max(0, self.remaining(tick) - self.lead())
        arrival = start + self.timing.ticks_for(expected)
        return None if arrival < tick else arrival

    # ------------------------------------------------------------------ the current chunk
    def remaining(self, tick: int) -> int:
        """Ticks of the current chunk's window still ahead (0 when there is none)."""
        cur = self.current
        if cur is None:
            return 0
        return max(0, min(cur.adopted + self.n_action_steps, cur.start + cur.length) - tick)

    def executes(self, tick: int) -> bool:
        return self.current is not None and self.current.executes(tick, self.n_action_steps)

    def covers(self, tick: int) -> bool:
        return self.current is not None and self.current.covers(tick)

    def covered_until(self) -> int:
        """The last tick the current chunk has an action for (-1 when there is none)."""
        return -1 if self.current is None else self.current.start + self.current.length - 1

    def due_to_launch(self, tick: int) -> bool:
        return self.pending is None and self.remaining(tick) <= self.lead()

    # ------------------------------------------------------------------ chunks in flight
    def launch(self, tick: int, inputs: Any, deadline: float | None = None) -> None:
        """Start the chunk answering tick ``tick``'s observation."""
        self.counts["launched"] += 1
        now = self.timing.now()
        if self.delay is not None:
            try:
                outcome: Any = self.compute(tick, inputs, now, None)
            except FloatingPointError as err:
                outcome = err
            self.pending = InFlight(tick, now, outcome=outcome, ready_tick=tick + self.delay)
            return
        if self._worker is None:
            self._worker = self.timing.clock.worker(f"chunk-runner-{self.name}")
        job = self._worker.submit(lambda cancelled: self.compute(tick, inputs, now, cancelled))
        self.pending = InFlight(tick, now, job=job, deadline=deadline)

    def run_now(self, tick: int, inputs: Any) -> str:
        """Compute a chunk here, synchronously, and take it (the first chunk of an episode)."""
        self.counts["launched"] += 1
        now = self.timing.now()
        try:
            outcome: Any = self.compute(tick, inputs, now, None)
        except FloatingPointError as err:
            outcome = err
        return self._take(InFlight(tick, now, outcome=outcome), tick)

    def ready(self, tick: int) -> bool:
        p = self.pending
        if p is None:
            return False
        return p.job.done() if p.job is not None else tick >= p.ready_tick

    def collect(self, tick: int) -> str | None:
        """Take the chunk in flight if it has finished: ``'adopted'``, ``'dropped'`` (every action
        past), ``'failed'`` (NaN or inf), or None (nothing finished)."""
        if not self.ready(tick):
            return None
        p, self.pending = self.pending, None
        if p.job is not None:
            try:
                p.outcome = p.job.result()
            except FloatingPointError as err:
                p.outcome = err
        return self._take(p, tick)

    def abandon_if_useless(self, tick: int) -> bool:
        """Cancel the chunk in flight once its last tick has passed (it could never execute). It needed
        at least ``chunk_length`` ticks: that many periods (or its time so far, if longer) enter the
        latencies as a lower bound of its latency."""
        p = self.pending
        if p is None or p.job is None or tick < p.start + self.chunk_length or p.job.done():
            return False
        p.job.cancel()
        self.pending = None
        self.counts["dropped"] += 1
        elapsed = self.timing.now() - p.launched_at
        self.latencies.append((max(elapsed, self.chunk_length * self.timing.period_s), False))
        return True

    def _take(self, p: InFlight, tick: int) -> str:
        outcome = p.outcome
        if isinstance(outcome, FloatingPointError):
            self.counts["failed"] += 1
            self.latencies.append((self.timing.now() - p.launched_at, False))
            return "failed"
        chunk: Chunk = outcome
        self.latencies.append((chunk.latency_s, chunk.stopped_early))
        self.counts["early_stops"] += int(chunk.stopped_early)
        if not chunk.covers(tick):
            self.counts["dropped"] += 1
            self.log.append(chunk.log_entry("dropped"))
            return "dropped"
        self.counts["adopted"] += 1
        self.counts["dropped_actions"] += tick - chunk.start
        chunk.adopted = tick
        self.previous, self.current = self.current, chunk
        self.log.append(chunk.log_entry("adopted"))
        return "adopted"

    def note_miss(self) -> bool:
        """Count the chunk in flight as a miss (once): the lane has nothing to execute now."""
        p = self.pending
        if p is None or p.missed:
            return False
        p.missed = True
        self.counts["misses"] += 1
        return True


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(math.floor(0.9 * len(ordered))))]

