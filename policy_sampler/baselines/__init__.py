"""Fast alternatives to the exact samplers that change what is sampled, kept apart from them: a
consistency-distilled student (registered as the baseline sampler ``consistency_student``) and
DPM-Solver++ in its own loop. ``scripts/law_fidelity.py`` measures the law each one samples."""

from policy_sampler.baselines.consistency import ConsistencyStudentSampler, DistillConfig, distill, student_plan
from policy_sampler.baselines.dpm_solver import dpm_solver_sample, dpm_solver_scheduler

__all__ = ["ConsistencyStudentSampler", "DistillConfig", "distill", "dpm_solver_sample", "dpm_solver_scheduler",
           "student_plan"]
