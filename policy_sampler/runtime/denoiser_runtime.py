"""A denoiser behind fixed row buckets: eager, ``torch.compile`` or one CUDA graph per bucket.

Samplers call the denoiser with a row count that changes from round to round (ParaDiGMS and the
speculative samplers drop finished rows: ``R * width`` rows for ``R`` active batch rows). A compiled
or graph-captured network wants fixed shapes, so :class:`DenoiserRuntime` pads every call up to the
smallest *row bucket* that holds it, runs that bucket's fixed-shape program and slices the padding
off. The U-Net is row-wise (convolutions along the horizon, GroupNorm per sample, FiLM per row), so
the padding rows never change the real rows' outputs (``tests/runtime`` checks it).

Modes: ``eager`` (the plain call; padded only when buckets are given), ``compile`` (``torch.compile``
with ``dynamic=False``: one graph per bucket, compiled on first use or in :meth:`warmup`, never again)
and ``cuda_graph`` (per bucket: static input and output buffers, the call captured once as a CUDA
graph, then per call the inputs are copied in, the graph replayed and the output rows copied out).
``dtype=torch.bfloat16`` runs the denoiser under autocast. ``tf32`` (see :mod:`.precision`): None, the
default, leaves the process's TF32 settings alone (PyTorch's default: TF32 convolutions, IEEE float32
matmuls); True or False forces TF32 on or off for this runtime's network only: around each call in
eager and compile mode, around capture in cuda_graph mode (a replay reads no flags). Lower precision
trades accuracy for speed (docs/latency.md and docs/gpu/ have the measured errors).

Threads: one runtime may serve several threads (ChunkRunner's main and fallback workers): calls are
serialized by a lock, since they share the static buffers, the process-wide precision flags and the
compiler. Capture every bucket with :meth:`warmup` before threads share a runtime: a CUDA-graph capture
while another thread launches work fails (CUDA's default capture mode). All work runs on the calling
thread's current stream; threads must share it (the default stream does).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, Sequence

import torch
import torch._dynamo
from torch import Tensor

from policy_sampler.runtime.precision import check_tf32, tf32_mode

MODES = ("eager", "compile", "cuda_graph")
LOW_PRECISION = (torch.bfloat16, torch.float16)

Fn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


def pow2_buckets(max_rows: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to the first power of two >= ``max_rows``."""
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows must be a positive integer, got {max_rows!r}")
    buckets = [1]
    while buckets[-1] < max_rows:
        buckets.append(2 * buckets[-1])
    return tuple(buckets)


def check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    """``buckets`` as a sorted tuple of distinct positive ints; a ``ValueError`` names a bad entry."""
    if isinstance(buckets, (str, bytes)) or not hasattr(buckets, "__iter__"):
        raise ValueError(f"row_buckets must be 'pow2', None or a sequence of positive ints, got {buckets!r}")
    out = set()
    for b in buckets:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"row_buckets entries must be positive ints, got {b!r}")
        out.add(b)
    if not out:
        raise ValueError("row_buckets must not be empty")
    return tuple(sorted(out))


