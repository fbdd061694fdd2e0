"""Batch active preference learning of trajectory rewards (arXiv 2402.15757, after 1810.04303).

``PreferenceLearner`` (:mod:`.learner`) chooses batches of pairwise queries over a pool of
trajectories described by the task's features (``featurize``, :mod:`.features`), normalized with a stored
``FeatureNormalizer``; ``SimulatedPerson`` (:mod:`.simulated`) answers them in experiments.
``PreferenceLoop`` (:mod:`.loop`) runs select -> answer -> update resumably, and ``RewardSelector``
(:mod:`.selection`) lets the learned reward choose among a policy's sampled chunks.
"""

from policy_sampler.preference.features import FeatureNormalizer, TrajectoryFeatures, featurize
from policy_sampler.preference.learner import PreferenceLearner, alignment
from policy_sampler.preference.loop import PreferenceLoop
from policy_sampler.preference.selection import RewardSelector
from policy_sampler.preference.simulated import SimulatedPerson

__all__ = ["FeatureNormalizer", "PreferenceLearner", "PreferenceLoop", "RewardSelector", "SimulatedPerson",
           "TrajectoryFeatures", "alignment", "featurize"]
