"""Sampler configurations of an evaluation: which sampler, with which options, on which schedule, and how
its chunks are executed (plain, or through the runner's simulated delay, smoothing and best-of-N).

    specs = load_sampler_specs(["ddpm", "paradigms"], "configs/sampler", {"paradigms": {"tolerance": 0.05}})
    specs = with_control(specs, inference_delays=[0, 2], smoothing=["none", "rtc"])
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from policy_sampler.control.config import RunnerConfig
from policy_sampler.samplers import Sampler, make_sampler

__all__ = ["DEFAULT_BASELINES", "SamplerSpec", "load_sampler_specs", "with_control"]

# The fast baselines a user would pick instead: DDIM (eta 0) with 16 and with 10 steps.
DEFAULT_BASELINES: tuple[dict[str, Any], ...] = (
    {"label": "ddim-16", "sampler": "ddim", "num_inference_steps": 16, "options": {"eta": 0.0}},
    {"label": "ddim-10", "sampler": "ddim", "num_inference_steps": 10, "options": {"eta": 0.0}},
)
# control keys that are not RunnerConfig fields
_CONTROL_EXTRAS = ("reward",)


@dataclass
class SamplerSpec:
    """One sampler configuration: ``label`` (unique in a run), the registered ``sampler`` name, its
    ``options`` (keyword arguments of ``make_sampler``), the schedule's ``num_inference_steps`` (None =
    the policy's own), whether it is a ``baseline``, and ``control``: None for plain open-loop chunk
    execution, else :class:`~policy_sampler.control.RunnerConfig` settings (plus ``reward``, a file
    saved by :class:`~policy_sampler.preference.RewardSelector`, for best-of-N).

    The sampler is built, and its options checked, once, when the spec is made (:meth:`make` returns
    that instance)."""

    label: str
    sampler: str
    options: dict[str, Any] = field(default_factory=dict)
    num_inference_steps: int | None = None
    baseline: bool = False
    control: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self._built = make_sampler(self.sampler, **dict(self.options))  # ValueError listing the valid ones
        if self.control is not None:
            self.runner_config()  # unknown or bad runner settings fail here, before any rollout

    def make(self) -> Sampler:
        """The spec's sampler (built once)."""
        return self._built

    def runner_config(self, **settings: Any) -> RunnerConfig:
        """The runner's settings for this spec (``settings`` added, e.g. ``num_envs`` and ``seed``):
        plain specs run open loop, each chunk computed when the last one runs out (delay 0, no draft
        guess, no fallback), which is exactly executing chunk after chunk."""
        control = {k: v for k, v in (self.control or {}).items() if k not in _CONTROL_EXTRAS}
        if self.control is None:
            control = {"inference_delay": 0, "guess_from_previous": False, "fallback_steps": 0}
        return RunnerConfig.from_dict({**control, "num_inference_steps": self.num_inference_steps, **settings})

    @property
    def reward(self) -> str | None:
        return None if self.control is None else self.control.get("reward")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def with_control(specs: Sequence[SamplerSpec], inference_delays: Sequence[int],
                 smoothing: Sequence[str] = ("none",), warm_start: bool = False,
                 reward: str | os.PathLike | None = None, num_candidates: int = 8,
                 rtc_jacobian: str = "full", runner: Mapping[str, Any] | None = None) -> list[SamplerSpec]:
    """Each spec once per simulated inference delay (control ticks) and smoothing, run through
    :class:`~policy_sampler.control.ChunkRunner`; labels like ``paradigms d=2 rtc`` (``rtc-identity``
    with ``rtc_jacobian="identity"``). With ``reward`` (a file saved by
    :class:`~policy_sampler.preference.RewardSelector`), each chunk is the best of ``num_candidates``
    sampled ones under that reward (label suffix ``best-of-N``). ``runner``: further
    :class:`~policy_sampler.control.RunnerConfig` settings for every one (e.g. ``fallback_steps``)."""
    out = []
    for spec in specs:
        for delay in inference_delays:
            for smooth in smoothing:
                name = f"{smooth}-identity" if smooth == "rtc" and rtc_jacobian == "identity" else smooth
                label = f"{spec.label} d={delay}" + ("" if smooth == "none" else f" {name}")
                control: dict[str, Any] = {**dict(runner or {}), "inference_delay": int(delay),
                                           "smoothing": str(smooth)}
                if smooth == "rtc":
                    control["rtc_jacobian"] = str(rtc_jacobian)
                if reward is not None:
                    control.update(reward=str(reward), num_candidates=int(num_candidates))
                    label += f" best-of-{num_candidates}"
                if warm_start and spec.make().warm_start:
                    control["warm_start"] = True
                    label += " warm"
                out.append(dataclasses.replace(spec, label=label, control=control))
    return out


def load_sampler_specs(
    names: Sequence[str],
    config_dir: str | os.PathLike,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    baselines: Sequence[Mapping[str, Any]] = DEFAULT_BASELINES,
) -> list[SamplerSpec]:
    """Specs for the sampler configs ``<config_dir>/<name>.yaml`` (``name:`` plus options), each updated
    with ``overrides[name]``, followed by the ``baselines`` (dicts with ``sampler``, optional ``label``,
    ``options`` and ``num_inference_steps``; their options start from ``<sampler>.yaml`` when it exists).

    ``ValueError`` (listing the valid names) for an unknown config name, a bad option, an override for a
    sampler not asked for, or a repeated label.
    """
    from omegaconf import OmegaConf

    config_dir = Path(config_dir)
    valid = sorted(p.stem for p in config_dir.glob("*.yaml"))

    def read(name: str) -> dict[str, Any]:
        path = config_dir / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown sampler config {name!r}; valid: {', '.join(valid)}")
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
        if not isinstance(data, dict) or "name" not in data:
            raise ValueError(f"{path} must be a mapping with a 'name' key")
        return data

    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"samplers must be a list of sampler config names, got {names!r}")
    if len(names) == 0 and len(baselines) == 0:
        raise ValueError("nothing to evaluate: samplers and baselines are both empty")
    overrides = dict(overrides or {})
    unused = sorted(set(overrides) - {str(n) for n in names})
    if unused:
        raise ValueError(f"sampler_options given for {unused}, which are not in samplers={list(names)}")
    specs: list[SamplerSpec] = []
    for name in names:
        name = str(name)
        data = read(name)
        sampler = str(data.pop("name"))
        data.update(dict(overrides.get(name) or {}))
        specs.append(SamplerSpec(label=name, sampler=sampler, options=data))
    for b in baselines:
        b = dict(b)
        unknown = sorted(set(b) - {"label", "sampler", "options", "num_inference_steps"})
        if unknown or "sampler" not in b:
            raise ValueError(
                f"a baseline needs 'sampler' and may have 'label', 'options', 'num_inference_steps'; got {b}"
            )
        sampler = str(b["sampler"])
        options: dict[str, Any] = {}
        if (config_dir / f"{sampler}.yaml").is_file():
            options = read(sampler)
            options.pop("name")
        options.update(dict(b.get("options") or {}))
        steps = b.get("num_inference_steps")
        label = str(b.get("label") or (f"{sampler}-{steps}" if steps else sampler))
        specs.append(SamplerSpec(label=label, sampler=sampler, options=options,
                                 num_inference_steps=None if steps is None else int(steps), baseline=True))
    labels = [s.label for s in specs]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise ValueError(f"sampler configuration label(s) {repeated} appear twice")
    return specs
