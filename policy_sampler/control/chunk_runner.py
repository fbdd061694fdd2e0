"""ChunkRunner: a DiffusionPolicy inside a control loop, one action per tick, within a latency budget.

Each ``act(obs)`` call is one control tick. The runner keeps the observation history, executes
``n_action_steps`` actions of each chunk and starts the next chunk early enough that it is ready when
the current one runs out, so inference hides behind execution (Diffusion Policy's real-robot loop,
Chi et al. 2023, sec. 4.1: each chunk is stamped with the tick of the observation it answers, and
its actions for ticks already past are dropped).

Two clocks (:class:`~policy_sampler.control.timing.Timing`):

* ``inference_delay=None`` (real time): chunks are computed on a background thread. ``act`` never
  waits past ``budget_s``; the next chunk starts ``lead`` ticks before it is due, ``lead`` from the
  measured latencies and the measured tick period. Anytime samplers (the Picard family) get the
  time the chunk is due as their deadline and return their best iterate by then.
* ``inference_delay=d`` (simulated, deterministic): the chunk started at tick s is computed at once
  and becomes usable at tick s + d, as if inference took d ticks. Evaluation uses this to measure
  success under a given delay independently of the machine; at d = 0 it is plain open-loop chunk
  execution, chunk after chunk.

When the fresh chunk is late (a *miss*), the fallback is, in order: the rest of the last chunk (its
actions past ``n_action_steps``), then a few-step DDIM chunk (``fallback_steps``, computed on its own
thread), then holding the last action. Every tick gets an action; ``stats()`` counts each case.

The runner composes three collaborators: :class:`~policy_sampler.control.timing.Timing` (clock, lead,
deadlines), :class:`~policy_sampler.control.smoothing.ChunkSmoothing` (RTC or temporal ensembling
where chunks meet) and, with ``num_candidates > 1``, :class:`~policy_sampler.control.candidates.BestOfN`
(a selector picks one of N sampled chunks). ``warm_start=True`` (Picard family) reuses the previous
chunk's noise and path shifted in time as the next chunk's noise and initial guess: each chunk's
marginal law is unchanged (its noise is still i.i.d. normal) but consecutive chunks share noise.

With ``num_envs`` set, ``act`` takes one observation per env and an env that has finished passes
``None``: it gets no rows in later chunks (so a batch of envs is sampled exactly as the batch of
those still running), and its row of the returned actions holds the hold action.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from policy_sampler.control.candidates import BestOfN
from policy_sampler.control.chunk import Chunk, shift_in_time
from policy_sampler.control.config import RunnerConfig
from policy_sampler.control.smoothing import ChunkSmoothing
from policy_sampler.control.timing import Timing
from policy_sampler.policy.observations import stack_observations
from policy_sampler.samplers import Sampler, make_sampler

__all__ = ["ChunkRunner", "boundary_jerk"]


class ChunkRunner:
    """Runs ``policy`` in a control loop: ``act(obs)`` returns this tick's action within ``budget_s``.

    ``sampler``: a name (its options as keyword arguments, as for ``make_sampler``) or a
    :class:`Sampler`. ``budget_s``: the most an ``act`` call may take (overrides ``config.budget_s``).
    ``config``: a :class:`RunnerConfig` (timing, smoothing, drafts, fallbacks, envs, seed).
    ``selector``: picks one of ``config.num_candidates`` chunks per env (best-of-N under a learned
    reward, :class:`~policy_sampler.preference.RewardSelector`). ``clock``: seconds for the real-time
    decisions (``time.perf_counter``; tests script it).
    """

    def __init__(
        self,
        policy: Any,
        sampler: str | Sampler = "ddpm",
        budget_s: float | None = None,
        *,
        config: RunnerConfig | None = None,
        selector: Any = None,
        clock: Callable[[], float] = time.perf_counter,
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
        if isinstance(sampler, Sampler):
            if sampler_options:
                raise ValueError("sampler options cannot be given with a Sampler instance")
            self.sampler = sampler
        else:
            self.sampler = make_sampler(sampler, **sampler_options)
        c = policy.config
        self.policy = policy
        self.config = config
        self.chunk_length = c.horizon - c.n_obs_steps + 1
        self.n_action_steps = c.n_action_steps if config.n_action_steps is None else config.n_action_steps
        if self.n_action_steps > self.chunk_length:
            raise ValueError(f"n_action_steps must be an int in [1, {self.chunk_length}], got {config.n_action_steps!r}")
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
        self.guess_from_previous = config.guess_from_previous and self.sampler.draft_guess
        self.hold_action = (np.zeros(c.action_dim, np.float32) if config.hold_action is None
                            else np.asarray(config.hold_action, np.float32).reshape(c.action_dim))
        self.timing = Timing(config.budget_s, config.control_period_s or config.budget_s, self.n_action_steps,
                             config.inference_delay, clock)
        self.smoothing = ChunkSmoothing(config.smoothing, c.horizon, c.n_obs_steps, config.rtc_max_guidance,
                                        config.rtc_jacobian, config.ensemble_decay)
        # with one candidate there is nothing to choose: the selector is not consulted
        self.best_of_n = (BestOfN(selector, config.num_candidates, c.action_dim)
                          if selector is not None and config.num_candidates > 1 else None)
        self._main: ThreadPoolExecutor | None = None
        self._backup: ThreadPoolExecutor | None = None
        self.reset()

    @property
    def num_envs(self) -> int | None:
        return self.config.num_envs

    @property
    def inference_delay(self) -> int | None:
        return self.config.inference_delay

    # ------------------------------------------------------------------ lifecycle
    def reset(self, obs: Any = None) -> None:
        """Forget the episode: history, chunks and counters (pending work is abandoned). Given the
        episode's first observation, also compute the first chunk now, before the loop's first tick
        (else the first tick waits for it within the budget, like any other)."""
        self._tick = 0
        self._history: list[deque] | None = None
        self._active: np.ndarray | None = None  # env indices still running
        self._current: Chunk | None = None
        self._previous: Chunk | None = None
        self._pending: tuple[int, Future] | None = None
        self._scheduled: Chunk | None = None  # simulated clock: computed, usable from start + delay
        self._backup_chunk: Chunk | None = None
        self._backup_pending: Future | None = None
        self._missed_current = False
        self.timing.reset()
        device = self.policy.device
        self._generator = torch.Generator(device=device)
        if self.config.seed is not None:
            self._generator.manual_seed(self.config.seed)
        else:
            self._generator.seed()
        self._backup_generator = torch.Generator(device=device)
        self._backup_generator.manual_seed(self._generator.initial_seed() ^ 0x5EED)
        if self.best_of_n is not None:
            self.best_of_n.reset(self._generator.initial_seed())
        self.chunk_log: list[dict[str, Any]] = []  # per adopted or dropped chunk (see Chunk.log_entry)
        self._act_latencies: list[float] = []
        self._executed: list[np.ndarray] = []
        self._switch_ticks: list[int] = []
        self._counts = dict(chunks=0, misses=0, fallbacks=0, fallback_rest=0, fallback_ddim=0, holds=0,
                            dropped_actions=0, dropped_chunks=0, early_stops=0)
        if obs is not None:
            self._observe(obs)
            self._adopt(self._infer(0, self._chunk_inputs(0)), 0)
            self._history = None  # act(obs) at tick 0 starts the history again with the same observation
            self._active = None
            if self.best_of_n is not None:
                self.best_of_n.forget_observations()

    def close(self, wait: bool = False) -> None:
        """Stop the background threads; a chunk in flight finishes on its own unless ``wait``."""
        for pool in (self._main, self._backup):
            if pool is not None:
                pool.shutdown(wait=wait, cancel_futures=True)
        self._main = self._backup = None

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
        self._collect(tick)
        if self._pending is None and self._scheduled is None and self._remaining(tick) <= self._lead():
            self._launch(tick, t0)
            self._collect(tick)
        action = self._action_for(tick, t0)
        self._executed.append(action)
        self._tick += 1
        self._act_latencies.append(time.perf_counter() - t0)
        return action[0] if self.num_envs is None else action

    def _observe(self, obs: Any) -> None:
        batch = [obs] if self.num_envs is None else list(obs)
        if self.num_envs is not None and len(batch) != self.num_envs:
            raise ValueError(f"act expects {self.num_envs} observations (num_envs), got {len(batch)}")
        if batch[0] is None and self.num_envs is None:
            raise ValueError("act needs an observation, got None")
        steps = self.policy.config.n_obs_steps
        if self._history is None:
            if any(o is None for o in batch):
                raise ValueError("every env needs an observation on the first tick (None marks a finished env)")
            self._history = [deque([o] * steps, maxlen=steps) for o in batch]
            self._active = np.arange(len(batch))
        else:
            for h, o in zip(self._history, batch):
                if o is not None:
                    h.append(o)
            self._active = self._active[[batch[e] is not None for e in self._active]]
        if self.best_of_n is not None:
            self.best_of_n.observe(batch)

    def _policy_obs(self, envs: np.ndarray) -> dict[str, Tensor]:
        return stack_observations(self.policy.config.obs_keys, [self._history[e] for e in envs])

    def _remaining(self, tick: int) -> int:
        cur = self._current
        if cur is None:
            return 0
        end = min(cur.adopted + self.n_action_steps, cur.start + cur.actions.shape[1])
        return max(0, end - tick)

    def _lead(self) -> int:
        return self.timing.lead(self.chunk_log)

    # ------------------------------------------------------------------ inference
    def _launch(self, tick: int, t0: float) -> None:
        if not len(self._active):
            return  # every env has finished
        kwargs = self._chunk_inputs(tick)
        if self.inference_delay is not None:
            self._scheduled = self._infer(tick, kwargs)
            return
        if self.sampler.anytime:
            kwargs["deadline"] = self.timing.deadline(t0, self._remaining(tick))
        if self._main is None:
            self._main = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk-runner")
        self._pending = (tick, self._main.submit(self._infer, tick, kwargs))

    def _chunk_inputs(self, tick: int) -> dict[str, Any]:
        """The envs, their observations, the initial noise (and, with ``warm_start``, the shifted noise
        and path), the exact samplers' draft guess and the RTC guidance of the chunk started at ``tick``."""
        c = self.policy.config
        envs = self._active.copy()
        repeats = self.config.num_candidates
        shape = (len(envs) * repeats, c.horizon, c.action_dim)
        device = self.policy.device
        obs = self._policy_obs(envs)
        kwargs: dict[str, Any] = {"envs": envs, "obs": obs if self.best_of_n is None else self.best_of_n.expand(obs)}
        prev = self._current
        shift = None if prev is None else tick - prev.start
        overlaps = prev is not None and shift < c.horizon
        before = None if prev is None else torch.as_tensor(prev.positions(envs), device=device)
        if self.config.warm_start:
            steps = self.policy.schedule_for(self.config.num_inference_steps).num_steps
            x_T = torch.randn(shape, generator=self._generator, device=device)
            noise = torch.randn((steps, *shape), generator=self._generator, device=device)
            if overlaps and prev.noise is not None:
                keep = c.horizon - shift
                x_T[:, :keep] = prev.x_T[before, shift:]
                noise[:, :, :keep] = prev.noise[:, before, shift:]
                if prev.trajectory is not None:
                    kwargs["trajectory_guess"] = shift_in_time(prev.trajectory[:, before], shift, dim=2)
            kwargs.update(x_T=x_T, noise=noise)
        else:
            kwargs["x_T"] = torch.randn(shape, generator=self._generator, device=device)
        if self.guess_from_previous and overlaps:
            # the exact samplers' first draft assumes the previous chunk, shifted (its tail repeated)
            guess = shift_in_time(prev.normalized[before], shift, dim=1)
            kwargs["x0_guess"] = guess.repeat_interleave(repeats, dim=0)
        if overlaps:
            guidance = self.smoothing.guidance(prev, shift, self._lead(), envs, repeats)
            if guidance is not None:
                kwargs["guidance"] = guidance
        return kwargs

    def _infer(self, tick: int, kwargs: dict[str, Any], fallback: bool = False) -> Chunk:
        c = self.policy.config
        kwargs = dict(kwargs)
        envs, obs = kwargs.pop("envs"), kwargs.pop("obs")
        start = time.perf_counter()
        if fallback:
            out = self.policy.predict_action(obs, sampler="ddim", generator=self._backup_generator,
                                             num_inference_steps=self.config.fallback_steps)
        else:
            out = self.policy.predict_action(obs, sampler=self.sampler, generator=self._generator,
                                             num_inference_steps=self.config.num_inference_steps, **kwargs)
        chunk = out.chunk.detach().float()
        if not fallback and self.best_of_n is not None:
            chunk = self.best_of_n.choose(chunk, envs, c.n_obs_steps - 1, self._executed)
        latency = time.perf_counter() - start
        accepted = out.info.get("mean_accepted_length")
        return Chunk(
            start=tick, rows=envs, actions=chunk[:, c.n_obs_steps - 1:].cpu().numpy(),
            normalized=self.policy.normalizer.normalize("action", chunk),
            latency_s=latency, rounds=int(out.rounds), nfe=int(out.nfe),
            stopped_early=bool(out.info.get("stopped_early", False)),
            mean_accepted_length=None if accepted is None else float(accepted),
            x_T=kwargs.get("x_T"), noise=kwargs.get("noise"),
            trajectory=out.info.get("trajectory") if self.config.warm_start else None,
        )

    def _collect(self, tick: int) -> None:
        """Adopt a chunk that is ready: the scheduled one once its delay has passed, or a finished
        background one."""
        if self._scheduled is not None and tick >= self._scheduled.start + (self.inference_delay or 0):
            chunk, self._scheduled = self._scheduled, None
            self._adopt(chunk, tick)
        if self._pending is not None and self._pending[1].done():
            _, future = self._pending
            self._pending = None
            self._adopt(future.result(), tick)
        if self._backup_pending is not None and self._backup_pending.done():
            self._backup_chunk = self._backup_pending.result()
            self._backup_pending = None

    def _adopt(self, chunk: Chunk, tick: int) -> None:
        self.chunk_log.append(chunk.log_entry())
        self._counts["early_stops"] += int(chunk.stopped_early)
        if not chunk.covers(tick):
            self._counts["dropped_chunks"] += 1  # every action of it is already past
            return
        self._counts["chunks"] += 1
        self._counts["dropped_actions"] += tick - chunk.start
        chunk.adopted = tick
        self._previous, self._current = self._current, chunk
        self._missed_current = False
        self._backup_chunk = None
        self._switch_ticks.append(tick)

    def _wait_for_pending(self, tick: int, t0: float) -> None:
        if self._pending is None:
            return
        timeout = self.timing.wait_left(t0)
        if timeout > 0:
            try:
                self._pending[1].result(timeout=timeout)
            except TimeoutError:
                return
            self._collect(tick)

    # ------------------------------------------------------------------ choosing the action
    def _action_for(self, tick: int, t0: float) -> np.ndarray:
        cur = self._current
        if cur is None or not cur.executes(tick, self.n_action_steps):
            self._wait_for_pending(tick, t0)
            cur = self._current
        if cur is not None and cur.executes(tick, self.n_action_steps):
            return self._fill(cur.rows, self.smoothing.action(self._previous, cur, tick))
        if not self._missed_current:
            self._counts["misses"] += 1
            self._missed_current = True
        self._counts["fallbacks"] += 1
        self._ensure_backup(tick)
        if cur is not None and cur.covers(tick):
            self._counts["fallback_rest"] += 1
            return self._fill(cur.rows, cur.at(tick))
        backup = self._backup_chunk
        if backup is not None and backup.covers(tick):
            self._counts["fallback_ddim"] += 1
            return self._fill(backup.rows, backup.at(tick))
        self._counts["holds"] += 1
        return self._hold()

    def _fill(self, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Actions of every env: ``values`` for ``rows``, the held action for the others."""
        if len(rows) == len(self._history):
            return values
        out = self._hold().copy()
        out[rows] = values
        return out

    def _ensure_backup(self, tick: int) -> None:
        """Start the few-step DDIM fallback chunk when the fresh chunk is late."""
        if not self.config.fallback_steps or self._backup_pending is not None or not len(self._active):
            return
        if self._backup_chunk is not None and self._backup_chunk.covers(tick):
            return
        kwargs = {"envs": self._active.copy(), "obs": self._policy_obs(self._active)}
        if self.inference_delay is not None:
            self._backup_chunk = self._infer(tick, kwargs, fallback=True)
            return
        if self._backup is None:
            self._backup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk-runner-fallback")
        self._backup_pending = self._backup.submit(self._infer, tick, kwargs, True)

    def _hold(self) -> np.ndarray:
        if self._executed:
            return self._executed[-1]
        return np.repeat(self.hold_action[None], len(self._history), axis=0)

    # ------------------------------------------------------------------ report
    def stats(self) -> dict[str, Any]:
        """Counters and latencies of this episode: ``chunks`` (adopted), ``misses`` (chunks not ready
        when due), ``fallbacks`` (ticks served by a fallback: ``fallback_rest``, ``fallback_ddim``,
        ``holds``), ``latency_p50_s``/``latency_p99_s`` (per chunk), ``act_latency_max_s``,
        ``rounds_mean``, ``dropped_actions``, ``early_stops`` and the jerk of the executed actions at
        chunk boundaries and elsewhere (:func:`boundary_jerk`)."""
        lat = np.asarray([c["latency_s"] for c in self.chunk_log])
        act = np.asarray(self._act_latencies)
        boundary, interior = boundary_jerk(np.asarray(self._executed), self._switch_ticks[1:]) if self._executed else (None, None)
        out: dict[str, Any] = dict(self._counts)
        out.update(
            ticks=self._tick,
            latency_p50_s=float(np.percentile(lat, 50)) if lat.size else None,
            latency_p99_s=float(np.percentile(lat, 99)) if lat.size else None,
            act_latency_p99_s=float(np.percentile(act, 99)) if act.size else None,
            act_latency_max_s=float(act.max()) if act.size else None,
            rounds_mean=float(np.mean([c["rounds"] for c in self.chunk_log])) if self.chunk_log else None,
            boundary_jerk=boundary, interior_jerk=interior,
        )
        return out


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