def bucket_for(rows: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``rows`` rows (``buckets`` sorted ascending)."""
    for b in buckets:
        if b >= rows:
            return b
    raise ValueError(
        f"a denoiser call with {rows} rows exceeds the largest row bucket {buckets[-1]}; "
        "add a larger bucket (or use row_buckets='pow2')"
    )


def pad_rows(x: Tensor, rows: int) -> Tensor:
    """``x`` [n, ...] copied into a fresh [rows, ...] tensor with standard strides (a compiled graph is
    specialised on strides too: an expanded ``t`` has stride 0), rows past n zero (sliced off later)."""
    n = x.shape[0]
    out = x.new_empty((rows, *x.shape[1:])) if n == rows else x.new_zeros((rows, *x.shape[1:]))
    out[:n] = x
    return out


class StaticCall:
    """One bucket's static buffers: inputs ``x`` [rows, *event], ``t`` [rows], ``cond`` [rows, ...] and the
    output. With ``capture=True`` (CUDA) the call of ``fn`` on the buffers is recorded as a CUDA graph
    and replayed; with ``capture=False`` ``fn`` re-runs on the buffers (the same data path, testable
    without a GPU). Rows past a call's count keep earlier (finite) values: row-wise networks ignore them."""

    def __init__(self, fn: Fn, rows: int, x: Tensor, t: Tensor, cond: Tensor | None, capture: bool) -> None:
        self.fn, self.rows = fn, rows
        if capture and x.device.type != "cuda":
            raise ValueError(f"CUDA-graph capture needs CUDA tensors, got device {x.device}")
        # Normal tensors even when built under inference_mode, so later calls outside it can copy in.
        with torch.inference_mode(False), torch.no_grad():
            self.x = x.new_zeros((rows, *x.shape[1:]))
            self.t = torch.zeros(rows, dtype=torch.long, device=x.device)
            self.cond = None if cond is None else cond.new_zeros((rows, *cond.shape[1:]))
            self.graph: torch.cuda.CUDAGraph | None = None
            if capture:
                self._capture(x.device)
            else:
                self.out = fn(self.x, self.t, self.cond)

    def _capture(self, device: torch.device) -> None:
        """Three warm-up calls on a side stream (cuDNN autotuning, lazy init), then the capture into
        a private memory pool, all on ``device``'s streams (PyTorch's CUDA-graph recipe)."""
        with torch.cuda.device(device):
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.fn(self.x, self.t, self.cond)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):  # a private memory pool: buckets replay in any order
                self.out = self.fn(self.x, self.t, self.cond)

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        n = x.shape[0]
        self.x[:n].copy_(x)
        self.t[:n].copy_(t)
        if self.cond is not None:
            self.cond[:n].copy_(cond)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.out = self.fn(self.x, self.t, self.cond)
        return self.out[:n].clone()  # the next replay overwrites the static output


