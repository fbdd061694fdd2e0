"""The CUDA path, run by ``pytest -m gpu`` (scripts/gpu_check.sh runs it first on a lent GPU): every
sampler through CUDA graphs with no hidden host sync, graphed = eager with TF32 off, inputs on other
devices moved to x_T's, one graphed runtime shared by two threads, and the policy on CUDA."""

from __future__ import annotations

import threading

import pytest
import torch
from diffusers import DDPMScheduler

from policy_sampler import DiffusionPolicy
from policy_sampler.models import ConditionalUnet1D, ConditionalUnet1DConfig
from policy_sampler.policy import DiffusionPolicyConfig
from policy_sampler.runtime import DenoiserRuntime, host_sync_audit, sampler_buckets, tf32_mode
from policy_sampler.samplers import available_samplers, make_sampler
from policy_sampler.schedule import NoiseSchedule

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

EVENT, COND, BATCH = (8, 2), (6,), 2


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    return NoiseSchedule.from_diffusers(scheduler, num_inference_steps=12)


@pytest.fixture(scope="module")
def model() -> ConditionalUnet1D:
    torch.manual_seed(0)
    config = ConditionalUnet1DConfig(action_dim=2, global_cond_dim=6, down_dims=(8, 16), n_groups=4,
                                     diffusion_step_embed_dim=8)
    return ConditionalUnet1D(config).cuda().eval()


@pytest.fixture(scope="module")
def graphed(model, schedule) -> DenoiserRuntime:
    """One runtime with every bucket any sampler uses at batch 1 and 2, all captured up front."""
    buckets = sorted({b for name in available_samplers()
                      for b in sampler_buckets(make_sampler(name), schedule, EVENT, [1, BATCH], COND)})
    runtime = DenoiserRuntime(model.denoiser(), mode="cuda_graph", row_buckets=buckets, tf32=False)
    runtime.warmup(EVENT, COND)
    assert runtime.captures == len(buckets)
    return runtime


def _inputs(seed: int = 3, batch: int = BATCH):
    g = torch.Generator("cuda").manual_seed(seed)
    return (torch.randn(batch, *EVENT, generator=g, device="cuda"),
            torch.randn(batch, *COND, generator=g, device="cuda"))


@pytest.mark.parametrize("name", available_samplers())
def test_every_sampler_graphed_without_hidden_syncs(graphed, schedule, name):
    """After a warm-up run, a whole run makes no host sync but one ``tolist`` per round and the final
    check: no ``.item()``, no boolean mask, no blocking host-to-device copy of a schedule table."""
    x_T, cond = _inputs()
    sampler = make_sampler(name)

    def run():
        return sampler.sample(graphed, schedule, x_T, cond=cond, generator=torch.Generator("cuda").manual_seed(4))

    run()
    captures = graphed.captures
    with host_sync_audit("cuda") as count:
        result = run()
    assert count.tolist <= result.rounds + 1, (count, result.rounds)
    assert result.sample.device == x_T.device and bool(torch.isfinite(result.sample).all())
    assert graphed.captures == captures


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_graphed_equals_eager_with_tf32_off(graphed, model, schedule, name):
    x_T, cond = _inputs(5)
    noise = torch.randn(schedule.num_steps, *x_T.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(6))
    sampler = make_sampler(name)
    out = sampler.sample(graphed, schedule, x_T, cond=cond, noise=noise).sample
    with tf32_mode(False):
        ref = sampler.sample(model.denoiser(), schedule, x_T, cond=cond, noise=noise).sample
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)


def test_inputs_on_the_cpu_follow_x_T(graphed, schedule):
    """noise and cond given on the CPU, and a CPU generator, with x_T on CUDA: moved, not an error."""
    x_T, cond = _inputs(7)
    noise = torch.randn(schedule.num_steps, *x_T.shape)
    on_cpu = make_sampler("ddpm").sample(graphed, schedule, x_T, cond=cond.cpu(), noise=noise,
                                         generator=torch.Generator().manual_seed(1))
    on_gpu = make_sampler("ddpm").sample(graphed, schedule, x_T, cond=cond, noise=noise.cuda())
    assert on_cpu.sample.device == x_T.device
    torch.testing.assert_close(on_cpu.sample, on_gpu.sample, rtol=0, atol=0)
    speculative = make_sampler("speculative_picard").sample(graphed, schedule, x_T, cond=cond,
                                                            generator=torch.Generator().manual_seed(2))
    assert speculative.sample.device == x_T.device


def test_two_threads_share_one_graphed_runtime(graphed, schedule):
    """ChunkRunner's main and fallback threads share the policy's runtime: concurrent runs give what
    each gives alone (the lock keeps the static buffers from being overwritten mid-call)."""
    inputs = [_inputs(seed, batch=1) for seed in (11, 12)]
    noise = [torch.randn(schedule.num_steps, 1, *EVENT, device="cuda") for _ in inputs]
    alone = [make_sampler("ddpm").sample(graphed, schedule, x, cond=c, noise=z).sample for (x, c), z in zip(inputs, noise)]
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}

    def worker(i: int) -> None:
        x, c = inputs[i]
        for _ in range(10):
            results[i].append(make_sampler("ddpm").sample(graphed, schedule, x, cond=c, noise=noise[i]).sample)

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i in (0, 1):
        assert len(results[i]) == 10
        for out in results[i]:
            torch.testing.assert_close(out, alone[i], rtol=0, atol=0)


def test_policy_on_cuda_through_graphs_matches_eager():
    config = DiffusionPolicyConfig(obs_dim=3, action_dim=2, horizon=8, n_action_steps=4, down_dims=(8, 16),
                                   n_groups=4, diffusion_step_embed_dim=8, num_inference_steps=12)
    torch.manual_seed(0)
    policy = DiffusionPolicy(config).cuda().eval()
    obs = {"state": torch.randn(2, 2, 3)}  # on the CPU, as an environment returns it
    x_T = torch.randn(2, 8, 2, device="cuda")
    noise = torch.randn(12, 2, 8, 2, device="cuda")
    with tf32_mode(False):
        eager = policy.predict_action(obs, sampler="ddpm", x_T=x_T, noise=noise)
    buckets = sampler_buckets(make_sampler("speculative_picard"), policy.schedule, (8, 2), [1, 2], (6,))
    runtime = policy.set_runtime("cuda_graph", row_buckets=sorted({1, 2, *buckets}), tf32=False)
    runtime.warmup((8, 2), (6,))
    graphed = policy.predict_action(obs, sampler="ddpm", x_T=x_T, noise=noise)
    assert graphed.chunk.device.type == "cuda"
    torch.testing.assert_close(graphed.chunk, eager.chunk, rtol=0, atol=1e-4)
    exact = policy.predict_action(obs, sampler="speculative_picard", generator=torch.Generator("cuda").manual_seed(0))
    assert exact.rounds >= 1 and bool(torch.isfinite(exact.chunk).all())
