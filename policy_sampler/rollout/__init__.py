"""Closed-loop evaluation: sampler configurations (:mod:`.specs`), the one episode loop through the
runner (:mod:`.episodes`), what it reports (:mod:`.report`) and how that is written out (:mod:`.output`)."""

from policy_sampler.rollout.episodes import RolloutConfig, evaluate, evaluate_sampler
from policy_sampler.rollout.output import format_table, write_plot, write_results, write_video
from policy_sampler.rollout.report import (
    CSV_COLUMNS,
    EvaluationReport,
    SamplerReport,
    merge_control_stats,
    summarize,
    wilson_interval,
)
from policy_sampler.rollout.specs import DEFAULT_BASELINES, SamplerSpec, load_sampler_specs, with_control

__all__ = [
    "CSV_COLUMNS", "DEFAULT_BASELINES", "EvaluationReport", "RolloutConfig", "SamplerReport", "SamplerSpec",
    "evaluate", "evaluate_sampler", "format_table", "load_sampler_specs", "merge_control_stats", "summarize",
    "wilson_interval", "with_control", "write_plot", "write_results", "write_video",
]
