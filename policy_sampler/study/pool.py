"""The study's trajectory pool: episodes, their features and their rendered videos (cached on disk).

:func:`build_pool` takes any list of episodes of one task (the demo's come from the scripted expert,
:func:`expert_episodes`; a policy-sampled pool plugs in the same way) and renders each one's video
once into ``video_dir``, named by a content hash of (task, env seed, actions, frame size), so a
video is reused across restarts and studies and never overwritten by a different trajectory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy_sampler.data.demos import Episode, collect_episode
from policy_sampler_envs import canonical_task_id

RENDER_VERSION = "1"  # bump when render.py's output for the same trajectory changes


@dataclass(frozen=True)
class PoolTrajectory:
    """One pool entry as the server shows it: ``video`` is a file name inside the pool's video_dir."""

    index: int
    content_hash: str
    video: str
    info: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return {"index": self.index, "content_hash": self.content_hash, "video": self.video, "info": self.info}


@dataclass
class StudyPool:
    task: str
    episodes: list[Episode]
    trajectories: list[PoolTrajectory]
    video_dir: Path

    def __len__(self) -> int:
        return len(self.trajectories)

    def features(self) -> tuple[np.ndarray, dict[str, Any]]:
        """The preference library's features of the pool, ``(N, d)``, standardized by a
        ``FeatureNormalizer`` fitted on the pool, and that normalizer's ``state_dict``."""
        from policy_sampler.preference import FeatureNormalizer, featurize
        from policy_sampler_envs import describe_task

        task = describe_task(self.task)
        raw = np.asarray(featurize(task, self.episodes), dtype=np.float64)
        normalizer = FeatureNormalizer.fit(raw, task.feature_names)
        return normalizer.transform(raw), normalizer.state_dict()


def expert_episodes(task: str, seeds: Sequence[int]) -> list[Episode]:
    """One scripted-expert episode of ``task`` per env seed (deterministic)."""
    from policy_sampler_envs import make_env, make_expert

    env = make_env(task)
    try:
        expert = make_expert(task, env)
        return [collect_episode(env, expert, int(seed)) for seed in seeds]
    finally:
        env.close()


def content_hash(task: str, episode: Episode, width: int, height: int) -> str:
    """sha256 of what the video shows: task, env seed, actions and frame size (hex)."""
    h = hashlib.sha256()
    h.update(f"{RENDER_VERSION}|{canonical_task_id(task)}|{int(episode.seed)}|{width}x{height}|".encode())
    h.update(np.ascontiguousarray(episode.actions, dtype=np.float32).tobytes())
    return h.hexdigest()


def episode_info(episode: Episode) -> dict[str, Any]:
    """What the admin export records about a trajectory (JSON scalars)."""
    return {"seed": int(episode.seed), "length": len(episode), "success": bool(episode.success),
            "return": float(np.sum(episode.rewards)), "side": episode.side,
            "collided": episode.info.get("collided")}


def build_pool(
    task: str,
    episodes: Sequence[Episode],
    video_dir: str | Path,
    width: int = 320,
    height: int = 320,
    progress: Callable[[str], None] | None = None,
) -> StudyPool:
    """The pool of ``episodes`` with one MP4 each in ``video_dir``, rendering only missing ones
    (``progress`` gets a line per rendered video)."""
    from policy_sampler.study.render import render_videos

    task = canonical_task_id(task)
    if len(episodes) < 2:
        raise ValueError(f"a study pool needs at least 2 trajectories, got {len(episodes)}")
    video_dir = Path(video_dir)
    trajectories = []
    todo = []
    for index, episode in enumerate(episodes):
        digest = content_hash(task, episode, width, height)
        name = f"{digest[:24]}.mp4"
        trajectories.append(PoolTrajectory(index, digest, name, episode_info(episode)))
        if not (video_dir / name).is_file():
            todo.append((episode, video_dir / name))
    render_videos(task, todo, width, height, progress)
    return StudyPool(task, list(episodes), trajectories, video_dir)
