"""Without LeRobot (the main .venv): the integration imports, and using it says how to install LeRobot."""

from __future__ import annotations

import importlib.util
import json

import pytest

if importlib.util.find_spec("lerobot") is not None:
    pytest.skip("LeRobot is installed here; this file checks the behaviour without it", allow_module_level=True)

from policy_sampler.policy import load_policy  # noqa: E402


def test_imports_without_lerobot():
    from policy_sampler.integrations.lerobot import LeRobotPolicy, load_lerobot_policy, wrap_lerobot_policy

    assert callable(wrap_lerobot_policy) and callable(load_lerobot_policy) and LeRobotPolicy.__name__ == "LeRobotPolicy"


def test_using_it_without_lerobot_says_how_to_install(tmp_path):
    from policy_sampler.integrations.lerobot import wrap_lerobot_policy

    with pytest.raises(ImportError, match=r"lerobot\[diffusion\]==0\.6\.1.*bash scripts/setup\.sh --lerobot"):
        wrap_lerobot_policy(object(), sampler="ddpm")
    (tmp_path / "config.json").write_text(json.dumps({"type": "diffusion"}))
    for name in ("model.safetensors", "policy_preprocessor.json"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(ImportError, match=r"setup\.sh --lerobot"):
        load_policy(tmp_path)  # a LeRobot policy folder given to our tools
