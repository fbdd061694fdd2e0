"""ChunkRunner's real-time logic on a scripted clock (tests/control/control_harness.py): thousands of
ticks with denoisers whose chunk timings are known, every counter checked against what those
timings imply, act() within its budget, the fallback order, and no doomed chunk launched.

Every scenario runs the main sampler as 20-step DDPM and the fallback as 4-step DDIM, at a 10 Hz loop
(period 0.1 s): chunks of L = 15 ticks, n_action_steps = 8. A denoiser spending c seconds per call
makes a main chunk take 20c and a fallback chunk 4c.
"""

import warnings

import numpy as np
import pytest

from control_harness import (PERIOD, ScriptedClock, ScriptedDenoiser, check_invariants, observation, run_loop,
                             tiny_policy)
from policy_sampler.control import ChunkRunner, RunnerConfig

T = 2000


def scripted(cost, budget=0.1, denoiser_options=None, **settings):
    clock = ScriptedClock()
    denoiser = ScriptedDenoiser(clock, cost, **(denoiser_options or {}))
    config = RunnerConfig(**{"budget_s": budget, "control_period_s": PERIOD, "num_inference_steps": 20,
                             "fallback_steps": 4, "seed": 0, **settings})
    return ChunkRunner(tiny_policy(denoiser), "ddpm", config=config, clock=clock), clock, denoiser


