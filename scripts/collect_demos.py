"""Roll a task's scripted expert and write its demonstrations in robomimic's HDF5 layout.

    python scripts/collect_demos.py task=PolicySampler/ObstacleReach-v0 n_demos=100 out=demos/reach.hdf5

Prints the expert's success rate over the episodes rolled ("expert success: 48/50 = 96.0%"),
the number of demos written and the file. Options: configs/collect_demos.yaml. Bad arguments
(unknown task, n_demos < 1, an unwritable out) are reported before any rollout, exit with
status 2 and write nothing; too few successes exit with status 1 and write nothing.
"""

from __future__ import annotations

import math
import sys

import hydra
from omegaconf import DictConfig, OmegaConf


def _fail(message: str, status: int = 2) -> None:
    print(f"collect_demos: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def run(cfg: DictConfig) -> int:
    import policy_sampler_envs

    from policy_sampler.data import demos
    from policy_sampler.validation import check_int, check_number

    listing = "\n  ".join(policy_sampler_envs.available_tasks())
    if OmegaConf.is_missing(cfg, "task"):
        _fail(f"task is required (task=<id>); available tasks:\n  {listing}")
    if OmegaConf.is_missing(cfg, "out"):
        _fail("out is required (out=<file.hdf5>)")
    task = policy_sampler_envs.canonical_task_id(str(cfg.task))
    try:
        env_kwargs = OmegaConf.to_container(cfg.env_kwargs, resolve=True) if cfg.env_kwargs else {}
        if not isinstance(env_kwargs, dict):
            raise ValueError(f"env_kwargs must be a mapping, got {env_kwargs!r}")
        n_demos = check_int("n_demos", cfg.n_demos, minimum=1)
        seed = check_int("seed", cfg.seed, minimum=0)
        factor = check_number("max_attempts_factor", cfg.max_attempts_factor, minimum=1)
        valid_fraction = check_number("valid_fraction", cfg.valid_fraction, minimum=0)
        if valid_fraction >= 1:
            raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
        out = demos.check_output_path(hydra.utils.to_absolute_path(str(cfg.out)))
        env = policy_sampler_envs.make_env(task, **env_kwargs)  # an unknown task lists the available ones
    except ValueError as exc:
        _fail(str(exc))

    keep = bool(cfg.keep_only_successful)
    max_attempts = math.ceil(factor * n_demos) if keep else n_demos
    try:
        env_args = demos.make_env_args(task, env, env_kwargs)
        try:
            episodes = demos.collect(
                task, n_demos, seed=seed, keep_only_successful=keep, max_attempts=max_attempts,
                stop_on_success=bool(cfg.stop_on_success), progress=bool(cfg.progress), env=env,
            )
        except demos.NotEnoughDemosError as exc:
            print(exc.episodes.summary(), flush=True)
            _fail(f"{exc}; nothing written", status=1)
    finally:
        env.close()
    print(episodes.summary(), flush=True)
    collection = {
        "task": task, "n_demos": n_demos, "seed": seed, "keep_only_successful": keep,
        "max_attempts": max_attempts, "stop_on_success": bool(cfg.stop_on_success),
        "attempts": episodes.attempts, "successes": episodes.successes,
    }
    path = demos.write_robomimic_hdf5(
        out, episodes, env_args, valid_fraction=float(valid_fraction), seed=seed, collection=collection,
    )
    total = sum(len(e) for e in episodes)
    print(f"wrote {len(episodes)} demos ({total} steps) to {path}", flush=True)
    return 0


@hydra.main(config_path="../configs", config_name="collect_demos", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
