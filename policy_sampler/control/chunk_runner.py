"""ChunkRunner: a DiffusionPolicy inside a control loop, one action per tick, within a latency budget.

Each ``act(obs)`` call is one control tick. The runner keeps the observation history, executes
``n_action_steps`` actions of each chunk and starts the next chunk early enough that it is ready when
the current one runs out, so inference hides behind execution (Diffusion Policy's real-robot loop,
Chi et al. 2023, sec. 4.1: each chunk is stamped with the tick of the observation it answers, and
its actions for ticks already past are dropped).

Two clocks (:class:`~policy_sampler.control.timing.Timing`):

* ``inference_delay=None`` (real time): chunks are computed on background threads, one per sampler
  (:mod:`~policy_sampler.control.workers`); ``act`` does no torch work and never waits past the end of
  its budget less a margin for the GIL. It waits for a chunk in flight only when the chunk is expected
  within that window (once, when its arrival is unknown or overdue), and otherwise returns a fallback
  at once. Anytime samplers (the Picard family)
  get the time the chunk is due as their deadline and return their best iterate by then.
* ``inference_delay=d`` (simulated, for evaluation only): the chunk started at tick s is computed
  inside ``act`` and becomes usable at tick s + d, as if inference took d ticks. ``budget_s`` is not
  honoured there. Success under a given delay is then deterministic and independent of the machine; at
  d = 0 it is plain open-loop chunk execution, chunk after chunk.

When no fresh chunk executes a tick, the tick gets, in order: the rest of the last chunk (its actions
past ``n_action_steps``), a few-step DDIM chunk (``fallback_steps``, its own lane and thread, started
when a gap is expected and refreshed before it runs out), or the task's safe action
(:mod:`~policy_sampler.control.safe_action`). Chunks whose measured latency shows they cannot arrive
before their last action's tick are doomed: the lane stops launching them and warns
(:mod:`~policy_sampler.control.lanes`). ``stats()`` counts every case.

The runner composes small collaborators: :class:`~policy_sampler.control.timing.Timing`, two
:class:`~policy_sampler.control.lanes.Lane` objects (main and fallback), an
:class:`~policy_sampler.control.observation_check.ObservationCheck`, a
:class:`~policy_sampler.control.safe_action.SafeAction`,
:class:`~policy_sampler.control.smoothing.ChunkSmoothing` (RTC or temporal ensembling where chunks meet)
and, with ``num_candidates > 1``, :class:`~policy_sampler.control.candidates.BestOfN`.
``warm_start=True`` (Picard family) reuses the previous chunk's noise and path shifted in time as the
next chunk's noise and initial guess: each chunk's marginal law is unchanged (its noise is still
i.i.d. normal) but consecutive chunks share noise.

With ``num_envs`` set, ``act`` takes one observation per env and an env that has finished passes
``None``: it gets no rows in later chunks (so a batch of envs is sampled exactly as the batch of
those still running), and its row of the returned actions holds its safe action.
"""

from __future__ import annotations

import warnings
from collections import deque
from typing import Any, Sequence

import numpy as np

from policy_sampler.control.candidates import BestOfN
from policy_sampler.control.config import RunnerConfig
from policy_sampler.control.inference import ChunkSampler
from policy_sampler.control.lanes import Lane
from policy_sampler.control.observation_check import ObservationCheck
from policy_sampler.control.safe_action import SafeAction, policy_task_description
from policy_sampler.control.smoothing import ChunkSmoothing
from policy_sampler.control.timing import Timing, WallClock
from policy_sampler.samplers import Sampler, as_sampler

__all__ = ["ChunkRunner", "SOURCES", "boundary_jerk"]

#: where a tick's action came from: a fresh chunk within its n_action_steps, the rest of the last
#: chunk, the DDIM fallback chunk, or the safe action
SOURCES = ("chunk", "rest", "fallback", "safe")


