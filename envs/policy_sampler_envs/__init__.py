"""Gymnasium/MuJoCo tasks of policy_sampler, registered under the ``PolicySampler`` namespace.

Tasks are added by the tasks issue; importing this package is what registers them, so
``gymnasium.make("policy_sampler_envs:PolicySampler/<Task>-v0")`` works.
"""
