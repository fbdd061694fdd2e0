"""What every sampler shares: the result type, argument checks, the counted denoiser call, the registry."""

from __future__ import annotations

import inspect
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol

import torch
from torch import Tensor

from policy_sampler.schedule import NoiseSchedule
from policy_sampler.validation import check_int, check_number


class Denoiser(Protocol):
    """``denoiser(x [N, *event], t LongTensor[N], cond None | [N, ...]) -> Tensor like x``: whatever the
    schedule's ``prediction_type`` says."""

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor: ...


@dataclass
class SampleResult:
    """What a sampler returns.

    ``sample``: the clean sample, shaped and typed like ``x_T``. ``rounds``: sequential denoiser calls
    made. ``nfe``: denoiser evaluations per sample (rows passed in all calls / batch size, rounded
    up). ``evaluations``: rows passed in all calls. ``rows_per_call``: the rows of each sequential call
    (what a per-call latency table needs). ``rounds_per_row``: the round at which each batch row was
    final. ``info``: sampler-specific counters (e.g. mean accepted length).
    """

    sample: Tensor
    rounds: int
    nfe: int
    evaluations: int
    rows_per_call: list[int]
    rounds_per_row: list[int]
    info: dict[str, Any] = field(default_factory=dict)


class Sampler(ABC):
    """A way of drawing ``x_0`` from the reverse chain of a schedule given a denoiser.

    Subclasses set ``name``, ``exact`` and implement :meth:`_sample`; options are keyword
    arguments of ``__init__`` (checked by :func:`make_sampler`).
    """

    name: ClassVar[str]
    exact: ClassVar[bool]
    #: takes ``trajectory_guess``: initial guesses of every state of the path (Picard family)
    warm_start: ClassVar[bool] = False
    #: takes ``deadline``: returns its best iterate by then (``info['stopped_early']``)
    anytime: ClassVar[bool] = False
    #: takes ``x0_guess``: a guess of the clean sample that seeds the first draft (exact samplers)
    draft_guess: ClassVar[bool] = False

    def sample(
        self,
        denoiser: Denoiser,
        schedule: NoiseSchedule,
        x_T: Tensor,
        cond: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        trajectory_guess: Tensor | None = None,
        deadline: float | None = None,
        x0_guess: Tensor | None = None,
    ) -> SampleResult:
        """Sample ``x_0`` starting from ``x_T`` ([B, *event]); ``noise`` ([K, B, *event]) fixes each
        transition's standard normal draw, else they come from ``generator``.

        ``trajectory_guess`` ([K + 1, *x_T.shape], samplers with ``warm_start``): initial guesses of the
        states entering steps 1..K and of x_0 (entry 0 is ignored: that is ``x_T``), e.g. the previous
        chunk's path shifted in time; it changes the work done, never the fixed point. ``x0_guess``
        (shaped like ``x_T``, samplers with ``draft_guess``): the clean sample the first draft assumes,
        e.g. the previous action chunk shifted in time; it must not depend on this call's noise, and
        then the law is unchanged (any such draft is legal). ``deadline`` (a ``time.perf_counter()`` value; samplers with ``anytime``) makes the sampler stop
        before a round it predicts would end past it and return its best iterate."""
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        check_inputs(schedule, x_T, cond, noise)
        check_generator(generator)
        extras = self._check_extras(schedule, x_T, trajectory_guess, deadline, x0_guess)
        work_dtype = working_dtype(x_T.dtype)
        device = x_T.device
        # Values are checked on the device, with no host sync: the flags join the denoiser's
        # outputs and the final sample in one read at the end (or a sampler's per-round sync).
        values = {"x_T": x_T, "cond": cond, "noise": noise,
                  **{k: v for k, v in extras.items() if isinstance(v, Tensor)}}
        if cond is not None:
            cond = cond.to(device)
        if noise is None:
            noise = torch.randn(
                (schedule.num_steps, *x_T.shape), generator=generator, dtype=work_dtype,
                device=generator.device if generator is not None else device,
            )
        noise = noise.to(device=device, dtype=work_dtype)
        call = DenoiserCall(denoiser, cond, x_T, inputs={k: v for k, v in values.items() if v is not None})
        if device.type == "cpu":
            call.raise_if_nonfinite()  # reading a CPU flag costs nothing: fail before any work
        for key in ("trajectory_guess", "x0_guess"):
            if key in extras:
                extras[key] = extras[key].to(device=device, dtype=work_dtype)
        result = self._sample(call, schedule, x_T.to(work_dtype), noise, generator, **extras)
        call.raise_if_nonfinite(result.sample)  # the run's final check: one host sync
        result.sample = result.sample.to(x_T.dtype)
        return result

    def _check_extras(self, schedule: NoiseSchedule, x_T: Tensor, guess: Tensor | None,
                      deadline: float | None, x0_guess: Tensor | None) -> dict[str, Any]:
        extras: dict[str, Any] = {}
        if x0_guess is not None:
            if not self.draft_guess:
                raise ValueError(f"sampler {self.name!r} takes no x0_guess")
            extras["x0_guess"] = _checked_tensor("x0_guess", x0_guess, tuple(x_T.shape), "the shape of x_T")
        if guess is not None:
            if not self.warm_start:
                raise ValueError(f"sampler {self.name!r} takes no trajectory_guess (no warm start)")
            expected = (schedule.num_steps + 1, *x_T.shape)
            extras["trajectory_guess"] = _checked_tensor("trajectory_guess", guess, expected, "shape [K + 1, *x_T.shape] =")
        if deadline is not None:
            if not self.anytime:
                raise ValueError(f"sampler {self.name!r} cannot stop at a deadline (not an anytime sampler)")
            if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or deadline != deadline:
                raise ValueError(f"deadline must be a time.perf_counter() value, got {deadline!r}")
            extras["deadline"] = float(deadline)
        return extras

    @abstractmethod
    def _sample(
        self,
        call: "DenoiserCall",
        schedule: NoiseSchedule,
        x_T: Tensor,
        noise: Tensor,
        generator: torch.Generator | None,
        **extras: Any,
    ) -> SampleResult: ...

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{self.name}({options})"


