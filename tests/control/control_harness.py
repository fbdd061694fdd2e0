"""A scripted world for ChunkRunner: virtual time, workers that run jobs at once but finish them at
known virtual times, and denoisers that spend a known virtual time per call.

Nothing here sleeps or starts a thread, so thousands of ticks run in seconds and every decision of
the runner can be checked exactly:

* :class:`ScriptedClock` is the runner's clock. Its time moves only when the loop advances it, when
  the runner waits (up to the timeout, or until the job is done), or when main-thread code spends it
  (a chunk computed synchronously by ``reset(obs)``).
* :class:`ScriptedWorker` runs a submitted job at once, on the job's own virtual time, which starts
  when the worker is free (jobs queue, one worker per lane) and advances as the denoiser spends time;
  the job is done when the clock reaches its finish time. Cancelling a job frees its worker at once.
* :class:`ScriptedDenoiser` spends ``cost_s`` per call. ``nan`` makes it return NaN (always, or in a
  window of virtual time). ``holds_gil`` marks its jobs as holding the GIL: a wait of the runner that
  ends while such a job runs costs one switch interval more (CPython hands the GIL back only after
  the waiting thread has asked for it that long).
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any, Callable

import numpy as np
import torch

from policy_sampler import DiffusionPolicy
from policy_sampler.control import ChunkRunner
from policy_sampler.policy.config import DiffusionPolicyConfig

OBS_DIM, ACTION_DIM = 3, 2
PERIOD = 0.1


class ScriptedJob:
    def __init__(self, clock: "ScriptedClock", worker: "ScriptedWorker", start: float, finish: float,
                 result: Any, error: BaseException | None, holds_gil: bool) -> None:
        self.clock, self.worker = clock, worker
        self.start, self.finish = start, finish
        self._result, self._error = result, error
        self.holds_gil = holds_gil
        self.cancelled_at: float | None = None

    def done(self) -> bool:
        return self.cancelled_at is None and self.clock.t >= self.finish

    def result(self) -> Any:
        assert self.done(), "the runner took a result before the job was done"
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self) -> None:
        if self.cancelled_at is None and self.clock.t < self.finish:
            self.cancelled_at = self.clock.t
            self.worker.busy_until = max(self.clock.t, self.start)

    def running_at(self, t: float) -> bool:
        end = self.finish if self.cancelled_at is None else min(self.finish, self.cancelled_at)
        return self.start <= t < end


class ScriptedWorker:
    def __init__(self, clock: "ScriptedClock", name: str) -> None:
        self.clock, self.name = clock, name
        self.busy_until = -math.inf
        self.jobs: list[ScriptedJob] = []

    def submit(self, fn: Callable[[threading.Event], Any]) -> ScriptedJob:
        clock = self.clock
        start = max(clock.t, self.busy_until)
        clock._job = {"time": start, "lane": self.name.rsplit("-", 1)[-1], "gil": False}
        try:
            result, error = fn(threading.Event()), None
        except Exception as err:  # the runner sees it when it takes the result
            result, error = None, err
        finally:
            job_state, clock._job = clock._job, None
        job = ScriptedJob(clock, self, start, job_state["time"], result, error, job_state["gil"])
        self.busy_until = job.finish
        self.jobs.append(job)
        clock.jobs.append(job)
        return job

    def shutdown(self, wait: bool = False) -> None:
        pass


class ScriptedClock:
    """Virtual seconds; see the module. ``switch_interval``: the GIL hand-over time charged after a
    wait that ends while a GIL-holding job runs."""

    def __init__(self, switch_interval: float = sys.getswitchinterval()) -> None:
        self.t = 0.0
        self.switch_interval = switch_interval
        self._job: dict[str, Any] | None = None
        self.jobs: list[ScriptedJob] = []
        self.workers: list[ScriptedWorker] = []

    def now(self) -> float:
        return self._job["time"] if self._job is not None else self.t

    @property
    def job_lane(self) -> str | None:
        """'main' or 'fallback' while a worker's job runs, else None."""
        return None if self._job is None else self._job["lane"]

    def spend(self, seconds: float, holds_gil: bool = False) -> None:
        if self._job is not None:
            self._job["time"] += seconds
            self._job["gil"] = self._job["gil"] or holds_gil
        else:
            self.t += seconds

    def advance_to(self, t: float) -> None:
        self.t = max(self.t, t)

    def worker(self, name: str) -> ScriptedWorker:
        worker = ScriptedWorker(self, name)
        self.workers.append(worker)
        return worker

    def wait(self, job: ScriptedJob, timeout: float) -> None:
        end = self.t + max(0.0, timeout)
        self.t = max(self.t, job.finish) if job.cancelled_at is None and job.finish <= end else end
        if any(j.holds_gil and j.running_at(self.t) for j in self.jobs):
            self.t += self.switch_interval


