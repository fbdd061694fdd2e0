"""What the GPU path needs from the runtime, checked on the CPU: calls from several threads are
serialized, TF32 flags are set through one API and put back exactly (None leaves them alone), integer
timesteps of any width, static buffers built under inference_mode, warm-up on the model's device, and
the samplers' host reads bounded by one per round (a per-round ``.item()`` fails the bound)."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from diffusers import DDPMScheduler

from policy_sampler.models import ConditionalUnet1D, ConditionalUnet1DConfig
from policy_sampler.reference import GaussianMixtureDenoiser
from policy_sampler.runtime import DenoiserRuntime, StaticCall, host_sync_audit, tf32_mode
from policy_sampler.runtime import precision
from policy_sampler.samplers import available_samplers, make_sampler
from policy_sampler.schedule import NoiseSchedule


@pytest.fixture(scope="module")
def unet() -> ConditionalUnet1D:
    torch.manual_seed(0)
    config = ConditionalUnet1DConfig(action_dim=2, global_cond_dim=6, down_dims=(8, 16), n_groups=4,
                                     diffusion_step_embed_dim=8)
    return ConditionalUnet1D(config).eval()


def _flags() -> tuple:
    """Everything a reader can see: the older getters (an exception's type if one raises) and every
    per-backend string."""
    out: list = []
    for read in (lambda: torch.backends.cuda.matmul.allow_tf32, lambda: torch.backends.cudnn.allow_tf32,
                 torch.get_float32_matmul_precision):
        try:
            out.append(read())
        except RuntimeError as exc:
            out.append(type(exc))
    return tuple(out) + tuple(getattr(obj, name) for obj, name in precision._all_strings())


def _on_cuda_inside() -> tuple:
    """What TF32 on CUDA reads as inside the block: cuBLAS and cuDNN conv."""
    if precision.NEW_API:
        return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.fixture
def restore_flags():
    legacy = precision._legacy_state()
    strings = [(obj, name, getattr(obj, name)) for obj, name in precision._all_strings()]
    yield
    precision._set_legacy(*legacy)
    for obj, name, value in strings:
        setattr(obj, name, value)


SETUPS = {
    "default": lambda: None,
    "set_float32_matmul_precision": lambda: torch.set_float32_matmul_precision("high"),
    "legacy_allow_tf32": lambda: (setattr(torch.backends.cuda.matmul, "allow_tf32", True),
                                  setattr(torch.backends.cudnn, "allow_tf32", False)),
    "new_api": lambda: setattr(torch.backends.cuda.matmul, "fp32_precision", "tf32"),
}


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("tf32", [True, False, None])
def test_tf32_mode_restores_the_exact_state(restore_flags, setup, tf32):
    """Whatever API the process used before, the block sets what was asked and leaves every getter
    reading exactly as before (none newly raising: inductor and users call them)."""
    if setup == "new_api" and not precision.NEW_API:
        pytest.skip("this torch has no per-backend precision strings")
    SETUPS[setup]()
    before = _flags()
    outside = _on_cuda_inside()
    with tf32_mode(tf32):
        inside = _on_cuda_inside()
        if setup != "new_api":  # the older getters stay readable inside too
            assert not any(isinstance(v, type) for v in _flags())
    assert _flags() == before
    if tf32 is None:
        assert inside == outside
    elif precision.NEW_API:
        assert inside[0] == ("tf32" if tf32 else "ieee") and inside[1] in (("tf32",) if tf32 else ("ieee", "none"))


def test_runtime_with_default_tf32_touches_no_flag(restore_flags, unet):
    """tf32=None (the default) leaves the process's settings, in particular PyTorch's default TF32
    convolutions, which the old default (False) silently turned off for the duration of every call."""
    seen = []
    denoiser = unet.denoiser()

    def watching(x, t, c):
        seen.append(_flags())
        return denoiser(x, t, c)

    default = _flags()
    x, t, c = torch.randn(2, 8, 2), torch.tensor([3, 4]), torch.randn(2, 6)
    DenoiserRuntime(watching)(x, t, c)
    DenoiserRuntime(watching, tf32=False)(x, t, c)
    assert seen[0] == default and seen[1] != default
    assert _flags() == default
    with pytest.raises(ValueError, match="tf32"):
        DenoiserRuntime(watching, tf32="yes")


def test_calls_from_threads_are_serialized(unet):
    """ChunkRunner's main and fallback threads share one runtime: its calls must not overlap (they
    share static buffers and process-wide flags)."""
    inside, most = [0], [0]
    lock = threading.Lock()
    denoiser = unet.denoiser()

    def slow(x, t, c):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.01)
        out = denoiser(x, t, c)
        with lock:
            inside[0] -= 1
        return out

    runtime = DenoiserRuntime(slow, mode="eager", row_buckets=(1, 4))
    x, t, c = torch.randn(3, 8, 2), torch.tensor([1, 2, 3]), torch.randn(3, 6)
    expected = denoiser(x, t, c)
    results = []

    def worker():
        for _ in range(5):
            results.append(runtime(x, t, c))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert most[0] == 1 and len(results) == 15
    for out in results:
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_integer_timesteps_of_any_width_and_float_ones_refused(unet):
    runtime = DenoiserRuntime(unet.denoiser(), mode="eager", row_buckets=(4,))
    x, c = torch.randn(2, 8, 2), torch.randn(2, 6)
    t = torch.tensor([5, 9])
    for dtype in (torch.int32, torch.int16, torch.uint8):
        torch.testing.assert_close(runtime(x, t.to(dtype), c), runtime(x, t, c), rtol=0, atol=0)
    with pytest.raises(ValueError, match="integer training timesteps"):
        runtime(x, t.float(), c)


def test_static_buffers_built_under_inference_mode_take_later_calls(unet):
    """A runtime warmed under ``torch.inference_mode`` (as benchmarks do) is called later under
    ``no_grad`` (as predict_action does): the static buffers must be normal tensors."""
    denoiser = unet.denoiser()
    x, t, c = torch.randn(4, 8, 2), torch.tensor([1, 2, 3, 4]), torch.randn(4, 6)
    with torch.inference_mode():
        static = StaticCall(denoiser, 4, x, t, c, capture=False)
    with torch.no_grad():
        out = static(x[:3], t[:3], c[:3])
    torch.testing.assert_close(out, denoiser(x[:3], t[:3], c[:3]), rtol=0, atol=1e-6)


def test_warmup_defaults_to_the_models_device(unet):
    runtime = DenoiserRuntime(unet.denoiser(), mode="compile", row_buckets=(2,), compile_backend="aot_eager")
    assert runtime.denoiser_device() == torch.device("cpu")
    assert DenoiserRuntime(lambda x, t, c: x).denoiser_device() is None
    runtime.warmup((8, 2), (6,))
    assert runtime.compilations == 1


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    return NoiseSchedule.from_diffusers(scheduler, num_inference_steps=40)


CPU_SLACK = 6  # host-side schedule-table reads at the start of a run (CPU tensors, no sync on CUDA)


class _ReadsEveryCall:
    """A wrong variant: a denoiser that reads values on the host twice per call (hidden syncs; one more
    per round than allowed in every sampler, the sequential ones included)."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, x, t, cond):
        float(x.abs().max()), bool((t >= 0).all())
        return self.model(x, t, cond)


@pytest.mark.parametrize("name", available_samplers())
def test_host_reads_at_most_one_per_round(schedule, name):
    """After a warm-up call, a sampling run reads the host at most once per round plus a few fixed
    reads (on the CPU, host-side schedule tables count too: ``CPU_SLACK``; on CUDA the audit is exact: see
    tests/runtime/test_gpu_path.py). The wrong variant with two reads per call fails the bound."""
    model = GaussianMixtureDenoiser.random(schedule, 4, seed=0)
    sampler = make_sampler(name)
    x_T = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))

    def run(denoiser):
        return sampler.sample(denoiser, schedule, x_T, generator=torch.Generator().manual_seed(2))

    run(model)
    with host_sync_audit("cpu") as good:
        result = run(model)
    assert good.total <= result.rounds + CPU_SLACK, (good, result.rounds)
    with host_sync_audit("cpu") as bad:
        result = run(_ReadsEveryCall(model))
    assert bad.total > result.rounds + CPU_SLACK
