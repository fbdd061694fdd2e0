"""A LeRobot ``DiffusionPolicy`` sampled by this module's samplers.

In LeRobot's own loop (``select_action``, ``predict_action_chunk``, ``reset``)::

    from policy_sampler.integrations.lerobot import wrap_lerobot_policy
    fast = wrap_lerobot_policy(policy, sampler="speculative_picard")
    action = fast.select_action(batch)

In our tools (``ChunkRunner``, ``scripts/evaluate.py checkpoint=<LeRobot policy folder>``), through
``policy_sampler.policy.load_policy``, which returns a :class:`LeRobotPolicy` for a LeRobot folder.

Importing this package needs no LeRobot; calling into it without LeRobot raises an ``ImportError``
saying how to install it (``bash scripts/setup.sh --lerobot``: a Python 3.12 ``.venv-lerobot``).
"""

from policy_sampler.integrations.lerobot.adapter import (
    LeRobotPolicy,
    LeRobotPolicyConfig,
    is_lerobot_policy_dir,
    load_lerobot_policy,
    resolve_lerobot_policy_dir,
)
from policy_sampler.integrations.lerobot.chain import INSTALL_HINT, LeRobotChain, require_lerobot
from policy_sampler.integrations.lerobot.wrapper import LeRobotSampledPolicy, wrap_lerobot_policy

__all__ = [
    "INSTALL_HINT",
    "LeRobotChain",
    "LeRobotPolicy",
    "LeRobotPolicyConfig",
    "LeRobotSampledPolicy",
    "is_lerobot_policy_dir",
    "load_lerobot_policy",
    "require_lerobot",
    "resolve_lerobot_policy_dir",
    "wrap_lerobot_policy",
]
