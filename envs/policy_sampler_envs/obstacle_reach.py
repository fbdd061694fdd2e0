"""``PolicySampler/ObstacleReach-v0``: reach a goal around an obstacle, left or right.

A puck slides on a table (two slide joints, x and y, tracked by MuJoCo velocity actuators).
It starts near the bottom of the table, the goal (a green disk) is near the top, and a red
cylindrical obstacle stands between them, always blocking the straight line. The scripted
expert :class:`ObstacleReachExpert` goes around it on a side drawn at random per episode, so
its demonstrations are bimodal: the case where a diffusion policy beats regression, which
averages the two modes into the obstacle.

Conventions (world frame, metres; the top-down camera shows +x to the right, +y up):

- **Action** ``Box(-1, 1, (2,), float32)``: the puck's target velocity in x and y, as a
  fraction of ``max_speed`` (0.2 m/s); out-of-range actions are clipped.
- **Observation** ``Box((8,), float32)``:
  ``[agent_x, agent_y, agent_vx, agent_vy, goal_x, goal_y, obstacle_x, obstacle_y]``, bounded
  by +-1 m for positions and +-5 m/s for velocities (never reached: the table is +-0.5 m and
  the puck's speed about 0.2 m/s; observations are clipped to the bounds all the same).
- **Reset**: start ``(0, -0.32)``, goal ``(0, 0.32)`` and obstacle ``(0, 0)``, each jittered
  uniformly by the seed (start and goal by +-0.04 in x and +-0.03 in y, the obstacle by +-0.02).
  ``options`` may override ``"agent_pos"``, ``"goal_pos"`` and ``"obstacle_pos"`` (2-vectors).
- **Reward** per step: ``-||agent - goal||`` (dense), plus ``success_bonus`` (10) on the step
  that reaches the goal. No collision penalty: collisions are reported in ``info``.
- **Termination**: ``terminated`` when ``is_success``; truncation by the registration's
  ``max_episode_steps`` (200 control steps of 0.04 s; the expert needs about 90-110).
- **info**: ``is_success`` (bool, the puck's centre within ``success_radius`` = 0.03 of the
  goal), ``side`` (``"left"``, ``"right"`` or ``None``: which side of the obstacle the puck
  passed, from the sign of ``x - obstacle_x`` where the puck first crosses the line
  ``y = obstacle_y`` going up; left is -x), ``collided`` (bool, sticky: the puck has touched
  the obstacle at some physics step of this episode) and ``distance`` (to the goal).
"""

from __future__ import annotations

import atexit
import os
import weakref

os.environ.setdefault("MUJOCO_GL", "egl")

from typing import Any, Mapping  # noqa: E402

import gymnasium  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from .description import TaskDescription, path_length, squared_jerk  # noqa: E402

__all__ = ["ObstacleReachDescription", "ObstacleReachEnv", "ObstacleReachExpert", "OBSTACLE_REACH_XML"]

TABLE_HALF = 0.5
AGENT_RADIUS = 0.025
OBSTACLE_RADIUS = 0.07
GOAL_MARK_RADIUS = 0.04
POS_BOUND = 1.0  # |position| bound of the observation space (the table is +-0.5)
VEL_BOUND = 5.0  # |velocity| bound of the observation space (the puck tops out near 0.2 m/s)
TIMESTEP = 0.005  # physics step (s)
FRAME_SKIP = 8  # physics steps per control step: dt = 0.04 s
MAX_SPEED = 0.2  # m/s at |action| = 1

# Renderers still open at interpreter exit are closed by an atexit hook while the EGL display
# is alive: left to garbage collection at shutdown, mujoco.Renderer.__del__ raises EGL errors.
# mujoco's EGL backend registers eglTerminate with atexit when it creates its first context, and
# atexit runs hooks last-in first-out, so ours is registered after the first renderer exists.
_OPEN_ENVS: "weakref.WeakSet[ObstacleReachEnv]" = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_open_renderers() -> None:
    for env in list(_OPEN_ENVS):
        try:
            env.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass

