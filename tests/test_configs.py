"""Every hydra sampler config builds its sampler, and command-line style overrides apply."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from policy_sampler import available_samplers, make_sampler

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SAMPLER_CONFIGS = sorted(p.stem for p in (CONFIGS / "sampler").glob("*.yaml"))


@pytest.mark.parametrize("name", SAMPLER_CONFIGS)
def test_sampler_config_builds(name):
    config = OmegaConf.load(CONFIGS / "sampler" / f"{name}.yaml")
    sampler = make_sampler(**OmegaConf.to_container(config))
    assert sampler.name == config.name == name


def test_every_sampler_has_a_config():
    assert set(available_samplers()) <= set(SAMPLER_CONFIGS)


def test_override_reaches_the_sampler():
    with initialize_config_dir(config_dir=str(CONFIGS / "sampler"), version_base="1.3"):
        config = compose(config_name="paradigms", overrides=["tolerance=0.05", "window=16"])
    sampler = make_sampler(**OmegaConf.to_container(config))
    assert (sampler.tolerance, sampler.window) == (0.05, 16)
