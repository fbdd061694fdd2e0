"""Our demonstrations (robomimic's HDF5 layout, ``scripts/collect_demos.py``) as a local ``LeRobotDataset``.

LeRobot's DiffusionPolicy wants ``observation.state`` plus ``observation.environment_state`` (or
images); our tasks observe one flat vector. ``observation_layout(obs_dim, state_dim)`` splits it: the
first ``state_dim`` entries (the robot: ObstacleReach's puck position and velocity, Meta-World's hand
position and gripper) become ``observation.state``, the rest (goal, obstacle, objects) become
``observation.environment_state``. The same layout, written beside the trained policy as
``policy_sampler.json``, lets our tools feed the policy the flat vector again.

The dataset is written by LeRobot's own ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` /
``finalize`` into a temporary folder beside ``root`` and renamed onto it once complete: nothing is
fetched from a hub and a failed conversion leaves no partial dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from policy_sampler.data.demos import OBS_KEY, demo_names
from policy_sampler.integrations.lerobot.chain import require_lerobot
from policy_sampler.validation import check_int

__all__ = ["observation_layout", "write_lerobot_dataset"]

STATE, ENV_STATE = "observation.state", "observation.environment_state"


def observation_layout(obs_dim: int, state_dim: int) -> list[tuple[str, int]]:
    """``[("observation.state", state_dim), ("observation.environment_state", obs_dim - state_dim)]``."""
    obs_dim, state_dim = check_int("obs_dim", obs_dim, minimum=1), check_int("state_dim", state_dim, minimum=1)
    if state_dim >= obs_dim:
        raise ValueError(f"state_dim={state_dim} must be below the observation's {obs_dim} entries: LeRobot's "
                         "DiffusionPolicy needs a non-empty observation.environment_state beside observation.state")
    return [(STATE, state_dim), (ENV_STATE, obs_dim - state_dim)]


def write_lerobot_dataset(
    demos: str | os.PathLike, root: str | os.PathLike, repo_id: str, state_dim: int, *, fps: int = 10,
    split: str | None = "train", task_text: str | None = None,
) -> dict[str, Any]:
    """Write the ``split`` demos of the HDF5 file ``demos`` as a LeRobotDataset at ``root`` (which must not
    exist) named ``repo_id``, frames at ``fps``. Returns ``{"root", "repo_id", "episodes", "frames",
    "observation_layout", "task"}``."""
    require_lerobot()
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root).absolute()
    if root.exists():
        raise ValueError(f"root {root} exists; the dataset is written to a new folder")
    fps = check_int("fps", fps, minimum=1)
    with h5py.File(demos, "r") as f:
        names = demo_names(f, split)
        if not names:
            raise ValueError(f"{demos}: split {split!r} has no demos")
        env_args = f["data"].attrs.get("env_args")
        obs_dim = int(f[f"data/{names[0]}/obs/{OBS_KEY}"].shape[1])
        act_dim = int(f[f"data/{names[0]}/actions"].shape[1])
        layout = observation_layout(obs_dim, state_dim)
        task = task_text or _task_name(env_args) or Path(demos).stem
        features = {key: {"dtype": "float32", "shape": (dim,), "names": None} for key, dim in layout}
        features["action"] = {"dtype": "float32", "shape": (act_dim,), "names": None}
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        frames = 0
        try:
            dataset = LeRobotDataset.create(repo_id, fps, features, root=tmp / "dataset", use_videos=False)
            for name in names:
                obs = np.asarray(f[f"data/{name}/obs/{OBS_KEY}"][()], np.float32)
                actions = np.asarray(f[f"data/{name}/actions"][()], np.float32)
                for t in range(actions.shape[0]):
                    dataset.add_frame({STATE: obs[t, :state_dim], ENV_STATE: obs[t, state_dim:],
                                       "action": actions[t], "task": task})
                dataset.save_episode()
                frames += actions.shape[0]
            dataset.finalize()
            os.replace(tmp / "dataset", root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"root": str(root), "repo_id": repo_id, "episodes": len(names), "frames": frames,
            "observation_layout": [list(entry) for entry in layout], "task": task}


def _task_name(env_args: Any) -> str | None:
    try:
        return str(json.loads(env_args)["env_name"])
    except (TypeError, ValueError, KeyError):
        return None
