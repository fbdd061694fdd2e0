"""Hostile checkpoints: every broken file is a ValueError (or FileNotFoundError) that names the file
and what is wrong, raised by ``DiffusionPolicy.load`` and never later at the first prediction."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from policy_sampler import DiffusionPolicy
from policy_sampler.policy import DiffusionPolicyConfig

CONFIG, WEIGHTS = "config.json", "model.safetensors"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    config = DiffusionPolicyConfig(obs_dim=3, action_dim=2, horizon=8, n_action_steps=4, down_dims=(8, 16),
                                   n_groups=4, diffusion_step_embed_dim=8, num_inference_steps=4)
    torch.manual_seed(0)
    return DiffusionPolicy(config).save(tmp_path_factory.mktemp("ckpt") / "good")


@pytest.fixture
def ckpt(saved, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(saved, copy)
    return copy


def _load_error(ckpt, kind=ValueError):
    with pytest.raises(kind) as info:
        DiffusionPolicy.load(ckpt)
    return str(info.value)


def test_the_good_checkpoint_loads(ckpt):
    assert isinstance(DiffusionPolicy.load(ckpt), DiffusionPolicy)


@pytest.mark.parametrize("keep", [0, 7, 100, -10], ids=["empty", "in-header-length", "in-header", "in-data"])
def test_truncated_weights_name_the_file(ckpt, keep):
    data = (ckpt / WEIGHTS).read_bytes()
    (ckpt / WEIGHTS).write_bytes(data[:keep] if keep >= 0 else data[:keep])
    message = _load_error(ckpt)
    assert str(ckpt / WEIGHTS) in message and "safetensors" in message


def test_corrupted_weights_header_names_the_file(ckpt):
    data = bytearray((ckpt / WEIGHTS).read_bytes())
    data[8:40] = b"\xff" * 32  # garbage inside the JSON header
    (ckpt / WEIGHTS).write_bytes(bytes(data))
    message = _load_error(ckpt)
    assert str(ckpt / WEIGHTS) in message


def test_missing_weights_name_the_file(ckpt):
    (ckpt / WEIGHTS).unlink()
    assert str(ckpt / WEIGHTS) in _load_error(ckpt, FileNotFoundError)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nonfinite_weights_refused_at_load(ckpt, value):
    state = load_file(str(ckpt / WEIGHTS))
    key = next(k for k in state if k.startswith("model.") and k.endswith("weight"))
    state[key].view(-1)[0] = value
    save_file(state, str(ckpt / WEIGHTS))
    message = _load_error(ckpt)
    assert str(ckpt / WEIGHTS) in message and "NaN or inf" in message and key in message


def test_weights_of_another_shape_name_both_files(ckpt, saved):
    state = load_file(str(ckpt / WEIGHTS))
    key = next(k for k in state if k.startswith("model.") and k.endswith("weight"))
    state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)
    save_file(state, str(ckpt / WEIGHTS))
    message = _load_error(ckpt)
    assert str(ckpt / WEIGHTS) in message and str(ckpt / CONFIG) in message


@pytest.mark.parametrize(
    "text,what",
    [("{not json", "not valid JSON"), ("", "not valid JSON"), ("[1, 2]", "JSON object"), ('"policy"', "JSON object"),
     (b"\xff\xfe{}", "not valid JSON")],
    ids=["garbage", "empty", "list", "string", "bad-utf8"],
)
def test_config_that_is_not_a_json_object_names_the_file(ckpt, text, what):
    path = ckpt / CONFIG
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    message = _load_error(ckpt)
    assert str(path) in message and what in message


def _edit_config(ckpt, edit):
    path = ckpt / CONFIG
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    return path


def test_config_without_policy_names_the_file(ckpt):
    path = _edit_config(ckpt, lambda d: d.pop("policy"))
    message = _load_error(ckpt)
    assert str(path) in message and "'policy'" in message


@pytest.mark.parametrize("policy", [[1, 2], "small", {"obs_dim": 3}, {"obs_dim": 3, "action_dim": 2, "bogus": 1}],
                         ids=["list", "string", "missing-fields", "unknown-field"])
def test_bad_policy_entry_names_the_file(ckpt, policy):
    path = _edit_config(ckpt, lambda d: d.update(policy=policy))
    message = _load_error(ckpt)
    assert str(path) in message and "policy" in message


@pytest.mark.parametrize("edit,what", [
    (lambda d: d.update(format="other"), "not a policy_sampler.DiffusionPolicy"),
    (lambda d: d.update(format_version=99), "newer"),
    (lambda d: d.update(format_version="1"), "format_version"),
], ids=["format", "newer-version", "version-string"])
def test_wrong_format_names_the_file(ckpt, edit, what):
    path = _edit_config(ckpt, edit)
    message = _load_error(ckpt)
    assert str(path) in message and what in message
