"""DenoiserRuntime: row buckets, padding invariance, static buffers, no recompilation after warm-up,
compiled = eager, samplers and the policy unchanged through it, CUDA-graph capture (GPU only)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from policy_sampler import DiffusionPolicy
from policy_sampler.models import ConditionalUnet1D, ConditionalUnet1DConfig
from policy_sampler.policy import DiffusionPolicyConfig
from policy_sampler.runtime import (
    DenoiserRuntime,
    StaticCall,
    bucket_for,
    check_buckets,
    coalesce_buckets,
    pad_rows,
    pow2_buckets,
    sampler_buckets,
    sampler_row_width,
    tf32_mode,
)
from policy_sampler.samplers import make_sampler
from policy_sampler.schedule import NoiseSchedule

EVENT, COND = (8, 2), (6,)
# (name, options): every sampler family; small windows keep the tiny runs fast.
SAMPLERS = (
    ("ddpm", {}),
    ("picard", {}),
    ("paradigms", {"window": 4}),
    ("speculative", {"lookahead": 4}),
    ("speculative_picard", {"window": 4}),
)


@pytest.fixture(scope="module")
def unet() -> ConditionalUnet1D:
    torch.manual_seed(0)
    config = ConditionalUnet1DConfig(action_dim=2, global_cond_dim=6, down_dims=(8, 16), n_groups=4,
                                     diffusion_step_embed_dim=8)
    return ConditionalUnet1D(config).eval()


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    return NoiseSchedule.from_diffusers(scheduler, num_inference_steps=12)


def draw(rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, *EVENT, generator=g), torch.randint(0, 100, (rows,), generator=g),
            torch.randn(rows, *COND, generator=g))


def run(sampler: str, options: dict, denoiser, schedule: NoiseSchedule, batch: int = 2):
    g = torch.Generator().manual_seed(3)
    x_T = torch.randn(batch, *EVENT, generator=g)
    noise = torch.randn(schedule.num_steps, batch, *EVENT, generator=g)
    cond = torch.randn(batch, *COND, generator=g)
    with torch.no_grad():
        return make_sampler(sampler, **options).sample(denoiser, schedule, x_T, cond=cond, noise=noise,
                                                       generator=torch.Generator().manual_seed(4))


def test_bucket_helpers():
    assert pow2_buckets(1) == (1,) and pow2_buckets(5) == (1, 2, 4, 8)
    assert check_buckets([8, 1, 8, 3]) == (1, 3, 8)
    assert bucket_for(3, (1, 4, 8)) == 4 and bucket_for(8, (1, 4, 8)) == 8
    with pytest.raises(ValueError, match="exceeds the largest row bucket 8"):
        bucket_for(9, (1, 4, 8))
    for bad in ([], [0], [2.0], "pow2x"):
        with pytest.raises(ValueError, match="row_buckets"):
            check_buckets(bad)
    assert coalesce_buckets((100, 101, 200, 202, 64)) == (64, 101, 202)
    padded = pad_rows(torch.ones(2, 3), 4)
    assert padded.shape == (4, 3) and padded[2:].abs().sum() == 0


def test_sampler_buckets_are_width_times_active_rows(schedule):
    assert sampler_buckets(make_sampler("ddpm"), schedule, EVENT, [3], COND) == (1, 2, 3)
    assert sampler_buckets(make_sampler("paradigms", window=4), schedule, EVENT, [1, 2], COND) == (4, 8)
    assert sampler_buckets(make_sampler("picard"), schedule, EVENT, [2], COND) == (12, 24)
    assert sampler_buckets(make_sampler("speculative", lookahead=4), schedule, EVENT, [2], COND) == (5, 10)


def test_padding_rows_do_not_change_real_rows(unet):
    """The U-Net is row-wise: whatever fills the padding rows, the real rows come out the same."""
    denoiser = unet.denoiser()
    x, t, c = draw(3)
    alone = denoiser(x, t, c)
    zero_pad = denoiser(pad_rows(x, 8), pad_rows(t, 8), pad_rows(c, 8))[:3]
    gx, gt, gc = draw(8, seed=1)
    gx[:3], gt[:3], gc[:3] = x, t, c
    junk_pad = denoiser(gx, gt, gc)[:3]
    assert torch.equal(zero_pad, junk_pad)
    torch.testing.assert_close(zero_pad, alone, rtol=0, atol=1e-6)


def test_eager_runtime_pads_to_buckets_and_matches(unet):
    runtime = DenoiserRuntime(unet.denoiser(), mode="eager", row_buckets=(1, 4, 8))
    seen = []
    runtime.denoiser = lambda x, t, c: (seen.append(x.shape[0]), unet.denoiser()(x, t, c))[1]
    for rows in (1, 3, 4, 7):
        x, t, c = draw(rows, seed=rows)
        out = runtime(x, t, c)
        assert out.shape == x.shape
        torch.testing.assert_close(out, unet.denoiser()(x, t, c), rtol=0, atol=1e-6)
    assert seen == [1, 4, 4, 8]
    with pytest.raises(ValueError, match="exceeds the largest row bucket 8"):
        runtime(*draw(9))


def test_static_call_copies_in_and_out(unet):
    """The CUDA-graph data path without the graph: static buffers, stale padding, outputs copied out."""
    denoiser = unet.denoiser()
    x, t, c = draw(8, seed=5)
    static = StaticCall(denoiser, 8, x, t, c, capture=False)
    for rows in (8, 3, 5, 1):
        x, t, c = draw(rows, seed=rows)
        out = static(x, t, c)
        torch.testing.assert_close(out, denoiser(x, t, c), rtol=0, atol=1e-6)
        kept = out.clone()
        static(*draw(rows, seed=99))
        assert torch.equal(out, kept)  # not a view of the static output


def test_bad_arguments(unet):
    d = unet.denoiser()
    with pytest.raises(ValueError, match="mode must be one of"):
        DenoiserRuntime(d, mode="jit")
    with pytest.raises(ValueError, match="needs row_buckets"):
        DenoiserRuntime(d, mode="compile", row_buckets=None)
    with pytest.raises(ValueError, match="dtype must be"):
        DenoiserRuntime(d, dtype=torch.float64)
    with pytest.raises(ValueError, match="denoiser must be callable"):
        DenoiserRuntime(3)
    x, t, c = draw(2)
    with pytest.raises(ValueError, match="t must be"):
        DenoiserRuntime(d)(x, t[:1], c)


@pytest.mark.parametrize("sampler,options", SAMPLERS)
def test_samplers_through_eager_runtime_match(unet, schedule, sampler, options):
    runtime = DenoiserRuntime(unet.denoiser(), mode="eager", row_buckets="pow2")
    plain = run(sampler, options, unet.denoiser(), schedule)
    through = run(sampler, options, runtime, schedule)
    assert through.rounds == plain.rounds and through.rows_per_call == plain.rows_per_call
    torch.testing.assert_close(through.sample, plain.sample, rtol=0, atol=1e-5)


def test_no_recompilation_after_warmup_and_compiled_matches_eager(unet, schedule):
    """Warm every bucket the samplers use at batch 2, then whole sampling runs compile nothing new
    (the runtime's compile counter and dynamo's graph counter both stay put) and agree with eager
    to 1e-5 (aot_eager runs the same ATen ops as eager)."""
    torch._dynamo.reset()
    buckets = sorted({b for name, opts in SAMPLERS
                      for b in sampler_buckets(make_sampler(name, **opts), schedule, EVENT, [2], COND)})
    runtime = DenoiserRuntime(unet.denoiser(), mode="compile", row_buckets=buckets, compile_backend="aot_eager")
    runtime.warmup(EVENT, COND)
    assert runtime.compilations == len(buckets)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for sampler, options in SAMPLERS:
        compiled = run(sampler, options, runtime, schedule)
        eager = run(sampler, options, unet.denoiser(), schedule)
        assert compiled.rounds == eager.rounds
        torch.testing.assert_close(compiled.sample, eager.sample, rtol=0, atol=1e-5)
    run("ddpm", {}, runtime, schedule, batch=1)  # its t is expanded (stride 0): still no new graph
    assert runtime.compilations == len(buckets)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_bfloat16_error_is_bounded(unet):
    """bf16 autocast: outputs within 0.05 of float32 on this net (bf16 keeps 8 mantissa bits)."""
    x, t, c = draw(4)
    out = DenoiserRuntime(unet.denoiser(), dtype=torch.bfloat16)(x, t, c)
    assert out.dtype == torch.float32
    err = float((out - unet.denoiser()(x, t, c)).abs().max())
    assert 0 < err < 0.05


def test_policy_runtime_hook(schedule):
    config = DiffusionPolicyConfig(obs_dim=3, action_dim=2, horizon=8, n_action_steps=4, down_dims=(8, 16),
                                   n_groups=4, diffusion_step_embed_dim=8, num_inference_steps=12)
    torch.manual_seed(0)
    policy = DiffusionPolicy(config).eval()
    obs = {"state": torch.randn(2, 2, 3)}

    def act(**kw):
        return policy.predict_action(obs, sampler="speculative", lookahead=4,
                                     generator=torch.Generator().manual_seed(0), **kw)

    plain = act()
    runtime = policy.set_runtime("eager", row_buckets="pow2")
    assert policy.runtime is runtime and policy.sampling_denoiser() is runtime
    through = act()
    assert through.rounds == plain.rounds
    torch.testing.assert_close(through.chunk, plain.chunk, rtol=0, atol=1e-5)
    assert policy.set_runtime(None) is None and policy.runtime is None


@pytest.mark.slow
def test_inductor_matches_eager(unet, schedule):
    """Inductor (generated C++ kernels) against eager: 1e-4 absolute over a whole paradigms run."""
    runtime = DenoiserRuntime(unet.denoiser(), mode="compile", row_buckets=(4, 8))
    runtime.warmup(EVENT, COND)
    compiled = run("paradigms", {"window": 4}, runtime, schedule)
    eager = run("paradigms", {"window": 4}, unet.denoiser(), schedule)
    assert runtime.compilations == 2
    torch.testing.assert_close(compiled.sample, eager.sample, rtol=0, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_capture_replays_and_matches(unet, schedule):
    """Graphed against eager with TF32 off in both (PyTorch's default TF32 convolutions would move the
    eager reference by ~1e-3 and fail 1e-4 for a reason that is not the graph)."""
    model = ConditionalUnet1D(unet.config).cuda().eval()
    model.load_state_dict(unet.state_dict())
    runtime = DenoiserRuntime(model.denoiser(), mode="cuda_graph", row_buckets="pow2", tf32=False)
    buckets = sampler_buckets(make_sampler("speculative", lookahead=4), schedule, EVENT, [2], COND)
    runtime.warmup(EVENT, COND, buckets=buckets)  # the device is the model's
    captured = runtime.captures
    g = torch.Generator().manual_seed(3)
    x_T, cond = torch.randn(2, *EVENT, generator=g).cuda(), torch.randn(2, *COND, generator=g).cuda()
    noise = torch.randn(schedule.num_steps, 2, *EVENT, generator=g).cuda()
    sampler = make_sampler("speculative", lookahead=4)
    with torch.no_grad():
        graphed = sampler.sample(runtime, schedule, x_T, cond=cond, noise=noise,
                                 generator=torch.Generator("cuda").manual_seed(4))
        with tf32_mode(False):
            eager = sampler.sample(model.denoiser(), schedule, x_T, cond=cond, noise=noise,
                                   generator=torch.Generator("cuda").manual_seed(4))
    assert runtime.captures == captured
    assert graphed.sample.device == x_T.device
    torch.testing.assert_close(graphed.sample, eager.sample, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name, options", [("speculative", {}), ("speculative_picard", {}),
                                           ("speculative_picard", {"window": 8, "trim_window": True})])
def test_samplers_that_size_windows_per_row_get_buckets_holding_every_call(schedule, name, options):
    """The speculative samplers' default adaptive windows (and trimmed windows) call with a varying
    number of states per row: no fixed width exists, and every call a real run makes fits a bucket
    (at most 2x padding)."""
    sampler = make_sampler(name, **options)
    with pytest.raises(ValueError, match="no fixed row width"):
        sampler_row_width(sampler, schedule, EVENT, COND)
    buckets = sampler_buckets(sampler, schedule, EVENT, [3], COND)
    assert buckets[-1] >= 3 * (schedule.num_steps + 1)
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(EVENT[-1], EVENT[-1], generator=gen)
    result = sampler.sample(lambda x, t, c: torch.tanh(x @ W), schedule, torch.randn(3, *EVENT, generator=gen),
                            cond=torch.zeros(3, *COND), generator=gen)
    assert len(set(result.rows_per_call)) > 1, "this run should exercise varying call widths"
    for rows in result.rows_per_call:
        b = bucket_for(rows, buckets)
        assert rows <= b < 2 * rows
