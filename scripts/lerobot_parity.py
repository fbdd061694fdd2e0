"""How closely wrap_lerobot_policy reproduces LeRobot's own sampling (run with .venv-lerobot).

    .venv-lerobot/bin/python scripts/lerobot_parity.py                       # random-weight policies
    .venv-lerobot/bin/python scripts/lerobot_parity.py --policy results/lerobot/ObstacleReach-v0/policy/train

For each LeRobot DiffusionPolicy (random weights: a small U-Net, LeRobot's default-size U-Net, a DDIM-10
configuration, an image policy with LeRobot's ResNet-18; and any trained policy folder given), the same
``torch.manual_seed`` is set before LeRobot's own call and before the wrapped policy's, and the table
prints the largest absolute difference of the actions (``predict_action_chunk``, or ``select_action``
tick by tick), with the wrapped sampler's rounds and NFE per chunk. Prints a markdown table naming the
machine; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _policy(image: bool = False, **overrides):
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (4,))}
    inputs["observation.image" if image else "observation.environment_state"] = (
        PolicyFeature(FeatureType.VISUAL, (3, 96, 96)) if image else PolicyFeature(FeatureType.ENV, (16,)))
    options = dict(horizon=16, n_obs_steps=2, n_action_steps=8, pretrained_backbone_weights=None, device="cpu")
    options.update(overrides)
    config = DiffusionConfig(input_features=inputs, output_features={"action": PolicyFeature(FeatureType.ACTION, (2,))},
                             **options)
    torch.manual_seed(0)
    return DiffusionPolicy(config).eval()


def _observation(policy, batch_size: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {key: torch.rand(batch_size, *ft.shape, generator=g) for key, ft in policy.config.input_features.items()}


def _ticks(p, obs: dict, n: int, seed: int) -> list:
    p.reset()
    torch.manual_seed(seed)
    return [p.select_action(dict(obs)) for _ in range(n)]


def _chunk(p, obs: dict, seed: int):
    p.reset()
    torch.manual_seed(seed)
    steps = p.config.n_obs_steps
    return p.predict_action_chunk({k: torch.stack([v] * steps, dim=1) for k, v in obs.items()})


def _gap(a, b) -> float:
    a, b = (a if isinstance(a, list) else [a]), (b if isinstance(b, list) else [b])
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", action="append", default=[], help="a trained LeRobot policy folder (repeatable)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per random-weight case")
    parser.add_argument("--skip-large", action="store_true", help="leave out LeRobot's default-size U-Net")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from policy_sampler.benchmark import machine_name
    from policy_sampler.integrations.lerobot import load_lerobot_policy, wrap_lerobot_policy

    cases = [("small U-Net (16, 32, 64), DDPM-100, 4 chunks of batch 4", _policy(down_dims=(16, 32, 64),
              diffusion_step_embed_dim=16), "chunk", 4)]
    if not args.skip_large:
        cases.append(("LeRobot's default U-Net (512, 1024, 2048), DDPM-100, batch 1", _policy(), "chunk", 1))
    cases += [
        ("small U-Net, DDPM-100, select_action 24 ticks, batch 2", _policy(down_dims=(16, 32, 64),
         diffusion_step_embed_dim=16), "ticks", 2),
        ("small U-Net, DDIM-10 (LeRobot configured), select_action 24 ticks", _policy(
            down_dims=(16, 32, 64), diffusion_step_embed_dim=16, noise_scheduler_type="DDIM", num_inference_steps=10),
         "ticks", 2),
        ("image 96x96 (ResNet-18, no pretrained weights), DDPM-100, select_action 16 ticks", _policy(
            image=True, down_dims=(16, 32, 64), diffusion_step_embed_dim=16, use_group_norm=True), "ticks", 2),
    ]
    for folder in args.policy:
        adapter = load_lerobot_policy(folder)
        cases.append((f"trained by lerobot-train ({adapter.metadata.get('task', folder)}), DDPM-100, select_action "
                      "24 ticks", adapter.policy, "ticks", 1))

    print(f"machine: {machine_name(torch.device('cpu'))}")
    print()
    print("| LeRobot policy | params | sampler | max abs difference vs LeRobot's own | rounds / chunk | NFE / chunk | s |")
    print("|---|---|---|---|---|---|---|")
    for label, policy, mode, batch in cases:
        params = sum(p.numel() for p in policy.parameters())
        start = time.perf_counter()
        gaps = []
        for seed in range(args.seeds if mode == "chunk" and batch > 1 else 1):
            obs = _observation(policy, batch, seed)
            fast = wrap_lerobot_policy(policy)  # the policy's own chain: ddpm, or ddim when configured with DDIM
            if mode == "chunk":
                gaps.append(_gap(_chunk(fast, obs, seed), _chunk(policy, obs, seed)))
            else:
                n = 16 if "image" in label else 24
                gaps.append(_gap(_ticks(fast, obs, n, seed), _ticks(policy, obs, n, seed)))
        result = fast.last_result
        print(f"| {label} | {params / 1e6:.2f}M | {fast.sampler.name} | {max(gaps):.1e} | {result.rounds} | "
              f"{result.nfe} | {time.perf_counter() - start:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
