"""scripts/benchmark_paradigms.py: the transcription of diffusers' ParaDiGMS loop reproduces the sequential
chain where diffusers' batched step is right (even spacing), and shows the even-spacing bug where it is
not; the tolerance sweep's rows are complete."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from policy_sampler import NoiseSchedule, make_sampler
from policy_sampler.reference import chunk_mixture

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_paradigms.py"


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_paradigms", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_diffusers_loop_reproduces_sequential_ddpm_at_a_tight_tolerance():
    bench = load_script()
    parallel = bench._scheduler()
    parallel.set_timesteps(100)
    schedule = NoiseSchedule.from_diffusers(bench._scheduler(parallel=False), num_inference_steps=100)
    mixture = chunk_mixture(schedule)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 16, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(100, 2, 16, 2, generator=g, dtype=torch.float64)
    ref = make_sampler("ddpm").sample(mixture, schedule, x_T, noise=noise).sample
    sample, rounds, nfe = bench.diffusers_paradigms(mixture, parallel, x_T, None, noise, 16, 1e-6)
    assert (sample - ref).abs().max() < 1e-5 and 8 <= rounds  # diffusers keeps alphas in float32
    assert rounds <= 101 and nfe >= 100
    loose, loose_rounds, _ = bench.diffusers_paradigms(mixture, parallel, x_T, None, noise, 16, 0.1)
    assert loose_rounds < rounds and (loose - ref).abs().max() > 1e-7


def test_even_spacing_bug_is_measured():
    rows = {r["schedule"]: r for r in load_script().spacing_bug(conditions=1)}
    assert rows["leading, K=30"]["wrong_prev_t"] == 0 and rows["leading, K=30"]["diffusers"] < 1e-4
    for name in ("linspace, K=30", "trailing, K=30", "linspace, K=7", "custom [99,90,75,50,30,15,5,0]"):
        assert rows[name]["wrong_prev_t"] > 0 and rows[name]["diffusers"] > 1e-2, rows[name]
    assert max(r["ours"] for r in rows.values()) < 1e-5