class ChunkRunner:
    """Runs ``policy`` in a control loop: ``act(obs)`` returns this tick's action within ``budget_s``.

    ``sampler``: a name (its options as keyword arguments, as for ``make_sampler``) or a
    :class:`Sampler`. ``budget_s``: the most an ``act`` call may take (overrides ``config.budget_s``).
    ``config``: a :class:`RunnerConfig` (timing, smoothing, drafts, fallbacks, safe action, envs, seed).
    ``selector``: picks one of ``config.num_candidates`` chunks per env (best-of-N under a learned
    reward, :class:`~policy_sampler.preference.RewardSelector`). ``clock``: the runner's time, where
    chunks are computed and how it waits for them (a
    :class:`~policy_sampler.control.timing.WallClock` by default; tests pass a scripted one).
    """

    def __init__(
        self,
        policy: Any,
        sampler: str | Sampler = "ddpm",
        budget_s: float | None = None,
        *,
        config: RunnerConfig | None = None,
        selector: Any = None,
        clock: Any = None,
        **sampler_options: Any,
    ) -> None:
        config = RunnerConfig() if config is None else config
        if not isinstance(config, RunnerConfig):
            raise ValueError(f"config must be a RunnerConfig, got {type(config).__name__}")
        if budget_s is not None:
            config = RunnerConfig.from_dict({**config.to_dict(), "budget_s": budget_s})
        misplaced = sorted(set(sampler_options) & RunnerConfig.field_names())
        if misplaced:
            raise ValueError(f"{misplaced} are runner settings, not sampler options: pass "
                             f"config=RunnerConfig({misplaced[0]}=...)")
        self.sampler = as_sampler(sampler, sampler_options)
        c = policy.config
        self.policy = policy
        self.config = config
        self.chunk_length = c.horizon - c.n_obs_steps + 1
        self.n_action_steps = c.n_action_steps if config.n_action_steps is None else config.n_action_steps
        if self.n_action_steps > self.chunk_length:
            raise ValueError(f"n_action_steps must be an int in [1, {self.chunk_length}], got {config.n_action_steps!r}")
        if config.inference_delay is not None and config.inference_delay >= self.chunk_length:
            raise ValueError(f"inference_delay must be below the chunk length {self.chunk_length} (every chunk "
                             f"would arrive after its last action), got {config.inference_delay}")
        if config.warm_start and not self.sampler.warm_start:
            raise ValueError(f"warm_start needs a sampler that takes a trajectory guess (picard, paradigms), "
                             f"got {self.sampler.name!r}")
        if config.num_candidates > 1 and selector is None:
            raise ValueError("num_candidates > 1 needs a selector (e.g. policy_sampler.preference.RewardSelector)")
        if config.num_candidates > 1 and config.warm_start:
            raise ValueError("warm_start cannot be combined with num_candidates > 1")
        if config.fallback_steps:
            policy.schedule_for(config.fallback_steps)
        policy.schedule_for(config.num_inference_steps)
        description = policy_task_description(policy) if config.safe_action == "task" else None
        self.safe_action = SafeAction(config.safe_action, c.action_dim, description)
        period = config.control_period_s or (description.dt if description is not None and description.dt else None)
        self.timing = Timing(config.budget_s, period or config.budget_s, config.inference_delay,
                             WallClock() if clock is None else clock, config.wait_margin_s,
                             configured=config.control_period_s is not None)
        self.observations = ObservationCheck(c.obs_keys, c.obs_key_dims, c.obs_dim, image_keys=c.image_keys)
        self.smoothing = ChunkSmoothing(config.smoothing, c.horizon, c.n_obs_steps, config.rtc_max_guidance,
                                        config.rtc_jacobian, config.ensemble_decay)
        # with one candidate there is nothing to choose: the selector is not consulted
        self.best_of_n = (BestOfN(selector, config.num_candidates, c.action_dim)
                          if selector is not None and config.num_candidates > 1 else None)
        self.chunks = ChunkSampler(policy, self.sampler, config, self.smoothing, self.best_of_n, self.timing)
        simulated = config.inference_delay is not None
        self.main = Lane("main", self.chunks.main, self.timing, self.n_action_steps, self.chunk_length,
                         config.inference_delay)
        self.fallback = (Lane("fallback", self.chunks.fallback, self.timing, self.n_action_steps,
                              self.chunk_length, 0 if simulated else None) if config.fallback_steps else None)
        self.reset()

    @property
    def num_envs(self) -> int | None:
        return self.config.num_envs

    @property
    def inference_delay(self) -> int | None:
        return self.config.inference_delay

    @property
    def guess_from_previous(self) -> bool:
        """Whether the exact samplers draft from the previous chunk (``guess_from_previous`` and a
        sampler that takes a draft guess)."""
        return self.chunks.guess_from_previous

    @property
    def chunk_log(self) -> list[dict[str, Any]]:
        """The main sampler's finished chunks of this episode, in order: ``status`` ('adopted' or
        'dropped'), ``start``, ``length``, ``adopted``, ``batch``, ``rows``, ``latency_s``, ``rounds``, ``nfe``,
        ``stopped_early``, ``mean_accepted_length``."""
        return self.main.log

    @property
    def fallback_log(self) -> list[dict[str, Any]]:
        """The DDIM fallback's finished chunks of this episode (as :attr:`chunk_log`)."""
        return [] if self.fallback is None else self.fallback.log

    def _lanes(self) -> list[Lane]:
        return [self.main] if self.fallback is None else [self.main, self.fallback]

    # ------------------------------------------------------------------ lifecycle
    def reset(self, obs: Any = None) -> None:
        """Start an episode: history, chunks, latencies and counters are forgotten, and the chunks in
        flight are cancelled (each stops at its next denoiser call, so the next chunk does not queue
        behind it).

        Given the episode's first observation, the first chunk (and in real time the first fallback
        chunk) is computed now, before the loop's first tick, and measured. Without one, the first
        ``act`` starts the first chunk: it waits for it within its budget, and until it arrives each
        tick gets the DDIM fallback if one is ready, else the safe action (counted in ``misses`` and
        ``safe_actions``)."""
        for lane in self._lanes():
            lane.reset()
        self._tick = 0
        self._history: list[deque] | None = None
        self._active: np.ndarray | None = None  # env indices still running
        self.observations.reset()
        self.timing.reset()
        self.chunks.reset()
        if self.best_of_n is not None:
            self.best_of_n.reset(self.chunks.seed)
        self._act_latencies: list[float] = []
        self._executed: list[np.ndarray] = []
        self._switch_ticks: list[int] = []
        self.sources: list[str] = []  # per tick, one of SOURCES
        self._source_counts = dict.fromkeys(SOURCES, 0)
        self._warned: set[str] = set()
        if obs is not None:
            self._observe(obs)
            if self.main.run_now(0, self._inputs(0)) == "adopted":
                self._switch_ticks.append(0)
            else:
                self._warn_failed(self.main)
            if self.fallback is not None and self.inference_delay is None:
                if self.fallback.run_now(0, self._inputs(0, fallback=True)) == "failed":
                    self._warn_failed(self.fallback)
            self._history = None  # act(obs) at tick 0 starts the history again with the same observation
            self._active = None
            if self.best_of_n is not None:
                self.best_of_n.forget_observations()

    def close(self, wait: bool = False) -> None:
        """Cancel the chunks in flight (each stops at its next denoiser call) and stop the background
        threads; ``wait``: return only once they have stopped."""
        for lane in self._lanes():
            lane.close(wait)

    def __enter__(self) -> "ChunkRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ the tick
    def act(self, obs: Any) -> np.ndarray:
        """This tick's action: ``[action_dim]`` (one env) or ``[num_envs, action_dim]``."""
        t0 = self.timing.tick()
        self._observe(obs)
        tick = self._tick
        main, fallback = self.main, self.fallback
        for lane in self._lanes():
            self._collect(lane, tick)
            lane.abandon_if_useless(tick)
        self._launch_main(tick, t0)
        if fallback is not None:
            self._launch_fallback(tick)
        if not main.executes(tick) and self._wait_for_main(t0):
            self._collect(main, tick)
            self._launch_main(tick, t0)
        if fallback is not None:
            self._collect(fallback, tick)  # one that finished during the wait serves this tick
        action, source = self._choose(tick)
        action = np.array(action, dtype=np.float32)  # the caller's own copy, never a view into a chunk
        self.sources.append(source)
        self._source_counts[source] += 1
        self._executed.append(action)
        self._tick += 1
        self._act_latencies.append(self.timing.now() - t0)
        return action[0] if self.num_envs is None else action

    def _observe(self, obs: Any) -> None:
        batch = [obs] if self.num_envs is None else list(obs)
        if self.num_envs is not None and len(batch) != self.num_envs:
            raise ValueError(f"act expects {self.num_envs} observations (num_envs), got {len(batch)}")
        if batch[0] is None and self.num_envs is None:
            raise ValueError("act needs an observation, got None")
        checked = [None if o is None else self.observations(o, f"tick {self._tick}" if self.num_envs is None
                                                             else f"tick {self._tick}, env {e}")
                   for e, o in enumerate(batch)]
        steps = self.policy.config.n_obs_steps
        if self._history is None:
            if any(o is None for o in checked):
                raise ValueError("every env needs an observation on the first tick (None marks a finished env)")
            self._history = [deque([o] * steps, maxlen=steps) for o in checked]
            self._active = np.arange(len(checked))
        else:
            for h, o in zip(self._history, checked):
                if o is not None:
                    h.append(o)
            self._active = self._active[[checked[e] is not None for e in self._active]]
        if self.best_of_n is not None:
            self.best_of_n.observe(batch)

    # ------------------------------------------------------------------ scheduling
    def _collect(self, lane: Lane, tick: int) -> None:
        outcome = lane.collect(tick)
        if outcome == "adopted" and lane is self.main:
            self._switch_ticks.append(tick)
        elif outcome == "failed":
            self._warn_failed(lane)

    def _launch_main(self, tick: int, t0: float) -> None:
        main = self.main
        if not len(self._active) or not main.due_to_launch(tick):
            return
        if self._skips_doomed(main, tick):
            return
        deadline = None
        if self.sampler.anytime and self.inference_delay is None:
            deadline = self.timing.due(t0, main.remaining(tick))
        main.launch(tick, self._inputs(tick, deadline=deadline), deadline)
        self._collect(main, tick)  # a simulated delay of 0 makes it usable at once

    def _skips_doomed(self, lane: Lane, tick: int) -> bool:
        """True when ``lane``'s chunks are doomed: the tick is counted as skipped, and the first one
        records when and warns."""
        if not lane.doomed():
            return False
        lane.counts["doomed_ticks"] += 1
        if lane.doomed_at is None:
            lane.doomed_at = tick
            self._warn_doomed(lane)
        return True

    def _wait_for_main(self, t0: float) -> bool:
        """Wait for the main chunk in flight, until this tick's wait ends, if it is expected by then.
        A chunk whose arrival is unknown (nothing measured yet) or overdue (slower than expected) is
        waited for once, at the first tick that needs it; later ticks take a fallback at once.
        True when the chunk is done."""
        pending = self.main.pending
        if pending is None or pending.job is None:
            return False
        now, end = self.timing.now(), self.timing.wait_end(t0)
        expected = self.main.expected_ready_time()
        if expected is None or expected < now:
            worth = not pending.waited
        else:
            worth = expected <= end
        if now >= end or not worth:
            return pending.job.done()
        pending.waited = True
        self.timing.clock.wait(pending.job, end - now)
        return pending.job.done()

    def _launch_fallback(self, tick: int) -> None:
        """Start a DDIM fallback chunk when the main lane is expected to leave a tick uncovered within
        the fallback's lead (or is doomed), and the fallback's own chunk needs refreshing."""
        fallback, main = self.fallback, self.main
        if not len(self._active) or not fallback.due_to_launch(tick):
            return
        lead = fallback.lead()
        if not main.doomed():
            gap = max(tick, main.covered_until() + 1)  # the first tick the main lane has no action for
            arrival = main.expected_arrival_tick(tick)
            if gap - tick > lead or (arrival is not None and arrival <= gap):
                return
        if self._skips_doomed(fallback, tick):
            return
        fallback.launch(tick, self._inputs(tick, fallback=True))
        self._collect(fallback, tick)  # simulated: computed at once

    # ------------------------------------------------------------------ choosing the action
    def _choose(self, tick: int) -> tuple[np.ndarray, str]:
        main, fallback = self.main, self.fallback
        if main.executes(tick):
            cur = main.current
            return self._fill(cur.rows, self.smoothing.action(main.previous, cur, tick)), "chunk"
        main.note_miss()
        if main.covers(tick):
            return self._fill(main.current.rows, main.current.at(tick)), "rest"
        if fallback is not None and fallback.covers(tick):
            return self._fill(fallback.current.rows, fallback.current.at(tick)), "fallback"
        return self._safe(), "safe"

    def _safe(self) -> np.ndarray:
        return self.safe_action(self._executed[-1] if self._executed else None, len(self._history))

    def _fill(self, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Actions of every env: ``values`` for ``rows``, the safe action for the others (finished envs)."""
        if len(rows) == len(self._history):
            return values
        out = self._safe()
        out[rows] = values
        return out

    # ------------------------------------------------------------------ warnings
    def _warn_doomed(self, lane: Lane) -> None:
        expected = lane.expected_latency()
        what = "the main sampler's" if lane is self.main else "the DDIM fallback's"
        warnings.warn(f"ChunkRunner: {what} chunks take {expected:.3f} s, at least {self.chunk_length} ticks of "
                      f"{self.timing.period_s:.3f} s: each would arrive after its last action. From tick "
                      f"{lane.doomed_at} no more are started this episode (see stats()['doomed_ticks'])",
                      RuntimeWarning, stacklevel=4)

    def _warn_failed(self, lane: Lane) -> None:
        if lane.name in self._warned:
            return
        self._warned.add(lane.name)
        warnings.warn(f"ChunkRunner: a {lane.name} chunk held NaN or inf and was rejected; the tick got the next "
                      f"fallback (see stats())", RuntimeWarning, stacklevel=4)

    # ------------------------------------------------------------------ inference
    def _inputs(self, tick: int, fallback: bool = False, deadline: float | None = None) -> dict[str, Any]:
        """What a chunk started at ``tick`` needs, taken here without torch work (the worker thread
        turns it into tensors): the envs, their observation histories, the previous chunk, the lead,
        the executed actions (best-of-N), the deadline and, in real time, a seed of its own."""
        envs = self._active.copy()
        return {"envs": envs, "histories": [tuple(self._history[e]) for e in envs],
                "previous": None if fallback else self.main.current, "lead": self.main.lead(),
                "executed": list(self._executed) if self.best_of_n is not None and not fallback else None,
                "deadline": deadline,
                "seed": None if self.inference_delay is not None else self.chunks.next_seed()}

    # ------------------------------------------------------------------ report
    def stats(self) -> dict[str, Any]:
        """This episode's counters and latencies. Each name means exactly this:

        * ``ticks``: ``act`` calls.
        * ``chunks``: main-sampler chunks adopted (they executed at least one action).
        * ``launched``: main-sampler chunks started, the one ``reset(obs)`` computes included. Each
          ends adopted (``chunks``), dropped or failed, is cancelled by :meth:`close`
          (``cancelled_chunks``), or is still in flight (``in_flight``, 0 or 1).
        * ``misses``: main-sampler chunks that were still in flight at the end of a tick that had no
          fresh chunk to execute (each counted once, whatever became of it).
        * ``dropped_chunks``: main chunks that never executed because every action was for a tick
          already past: arrived too late, or cancelled in flight once their last tick had passed.
        * ``failed_chunks``: main chunks rejected because they held NaN or inf.
        * ``dropped_actions``: actions of adopted main chunks skipped because their tick was past.
        * ``early_stops``: finished main chunks an anytime sampler stopped at its deadline.
        * ``doomed_ticks``: ticks at which a main chunk was due to start but was not, because the
          measured latency showed it would arrive after its last action (``doomed_at``: the first).
        * ``fallbacks``: ticks without a fresh chunk, ``fallback_rest + fallback_ddim + safe_actions``:
          served by the rest of the last main chunk, by a DDIM fallback chunk, or by the safe action
          (``safe_action`` names which).
        * ``fallback_launched``, ``fallback_failed``, ``fallback_dropped``, ``fallback_doomed_ticks``: the
          same for the DDIM fallback's chunks.
        * ``latency_p50_s``, ``latency_p99_s``, ``rounds_mean``: launch-to-result seconds and sequential
          denoiser calls of the main chunks with a result (adopted or dropped);
          ``fallback_latency_p50_s`` likewise for the fallback.
        * ``act_latency_p50_s``, ``act_latency_p99_s``, ``act_latency_max_s``: seconds ``act`` took;
          ``overruns``: ``act`` calls longer than ``budget_s`` (None with a simulated delay, where the
          budget does not apply).
        * ``boundary_jerk``, ``interior_jerk``: see :func:`boundary_jerk`.
        """
        main, fallback = self.main, self.fallback
        counts = main.counts
        by_source = self._source_counts
        lat = [e["latency_s"] for e in main.log]
        act = np.asarray(self._act_latencies)
        boundary, interior = (boundary_jerk(np.asarray(self._executed), self._switch_ticks[1:])
                              if self._executed else (None, None))
        fb = fallback.counts if fallback is not None else dict.fromkeys(counts, 0)
        fb_lat = [e["latency_s"] for e in self.fallback_log]
        return {
            "ticks": self._tick, "chunks": counts["adopted"], "launched": counts["launched"],
            "in_flight": int(main.pending is not None), "misses": counts["misses"],
            "dropped_chunks": counts["dropped"], "failed_chunks": counts["failed"],
            "cancelled_chunks": counts["cancelled"],
            "dropped_actions": counts["dropped_actions"], "early_stops": counts["early_stops"],
            "doomed_ticks": counts["doomed_ticks"], "doomed_at": main.doomed_at,
            "fallbacks": self._tick - by_source["chunk"], "fallback_rest": by_source["rest"],
            "fallback_ddim": by_source["fallback"], "safe_actions": by_source["safe"],
            "safe_action": self.safe_action.source,
            "fallback_launched": fb["launched"], "fallback_failed": fb["failed"], "fallback_dropped": fb["dropped"],
            "fallback_doomed_ticks": fb["doomed_ticks"],
            "latency_p50_s": float(np.percentile(lat, 50)) if lat else None,
            "latency_p99_s": float(np.percentile(lat, 99)) if lat else None,
            "fallback_latency_p50_s": float(np.percentile(fb_lat, 50)) if fb_lat else None,
            "rounds_mean": float(np.mean([e["rounds"] for e in main.log])) if main.log else None,
            "act_latency_p50_s": float(np.percentile(act, 50)) if act.size else None,
            "act_latency_p99_s": float(np.percentile(act, 99)) if act.size else None,
            "act_latency_max_s": float(act.max()) if act.size else None,
            "overruns": None if self.inference_delay is not None else int((act > self.timing.budget_s).sum()),
            "boundary_jerk": boundary, "interior_jerk": interior,
        }


def boundary_jerk(actions: np.ndarray, switch_ticks: Sequence[int]) -> tuple[float | None, float | None]:
    """Mean norm of the second difference of the executed actions (``[T, B, action_dim]``; for
    velocity or delta-position commands, proportional to jerk) at ticks where a new chunk took over
    (and the tick after), and at all other ticks."""
    if actions.shape[0] < 3:
        return None, None
    second = np.linalg.norm(actions[2:] - 2 * actions[1:-1] + actions[:-2], axis=-1).mean(axis=-1)  # [T-2]
    ticks = np.arange(2, actions.shape[0])
    at_switch = np.isin(ticks, [t + d for t in switch_ticks for d in (0, 1)])
    b = float(second[at_switch].mean()) if at_switch.any() else None
    i = float(second[~at_switch].mean()) if (~at_switch).any() else None
    return b, i