OBSTACLE_REACH_XML = f"""
<mujoco model="obstacle_reach">
  <compiler angle="radian"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast"/>
  <visual>
    <global offwidth="640" offheight="640"/>
    <headlight ambient="0.4 0.4 0.4" diffuse="0.35 0.35 0.35" specular="0.05 0.05 0.05"/>
  </visual>
  <asset>
    <texture name="wood" type="2d" builtin="checker" width="256" height="256"
             rgb1="0.86 0.82 0.74" rgb2="0.80 0.76 0.68"/>
    <material name="table" texture="wood" texrepeat="5 5" specular="0.05"/>
  </asset>
  <worldbody>
    <light name="top" pos="0 0 2" dir="0 0 -1" diffuse="0.25 0.25 0.25" castshadow="false"/>
    <camera name="top" pos="0 0 1.3" xyaxes="1 0 0 0 1 0" fovy="45"/>
    <geom name="floor" type="plane" size="2 2 0.1" pos="0 0 -0.05" rgba="0.25 0.27 0.30 1"
          contype="0" conaffinity="0"/>
    <geom name="table" type="box" size="{TABLE_HALF} {TABLE_HALF} 0.02" pos="0 0 -0.02"
          material="table" contype="0" conaffinity="0"/>
    <geom name="rim_n" type="box" size="{TABLE_HALF} 0.01 0.015" pos="0 {TABLE_HALF} 0.015"
          rgba="0.35 0.25 0.18 1" contype="0" conaffinity="0"/>
    <geom name="rim_s" type="box" size="{TABLE_HALF} 0.01 0.015" pos="0 -{TABLE_HALF} 0.015"
          rgba="0.35 0.25 0.18 1" contype="0" conaffinity="0"/>
    <geom name="rim_e" type="box" size="0.01 {TABLE_HALF} 0.015" pos="{TABLE_HALF} 0 0.015"
          rgba="0.35 0.25 0.18 1" contype="0" conaffinity="0"/>
    <geom name="rim_w" type="box" size="0.01 {TABLE_HALF} 0.015" pos="-{TABLE_HALF} 0 0.015"
          rgba="0.35 0.25 0.18 1" contype="0" conaffinity="0"/>
    <body name="goal" mocap="true" pos="0 0.32 0.001">
      <geom name="goal" type="cylinder" size="{GOAL_MARK_RADIUS} 0.001" rgba="0.15 0.75 0.25 0.85"
            contype="0" conaffinity="0"/>
      <geom name="goal_dot" type="cylinder" size="0.008 0.0015" rgba="0.05 0.40 0.10 1"
            contype="0" conaffinity="0"/>
    </body>
    <body name="obstacle" mocap="true" pos="0 0 0.04">
      <geom name="obstacle" type="cylinder" size="{OBSTACLE_RADIUS} 0.04" rgba="0.80 0.18 0.15 1"
            contype="1" conaffinity="1"/>
    </body>
    <body name="agent" pos="0 0 0.02">
      <joint name="agent_x" type="slide" axis="1 0 0" limited="true" range="-0.47 0.47"/>
      <joint name="agent_y" type="slide" axis="0 1 0" limited="true" range="-0.47 0.47"/>
      <geom name="agent" type="cylinder" size="{AGENT_RADIUS} 0.02" mass="0.5"
            rgba="0.15 0.35 0.85 1" contype="1" conaffinity="1" friction="0.2 0.005 0.0001"/>
    </body>
  </worldbody>
  <actuator>
    <velocity name="vx" joint="agent_x" kv="20" ctrllimited="true" ctrlrange="-1 1"/>
    <velocity name="vy" joint="agent_y" kv="20" ctrllimited="true" ctrlrange="-1 1"/>
  </actuator>
</mujoco>
"""