def run(cost, ticks=T, reset_obs=True, **kwargs):
    runner, clock, _ = scripted(cost, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_loop(runner, clock, ticks, reset_obs=reset_obs)
    check_invariants(result)
    result.warnings = [str(w.message) for w in caught]
    return result


def test_fast_chunks_are_never_missed():
    """A chunk takes 0.03 s (one tick): the next starts one tick before the current runs out (tick 8i - 1),
    is adopted at tick 8i (its first action, for tick 8i - 1, dropped), and nothing else happens."""
    r = run(0.0015)
    s = r.stats
    assert s["launched"] == 1 + T // 8 and s["chunks"] == 1 + (T - 1) // 8 and s["in_flight"] == 1
    assert s["misses"] == 0 and s["fallbacks"] == 0 and s["dropped_chunks"] == 0 and s["failed_chunks"] == 0
    assert s["dropped_actions"] == (T - 1) // 8
    assert s["latency_p50_s"] == pytest.approx(0.03) and s["rounds_mean"] == 20.0
    assert s["fallback_launched"] == 1  # reset(obs)'s; no gap is ever expected
    assert s["act_latency_max_s"] == 0.0 and s["overruns"] == 0 and not r.warnings


def test_late_chunks_are_counted_and_the_gap_gets_ddim():
    """A chunk takes 0.955 s (10 ticks), more than its 8-tick window: each is launched at the tick its
    predecessor is adopted and adopted 10 ticks later (every chunk a miss, 10 actions dropped), executing
    ticks 10k..10k+4; its predecessor's actions end at 10k+4, so 10k+5..10k+9 are a gap. The DDIM
    fallback (0.191 s, 2 ticks) starts 2 ticks before each gap and serves all of it. The budget's
    wait window (10 ms) never reaches a chunk, so act() returns at once every tick."""
    r = run(0.04775, budget=0.02)
    s, cycles = r.stats, (T - 10) // 10
    assert cycles == 199
    assert s["launched"] == 1 + 1 + cycles and s["chunks"] == 1 + cycles and s["in_flight"] == 1
    assert s["misses"] == 1 + cycles  # every chunk launched in the loop, the one in flight included
    assert s["dropped_actions"] == 10 * cycles and s["dropped_chunks"] == 0 and s["doomed_ticks"] == 0
    assert s["fallback_rest"] == 2  # ticks 8, 9: the first chunk's rest
    assert s["fallback_ddim"] == 5 * cycles and s["safe_actions"] == 0
    assert s["fallbacks"] == T - (8 + 5 * cycles)
    assert s["fallback_launched"] == 1 + cycles and s["fallback_latency_p50_s"] == pytest.approx(0.191)
    assert "".join(c[0] for c in r.runner.sources[:30]) == "cccccccc" "rr" "ccccc" "fffff" "ccccc" "fffff"
    assert s["act_latency_max_s"] == 0.0 and s["overruns"] == 0


def test_doomed_sampler_is_never_started_again():
    """A chunk takes 1.9 s (19 ticks >= L = 15): reset(obs) measures it, so from tick 0 no chunk is
    started (a warning says so). Ticks 0-7 execute the first chunk, 8-14 its rest; the DDIM fallback
    (0.38 s, 4 ticks) is started every 8 ticks from tick 4 and serves every later tick."""
    r = run(0.095, budget=0.02)
    s = r.stats
    assert s["doomed_at"] == 0 and s["doomed_ticks"] == T and s["launched"] == 1 and s["chunks"] == 1
    assert s["misses"] == 0 and s["in_flight"] == 0
    assert (s["fallback_rest"], s["fallback_ddim"], s["safe_actions"]) == (7, T - 15, 0)
    assert s["fallback_launched"] == 1 + (T - 5) // 8 + 1
    assert len(r.warnings) == 1 and "1.900 s" in r.warnings[0] and "tick 0" in r.warnings[0]


def test_doom_found_in_flight_without_a_first_observation():
    """reset() without an observation: tick 0 starts the first chunk (1.9 s) and a DDIM chunk (0.38 s)
    and waits its window (0.09 s) for the chunk, as nothing is measured yet. Ticks 0-3 get the safe
    action (zeros here), 4 on the DDIM chunks. At tick 15 the chunk's last tick has come: it is
    cancelled (dropped), its 1.5 s so far make it doomed, and no chunk is started again."""
    r = run(0.095, reset_obs=False)
    s = r.stats
    assert r.runner.sources[:5] == ["safe"] * 4 + ["fallback"]
    assert s["launched"] == 1 and s["dropped_chunks"] == 1 and s["chunks"] == 0 and s["misses"] == 1
    assert s["doomed_at"] == 15 and s["doomed_ticks"] == T - 15
    assert (s["safe_actions"], s["fallback_ddim"], s["fallback_rest"]) == (4, T - 4, 0)
    assert s["fallback_launched"] == (T - 1) // 8 + 1
    assert r.act_s[0] == pytest.approx(0.09) and max(r.act_s[1:]) == 0.0
    assert s["safe_action"].startswith("zero")


def test_nan_chunks_are_rejected_and_every_tick_gets_the_safe_action():
    """A denoiser returning NaN: every chunk fails. Each tick starts a chunk, waits for it (0.03 s),
    rejects it and starts another (a miss); the DDIM chunks fail too; the tick gets the safe action."""
    n = 500  # each tick computes three chunks
    r = run(0.0015, ticks=n, denoiser_options={"nan": True})
    s = r.stats
    assert s["launched"] == 1 + 2 * n and s["failed_chunks"] == 2 * n and s["in_flight"] == 1
    assert s["chunks"] == 0 and s["misses"] == n and s["safe_actions"] == n
    assert s["fallback_launched"] == 1 + n and s["fallback_failed"] == 1 + n
    assert not np.any(r.runner._executed)  # the policy names no task: zeros
    assert all(a == pytest.approx(0.03) for a in r.act_s)
    assert sum("NaN" in w for w in r.warnings) == 2  # once per lane


def test_safe_action_repeat_holds_the_last_action_through_a_nan_window():
    """NaN from 30 s to 40 s of virtual time: the last chunk's rest, then the safe action ('repeat':
    the last executed action), then fresh chunks again."""
    runner, clock, _ = scripted(0.0015, denoiser_options={"nan": (30.0, 40.0)}, safe_action="repeat")
    actions = []
    runner.reset(observation(0))
    start = clock.t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(600):
            clock.advance_to(start + k * PERIOD)
            actions.append(runner.act(observation(k)))
    sources = runner.sources
    safe = [k for k, src in enumerate(sources) if src == "safe"]
    assert safe and sources[safe[0] - 1] in ("rest", "chunk") and sources[-1] == "chunk"
    for k in safe:
        np.testing.assert_array_equal(actions[k], actions[safe[0] - 1])
    assert runner.stats()["safe_action"] == "repeat"


def test_gil_holding_worker_keeps_act_within_budget():
    """A denoiser holding the GIL: a wait that ends while it runs costs one more switch interval
    (5 ms) to take the GIL back. The default margin (two intervals) keeps act() within a 20 ms budget;
    the old margin (max(2 ms, 10% of the budget)) overruns it."""
    options = {"holds_gil": True}
    r = run(0.025, reset_obs=False, budget=0.02, denoiser_options=options)
    assert max(r.act_s) <= 0.02 and r.stats["overruns"] == 0
    assert max(r.act_s) == pytest.approx(0.015)  # a full wait (10 ms) plus the switch interval happened
    wrong = run(0.025, reset_obs=False, budget=0.02, denoiser_options=options, wait_margin_s=0.002)
    assert max(wrong.act_s) > 0.02 and wrong.stats["overruns"] >= 1


def test_reset_cancels_the_chunk_in_flight():
    """A 1.9 s chunk in flight at reset() is cancelled: the next episode's first chunk starts at once
    instead of queueing behind it."""
    runner, clock, _ = scripted(0.095, fallback_steps=0)
    runner.reset()
    runner.act(observation(0))  # starts a 1.9 s chunk at t = 0
    clock.advance_to(0.5)
    runner.reset()
    clock.advance_to(0.6)
    runner.act(observation(0))
    second = runner.main.pending.job
    assert second.start == pytest.approx(0.6) and second.finish == pytest.approx(2.5)


@pytest.mark.parametrize("ticks", [T, pytest.param(20 * T, marks=pytest.mark.slow)])
def test_jittery_latencies_keep_every_invariant(ticks):
    """Per-call costs drawn at random (chunks from 0.01 s to 1.6 s, a GIL-holding denoiser): every
    counter adds up, the fallback order holds, act() stays within its budget."""
    rng = np.random.default_rng(0)

    class Jittery(ScriptedDenoiser):
        def __call__(self, x, t, cond):
            self.cost_s = self.fallback_cost_s = float(rng.choice([0.0005, 0.004, 0.03, 0.1], p=[.3, .3, .2, .2]))
            return super().__call__(x, t, cond)

    clock = ScriptedClock()
    config = RunnerConfig(budget_s=0.05, control_period_s=PERIOD, num_inference_steps=20, fallback_steps=4, seed=0)
    runner = ChunkRunner(tiny_policy(Jittery(clock, 0.0, holds_gil=True)), "ddpm", config=config, clock=clock)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = run_loop(runner, clock, ticks)
    check_invariants(r)
    s = r.stats
    assert max(r.act_s) <= 0.05 and s["overruns"] == 0
    assert s["misses"] > 0 and s["fallback_rest"] > 0 and s["fallback_ddim"] > 0 and s["chunks"] > ticks // 20


def test_one_slow_chunk_among_fast_ones_is_dropped_and_the_next_one_missed_too():
    """Chunks take 0.28 s (3 ticks: started at 8i - 3, adopted at 8i, 3 actions dropped each), but the
    12th chunk takes 2 s. It is missed at tick 96, its predecessor's rest serves 96-99, a DDIM chunk
    started at 99 serves 100-107 and one started at 107 serves 108-110. At tick 108 its last tick has
    come: it is cancelled (dropped), counted as 15 ticks of latency among 12 fast ones, so the sampler
    is not doomed; the chunk started at 108 is missed too and adopted at 111, and the loop goes on."""
    clock = ScriptedClock()

    class OneSlowChunk(ScriptedDenoiser):
        def __call__(self, x, t, cond):
            if self.clock.job_lane == "main":
                self.main_calls = getattr(self, "main_calls", 0) + 1
                self.cost_s = 0.1 if 11 * 20 < self.main_calls <= 12 * 20 else 0.014  # the 12th worker job
            return super().__call__(x, t, cond)

    config = RunnerConfig(budget_s=0.02, control_period_s=PERIOD, num_inference_steps=20, fallback_steps=4, seed=0)
    runner = ChunkRunner(tiny_policy(OneSlowChunk(clock, 0.014)), "ddpm", config=config, clock=clock)
    r = run_loop(runner, clock, T)
    check_invariants(r)
    s = r.stats
    assert s["misses"] == 2 and s["dropped_chunks"] == 1 and s["doomed_at"] is None
    assert s["chunks"] == 12 + (T - 1 - 111) // 8 + 1 and s["launched"] == s["chunks"] + 1 and s["in_flight"] == 0
    assert s["dropped_actions"] == 3 * (s["chunks"] - 1)
    assert (s["fallback_rest"], s["fallback_ddim"], s["safe_actions"]) == (4, 11, 0)
    assert r.runner.sources[95:112] == ["chunk"] + ["rest"] * 4 + ["fallback"] * 11 + ["chunk"]
    assert s["fallback_launched"] == 3
