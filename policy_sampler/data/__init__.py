"""Demonstration data: scripted-expert collection, robomimic's HDF5 layout, and its loader.

robomimic (installed with ``--no-deps``) and the tasks (``policy_sampler_envs``) are imported
only by the functions that need them.
"""

from policy_sampler.data import demos
from policy_sampler.data.demos import *  # noqa: F401,F403  (the names in demos.__all__)

__all__ = list(demos.__all__)
