"""Train a DiffusionPolicy on demonstrations and write a checkpoint directory.

    python scripts/train.py task=PolicySampler/ObstacleReach-v0 dataset=demos.hdf5
    python scripts/train.py task=<id> dataset=<file.hdf5> out_dir=ckpt/reach policy=paper train.device=cuda
    python scripts/train.py task=<id> dataset=<file.hdf5> policy.down_dims=[32,64] train.steps=500

Writes ``<out_dir>/best`` and ``<out_dir>/last`` (each loads with ``DiffusionPolicy.load``; so does
``<out_dir>`` itself, which picks ``best``) and ``<out_dir>/train_log.json``. Relative paths are taken
from the directory the command runs in; hydra writes nothing of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from policy_sampler.training import TrainConfig, train  # noqa: E402


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    missing = [key for key in ("task", "dataset") if OmegaConf.is_missing(cfg, key)]
    if missing:
        _fail(
            f"missing required setting(s) {', '.join(missing)}; "
            "run e.g. python scripts/train.py task=<task id> dataset=<demos.hdf5>"
        )
    dataset = Path(to_absolute_path(str(cfg.dataset)))
    if not dataset.is_file():
        _fail(f"dataset {dataset} does not exist")
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    try:
        train_cfg = TrainConfig.from_dict(OmegaConf.to_container(cfg.train, resolve=True))
        result = train(policy_cfg, dataset, to_absolute_path(str(cfg.out_dir)), train_cfg,
                       metadata={"task": str(cfg.task)})
    except (ValueError, FileNotFoundError) as exc:  # bad settings or data: a message, not a traceback
        _fail(str(exc))
    print(
        f"trained {result.steps} steps in {result.seconds:.1f} s ({result.steps_per_second:.2f} steps/s); "
        f"best loss {result.best_loss:.4f}; checkpoints: {result.best_path} (best), {result.last_path} (last)"
    )


def _fail(message: str, status: int = 2) -> None:
    print(f"train: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
