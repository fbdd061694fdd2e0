"""ChunkRunner: a DiffusionPolicy inside a control loop, one action per tick, within a latency budget.

Each ``act(obs)`` call is one control tick. The runner keeps the observation history, executes
``n_action_steps`` actions of each chunk and starts the next chunk early enough that it is ready when
the current one runs out, so inference hides behind execution (Diffusion Policy's real-robot loop,
Chi et al. 2023, sec. 4.1: each chunk is stamped with the tick of the observation it answers, and
its actions for ticks already past are dropped).

Two clocks:

* ``inference_delay=None`` (real time): chunks are computed on a background thread. ``act`` never
  waits past ``budget_s``; the next chunk starts ``lead`` ticks before it is due, ``lead`` from the
  measured latencies and the measured tick period. Anytime samplers (the Picard family) get the
  time the chunk is due as their deadline and return their best iterate by then.
* ``inference_delay=d`` (simulated, deterministic): the chunk started at tick s is computed at once
  and becomes usable at tick s + d, as if inference took d ticks. Evaluation uses this to measure
  success under a given delay independently of the machine.

When the fresh chunk is late (a *miss*), the fallback is, in order: the rest of the last chunk (its
actions past ``n_action_steps``), then a few-step DDIM chunk (``fallback_steps``, computed on its own
thread), then holding the last action. Every tick gets an action; ``stats()`` counts each case.

Smoothing where chunks meet (``smoothing``): ``'rtc'`` inpaints the next chunk to agree with the
actions that execute while it is computed (:class:`RealTimeChunking`); ``'ensemble'`` averages the
overlapping predictions of consecutive chunks (:func:`ensemble`). ``warm_start=True`` (Picard
family) reuses the previous chunk's noise and path shifted in time as the next chunk's noise and
initial guess: each chunk's marginal law is unchanged (its noise is still i.i.d. normal) but
consecutive chunks share noise, so they are correlated.
"""

from __future__ import annotations

import math
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from policy_sampler.control.real_time_chunking import RealTimeChunking, soft_mask
from policy_sampler.control.temporal_ensembling import ensemble
from policy_sampler.policy.observations import flat_observation, stack_observations
from policy_sampler.samplers import Sampler, make_sampler

__all__ = ["ChunkRunner", "boundary_jerk"]

SMOOTHING = ("none", "rtc", "ensemble")


@dataclass
class _Chunk:
    """A sampled chunk: ``actions[:, j]`` is for tick ``start + j`` (j = 0 is the observation's tick).
    Adopted at tick ``adopted``, it executes up to ``n_action_steps`` actions from there (the ones for
    ticks already past are dropped)."""

    start: int
    actions: np.ndarray  # [B, L, action_dim], unnormalized, from the observation's tick on
    normalized: Tensor  # [B, horizon, action_dim]
    x_T: Tensor
    noise: Tensor | None
    trajectory: Tensor | None
    latency_s: float
    rounds: int
    nfe: int
    stopped_early: bool
    adopted: int = -1

    def covers(self, tick: int) -> bool:
        return self.start <= tick < self.start + self.actions.shape[1]

    def executes(self, tick: int, n_action_steps: int) -> bool:
        return self.covers(tick) and self.adopted <= tick < self.adopted + n_action_steps

    def at(self, tick: int) -> np.ndarray:
        return self.actions[:, tick - self.start]