class ObstacleReachEnv(gymnasium.Env):
    """Planar puck reaching a goal around a cylindrical obstacle (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}

    START = np.array([0.0, -0.32])
    GOAL = np.array([0.0, 0.32])
    OBSTACLE = np.array([0.0, 0.0])
    START_JITTER = np.array([0.04, 0.03])
    GOAL_JITTER = np.array([0.04, 0.03])
    OBSTACLE_JITTER = np.array([0.02, 0.02])

    def __init__(
        self,
        render_mode: str | None = None,
        width: int = 320,
        height: int = 320,
        frame_skip: int = FRAME_SKIP,
        max_speed: float = MAX_SPEED,
        success_radius: float = 0.03,
        success_bonus: float = 10.0,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None")
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        self.frame_skip = int(frame_skip)
        self.max_speed = float(max_speed)
        self.success_radius = float(success_radius)
        self.success_bonus = float(success_bonus)
        self.agent_radius = AGENT_RADIUS
        self.obstacle_radius = OBSTACLE_RADIUS

        self.model = mujoco.MjModel.from_xml_string(OBSTACLE_REACH_XML)
        self.data = mujoco.MjData(self.model)
        self.dt = self.model.opt.timestep * self.frame_skip
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.dt))}

        m = self.model
        self._qx = m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "agent_x")]
        self._qy = m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "agent_y")]
        self._vx = m.jnt_dofadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "agent_x")]
        self._vy = m.jnt_dofadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "agent_y")]
        self._goal_mocap = m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "goal")]
        self._obst_mocap = m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "obstacle")]

        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        bound = np.array([POS_BOUND] * 2 + [VEL_BOUND] * 2 + [POS_BOUND] * 4, dtype=np.float32)
        self.observation_space = spaces.Box(-bound, bound, dtype=np.float32)

        self._goal = self.GOAL.copy()
        self._obstacle = self.OBSTACLE.copy()
        self._side: str | None = None
        self._collided = False
        self._renderer: mujoco.Renderer | None = None

    # ------------------------------------------------------------------ state helpers
    @property
    def agent_pos(self) -> np.ndarray:
        return np.array([self.data.qpos[self._qx], self.data.qpos[self._qy]])

    @property
    def agent_vel(self) -> np.ndarray:
        return np.array([self.data.qvel[self._vx], self.data.qvel[self._vy]])

    @property
    def goal_pos(self) -> np.ndarray:
        return self._goal.copy()

    @property
    def obstacle_pos(self) -> np.ndarray:
        return self._obstacle.copy()

    def _get_obs(self) -> np.ndarray:
        obs = np.concatenate([self.agent_pos, self.agent_vel, self._goal, self._obstacle])
        high = self.observation_space.high
        return np.clip(obs, -high, high).astype(np.float32)

    def _touching(self) -> bool:
        gap = np.linalg.norm(self.agent_pos - self._obstacle) - (AGENT_RADIUS + OBSTACLE_RADIUS)
        return bool(gap <= 1e-3)

    def _get_info(self) -> dict[str, Any]:
        distance = float(np.linalg.norm(self.agent_pos - self._goal))
        return {
            "is_success": bool(distance <= self.success_radius),
            "side": self._side,
            "collided": bool(self._collided),
            "distance": distance,
        }

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        rng = self.np_random
        start = self.START + rng.uniform(-1.0, 1.0, 2) * self.START_JITTER
        goal = self.GOAL + rng.uniform(-1.0, 1.0, 2) * self.GOAL_JITTER
        obstacle = self.OBSTACLE + rng.uniform(-1.0, 1.0, 2) * self.OBSTACLE_JITTER
        if "agent_pos" in options:
            start = np.asarray(options["agent_pos"], dtype=np.float64).reshape(2)
        if "goal_pos" in options:
            goal = np.asarray(options["goal_pos"], dtype=np.float64).reshape(2)
        if "obstacle_pos" in options:
            obstacle = np.asarray(options["obstacle_pos"], dtype=np.float64).reshape(2)

        mujoco.mj_resetData(self.model, self.data)
        self._goal = goal.astype(np.float64)
        self._obstacle = obstacle.astype(np.float64)
        self.data.mocap_pos[self._goal_mocap, :2] = self._goal
        self.data.mocap_pos[self._obst_mocap, :2] = self._obstacle
        self.data.qpos[self._qx], self.data.qpos[self._qy] = start
        mujoco.mj_forward(self.model, self.data)

        self._side = None
        self._collided = self._touching()
        return self._get_obs(), self._get_info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        # velocity actuators: ctrl is the target velocity in m/s (ctrlrange +-1 m/s)
        self.data.ctrl[:] = action * self.max_speed
        prev = self.agent_pos
        for _ in range(self.frame_skip):
            mujoco.mj_step(self.model, self.data)
            if not self._collided and self._touching():
                self._collided = True
        pos = self.agent_pos

        oy = self._obstacle[1]
        if self._side is None and prev[1] < oy <= pos[1]:
            t = (oy - prev[1]) / (pos[1] - prev[1])
            x_cross = prev[0] + t * (pos[0] - prev[0])
            self._side = "left" if x_cross < self._obstacle[0] else "right"

        info = self._get_info()
        reward = -info["distance"] + (self.success_bonus if info["is_success"] else 0.0)
        terminated = info["is_success"]
        return self._get_obs(), float(reward), terminated, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gymnasium.logger.warn(
                "render() called without a render_mode; use render_mode='rgb_array'."
            )
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, height=self.height, width=self.width)
            _OPEN_ENVS.add(self)
            global _ATEXIT_REGISTERED
            if not _ATEXIT_REGISTERED:
                atexit.register(_close_open_renderers)
                _ATEXIT_REGISTERED = True
        self._renderer.update_scene(self.data, camera="top")
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
            _OPEN_ENVS.discard(self)
        super().close()


class ObstacleReachExpert:
    """Scripted expert: goes around the obstacle on a side drawn at random per episode.

    At the first ``act`` after ``reset(seed)`` it reads the observation and lays out waypoints:
    two beside the obstacle (before and after its line, at a lateral offset of obstacle +
    puck radius + a random clearance, each jittered) then the goal. A proportional controller
    follows them: full (per-episode random) speed toward the intermediate waypoints, speed
    ``gain * distance`` capped likewise toward the goal, plus small Gaussian action noise.
    All randomness comes from ``reset(seed)``, so an episode is deterministic given the env
    seed and the expert seed. ``side`` (``"left"``/``"right"``) is the side chosen.
    """

    def __init__(
        self,
        env: gymnasium.Env | None = None,
        *,
        left_prob: float = 0.5,
        clearance: tuple[float, float] = (0.03, 0.06),
        waypoint_jitter: float = 0.015,
        speed_scale: tuple[float, float] = (0.75, 1.0),
        action_noise: float = 0.05,
        gain: float = 5.0,
        switch_radius: float = 0.04,
        seed: int | None = None,
    ) -> None:
        base = env.unwrapped if env is not None else None
        self.max_speed = float(getattr(base, "max_speed", 0.2))
        self.agent_radius = float(getattr(base, "agent_radius", AGENT_RADIUS))
        self.obstacle_radius = float(getattr(base, "obstacle_radius", OBSTACLE_RADIUS))
        self.action_space = (
            env.action_space
            if env is not None
            else spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        )
        self.left_prob = float(left_prob)
        self.clearance = clearance
        self.waypoint_jitter = float(waypoint_jitter)
        self.speed_scale = speed_scale
        self.action_noise = float(action_noise)
        self.gain = float(gain)
        self.switch_radius = float(switch_radius)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self.side = "left" if self._rng.random() < self.left_prob else "right"
        self._clear = self._rng.uniform(*self.clearance)
        self._jitter = self._rng.uniform(-1.0, 1.0, (2, 2)) * self.waypoint_jitter
        self._speed = self._rng.uniform(*self.speed_scale) * self.max_speed
        self._waypoints: list[np.ndarray] | None = None
        self._index = 0

    def _plan(self, obs: np.ndarray) -> None:
        goal, obstacle = obs[4:6].astype(np.float64), obs[6:8].astype(np.float64)
        sign = -1.0 if self.side == "left" else 1.0
        lateral = self.obstacle_radius + self.agent_radius + self._clear
        ahead = self.obstacle_radius * 0.85
        w1 = obstacle + np.array([sign * lateral, -ahead]) + self._jitter[0]
        w2 = obstacle + np.array([sign * lateral, +ahead]) + self._jitter[1]
        self._waypoints = [w1, w2, goal]
        self._index = 0

    def act(self, observation: np.ndarray) -> np.ndarray:
        obs = np.asarray(observation, dtype=np.float64)
        if self._waypoints is None:
            self._plan(obs)
        pos = obs[0:2]
        last = len(self._waypoints) - 1
        # advance past intermediate waypoints that are reached (or already passed in y)
        while self._index < last:
            wp = self._waypoints[self._index]
            if np.linalg.norm(wp - pos) < self.switch_radius or pos[1] > wp[1]:
                self._index += 1
            else:
                break
        target = self._waypoints[self._index]
        delta = target - pos
        dist = float(np.linalg.norm(delta))
        speed = self._speed if self._index < last else min(self._speed, self.gain * dist)
        velocity = delta / dist * speed if dist > 1e-9 else np.zeros(2)
        action = velocity / self.max_speed + self._rng.normal(0.0, self.action_noise, 2)
        low, high = self.action_space.low, self.action_space.high
        return np.clip(action, low, high).astype(self.action_space.dtype)


_SIDES = {"left": -1.0, "right": 1.0}


class ObstacleReachDescription(TaskDescription):
    """ObstacleReach's features, chunk preview and safe action (positions in metres, the default
    ``max_speed`` and ``frame_skip``).

    Features: ``path_length`` (sum of |step| of the puck), ``jerk`` (sum of squared third differences
    of its position), ``min_clearance`` (smallest gap between the puck's rim and the obstacle's;
    negative when touching), ``side`` (-1 passed left of the obstacle, +1 right, 0 never passed; from
    ``info["side"]``, else from where the path first crosses the obstacle's line going up),
    ``final_distance`` (puck to goal at the end), ``time`` (steps), ``effort`` (sum of |a|^2).

    The preview integrates the velocity commands: position += clip(a) * max_speed * dt. Where the
    partial path has not passed the obstacle yet, :meth:`chunk_features` sets ``side`` to the side the
    preview heads to: where its straight-line extension (its mean velocity, from its end point)
    crosses the obstacle's line, so early chunks already carry a side preference. The safe action is
    zero velocity (the puck stops).
    """

    task_id = "PolicySampler/ObstacleReach-v0"
    feature_names = ("path_length", "jerk", "min_clearance", "side", "final_distance", "time", "effort")
    dt = TIMESTEP * FRAME_SKIP
    action_low, action_high = (-1.0, -1.0), (1.0, 1.0)
    obs_dim, action_dim = 8, 2
    max_speed = MAX_SPEED

    def features(self, observations: np.ndarray, actions: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        self.check(observations, actions)
        pos, goal, obstacle = observations[:, 0:2], observations[:, 4:6], observations[:, 6:8]
        clearance = np.linalg.norm(pos - obstacle, axis=1).min() - OBSTACLE_RADIUS - AGENT_RADIUS
        return np.array([
            path_length(pos), squared_jerk(pos), float(clearance), self._side(pos, obstacle, info),
            float(np.linalg.norm(pos[-1] - goal[-1])), float(actions.shape[0]), float((actions**2).sum()),
        ])

    @staticmethod
    def _side(pos: np.ndarray, obstacle: np.ndarray, info: Mapping[str, Any]) -> float:
        side = info.get("side") if isinstance(info, Mapping) else None
        if side in _SIDES:
            return _SIDES[side]
        oy = obstacle[:, 1]
        crossing = np.flatnonzero((pos[:-1, 1] < oy[:-1]) & (pos[1:, 1] >= oy[:-1]))
        if crossing.size == 0:
            return 0.0
        t = crossing[0]
        frac = (oy[t] - pos[t, 1]) / (pos[t + 1, 1] - pos[t, 1])
        x = pos[t, 0] + frac * (pos[t + 1, 0] - pos[t, 0])
        return -1.0 if x < obstacle[t, 0] else 1.0

    def preview(self, last_observation: np.ndarray, actions: np.ndarray) -> np.ndarray:
        vel = np.clip(actions, -1.0, 1.0) * self.max_speed
        pos = last_observation[:2] + np.cumsum(vel * self.dt, axis=0)
        rest = np.broadcast_to(last_observation[4:], (len(actions), last_observation.size - 4))
        return np.concatenate([pos, vel, rest], axis=1)

    def chunk_features(self, past_observations: np.ndarray, past_actions: np.ndarray, chunk: np.ndarray) -> np.ndarray:
        observations, actions, path = self.chunk_trajectory(past_observations, past_actions, chunk)
        raw = self.features(observations, actions, {})
        side = self.feature_names.index("side")
        if raw[side] == 0.0:  # not past the obstacle yet: the side the preview heads to
            raw[side] = self._heading_side(past_observations[-1], path)
        return raw

    @staticmethod
    def _heading_side(now: np.ndarray, path: np.ndarray) -> float:
        """-1 / +1: the side of the obstacle where the preview's straight-line extension (its mean
        velocity from its end) crosses the obstacle's line; the end point's side if it does not rise."""
        obstacle = now[6:8]
        end, velocity = path[-1, :2], (path[-1, :2] - now[:2]) / len(path)
        x = end[0]
        if velocity[1] > 1e-9 and end[1] < obstacle[1]:
            x = end[0] + velocity[0] / velocity[1] * (obstacle[1] - end[1])
        return float(np.sign(x - obstacle[0]))