class ScriptedDenoiser:
    """Spends ``cost_s`` virtual seconds per call (``fallback_cost_s`` in the fallback lane's jobs);
    returns NaN when ``nan`` is True or a ``(start, end)`` window of virtual time holds the call's time;
    ``holds_gil`` marks its jobs as holding the GIL."""

    def __init__(self, clock: ScriptedClock, cost_s: float, fallback_cost_s: float | None = None,
                 nan: bool | tuple[float, float] = False, holds_gil: bool = False) -> None:
        self.clock, self.cost_s = clock, cost_s
        self.fallback_cost_s = cost_s if fallback_cost_s is None else fallback_cost_s
        self.nan, self.holds_gil = nan, holds_gil
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        self.calls += 1
        cost = self.fallback_cost_s if self.clock.job_lane == "fallback" else self.cost_s
        self.clock.spend(cost, holds_gil=self.holds_gil)
        now = self.clock.now()
        bad = self.nan is True or (isinstance(self.nan, tuple) and self.nan[0] <= now < self.nan[1])
        return torch.full_like(x, float("nan")) if bad else 0.1 * x


def tiny_policy(denoiser: Any, seed: int = 0) -> DiffusionPolicy:
    """A DiffusionPolicy with a tiny U-Net whose denoiser is replaced by ``denoiser`` (horizon 16,
    2 observation steps, 8 action steps: chunks of 15 ticks)."""
    torch.manual_seed(seed)
    cfg = DiffusionPolicyConfig(obs_dim=OBS_DIM, action_dim=ACTION_DIM, down_dims=(8, 16), diffusion_step_embed_dim=8)
    stats = {"state": {"min": [-1.0] * OBS_DIM, "max": [1.0] * OBS_DIM},
             "action": {"min": [-2.0] * ACTION_DIM, "max": [2.0] * ACTION_DIM}}
    policy = DiffusionPolicy(cfg, stats)
    policy.denoiser = lambda differentiable=False: denoiser
    return policy


def observation(k: int) -> np.ndarray:
    return (0.3 * np.sin(0.1 * k + np.arange(OBS_DIM))).astype(np.float32)


class Run:
    """What a scripted loop recorded: per tick the act() duration, the source, and the main chunks
    launched so far."""

    def __init__(self, runner: ChunkRunner) -> None:
        self.runner = runner
        self.act_s: list[float] = []
        self.launched: list[int] = []
        self.fallback_launched: list[int] = []

    @property
    def stats(self) -> dict[str, Any]:
        return self.runner.stats()


def run_loop(runner: ChunkRunner, clock: ScriptedClock, ticks: int, period: float = PERIOD,
             reset_obs: bool = True) -> Run:
    """A loop at ``period`` (the env step takes what act() leaves of it; an act() running past the
    period delays the next tick)."""
    run = Run(runner)
    runner.reset(observation(0) if reset_obs else None)
    start = clock.t
    for k in range(ticks):
        clock.advance_to(start + k * period)
        t0 = clock.t
        runner.act(observation(k))
        run.act_s.append(clock.t - t0)
        run.launched.append(runner.main.counts["launched"])
        run.fallback_launched.append(runner.fallback.counts["launched"] if runner.fallback is not None else 0)
    return run


def check_invariants(run: Run) -> None:
    """What must hold in every run, whatever the timings."""
    runner, s = run.runner, run.stats
    assert s["ticks"] == len(runner.sources)
    assert s["fallbacks"] == s["fallback_rest"] + s["fallback_ddim"] + s["safe_actions"]
    assert s["ticks"] - s["fallbacks"] == runner.sources.count("chunk")
    assert s["launched"] == (s["chunks"] + s["dropped_chunks"] + s["failed_chunks"] + s["cancelled_chunks"]
                             + s["in_flight"])
    assert s["misses"] <= s["launched"]
    assert s["chunks"] == sum(e["status"] == "adopted" for e in runner.chunk_log)
    # the fallback order: the rest of the last main chunk whenever it covers the tick, DDIM only
    # where it does not, the safe action only where neither covers
    coverage = _covered_ticks(runner.chunk_log, runner.n_action_steps)
    fb_coverage = _covered_ticks(runner.fallback_log, None)
    for tick, source in enumerate(runner.sources):
        executing, covering = coverage.get(tick, (False, False))
        assert (source == "chunk") == executing, (tick, source)
        if source != "chunk":
            assert (source == "rest") == covering, (tick, source)
        if source == "safe":
            assert not fb_coverage.get(tick, (False, False))[1], (tick, source)
    # no doomed chunk is launched after the runner knew it was doomed
    if s["doomed_at"] is not None:
        assert len(set(run.launched[s["doomed_at"]:])) == 1, "a main chunk was launched after the doom verdict"


def _covered_ticks(log: list[dict[str, Any]], n_action_steps: int | None) -> dict[int, tuple[bool, bool]]:
    """For each tick: (executed by the chunk in use, covered by the chunk in use), replaying the adopted
    chunks of a log in order (a chunk is in use from its adoption until the next adoption)."""
    adopted = [e for e in log if e["status"] == "adopted"]
    out: dict[int, tuple[bool, bool]] = {}
    for i, e in enumerate(adopted):
        until = adopted[i + 1]["adopted"] if i + 1 < len(adopted) else e["start"] + 10_000
        length = e["length"]
        for tick in range(e["adopted"], min(until, e["start"] + length)):
            executes = n_action_steps is not None and tick < e["adopted"] + n_action_steps
            out[tick] = (executes, True)
    return out
