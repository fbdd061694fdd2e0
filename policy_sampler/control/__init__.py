"""Running a policy in a real-time control loop: :class:`ChunkRunner` and its settings
(:class:`RunnerConfig`), with real-time chunking and temporal ensembling where chunks meet."""

from policy_sampler.control.chunk_runner import ChunkRunner, boundary_jerk
from policy_sampler.control.config import RunnerConfig
from policy_sampler.control.real_time_chunking import RealTimeChunking, soft_mask
from policy_sampler.control.temporal_ensembling import ensemble

__all__ = ["ChunkRunner", "RealTimeChunking", "RunnerConfig", "boundary_jerk", "ensemble", "soft_mask"]
