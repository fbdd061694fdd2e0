"""TrainConfig: typed, checked, loadable from hydra's train: section (configs/train.yaml)."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from policy_sampler.training import EMAConfig, TrainConfig

REPO = Path(__file__).resolve().parents[2]


def test_the_train_yaml_section_loads_field_for_field():
    section = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "train.yaml").train, resolve=True)
    cfg = TrainConfig.from_dict(section)
    assert cfg == TrainConfig()  # the yaml holds the defaults
    assert isinstance(cfg.ema, EMAConfig) and cfg.ema.power == 0.75 and cfg.betas == (0.95, 0.999)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("settings,match", [
    ({"steps": 10, "epochs": 2}, "exactly one of steps or epochs"),
    ({"steps": None}, "exactly one of steps or epochs"),
    ({"steps": 0}, "steps"),
    ({"batch_size": True}, "batch_size"),
    ({"lr": float("nan")}, "lr"),
    ({"betas": [0.9]}, "betas"),
    ({"betas": [0.9, 1.0]}, "betas"),
    ({"lr_scheduler": "cosine_annealing"}, "lr_scheduler"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"grad_clip_norm": 0.0}, "grad_clip_norm"),
    ({"ema": {"max_decay": 1.0}}, "ema.max_decay"),
    ({"ema": {"decay": 0.9}}, "unknown ema setting"),
    ({"num_threads": 0}, "num_threads"),
    ({"val_evry": 5}, "unknown train setting"),
])
def test_bad_settings_name_the_field(settings, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict(settings)


def test_epochs_instead_of_steps():
    assert TrainConfig(steps=None, epochs=3).epochs == 3
