"""Demonstration data: scripted-expert collection, robomimic's HDF5 layout, and its loader.

robomimic (installed with ``--no-deps``) and the tasks (``policy_sampler_envs``) are imported
only by the functions that need them.
"""

from policy_sampler.data.demos import (
    OBS_KEY,
    Episode,
    EpisodeList,
    NotEnoughDemosError,
    canonical_task_id,
    check_output_path,
    collect,
    collect_episode,
    dataset_statistics,
    diffusion_policy_window,
    expert_seed,
    load_sequence_dataset,
    make_env,
    make_env_args,
    split_train_valid,
    write_robomimic_hdf5,
)

__all__ = [
    "OBS_KEY",
    "Episode",
    "EpisodeList",
    "NotEnoughDemosError",
    "canonical_task_id",
    "check_output_path",
    "collect",
    "collect_episode",
    "dataset_statistics",
    "diffusion_policy_window",
    "expert_seed",
    "load_sequence_dataset",
    "make_env",
    "make_env_args",
    "split_train_valid",
    "write_robomimic_hdf5",
]
