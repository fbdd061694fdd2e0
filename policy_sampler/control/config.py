"""Settings of :class:`~policy_sampler.control.ChunkRunner`, typed and checked in one place.

``RunnerConfig.from_dict`` takes a mapping such as a hydra ``control:`` section, so every setting can
be overridden from the command line (``control.smoothing=rtc``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from policy_sampler.control.real_time_chunking import JACOBIANS
from policy_sampler.validation import check_bool, check_choice, check_int, check_number

__all__ = ["RunnerConfig", "SAFE_ACTIONS", "SMOOTHING"]

SMOOTHING = ("none", "rtc", "ensemble")
SAFE_ACTIONS = ("task", "zero", "repeat")


@dataclass
class RunnerConfig:
    """How the runner schedules, smooths and falls back; see :class:`~policy_sampler.control.ChunkRunner`.

    Timing: ``budget_s`` is the most an ``act`` call may take. ``control_period_s``: the tick period
    assumed until one is measured (None: the ``dt`` of the task the policy names, else ``budget_s``).
    ``wait_margin_s``: how long before the end of its budget ``act`` stops waiting for a chunk, the time
    left to take the GIL back and answer (None: the larger of two thread switch intervals,
    ``2 * sys.getswitchinterval()``, 10 ms by default, and 10% of ``budget_s``).
    ``inference_delay``: ``None`` runs inference on background threads against the wall clock; an
    int d simulates a delay of d ticks. The simulated delay is for evaluation only: ``act`` computes
    each chunk inside the call (deterministic and independent of the machine) and ignores
    ``budget_s``. ``n_action_steps``: actions executed per chunk (None: the policy's).
    ``num_inference_steps``: the sampler's schedule length (None: the policy's).

    Where chunks meet (``smoothing``): ``'none'``, ``'rtc'`` (real-time chunking: ``rtc_max_guidance``
    caps the guidance weight, ``rtc_jacobian`` is ``'full'``, the vector-Jacobian product through the
    network RTC and PiGDM define, or ``'identity'``, a cheaper approximation that skips the network's
    Jacobian and runs under compiled or CUDA-graph runtimes) or ``'ensemble'`` (temporal ensembling
    with ``ensemble_decay``).

    Drafts: ``warm_start`` (Picard family: reuse the previous chunk's noise and path shifted in time);
    ``guess_from_previous`` (exact samplers: draft the first window from the previous chunk shifted in
    time; legal, so the law is unchanged).

    Fallbacks: ``fallback_steps`` DDIM steps of the fallback chunk (0: none). ``safe_action``: what a
    tick gets when no chunk covers it: ``'task'`` (the default) asks the description of the task
    named in the policy's ``metadata['task']`` (zero velocity for ObstacleReach; Meta-World holds the
    hand still and keeps the last gripper command) and gives zeros when the policy names no task;
    ``'zero'`` zeros; ``'repeat'`` repeats each env's last executed action (zeros before the first).

    ``num_candidates``: chunks sampled per env for a selector to choose from (best-of-N).
    ``num_envs``: None for one env (``act`` takes and returns one), else the envs stepped in lockstep.
    ``seed``: seeds every draw of the runner (None: fresh entropy at each ``reset``).
    """

    budget_s: float = 0.1
    control_period_s: float | None = None
    wait_margin_s: float | None = None
    inference_delay: int | None = None
    n_action_steps: int | None = None
    num_inference_steps: int | None = None
    smoothing: str = "none"
    rtc_max_guidance: float = 5.0
    rtc_jacobian: str = "full"
    ensemble_decay: float = 0.01
    warm_start: bool = False
    guess_from_previous: bool = True
    fallback_steps: int = 4
    safe_action: str = "task"
    num_candidates: int = 1
    num_envs: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        self.budget_s = check_number("budget_s", self.budget_s, positive=True)
        self.control_period_s = check_number("control_period_s", self.control_period_s, positive=True,
                                             allow_none=True)
        self.wait_margin_s = check_number("wait_margin_s", self.wait_margin_s, minimum=0, allow_none=True)
        self.inference_delay = check_int("inference_delay", self.inference_delay, minimum=0, allow_none=True)
        self.n_action_steps = check_int("n_action_steps", self.n_action_steps, minimum=1, allow_none=True)
        self.num_inference_steps = check_int("num_inference_steps", self.num_inference_steps, minimum=1,
                                             allow_none=True)
        check_choice("smoothing", self.smoothing, SMOOTHING)
        self.rtc_max_guidance = check_number("rtc_max_guidance", self.rtc_max_guidance, positive=True)
        check_choice("rtc_jacobian", self.rtc_jacobian, JACOBIANS)
        self.ensemble_decay = check_number("ensemble_decay", self.ensemble_decay, minimum=0)
        check_bool("warm_start", self.warm_start)
        check_bool("guess_from_previous", self.guess_from_previous)
        self.fallback_steps = check_int("fallback_steps", self.fallback_steps, minimum=0)
        check_choice("safe_action", self.safe_action, SAFE_ACTIONS)
        self.num_candidates = check_int("num_candidates", self.num_candidates, minimum=1)
        self.num_envs = check_int("num_envs", self.num_envs, minimum=1, allow_none=True)
        self.seed = check_int("seed", self.seed, minimum=0, allow_none=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunnerConfig":
        """From a mapping of its fields (a hydra section); an unknown key is a ``ValueError`` listing
        the known ones."""
        names = cls.field_names()
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown runner setting(s) {unknown}; known: {sorted(names)}")
        return cls(**dict(data))

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

