"""Training of DiffusionPolicy: its typed configuration, EMA of the weights and the training loop."""

from policy_sampler.training.config import EMAConfig, TrainConfig
from policy_sampler.training.ema import EMA
from policy_sampler.training.trainer import TrainResult, train

__all__ = ["EMA", "EMAConfig", "TrainConfig", "TrainResult", "train"]
