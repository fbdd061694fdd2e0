"""Bridges to policies trained elsewhere, sampled by this module's samplers.

``policy_sampler.integrations.lerobot``: a LeRobot ``DiffusionPolicy`` (``wrap_lerobot_policy`` for
LeRobot's own ``select_action`` loop; ``load_lerobot_policy`` for our evaluation and control tools).
Each integration imports its library only when called, so this package imports without them.
"""
