"""Train a LeRobot DiffusionPolicy with LeRobot's own trainer on our demonstrations (run with .venv-lerobot).

    .venv-lerobot/bin/python scripts/train_lerobot.py demos=demos/reach.hdf5 out_dir=lerobot/reach
    .venv-lerobot/bin/python scripts/train_lerobot.py demos=<file.hdf5> out_dir=<dir> steps=2000 policy.down_dims=[64,128,256]

1. converts the demos' train split into a local LeRobotDataset, ``<out_dir>/dataset``
   (``policy_sampler.integrations.lerobot.dataset``: LeRobot's own writer, nothing from a hub);
2. runs ``lerobot-train`` (LeRobot's training script, as a subprocess with ``HF_HUB_OFFLINE=1``, its
   output in ``<out_dir>/train.log``) on it: a state-only DiffusionPolicy with ``policy.*`` settings;
3. writes ``policy_sampler.json`` (task, how the flat observation splits into LeRobot's keys, the
   run's settings and wall time) beside the policy files in ``<out_dir>/train/checkpoints/last/pretrained_model``.

``<out_dir>`` then loads with ``policy_sampler.policy.load_policy`` and evaluates with
``scripts/evaluate.py checkpoint=<out_dir>/train``. Bad arguments exit with status 2 and write nothing;
a failed ``lerobot-train`` exits with its status. Options: configs/train_lerobot.yaml.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _fail(message: str, status: int = 2) -> None:
    print(f"train_lerobot: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def _int(cfg: DictConfig, key: str, minimum: int) -> int:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _cli_value(value) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)


def run(cfg: DictConfig) -> int:
    missing = [key for key in ("demos", "out_dir") if OmegaConf.is_missing(cfg, key)]
    if missing:
        _fail(f"missing required setting(s) {', '.join(missing)}; run e.g. "
              "python scripts/train_lerobot.py demos=<demos.hdf5> out_dir=<dir>")
    demos = Path(to_absolute_path(str(cfg.demos)))
    if not demos.is_file():
        _fail(f"demos {demos} does not exist")
    out_dir = Path(to_absolute_path(str(cfg.out_dir)))
    if out_dir.exists():
        _fail(f"out_dir {out_dir} exists; train into a new folder")
    steps, batch_size = _int(cfg, "steps", 1), _int(cfg, "batch_size", 1)
    state_dim, fps = _int(cfg, "state_dim", 1), _int(cfg, "fps", 1)
    seed, num_workers = _int(cfg, "seed", 0), _int(cfg, "num_workers", 0)
    policy = OmegaConf.to_container(cfg.policy, resolve=True) or {}

    from policy_sampler.integrations.lerobot import require_lerobot
    from policy_sampler.integrations.lerobot.adapter import LAYOUT_FILE
    from policy_sampler.integrations.lerobot.dataset import write_lerobot_dataset
    from policy_sampler.serialization import atomic_write_bytes, jsonable

    try:
        require_lerobot()
    except ImportError as exc:
        _fail(str(exc))
    slug = "".join(ch if ch.isalnum() else "_" for ch in demos.stem)
    try:
        converted = write_lerobot_dataset(demos, out_dir / "dataset", f"local/{slug}", state_dim, fps=fps,
                                          task_text=None if cfg.task is None else str(cfg.task))
    except (ValueError, KeyError, OSError) as exc:
        _fail(f"cannot convert {demos}: {exc}")
    print(f"dataset: {converted['episodes']} episodes, {converted['frames']} frames in {converted['root']}", flush=True)

    train_dir = out_dir / "train"
    command = [
        sys.executable, "-m", "lerobot.scripts.lerobot_train",
        f"--dataset.repo_id={converted['repo_id']}", f"--dataset.root={converted['root']}",
        "--policy.type=diffusion", "--policy.device=cpu", "--policy.push_to_hub=false",
        *[f"--policy.{key}={_cli_value(value)}" for key, value in policy.items()],
        f"--output_dir={train_dir}", f"--steps={steps}", f"--batch_size={batch_size}", f"--seed={seed}",
        f"--num_workers={num_workers}", f"--save_freq={steps}", f"--log_freq={max(1, steps // 20)}",
        "--wandb.enable=false",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    log = out_dir / "train.log"
    print(f"lerobot-train: {steps} steps, batch {batch_size}; log in {log}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        handle.write(" ".join(command) + "\n")
        handle.flush()
        status = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    if status != 0:
        print(f"train_lerobot: lerobot-train failed (status {status}); see {log}", file=sys.stderr, flush=True)
        return status
    policy_dir = train_dir / "checkpoints" / "last" / "pretrained_model"
    record = {
        "task": converted["task"],
        "observation_layout": converted["observation_layout"],
        "trained_by": "lerobot-train (LeRobot 0.6.1)",
        "demos": str(demos),
        "dataset": converted,
        "steps": steps, "batch_size": batch_size, "seed": seed, "policy": policy,
        "train_wall_s": round(wall, 1), "torch_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    atomic_write_bytes(policy_dir / LAYOUT_FILE, (json.dumps(jsonable(record), indent=2) + "\n").encode())
    print(f"trained in {wall:.0f} s; policy in {policy_dir}", flush=True)
    return 0


@hydra.main(config_path="../configs", config_name="train_lerobot", version_base="1.3")
def main(cfg: DictConfig) -> None:
    sys.exit(run(cfg))


if __name__ == "__main__":
    main()
