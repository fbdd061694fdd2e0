"""Sweeps of closed-loop rollouts split into units (sampler configuration x block of seeds) that run in
this process or on Ray, are stored one file per unit as they finish, resume after an interruption and
merge into the same tables as a local run (see docs/scaling.md)."""

from policy_sampler.sweep.candidates import generate_candidates, load_candidates, write_candidates
from policy_sampler.sweep.checkpoint import CheckpointBlob
from policy_sampler.sweep.evaluation import evaluate_sweep, merge_evaluation
from policy_sampler.sweep.launchers import LAUNCHERS, Launcher, LocalLauncher, RayLauncher, make_launcher
from policy_sampler.sweep.runner import Progress, run_sweep
from policy_sampler.sweep.store import UnitStore
from policy_sampler.sweep.units import Unit, plan_units, run_unit

__all__ = [
    "LAUNCHERS", "CheckpointBlob", "Launcher", "LocalLauncher", "Progress", "RayLauncher", "Unit", "UnitStore",
    "evaluate_sweep", "generate_candidates", "load_candidates", "make_launcher", "merge_evaluation",
    "plan_units", "run_sweep", "run_unit", "write_candidates",
]