class ChunkRunner:
    """Runs ``policy`` in a control loop: ``act(obs)`` returns this tick's action within ``budget_s``.

    ``sampler`` (a name, with ``sampler_options``, or a :class:`Sampler`); ``budget_s``: the most an
    ``act`` call may take, and the tick period assumed until one is measured (``control_period_s``
    overrides it); ``n_action_steps``: actions executed per chunk (default: the policy's);
    ``inference_delay``: None (real time) or the simulated delay in ticks; ``num_inference_steps``:
    the sampler's schedule length (None: the policy's); ``smoothing``: 'none',
    'rtc' or 'ensemble'; ``warm_start``: Picard-family warm starts; ``guess_from_previous``: exact
    samplers draft their first window from the previous chunk shifted in time (legal: it ignores the
    new chunk's noise, so the law is unchanged); ``fallback_steps``: DDIM steps of
    the fallback chunk (0: none); ``num_envs``: None for one env (``act`` takes one observation and
    returns ``[action_dim]``), else the number of envs stepped in lockstep (``act`` takes a sequence
    of observations and returns ``[num_envs, action_dim]``); ``num_candidates`` and ``selector``: sample
    N candidate chunks per env in one batched call and let ``selector.choose(past_obs, past_actions,
    candidates, rng)`` pick one (best-of-N under a learned reward,
    :class:`~policy_sampler.preference.RewardSelector`); ``seed``: seeds every draw.
    """

    def __init__(
        self,
        policy: Any,
        sampler: str | Sampler = "ddpm",
        budget_s: float = 0.1,
        *,
        n_action_steps: int | None = None,
        control_period_s: float | None = None,
        inference_delay: int | None = None,
        smoothing: str = "none",
        rtc_max_guidance: float = 5.0,
        ensemble_decay: float = 0.01,
        warm_start: bool = False,
        guess_from_previous: bool = True,
        fallback_steps: int = 4,
        num_inference_steps: int | None = None,
        num_candidates: int = 1,
        selector: Any = None,
        hold_action: Sequence[float] | None = None,
        num_envs: int | None = None,
        seed: int | None = None,
        **sampler_options: Any,
    ) -> None:
        c = policy.config
        _positive("budget_s", budget_s)
        if control_period_s is not None:
            _positive("control_period_s", control_period_s)
        self.policy = policy
        self.sampler = sampler if isinstance(sampler, Sampler) else make_sampler(sampler, **sampler_options)
        if isinstance(sampler, Sampler) and sampler_options:
            raise ValueError("sampler options cannot be given with a Sampler instance")
        self.budget_s = float(budget_s)
        self.period_s = float(control_period_s or budget_s)
        self.chunk_length = c.horizon - c.n_obs_steps + 1
        self.n_action_steps = c.n_action_steps if n_action_steps is None else n_action_steps
        if not _is_int(self.n_action_steps) or not 1 <= self.n_action_steps <= self.chunk_length:
            raise ValueError(f"n_action_steps must be an int in [1, {self.chunk_length}], got {n_action_steps!r}")
        if inference_delay is not None and (not _is_int(inference_delay) or inference_delay < 0):
            raise ValueError(f"inference_delay must be None (real time) or an int >= 0 ticks, got {inference_delay!r}")
        self.inference_delay = inference_delay
        if smoothing not in SMOOTHING:
            raise ValueError(f"smoothing must be one of {SMOOTHING}, got {smoothing!r}")
        self.smoothing = smoothing
        _positive("rtc_max_guidance", rtc_max_guidance)
        self.rtc_max_guidance = float(rtc_max_guidance)
        if not ensemble_decay >= 0:
            raise ValueError(f"ensemble_decay must be >= 0, got {ensemble_decay!r}")
        self.ensemble_decay = float(ensemble_decay)
        if warm_start and not self.sampler.warm_start:
            raise ValueError(f"warm_start needs a sampler that takes a trajectory guess (picard, paradigms), "
                             f"got {self.sampler.name!r}")
        self.warm_start = bool(warm_start)
        self.guess_from_previous = bool(guess_from_previous) and self.sampler.draft_guess
        if not _is_int(fallback_steps) or fallback_steps < 0:
            raise ValueError(f"fallback_steps must be an int >= 0, got {fallback_steps!r}")
        self.fallback_steps = fallback_steps
        if fallback_steps:
            policy.schedule_for(fallback_steps)
        policy.schedule_for(num_inference_steps)
        self.num_inference_steps = num_inference_steps
        if not _is_int(num_candidates) or num_candidates < 1:
            raise ValueError(f"num_candidates must be an int >= 1, got {num_candidates!r}")
        if num_candidates > 1 and selector is None:
            raise ValueError("num_candidates > 1 needs a selector (e.g. policy_sampler.preference.RewardSelector)")
        if num_candidates > 1 and warm_start:
            raise ValueError("warm_start cannot be combined with num_candidates > 1")
        self.num_candidates = int(num_candidates)
        self.selector = selector
        if num_envs is not None and (not _is_int(num_envs) or num_envs < 1):
            raise ValueError(f"num_envs must be None or a positive int, got {num_envs!r}")
        self.num_envs = num_envs
        self.hold_action = None if hold_action is None else np.asarray(hold_action, np.float32).reshape(c.action_dim)
        self.seed = seed
        self._main: ThreadPoolExecutor | None = None
        self._backup: ThreadPoolExecutor | None = None
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self, obs: Any = None) -> None:
        """Forget the episode: history, chunks and counters (pending work is abandoned). Given the
        episode's first observation, also compute the first chunk now, before the loop's first tick
        (else the first tick waits for it within the budget, like any other)."""
        self._tick = 0
        self._history: list[deque] | None = None
        self._episode_obs: list[list[np.ndarray]] | None = None
        self._current: _Chunk | None = None
        self._previous: _Chunk | None = None
        self._pending: tuple[int, Future] | None = None
        self._scheduled: _Chunk | None = None  # simulated clock: computed, usable from start + delay
        self._backup_chunk: _Chunk | None = None
        self._backup_pending: Future | None = None
        self._missed_current = False
        self._last_act_time: float | None = None
        self._generator = torch.Generator(device=self.policy.device)
        if self.seed is not None:
            self._generator.manual_seed(int(self.seed))
        else:
            self._generator.seed()
        self._select_rng = np.random.default_rng(self._generator.initial_seed())
        self._backup_generator = torch.Generator(device=self.policy.device)
        self._backup_generator.manual_seed(self._generator.initial_seed() ^ 0x5EED)
        # per adopted or dropped chunk: batch, latency_s, rounds, nfe, stopped_early
        self.chunk_log: list[dict[str, Any]] = []
        self._act_latencies: list[float] = []
        self._executed: list[np.ndarray] = []
        self._switch_ticks: list[int] = []
        self._counts = dict(chunks=0, misses=0, fallbacks=0, fallback_rest=0, fallback_ddim=0, holds=0,
                            dropped_actions=0, dropped_chunks=0, early_stops=0)
        if obs is not None:
            self._observe(obs)
            first = self._infer(0, self._policy_obs(), self._chunk_inputs(0), past=self._past())
            self._adopt(first, 0)
            self._history = None  # act(obs) at tick 0 starts the history again with the same observation
            self._episode_obs = None

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
        t0 = time.perf_counter()
        if self._last_act_time is not None and self.inference_delay is None:
            self.period_s = 0.8 * self.period_s + 0.2 * (t0 - self._last_act_time)
        self._last_act_time = t0
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
        steps = self.policy.config.n_obs_steps
        if self._history is None:
            self._history = [deque([o] * steps, maxlen=steps) for o in batch]
        else:
            for h, o in zip(self._history, batch):
                h.append(o)
        if self.selector is not None:  # the whole episode, for the selector's scores
            if self._episode_obs is None:
                self._episode_obs = [[] for _ in batch]
            for seen, o in zip(self._episode_obs, batch):
                seen.append(flat_observation(o))

    def _policy_obs(self) -> dict[str, Tensor]:
        """The observation histories, each repeated ``num_candidates`` times (rows b * N + n)."""
        obs = stack_observations(self.policy.config.obs_keys, self._history)
        if self.num_candidates > 1:
            obs = {k: v.repeat_interleave(self.num_candidates, dim=0) for k, v in obs.items()}
        return obs

    def _past(self) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
        """Each env's observations and executed actions so far (what a selector scores)."""
        if self.selector is None:
            return None
        acts = np.stack(self._executed, axis=1) if self._executed else np.zeros((len(self._history), 0, self.policy.config.action_dim), np.float32)
        return [np.stack(o) for o in self._episode_obs], list(acts)

    def _remaining(self, tick: int) -> int:
        cur = self._current
        if cur is None:
            return 0
        end = min(cur.adopted + self.n_action_steps, cur.start + cur.actions.shape[1])
        return max(0, end - tick)

    def _lead(self) -> int:
        """Ticks before the current chunk runs out at which the next one starts: the simulated delay,
        or the 90th percentile of recent latencies in ticks (a chunk stopped at its deadline counts
        1.5 times its latency, so the lead grows until anytime samplers can converge)."""
        if self.inference_delay is not None:
            return self.inference_delay
        if not self.chunk_log:
            return self.n_action_steps  # unknown yet: start at once
        recent = sorted(c["latency_s"] * (1.5 if c["stopped_early"] else 1.0) for c in self.chunk_log[-20:])
        slow = recent[min(len(recent) - 1, int(0.9 * len(recent)))]
        return max(1, min(self.n_action_steps, math.ceil(slow / self.period_s)))

    # ------------------------------------------------------------------ inference
    def _launch(self, tick: int, t0: float) -> None:
        obs = self._policy_obs()
        kwargs = self._chunk_inputs(tick)
        kwargs_past = self._past()
        if self.inference_delay is not None:
            self._scheduled = self._infer(tick, obs, kwargs, past=kwargs_past)
            return
        if self.sampler.anytime:
            due = t0 + self._remaining(tick) * self.period_s + 0.9 * self.budget_s
            kwargs["deadline"] = due
        if self._main is None:
            self._main = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk-runner")
        self._pending = (tick, self._main.submit(self._infer, tick, obs, kwargs, False, kwargs_past))

    def _chunk_inputs(self, tick: int) -> dict[str, Any]:
        """Initial noise (and, with ``warm_start``, the shifted noise and path) and RTC guidance."""
        c = self.policy.config
        shape = (len(self._history) * self.num_candidates, c.horizon, c.action_dim)
        device = self.policy.device
        kwargs: dict[str, Any] = {}
        prev = self._current
        shift = None if prev is None else tick - prev.start
        if self.warm_start:
            steps = self.policy.schedule.num_steps
            x_T = torch.randn(shape, generator=self._generator, device=device)
            noise = torch.randn((steps, *shape), generator=self._generator, device=device)
            if prev is not None and prev.noise is not None and shift < c.horizon:
                keep = c.horizon - shift
                x_T[:, :keep] = prev.x_T[:, shift:]
                noise[:, :, :keep] = prev.noise[:, :, shift:]
                if prev.trajectory is not None:
                    kwargs["trajectory_guess"] = _shift_in_time(prev.trajectory, shift, dim=2)
            kwargs.update(x_T=x_T, noise=noise)
        else:
            kwargs["x_T"] = torch.randn(shape, generator=self._generator, device=device)
        if self.guess_from_previous and prev is not None and shift < c.horizon:
            # the exact samplers' first draft assumes the previous chunk, shifted (its tail repeated)
            guess = _shift_in_time(prev.normalized, shift, dim=1)
            kwargs["x0_guess"] = guess.repeat_interleave(self.num_candidates, dim=0)
        if self.smoothing == "rtc" and prev is not None and shift < c.horizon:
            frozen = c.n_obs_steps - 1 + self._lead()
            overlap = c.horizon - shift
            target = torch.zeros(shape, device=device)
            target[:, :overlap] = prev.normalized[:, shift:].repeat_interleave(self.num_candidates, dim=0)
            weights = soft_mask(c.horizon, min(frozen, overlap), overlap)
            kwargs["guidance"] = RealTimeChunking(target, weights, self.rtc_max_guidance)
        return kwargs

    def _infer(self, tick: int, obs: Mapping[str, Tensor], kwargs: dict[str, Any], fallback: bool = False,
               past: tuple[list[np.ndarray], list[np.ndarray]] | None = None) -> _Chunk:
        c = self.policy.config
        start = time.perf_counter()
        if fallback:
            out = self.policy.predict_action(obs, sampler="ddim", generator=self._backup_generator,
                                             num_inference_steps=self.fallback_steps)
        else:
            out = self.policy.predict_action(obs, sampler=self.sampler, generator=self._generator,
                                             num_inference_steps=self.num_inference_steps, **kwargs)
        chunk = out.chunk.detach().float()
        if not fallback and self.num_candidates > 1:
            # best-of-N: the selector picks one of each env's N candidates
            n = self.num_candidates
            candidates = chunk.view(-1, n, *chunk.shape[1:])
            picks = self.selector.choose(past[0], past[1], candidates[:, :, c.n_obs_steps - 1:].cpu().numpy(),
                                         self._select_rng)
            rows = torch.arange(candidates.shape[0], device=chunk.device)
            chunk = candidates[rows, torch.as_tensor(picks, device=chunk.device)]
        latency = time.perf_counter() - start
        return _Chunk(
            start=tick, actions=chunk[:, c.n_obs_steps - 1:].cpu().numpy(),
            normalized=self.policy.normalizer.normalize("action", chunk),
            x_T=kwargs.get("x_T"), noise=kwargs.get("noise"),
            trajectory=out.info.get("trajectory") if self.warm_start else None,
            latency_s=latency, rounds=int(out.rounds), nfe=int(out.nfe),
            stopped_early=bool(out.info.get("stopped_early", False)),
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

    def _adopt(self, chunk: _Chunk, tick: int) -> None:
        self.chunk_log.append({"batch": chunk.actions.shape[0], "latency_s": chunk.latency_s,
                               "rounds": chunk.rounds, "nfe": chunk.nfe, "stopped_early": chunk.stopped_early})
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
        timeout = self.budget_s - (time.perf_counter() - t0) - max(0.002, 0.1 * self.budget_s)  # leave time to answer
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
            return self._smoothed(cur, tick)
        if not self._missed_current:
            self._counts["misses"] += 1
            self._missed_current = True
        self._counts["fallbacks"] += 1
        if cur is not None and cur.covers(tick):
            self._counts["fallback_rest"] += 1
            self._ensure_backup(tick)
            return cur.at(tick)
        self._ensure_backup(tick)
        backup = self._backup_chunk
        if backup is not None and backup.covers(tick):
            self._counts["fallback_ddim"] += 1
            return backup.at(tick)
        self._counts["holds"] += 1
        return self._hold()

    def _smoothed(self, cur: _Chunk, tick: int) -> np.ndarray:
        prev = self._previous
        if self.smoothing != "ensemble" or prev is None or not prev.covers(tick):
            return cur.at(tick)
        return ensemble([prev.at(tick), cur.at(tick)], self.ensemble_decay)

    def _ensure_backup(self, tick: int) -> None:
        """Start the few-step DDIM fallback chunk when the fresh chunk is late."""
        if not self.fallback_steps or self._backup_pending is not None:
            return
        if self._backup_chunk is not None and self._backup_chunk.covers(tick):
            return
        obs = stack_observations(self.policy.config.obs_keys, self._history)
        if self.inference_delay is not None:
            self._backup_chunk = self._infer(tick, obs, {}, fallback=True)
            return
        if self._backup is None:
            self._backup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk-runner-fallback")
        self._backup_pending = self._backup.submit(self._infer, tick, obs, {}, True)

    def _hold(self) -> np.ndarray:
        if self._executed:
            return self._executed[-1]
        b = len(self._history)
        hold = self.hold_action if self.hold_action is not None else np.zeros(self.policy.config.action_dim, np.float32)
        return np.repeat(hold[None], b, axis=0)

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


def _shift_in_time(x: Tensor, shift: int, dim: int) -> Tensor:
    """``x`` moved ``shift`` positions earlier along ``dim`` (the chunk's time axis), its last
    position repeated to fill the tail."""
    kept = x.narrow(dim, shift, x.shape[dim] - shift)
    shape = [-1] * x.ndim
    shape[dim] = shift
    return torch.cat([kept, kept.narrow(dim, kept.shape[dim] - 1, 1).expand(*shape)], dim=dim)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
