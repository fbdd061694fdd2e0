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

from policy_sampler.training import train  # noqa: E402


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
    t = OmegaConf.to_container(cfg.train, resolve=True)
    ema = t.pop("ema")
    try:
        result = _train(cfg, policy_cfg, t, ema, dataset)
    except (ValueError, FileNotFoundError) as exc:  # bad settings or data: a message, not a traceback
        _fail(str(exc))
    print(
        f"trained {result.steps} steps in {result.seconds:.1f} s ({result.steps_per_second:.2f} steps/s); "
        f"best loss {result.best_loss:.4f}; checkpoints: {result.best_path} (best), {result.last_path} (last)"
    )


def _fail(message: str, status: int = 2) -> None:
    print(f"train: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def _train(cfg: DictConfig, policy_cfg: dict, t: dict, ema: dict, dataset: Path):
    return train(
        policy_cfg,
        dataset_path=dataset,
        out_dir=to_absolute_path(str(cfg.out_dir)),
        steps=t["steps"],
        epochs=t["epochs"],
        batch_size=t["batch_size"],
        lr=float(t["lr"]),
        weight_decay=float(t["weight_decay"]),
        betas=tuple(float(b) for b in t["betas"]),
        lr_scheduler=t["lr_scheduler"],
        warmup_steps=t["warmup_steps"],
        grad_clip_norm=t["grad_clip_norm"],
        ema_enabled=bool(ema["enabled"]),
        ema_power=ema["power"],
        ema_inv_gamma=float(ema["inv_gamma"]),
        ema_max_decay=float(ema["max_decay"]),
        ema_update_after_step=ema["update_after_step"],
        seed=t["seed"],
        device=t["device"],
        val_every=t["val_every"],
        num_workers=t["num_workers"],
        num_threads=t["num_threads"],
        progress=bool(t["progress"]),
        metadata={"task": str(cfg.task)},
    )


if __name__ == "__main__":
    main()