class _CountingBackend:
    """A ``torch.compile`` backend that counts the graphs it compiles, then hands them to ``backend``."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.compile = torch._dynamo.lookup_backend(backend)
        self.count = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        self.count += 1
        return self.compile(gm, example_inputs)


class DenoiserRuntime:
    """``runtime(x [N, *event], t LongTensor[N], cond [N, ...] | None) -> Tensor like x``: ``denoiser``
    run at fixed row buckets, eager, compiled or CUDA-graph replayed (see the module docstring).

    ``row_buckets``: a sequence of row counts, ``'pow2'`` (1, 2, 4, ...; grown on demand) or None
    (no padding; eager only). ``compile_backend``: any ``torch.compile`` backend (``'inductor'``,
    ``'aot_eager'``, ...). ``compilations`` counts graphs compiled and ``captures`` CUDA graphs
    captured, so a caller can check that nothing new happens after :meth:`warmup`.
    """

    def __init__(
        self,
        denoiser: Fn,
        mode: str = "eager",
        row_buckets: Sequence[int] | str | None = "pow2",
        dtype: torch.dtype | None = None,
        tf32: bool | None = None,
        compile_backend: str = "inductor",
    ) -> None:
        if not callable(denoiser):
            raise ValueError(f"denoiser must be callable, got {type(denoiser).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if dtype is not None and dtype not in LOW_PRECISION:
            raise ValueError(f"dtype must be None (float32) or one of {LOW_PRECISION}, got {dtype!r}")
        self.denoiser, self.mode, self.dtype, self.tf32 = denoiser, mode, dtype, check_tf32(tf32)
        self.grow = row_buckets == "pow2"
        if row_buckets is None:
            if mode != "eager":
                raise ValueError(f"mode {mode!r} needs row_buckets (fixed shapes); None is for eager only")
            self.buckets: tuple[int, ...] | None = None
        else:
            self.buckets = (1,) if self.grow else check_buckets(row_buckets)
        self._backend: _CountingBackend | None = None
        self._run: Fn = self._forward
        if mode == "compile":
            self._backend = _CountingBackend(compile_backend)
            self._run = torch.compile(self._forward, backend=self._backend, dynamic=False, fullgraph=True)
        self._static: dict[int, StaticCall] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ counters
    @property
    def compilations(self) -> int:
        """Graphs compiled so far (0 unless ``mode='compile'``)."""
        return 0 if self._backend is None else self._backend.count

    @property
    def captures(self) -> int:
        """CUDA graphs captured so far (0 unless ``mode='cuda_graph'``)."""
        return len(self._static)

    # ------------------------------------------------------------------ calls
    def _forward(self, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        if self.dtype is None:
            return self.denoiser(x, t, cond)
        # no weight-cast cache: it would outlive a CUDA-graph capture (PyTorch's CUDA-graph rule)
        with torch.autocast(device_type=x.device.type, dtype=self.dtype, cache_enabled=False):
            out = self.denoiser(x, t, cond)
        return out.to(x.dtype)

    @contextlib.contextmanager
    def _call_context(self) -> Iterator[None]:
        """The runtime's lock; in compile mode room for one graph per bucket (dynamo keeps 8 per
        function by default, shared by every runtime in the process) and an error, not a silent eager
        fallback, past it."""
        with self._lock, torch.no_grad():
            if self.mode != "compile":
                yield
                return
            with torch._dynamo.config.patch(recompile_limit=64 + 2 * len(self.buckets or ()),
                                            fail_on_recompile_limit_hit=True):
                yield

    def bucket(self, rows: int) -> int:
        """The row count a call with ``rows`` rows runs at."""
        if self.buckets is None:
            return rows
        if self.grow and rows > self.buckets[-1]:
            self.buckets = pow2_buckets(rows)
        return bucket_for(rows, self.buckets)

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        n = x.shape[0]
        if t.shape != (n,) or (cond is not None and cond.shape[0] != n):
            raise ValueError(
                f"t must be [N={n}] and cond [N, ...]; got t {tuple(t.shape)}, "
                f"cond {None if cond is None else tuple(cond.shape)}"
            )
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"t must hold integer training timesteps, got dtype {t.dtype}")
        t = t.long()  # one dtype, so compiled graphs and static buffers see one signature
        with self._call_context():
            rows = self.bucket(n)
            if self.mode == "cuda_graph":
                call = self._static.get(rows)
                if call is None:
                    with tf32_mode(self.tf32):  # kernels are chosen at capture; a replay reads no flags
                        call = self._static[rows] = StaticCall(self._run, rows, x, t, cond, capture=True)
                return call(x, t, cond)
            with tf32_mode(self.tf32):
                if rows == n and self.mode == "eager":
                    return self._run(x, t, cond)
                padded_cond = None if cond is None else pad_rows(cond, rows)
                return self._run(pad_rows(x, rows), pad_rows(t, rows), padded_cond)[:n]

    def denoiser_device(self) -> torch.device | None:
        """The device of the denoiser's parameters (a module, or an object with a ``model`` module)."""
        for owner in (self.denoiser, getattr(self.denoiser, "model", None)):
            if isinstance(owner, torch.nn.Module):
                param = next(owner.parameters(), None)
                if param is not None:
                    return param.device
        return None

    def warmup(
        self,
        event_shape: Sequence[int],
        cond_shape: Sequence[int] | None,
        buckets: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """Compile or capture every bucket (or those given) ahead, so a control loop pays nothing at run
        time: inputs [rows, *event_shape] of ``dtype`` and cond [rows, *cond_shape] on ``device`` (None:
        the denoiser's parameters' device, else CUDA in cuda_graph mode and the CPU otherwise)."""
        if device is None:
            device = self.denoiser_device() or torch.device("cuda" if self.mode == "cuda_graph" else "cpu")
        for rows in check_buckets(buckets if buckets is not None else (self.buckets or ())):
            x = torch.zeros((rows, *event_shape), dtype=dtype, device=device)
            t = torch.zeros(rows, dtype=torch.long, device=device)
            cond = None if cond_shape is None else torch.zeros((rows, *cond_shape), dtype=dtype, device=device)
            self(x, t, cond)

    def __repr__(self) -> str:
        return (f"DenoiserRuntime(mode={self.mode!r}, row_buckets={self.buckets}, dtype={self.dtype}, "
                f"tf32={self.tf32})")