def _checked_tensor(name: str, value: Any, expected: tuple[int, ...], what: str) -> Tensor:
    """``value`` if it is a floating-point tensor of shape ``expected`` with values (not on the meta
    device), else a ``ValueError`` naming ``name``. Its values are checked later, on its device."""
    if not isinstance(value, Tensor) or tuple(value.shape) != expected:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must have {what} {expected}, got {shape}")
    _check_values_exist(name, value)
    if not value.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def _check_values_exist(name: str, value: Tensor) -> None:
    if value.device.type == "meta":
        raise ValueError(f"{name} is on the meta device (a shape without values); sampling needs real tensors")


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sums, errors and chain states are kept in float32 or better whatever the model's dtype."""
    return torch.promote_types(dtype, torch.float32)


def check_inputs(schedule: NoiseSchedule, x_T: Tensor, cond: Tensor | None, noise: Tensor | None) -> None:
    """Raise a ``ValueError`` naming the argument whose type, shape, dtype or device is wrong. Values
    (NaN/inf) are checked on the device by :class:`DenoiserCall`, without a host sync."""
    if not isinstance(x_T, Tensor) or not x_T.dtype.is_floating_point:
        raise ValueError("x_T must be a floating-point tensor")
    _check_values_exist("x_T", x_T)
    if x_T.ndim < 2:
        raise ValueError(f"x_T must be [batch, *event], got shape {tuple(x_T.shape)}")
    if x_T.shape[0] == 0 or x_T[0].numel() == 0:
        raise ValueError(f"x_T must have at least one batch row and a non-empty event, got shape {tuple(x_T.shape)}")
    if cond is not None:
        if not isinstance(cond, Tensor):
            raise ValueError(f"cond must be a tensor or None, got {type(cond).__name__}")
        if cond.ndim == 0 or cond.shape[0] != x_T.shape[0]:
            raise ValueError(
                f"cond's first dimension must be the batch size {x_T.shape[0]}, got shape {tuple(cond.shape)}"
            )
        _check_values_exist("cond", cond)
    if noise is not None:
        expected = (schedule.num_steps, *x_T.shape)
        if not isinstance(noise, Tensor) or tuple(noise.shape) != expected:
            shape = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
            raise ValueError(f"noise must have shape [K, *x_T.shape] = {expected}, got {shape}")
        _check_values_exist("noise", noise)


