"""Headless MuJoCo render of a recorded trajectory to an H.264 MP4 that browsers play (research note §5.2).

The episode is replayed, not re-planned: its env is reset with the recorded seed and stepped with
the recorded actions, and every observation is checked against the recorded one, so the video
shows exactly the trajectory the annotator is asked about. Frames are encoded by
``policy_sampler.video.write_mp4`` (H.264, ``yuv420p``, ``+faststart``: the browser starts playing
and seeks with Range requests before the whole file arrives).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from policy_sampler.data.demos import Episode  # noqa: E402
from policy_sampler.video import write_mp4  # noqa: E402

REPLAY_ATOL = 1e-5


def replay_frames(env: Any, episode: Episode) -> list[np.ndarray]:
    """The frames of ``episode`` replayed in ``env`` (made with ``render_mode="rgb_array"``): the
    reset frame then one per recorded action. ``ValueError`` if the replayed observations leave
    the recorded ones (the env or its seed handling changed)."""
    obs, _ = env.reset(seed=int(episode.seed))
    _check(obs, episode.observations[0], episode.seed, 0)
    frames = [env.render()]
    for t, action in enumerate(episode.actions):
        obs, *_ = env.step(action)
        _check(obs, episode.next_observations[t], episode.seed, t + 1)
        frames.append(env.render())
    return frames


def _check(obs: np.ndarray, recorded: np.ndarray, seed: int, step: int) -> None:
    if not np.allclose(np.asarray(obs, dtype=np.float32).reshape(-1), recorded, atol=REPLAY_ATOL):
        raise ValueError(f"replaying the episode with env seed {seed} diverged from its record at step {step}")


def render_videos(task: str, jobs: Sequence[tuple[Episode, Path]], width: int = 320, height: int = 320,
                  progress: Callable[[str], None] | None = None) -> None:
    """Replay each ``(episode, path)`` of ``task`` headless (one env for all) and write its MP4
    to ``path``; ``progress`` gets a line per video."""
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"video width and height must be even and >= 16 (yuv420p), got {width}x{height}")
    if not jobs:
        return
    from policy_sampler_envs import make_env

    env = make_env(task, render_mode="rgb_array", width=int(width), height=int(height))
    try:
        fps = int(env.metadata.get("render_fps", 25))
        for k, (episode, path) in enumerate(jobs, 1):
            write_mp4(replay_frames(env, episode), path, fps)
            if progress is not None:
                progress(f"rendered video {k}/{len(jobs)}: {path}")
    finally:
        env.close()
