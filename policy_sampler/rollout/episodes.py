"""The one episode loop: a DiffusionPolicy rolled in a task under sampler configurations, on the same
seeded episodes, every action coming from a :class:`~policy_sampler.control.ChunkRunner`.

Diffusion Policy's protocol (Chi et al. 2023, ``env_runner``): parallel envs, each keeping its last
``n_obs_steps`` observations (padded with the first one at reset), one action chunk predicted for all
active envs at once, its ``n_action_steps`` actions executed before the next prediction, an env stopping
at termination or truncation; per episode the success (``info["is_success"]`` ever true), the total
and the max reward, the length and, when the task reports it, the side the agent passed (``side``).
Plain configurations are the runner at a simulated delay of 0 (chunk after chunk, no draft guess, no
fallback); configurations with ``control`` settings add a simulated inference delay, smoothing or
best-of-N under a learned reward.

Every sampler configuration sees the same episodes (env seed ``seed + i`` for episode i). Envs run in
waves of ``n_envs`` (default: all episodes of the block at once); each wave's runner seeds its draws
with the env seed of the wave's first episode, so a configuration evaluated twice gives the same
episodes, configurations differ only by the sampler, and a block of episodes starting at episode k
(as :mod:`policy_sampler.sweep` runs them) is seeded with ``seed + k``.

    from policy_sampler.rollout import SamplerSpec, evaluate, write_results
    specs = [SamplerSpec("ddpm", "ddpm"), SamplerSpec("paradigms", "paradigms", {"tolerance": 0.1}),
             SamplerSpec("ddim-16", "ddim", {"eta": 0.0}, num_inference_steps=16, baseline=True)]
    report = evaluate(policy, "PolicySampler/ObstacleReach-v0", specs, n_episodes=20, seed=0)
    write_results(report, "eval/run")        # results.json, results.csv, results.png, videos/
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np

from policy_sampler.control import ChunkRunner
from policy_sampler.data.observations import flat_observation
from policy_sampler.rollout.report import EvaluationReport, SamplerReport, merge_control_stats
from policy_sampler.rollout.specs import SamplerSpec
from policy_sampler.serialization import scalar_info
from policy_sampler.validation import check_bool, check_int

__all__ = ["RolloutConfig", "evaluate", "evaluate_sampler"]


@dataclass
class RolloutConfig:
    """How episodes are rolled: ``n_envs`` envs side by side (None: every episode of a block at once),
    ``env_kwargs`` for ``gymnasium.make``, ``max_steps`` (an episode cap; None: the task's registered
    limit), ``stop_on_success`` (end an episode at its first success, for tasks that never terminate),
    ``record_trajectories`` (keep every step's arrays, see :func:`evaluate_sampler`) and ``progress``
    (a line per chunk call)."""

    n_envs: int | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    max_steps: int | None = None
    stop_on_success: bool = False
    record_trajectories: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        self.n_envs = check_int("n_envs", self.n_envs, minimum=1, allow_none=True)
        if not isinstance(self.env_kwargs, Mapping):
            raise ValueError(f"env_kwargs must be a mapping, got {self.env_kwargs!r}")
        self.env_kwargs = dict(self.env_kwargs)
        self.max_steps = check_int("max_steps", self.max_steps, minimum=1, allow_none=True)
        check_bool("stop_on_success", self.stop_on_success)
        check_bool("record_trajectories", self.record_trajectories)
        check_bool("progress", self.progress)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RolloutConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown rollout option(s) {unknown}; valid: {', '.join(sorted(names))}")
        return cls(**dict(data))


class _Episode:
    """One env's episode and its bookkeeping: the record, and optionally the trajectory and frames."""

    def __init__(self, env: Any, index: int, env_seed: int, record_trajectory: bool, record_video: bool) -> None:
        self.env = env
        self.obs, info = env.reset(seed=env_seed)
        self.record: dict[str, Any] = {
            "episode": index, "env_seed": env_seed, "success": bool(info.get("is_success", False)),
            "total_reward": 0.0, "max_reward": None, "length": 0, "chunks": 0, "terminated": False,
            "truncated": False,
        }
        if "side" in info:
            self.record["side"] = info["side"]
        self.trajectory = ({"observations": [], "next_observations": [], "actions": [], "rewards": [],
                            "info": scalar_info(info)} if record_trajectory else None)
        self.video = ({"fps": int(env.metadata.get("render_fps", 25) or 25), "frames": [np.asarray(env.render())]}
                      if record_video else None)
        self.done = False

    def step(self, action: np.ndarray, stop_on_success: bool) -> None:
        """One env step with its bookkeeping; marks the episode done when it is over."""
        rec, before = self.record, self.obs
        self.obs, reward, terminated, truncated, info = self.env.step(action)
        reward = float(reward)
        if self.trajectory is not None:
            traj = self.trajectory
            traj["observations"].append(flat_observation(before))
            traj["next_observations"].append(flat_observation(self.obs))
            traj["actions"].append(np.asarray(action, np.float32).reshape(-1))
            traj["rewards"].append(reward)
            traj["info"] = scalar_info(info)
        rec["length"] += 1
        rec["total_reward"] += reward
        rec["max_reward"] = reward if rec["max_reward"] is None else max(rec["max_reward"], reward)
        rec["success"] = rec["success"] or bool(info.get("is_success", False))
        if "side" in info and (info["side"] is not None or "side" not in rec):
            rec["side"] = info["side"]  # the latest reported side (None until it passes)
        if "collided" in info:
            rec["collided"] = bool(info["collided"])
        if self.video is not None:
            self.video["frames"].append(np.asarray(self.env.render()))
        rec["terminated"], rec["truncated"] = bool(terminated), bool(truncated)
        self.done = bool(terminated or truncated or (stop_on_success and rec["success"]))

    def stacked_trajectory(self) -> dict[str, Any]:
        """The recorded steps as arrays, the last info with the episode's success and side."""
        traj, rec = self.trajectory, self.record
        info = dict(traj["info"])
        info["is_success"] = bool(rec["success"])
        if "side" in rec:
            info["side"] = rec["side"]
        return {
            "observations": np.stack(traj["observations"]).astype(np.float32),
            "next_observations": np.stack(traj["next_observations"]).astype(np.float32),
            "actions": np.stack(traj["actions"]).astype(np.float32),
            "rewards": np.asarray(traj["rewards"], dtype=np.float32),
            "info": info,
        }


def _selector(spec: SamplerSpec, task: str) -> Any:
    """The spec's reward selector (best-of-N), loaded once for the task it was learned on."""
    if spec.reward is None:
        return None
    from policy_sampler.preference.selection import RewardSelector
    from policy_sampler_envs import describe_task

    return RewardSelector.load(spec.reward, describe_task(task))


def evaluate_sampler(
    policy,
    task: str,
    spec: SamplerSpec,
    n_episodes: int,
    seed: int = 0,
    *,
    rollout: RolloutConfig | None = None,
    first_episode: int = 0,
    record_videos: int = 0,
) -> tuple[SamplerReport, dict[int, dict[str, Any]]]:
    """Roll ``n_episodes`` episodes with one sampler configuration: episodes ``first_episode`` ..
    ``first_episode + n_episodes - 1`` of a run, episode i with env seed ``seed + i``.

    Each chunk call is one ``predict_action`` on the stacked histories of the wave's active envs, timed
    by the runner. Episodes i < ``record_videos`` render ``rgb_array`` frames, returned as
    ``{i: {"fps", "frames"}}``. With ``rollout.record_trajectories`` the report's ``trajectories`` holds,
    per episode i, ``observations`` / ``next_observations`` (T, obs_dim) (flattened env observations
    around each executed action), ``actions`` (T, act_dim), ``rewards`` (T,) and ``info`` (the last
    step's JSON-scalar info, ``is_success`` set to the episode's success). ``rollout``: how episodes are
    rolled (:class:`RolloutConfig`).
    """
    from policy_sampler_envs import make_env

    config = RolloutConfig() if rollout is None else rollout
    n_episodes = check_int("n_episodes", n_episodes, minimum=1)
    first_episode = check_int("first_episode", first_episode, minimum=0)
    policy.schedule_for(spec.num_inference_steps)  # a bad step count fails before any rollout
    selector = _selector(spec, task)
    n_envs = n_episodes if config.n_envs is None else min(config.n_envs, n_episodes)
    env_kwargs = dict(config.env_kwargs)
    if config.max_steps is not None:
        env_kwargs["max_episode_steps"] = config.max_steps
    steps = policy.schedule_for(spec.num_inference_steps).num_steps
    records: list[dict[str, Any]] = []
    chunks: list[dict[str, Any]] = []
    frames: dict[int, dict[str, Any]] = {}
    trajectories: dict[int, dict[str, Any]] = {}
    control_stats: list[dict[str, Any]] = []
    start_wall = time.perf_counter()
    pending = list(range(first_episode, first_episode + n_episodes))
    while pending:
        wave, pending = pending[:n_envs], pending[n_envs:]
        episodes: list[_Episode] = []
        runner: ChunkRunner | None = None
        try:
            for i in wave:
                render = {"render_mode": "rgb_array"} if i < record_videos else {}
                episodes.append(_Episode(make_env(task, **env_kwargs, **render), i, int(seed) + i,
                                         config.record_trajectories, i < record_videos))
            runner = ChunkRunner(policy, sampler=spec.make(), selector=selector,
                                 config=spec.runner_config(num_envs=len(wave), seed=int(seed) + wave[0]))
            runner.reset([e.obs for e in episodes])
            logged = 0
            while not all(e.done for e in episodes):
                actions = runner.act([None if e.done else e.obs for e in episodes])
                for e, action in zip(episodes, actions):
                    if not e.done:
                        e.step(action, config.stop_on_success)
                if config.progress and len(runner.chunk_log) > logged:
                    logged = len(runner.chunk_log)
                    active = sum(not e.done for e in episodes)
                    print(f"  {spec.label}: chunk {len(chunks) + logged}, {active} envs active", flush=True)
            if spec.control is not None:
                control_stats.append(runner.stats())
            for entry in runner.chunk_log:
                chunks.append({"batch": entry["batch"], "latency_s": entry["latency_s"], "rounds": entry["rounds"],
                               "nfe": entry["nfe"], "mean_accepted_length": entry["mean_accepted_length"],
                               "num_inference_steps": steps})
                for row in entry["rows"]:
                    episodes[row].record["chunks"] += 1
            for e in episodes:
                records.append(e.record)
                if e.trajectory is not None:
                    trajectories[e.record["episode"]] = e.stacked_trajectory()
                if e.video is not None:
                    frames[e.record["episode"]] = e.video
        finally:
            if runner is not None:
                runner.close()
            for e in episodes:
                e.env.close()
    report = SamplerReport(spec=spec, exact=bool(spec.make().exact), episodes=records, chunks=chunks,
                           wall_s=time.perf_counter() - start_wall, policy_steps=policy.schedule.num_steps,
                           trajectories=trajectories, control=merge_control_stats(spec.control, control_stats))
    return report, frames


def evaluate(
    policy,
    task: str,
    specs: Sequence[SamplerSpec],
    n_episodes: int,
    seed: int = 0,
    *,
    rollout: RolloutConfig | None = None,
    videos: int = 0,
    video_samplers: int = 1,
    meta: Mapping[str, Any] | None = None,
) -> EvaluationReport:
    """Evaluate every configuration in ``specs`` on the same ``n_episodes`` seeded episodes. The first
    ``videos`` episodes of the first ``video_samplers`` configurations keep their frames (written by
    :func:`~policy_sampler.rollout.write_results`)."""
    from policy_sampler.benchmark import machine_name

    n_episodes = check_int("n_episodes", n_episodes, minimum=1)
    if not specs:
        raise ValueError("specs is empty: nothing to evaluate")
    config = RolloutConfig() if rollout is None else rollout
    for spec in specs:  # every step count is checked before the first rollout
        policy.schedule_for(spec.num_inference_steps)
    reports, frames = [], {}
    for index, spec in enumerate(specs):
        if config.progress:
            print(f"evaluating {spec.label} ({index + 1}/{len(specs)}) on {n_episodes} episodes", flush=True)
        report, fr = evaluate_sampler(policy, task, spec, n_episodes, seed, rollout=config,
                                      record_videos=videos if index < video_samplers else 0)
        reports.append(report)
        if config.progress:
            row = report.summary
            print(f"  {spec.label}: {row['successes']}/{row['n_episodes']} successes, latency p50 "
                  f"{1000 * (row['latency_p50_s'] or 0):.1f} ms, {report.wall_s:.1f} s", flush=True)
        if fr:
            frames[spec.label] = fr
    return EvaluationReport(task=task, n_episodes=n_episodes, seed=int(seed), machine=machine_name(policy.device),
                            reports=reports, meta=dict(meta or {}), frames=frames)
