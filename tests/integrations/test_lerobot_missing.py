"""Without LeRobot (the main .venv): the integration imports, and using it says how to install LeRobot."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

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
    script = Path(__file__).resolve().parents[2] / "scripts" / "evaluate.py"
    done = subprocess.run([sys.executable, str(script), f"checkpoint={tmp_path}", f"out_dir={tmp_path / 'eval'}"],
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "setup.sh --lerobot" in done.stderr and not (tmp_path / "eval").exists()