def check_generator(generator: Any) -> None:
    """Raise a ``ValueError`` unless ``generator`` is a ``torch.Generator`` or None."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__} {generator!r}")


class DenoiserCall:
    """The denoiser as samplers use it: rows of states at per-row steps, the batch's conditioning
    repeated along the rows, outputs checked for shape and finiteness, every call counted.

    Finiteness (of the named ``inputs`` and of every output) is accumulated on the device in
    :attr:`nonfinite`, which a sampler may fold into its one host sync per round;
    :meth:`raise_if_nonfinite` reads every flag at once (with the final sample's, at the end).
    Calling therefore costs no host-device sync.
    """

    def __init__(self, denoiser: Callable, cond: Tensor | None, x_T: Tensor,
                 inputs: dict[str, Tensor] | None = None) -> None:
        self.denoiser = denoiser
        self.cond = cond
        self.model_dtype = x_T.dtype
        self.batch_size = x_T.shape[0]
        self.event_shape = tuple(x_T.shape[1:])
        self.rows_per_call: list[int] = []
        device = x_T.device
        self._input_names = list(inputs or {})
        self._inputs_bad = torch.stack(
            [~torch.isfinite(v).all().to(device) for v in (inputs or {}).values()]
        ) if inputs else torch.zeros(0, dtype=torch.bool, device=device)
        self._output_bad = torch.zeros((), dtype=torch.bool, device=device)

    @property
    def nonfinite(self) -> Tensor:
        """bool scalar on the device: an input or a denoiser output so far held NaN or inf."""
        return self._output_bad | self._inputs_bad.any()

    def __call__(self, x: Tensor, timesteps: Tensor, rows: Tensor | None = None) -> Tensor:
        """Evaluate at states ``x`` [N, *event] and training timesteps [N]; ``rows`` [N] says which
        batch row each state belongs to (for its conditioning); None means row i is batch row i."""
        n = x.shape[0]
        cond = self.cond
        if cond is not None and rows is not None:
            cond = cond.index_select(0, rows)
        out = self.denoiser(x.to(self.model_dtype), timesteps, cond)
        if not isinstance(out, Tensor) or tuple(out.shape) != tuple(x.shape):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"denoiser output must have the shape of its input x {tuple(x.shape)}, got {shape}"
            )
        self.rows_per_call.append(n)
        self._output_bad |= ~torch.isfinite(out).all()
        return out.to(x.dtype)

    def raise_if_nonfinite(self, sample: Tensor | None = None) -> None:
        """One host read of every flag: a ``ValueError`` naming the first non-finite input, else a
        ``FloatingPointError`` for the denoiser's output, else for ``sample`` (when given)."""
        flags = [self._inputs_bad, self._output_bad.view(1)]
        if sample is not None:
            flags.append((~torch.isfinite(sample).all()).view(1))
        bad = torch.cat(flags).tolist()
        n = len(self._input_names)
        for name, flag in zip(self._input_names, bad[:n]):
            if flag:
                raise ValueError(f"{name} contains NaN or inf")
        if bad[n]:
            raise FloatingPointError("denoiser returned NaN or inf")
        if sample is not None and bad[n + 1]:
            raise FloatingPointError(
                "the sample contains NaN or inf although every input and denoiser output was finite: "
                "the sampler's arithmetic overflowed (check its options)"
            )

    @property
    def rounds(self) -> int:
        """Sequential denoiser calls so far."""
        return len(self.rows_per_call)

    @property
    def evaluations(self) -> int:
        """Rows evaluated so far, over all calls."""
        return sum(self.rows_per_call)

    def result(self, sample: Tensor, rounds_per_row: list[int], **info: Any) -> SampleResult:
        evaluations = self.evaluations
        return SampleResult(
            sample=sample, rounds=self.rounds, nfe=math.ceil(evaluations / self.batch_size),
            evaluations=evaluations, rows_per_call=list(self.rows_per_call),
            rounds_per_row=rounds_per_row, info=info,
        )


class RoundClock:
    """Predicts whether one more round would end past a deadline from the slowest round so far."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.last = time.perf_counter()
        self.slowest = 0.0

    def tick(self) -> None:
        now = time.perf_counter()
        self.slowest = max(self.slowest, now - self.last)
        self.last = now

    def out_of_time(self) -> bool:
        return self.deadline is not None and self.last + self.slowest > self.deadline


_REGISTRY: dict[str, type[Sampler]] = {}
_BASELINES: dict[str, type[Sampler]] = {}  # fast alternatives that change the law (policy_sampler.baselines)


def register_sampler(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: make ``cls`` available to :func:`make_sampler` under ``cls.name``."""
    if cls.name in _REGISTRY or cls.name in _BASELINES:
        raise ValueError(f"a sampler named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def register_baseline(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator for a baseline (``exact = False``, e.g. a distilled student): :func:`make_sampler`
    builds it by name, but :func:`available_samplers` (our samplers) does not list it."""
    if cls.exact:
        raise ValueError(f"baseline {cls.name!r} must have exact = False")
    if cls.name in _REGISTRY or cls.name in _BASELINES:
        raise ValueError(f"a sampler named {cls.name!r} is already registered")
    _BASELINES[cls.name] = cls
    return cls


def available_samplers() -> list[str]:
    """Names :func:`make_sampler` accepts."""
    return sorted(_REGISTRY)


def sampler_options(name: str) -> dict[str, Any]:
    """The options (keyword arguments) sampler ``name`` takes, with their defaults."""
    cls = _sampler_class(name)
    params = inspect.signature(cls.__init__).parameters
    return {p.name: p.default for p in params.values() if p.name != "self"}


def make_sampler(name: str, **options: Any) -> Sampler:
    """The sampler registered as ``name`` with ``options``; unknown names or options are a ``ValueError``
    listing the valid ones."""
    valid = sampler_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for sampler {name!r}; valid options: {sorted(valid) or 'none'}"
        )
    return _sampler_class(name)(**options)


def as_sampler(sampler: str | Sampler, options: dict[str, Any]) -> Sampler:
    """``sampler`` itself when it is a :class:`Sampler` (then ``options`` must be empty), else
    ``make_sampler(sampler, **options)``; anything else is a ``ValueError`` naming what it got."""
    if isinstance(sampler, Sampler):
        if options:
            raise ValueError(f"sampler options {sorted(options)} cannot be given with a Sampler instance")
        return sampler
    if isinstance(sampler, str):
        return make_sampler(sampler, **options)
    raise ValueError(f"sampler must be a sampler name or a Sampler, got {type(sampler).__name__}")


def _sampler_class(name: str) -> type[Sampler]:
    if name in _BASELINES:
        return _BASELINES[name]
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown sampler {name!r}; available samplers: {available_samplers()}, baselines: {sorted(_BASELINES)}"
        )
    return _REGISTRY[name]


def check_positive(name: str, value: Any, *, integer: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a positive finite (integer) number."""
    if integer:
        check_int(name, value, minimum=1)
    else:
        check_number(name, value, positive=True)
