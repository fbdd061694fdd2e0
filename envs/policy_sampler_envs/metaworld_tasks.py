"""Meta-World v3 tasks as ``PolicySampler/MetaWorld-<env_name>`` tasks, each with its expert.

Every one of Meta-World's 50 v3 tasks (``push-v3``, ``drawer-open-v3``, ...) is registered as
``PolicySampler/MetaWorld-<env_name>`` (e.g. ``PolicySampler/MetaWorld-push-v3``), with
:class:`MetaWorldTaskEnv` as its environment and :class:`MetaWorldExpert` (Meta-World's own
scripted policy plus seeded, bounded variation) as its expert. Registration is lazy: importing
this module imports neither ``metaworld`` nor ``mujoco``; the first ``gymnasium.make`` does.
Where Meta-World is not installed, nothing is registered.

Conventions (Meta-World's, passed through; world frame in metres):

- **Observation** ``Box((39,), float32)``, MT1-style with the goal visible:
  ``[hand_xyz, gripper_opening, object blocks (14), the same 18 values one step earlier,
  goal_xyz]``; clipped to Meta-World's bounds (hand and gripper boxes, goal space) and to
  +-10 for the object blocks, which Meta-World leaves unbounded.
- **Action** ``Box(-1, 1, (4,), float32)``: hand displacement (x, y, z), one unit = 1 cm per
  step (Meta-World's mocap), and gripper effort (-1 open, +1 closed).
- **Reset**: Meta-World draws the object and goal positions (its ``_last_rand_vec``) from its
  ``_random_reset_space`` with the env's ``np_random``, which ``reset(seed=...)`` seeds, so a
  seed fixes the scene and different seeds differ. The draws cover the task's whole reset
  space (not MT1's 50 pre-sampled goals). ``options`` is ignored.
- **Reward**: Meta-World's (v2 reward function, 0 to 10 per step), passed through.
- **Termination**: the registered ``PolicySampler/MetaWorld-*`` tasks end at the first success
  (``terminate_on_success=True``, as our other tasks do, so an expert cannot push past the goal
  and a demonstration stops where the task is done); the class's default is Meta-World's
  convention of never terminating.
- **Truncation**: at Meta-World's ``max_path_length`` (500 steps, 80 steps a simulated second).
- **info**: Meta-World's (``success``, ``near_object``, ``grasp_success``, ...) plus
  ``is_success`` (bool, Meta-World's ``success`` at this step).
- **Rendering**: ``render_mode="rgb_array"`` renders headless (``MUJOCO_GL=egl``) from one of
  Meta-World's named cameras (``corner``, ``corner2``, ``corner3``, ``corner4``, ``topview``,
  ``behindGripper``, ``gripperPOV``); the default is :data:`DEFAULT_CAMERAS` for the task, or
  ``corner3`` (the whole table). Meta-World's corner cameras are mounted upside down; frames
  from a camera whose up axis points down are turned 180 degrees, so the table is at the
  bottom of the image (no mirroring).

Expert success and per-task variation (``scripts/expert_success.py``: env seeds 0..49, expert
seeds derived from them, episodes end at the first success; every registered task's expert must
succeed in at least 90% of them). With :class:`MetaWorldExpert`'s default variation (jitter
0.003 m, speed 0.75-1.0, noise 0.1) ten tasks fell short; :data:`EXPERT_VARIATION` narrows the
variation for seven of them, only in the component that hurt (measured one component at a time),
and keeps the rest, so demonstrations still differ between seeds. Success rates below are over
seeds 0..49 (and 0..99):

- ``basketball-v3`` (default 52%): the speed scaling breaks the grasp-and-lift (speed 0.75-1.0
  alone: 54%) and jitter costs a few (0.003 alone: 92%); noise is harmless. Override: no jitter,
  full speed, noise 0.05 -> 98% (98%).
- ``door-open-v3`` (88%): slower speeds lose the handle (speed 0.75-1.0 alone: 90%). Override:
  full speed -> 94% (95%). Variation off: 96%.
- ``peg-insert-side-v3`` (82%): jitter misaligns the peg with the hole (0.003 alone: 78%);
  the scripted policy itself is marginal (variation off: 92%, but 88% over seeds 0..99).
  Override: no jitter, speed 0.9-1.0, noise 0.03 -> 92% (88%); a borderline task.
- ``peg-unplug-side-v3`` (88%): the widest speed range costs most. Override: speed 0.9-1.0 ->
  98% (98%).
- ``pick-out-of-hole-v3`` (84%): the jitter misplaces the grasp in the hole (0.003 alone: 92%).
  Override: jitter 0.001 -> 100% (98%).
- ``shelf-place-v3`` (62%): speed (0.75-1.0 alone: 78%) and noise (0.1 alone: 92%). Override:
  full speed, noise 0.05 -> 94% (97%).
- ``sweep-into-v3`` (84%): speed (0.75-1.0 alone: 88%). Override: full speed, noise 0.05 ->
  94% (92%). Variation off: 92% (91%).

Three tasks are not registered (:data:`EXCLUDED_TASKS`): Meta-World's scripted policy itself,
with no variation at all, fails on part of their reset space (the same env seeds fail whatever
the variation), below 90% over seeds 0..49 with the variation off: ``box-close-v3`` 86% (92%
over seeds 0..99), ``soccer-v3`` 88%, ``stick-pull-v3`` 86%. They remain
constructible as ``MetaWorldTaskEnv(env_name=...)`` with ``MetaWorldExpert``; only the
``PolicySampler/`` registration leaves them out.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import warnings
import weakref
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from .description import TaskDescription, path_length, squared_jerk  # noqa: E402

__all__ = [
    "METAWORLD_ENV_NAMES",
    "BENCHMARK_ENV_NAMES",
    "DEFAULT_CAMERAS",
    "MetaWorldDescription",
    "MetaWorldTaskEnv",
    "MetaWorldExpert",
    "EXPERT_VARIATION",
    "EXCLUDED_TASKS",
    "EXCLUDED_ENV_NAMES",
    "REGISTERED_ENV_NAMES",
    "make_metaworld_expert",
    "metaworld_task_id",
    "register_metaworld_tasks",
]

# Meta-World 3.1.1's ``ALL_V3_ENVIRONMENTS``, in its order (a test checks the two agree), so that
# registering the tasks needs no import of metaworld.
METAWORLD_ENV_NAMES: tuple[str, ...] = (
    "assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3",
    "button-press-topdown-v3", "button-press-topdown-wall-v3", "button-press-v3",
    "button-press-wall-v3", "coffee-button-v3", "coffee-pull-v3", "coffee-push-v3",
    "dial-turn-v3", "disassemble-v3", "door-close-v3", "door-lock-v3", "door-open-v3",
    "door-unlock-v3", "hand-insert-v3", "drawer-close-v3", "drawer-open-v3", "faucet-open-v3",
    "faucet-close-v3", "hammer-v3", "handle-press-side-v3", "handle-press-v3",
    "handle-pull-side-v3", "handle-pull-v3", "lever-pull-v3", "pick-place-wall-v3",
    "pick-out-of-hole-v3", "pick-place-v3", "plate-slide-v3", "plate-slide-side-v3",
    "plate-slide-back-v3", "plate-slide-back-side-v3", "peg-insert-side-v3",
    "peg-unplug-side-v3", "soccer-v3", "stick-push-v3", "stick-pull-v3", "push-v3",
    "push-wall-v3", "push-back-v3", "reach-v3", "reach-wall-v3", "shelf-place-v3",
    "sweep-into-v3", "sweep-v3", "window-open-v3", "window-close-v3",
)  # fmt: skip

# The tasks benchmarked here: contact-rich non-prehensile pushing to a goal (push), an
# articulated object pulled along a rail (drawer-open) and a precise vertical press
# (button-press-topdown).
BENCHMARK_ENV_NAMES: tuple[str, ...] = ("push-v3", "drawer-open-v3", "button-press-topdown-v3")

# Per-task default camera, chosen by looking at the frames (docs/images/metaworld_*.png):
# corner4 is close to the workspace's front half, where these three tasks' objects lie.
DEFAULT_CAMERAS: dict[str, str] = {name: "corner4" for name in BENCHMARK_ENV_NAMES}
FALLBACK_CAMERA = "corner3"  # the whole table, for tasks not looked at one by one

# Per-task expert variation (MetaWorldExpert keyword arguments), for the tasks whose scripted
# policy is too sensitive to the default variation; see the module docstring for the numbers.
EXPERT_VARIATION: dict[str, dict[str, Any]] = {
    "basketball-v3": {"waypoint_jitter": 0.0, "speed_range": (1.0, 1.0), "action_noise": 0.05},
    "door-open-v3": {"speed_range": (1.0, 1.0)},
    "peg-insert-side-v3": {"waypoint_jitter": 0.0, "speed_range": (0.9, 1.0), "action_noise": 0.03},
    "peg-unplug-side-v3": {"speed_range": (0.9, 1.0)},
    "pick-out-of-hole-v3": {"waypoint_jitter": 0.001},
    "shelf-place-v3": {"speed_range": (1.0, 1.0), "action_noise": 0.05},
    "sweep-into-v3": {"speed_range": (1.0, 1.0), "action_noise": 0.05},
}

# Tasks not registered (see the module docstring): Meta-World's scripted policy itself fails on
# part of the reset space. (env name, its success rate with the variation off).
EXCLUDED_TASKS: tuple[tuple[str, float], ...] = (
    ("box-close-v3", 0.86),
    ("soccer-v3", 0.88),
    ("stick-pull-v3", 0.86),
)
EXCLUDED_ENV_NAMES: tuple[str, ...] = tuple(name for name, _ in EXCLUDED_TASKS)
# The registered tasks' names, in Meta-World's order.
REGISTERED_ENV_NAMES: tuple[str, ...] = tuple(
    name for name in METAWORLD_ENV_NAMES if name not in EXCLUDED_ENV_NAMES
)

MAX_PATH_LENGTH = 500  # every v3 task's ``max_path_length``
CONTROL_DT = 0.0125  # seconds per env step (Meta-World's frame_skip 5 x 2.5 ms)
HAND_STEP = 0.01  # metres of hand displacement per unit of action (Meta-World's action_scale)
OBJECT_BOUND = 10.0  # observation bound of the object blocks (the table is about 1 m wide)
TASK_PREFIX = "PolicySampler/MetaWorld-"

# Renderers still open at interpreter exit are closed by an atexit hook while the EGL display is
# alive: left to garbage collection at shutdown, they raise (harmless, noisy) EGL errors. mujoco's
# EGL backend registers eglTerminate with atexit when it creates its first context, and atexit
# runs hooks last-in first-out, so ours is registered after the first frame is rendered.
_OPEN_ENVS: weakref.WeakSet[MetaWorldTaskEnv] = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_open_envs() -> None:
    for env in list(_OPEN_ENVS):
        try:
            env.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def metaworld_task_id(env_name: str) -> str:
    """``"push-v3"`` -> ``"PolicySampler/MetaWorld-push-v3"``."""
    return TASK_PREFIX + env_name


class MetaWorldTaskEnv(gymnasium.Env):
    """One Meta-World v3 task (MT1-style, goal visible) as a plain Gymnasium env.

    See the module docstring for the spaces, seeding, reward, termination and rendering.
    ``width``/``height`` set the rendered frame's size; ``camera_name`` picks the camera.
    The wrapped Meta-World env is :attr:`metaworld_env`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        env_name: str = "push-v3",
        render_mode: str | None = None,
        camera_name: str | None = None,
        width: int = 256,
        height: int = 256,
        terminate_on_success: bool = False,
    ) -> None:
        if env_name not in METAWORLD_ENV_NAMES:
            raise ValueError(
                f"unknown Meta-World task {env_name!r}; valid: {', '.join(METAWORLD_ENV_NAMES)}"
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, "
                f"got {render_mode!r}"
            )
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self.env_name = env_name
        self.render_mode = render_mode
        self.camera_name = camera_name or DEFAULT_CAMERAS.get(env_name, FALLBACK_CAMERA)
        self.width = int(width)
        self.height = int(height)
        self.terminate_on_success = bool(terminate_on_success)

        env = ALL_V3_ENVIRONMENTS[env_name](
            render_mode=render_mode,
            camera_name=self.camera_name if render_mode is not None else None,
            width=self.width,
            height=self.height,
        )
        # What MT1 and Meta-World's goal-observable envs do, except that the object/goal vector
        # is drawn afresh at every reset from the env's np_random (seeded by our reset), rather
        # than taken from a list of pre-sampled tasks.
        env._partially_observable = False
        try:
            del env.sawyer_observation_space  # cached with the goal hidden; recompute
        except AttributeError:
            pass
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        self._env = env
        self.max_path_length = int(env.max_path_length)

        box = env.sawyer_observation_space
        # Meta-World leaves the object blocks unbounded; bound them by +-OBJECT_BOUND (metres
        # for positions, quaternion components lie in [-1, 1]) so every bound is finite.
        self._obs_low = np.maximum(np.asarray(box.low, dtype=np.float64), -OBJECT_BOUND)
        self._obs_high = np.minimum(np.asarray(box.high, dtype=np.float64), OBJECT_BOUND)
        self.observation_space = spaces.Box(
            self._obs_low.astype(np.float32), self._obs_high.astype(np.float32), dtype=np.float32
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self._flip: bool | None = None  # rotate frames by 180 degrees (decided at first render)
        self._needs_reset = True

    @property
    def metaworld_env(self) -> Any:
        """The wrapped Meta-World ``SawyerXYZEnv``."""
        return self._env

    @property
    def dt(self) -> float:
        """Seconds per env step (Meta-World's frame skip times the physics step)."""
        return float(self._env.dt)

    @property
    def task_vector(self) -> np.ndarray:
        """This episode's object/goal vector (Meta-World's ``_last_rand_vec``), a copy."""
        vec = self._env._last_rand_vec
        return np.array([] if vec is None else vec, dtype=np.float64)

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(obs, self._obs_low, self._obs_high).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        # Meta-World's reset ignores its seed argument and draws the scene from its own
        # np_random: share ours, so reset(seed=s) fixes the scene and later resets continue
        # the same stream.
        self._env.np_random = self.np_random
        obs, _ = self._env.reset()
        self._needs_reset = False
        return self._obs(obs), {"is_success": False}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (and after an episode ends)")
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != (4,):
            raise ValueError(f"action must have shape (4,), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        action = np.clip(action, -1.0, 1.0)
        obs, reward, _, truncated, mw_info = self._env.step(action)
        info = dict(mw_info)
        info["is_success"] = bool(mw_info.get("success", False))
        terminated = self.terminate_on_success and info["is_success"]
        truncated = bool(truncated) or self._env.curr_path_length >= self.max_path_length
        if terminated or truncated:
            self._needs_reset = True
        return self._obs(obs), float(reward), bool(terminated), truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gymnasium.logger.warn(
                "render() called without a render_mode; use render_mode='rgb_array'."
            )
            return None
        global _ATEXIT_REGISTERED
        frame = self._env.render()
        _OPEN_ENVS.add(self)  # closed at exit if still open (again, after a close())
        if not _ATEXIT_REGISTERED:
            atexit.register(_close_open_envs)
            _ATEXIT_REGISTERED = True
        if self._flip is None:
            cam = self._env.model.camera(self.camera_name).id
            up_z = float(self._env.data.cam_xmat[cam].reshape(3, 3)[2, 1])  # camera y axis, z
            self._flip = up_z < 0.0
        if self._flip:
            frame = frame[::-1, ::-1]
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def close(self) -> None:
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()  # closes Meta-World's MuJoCo renderer, if any
            renderer = getattr(env, "mujoco_renderer", None)
            if renderer is not None and hasattr(renderer, "_viewers"):
                # Gymnasium's MujocoRenderer keeps its closed viewers and would render black
                # frames from them after close(); forget them so a later render opens anew.
                renderer._viewers = {}
                renderer.viewer = None
        _OPEN_ENVS.discard(self)
        super().close()


class MetaWorldExpert:
    """Meta-World's scripted policy for the task, with seeded, bounded variation.

    Meta-World's policies (``metaworld.policies.ENV_POLICY_MAP``) are deterministic state
    machines that steer the hand to waypoints computed from the observation. Three kinds of
    variation, all drawn from ``reset(seed)`` and all bounded, make demonstrations vary as human
    ones do:

    - **waypoint jitter**: the hand position the policy sees is offset by a vector drawn per
      episode, uniform in ``[-waypoint_jitter, waypoint_jitter]`` per axis (metres), so every
      waypoint the policy aims at is shifted by the opposite offset for the whole episode;
    - **speed**: the hand displacement is scaled by a factor drawn per episode, uniform in
      ``speed_range`` (slower or faster approach, different episode lengths);
    - **action noise**: Gaussian noise of std ``action_noise`` on all four action components,
      clipped to ``+-noise_clip``, then the action is clipped to the action box.

    ``act`` is deterministic given the seed of the last ``reset`` and the observations seen.
    """

    def __init__(
        self,
        env: gymnasium.Env | None = None,
        *,
        env_name: str | None = None,
        waypoint_jitter: float = 0.003,
        speed_range: tuple[float, float] = (0.75, 1.0),
        action_noise: float = 0.1,
        noise_clip: float = 0.25,
        seed: int | None = None,
    ) -> None:
        if env_name is None:
            if env is None:
                raise ValueError("give the env or env_name")
            env_name = getattr(env.unwrapped, "env_name", None)
            if env_name is None:
                raise ValueError(f"{env!r} is not a MetaWorldTaskEnv; pass env_name")
        if env_name not in METAWORLD_ENV_NAMES:
            raise ValueError(f"unknown Meta-World task {env_name!r}")
        if waypoint_jitter < 0 or action_noise < 0 or noise_clip < 0:
            raise ValueError("waypoint_jitter, action_noise and noise_clip must be >= 0")
        if not 0 < speed_range[0] <= speed_range[1]:
            raise ValueError(f"speed_range must be 0 < low <= high, got {speed_range}")
        from metaworld.policies import ENV_POLICY_MAP

        self.env_name = env_name
        self.policy = ENV_POLICY_MAP[env_name]()
        self.waypoint_jitter = float(waypoint_jitter)
        self.speed_range = (float(speed_range[0]), float(speed_range[1]))
        self.action_noise = float(action_noise)
        self.noise_clip = float(noise_clip)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self.offset = self._rng.uniform(-self.waypoint_jitter, self.waypoint_jitter, size=3)
        self.speed = float(self._rng.uniform(*self.speed_range))

    def act(self, observation: np.ndarray) -> np.ndarray:
        obs = np.array(observation, dtype=np.float64).reshape(-1)
        obs[0:3] += self.offset  # current hand position
        obs[18:21] += self.offset  # the previous step's hand position
        with warnings.catch_warnings():
            # "Constant(s) may be too high": the policies' gains saturate; the env clips.
            warnings.simplefilter("ignore", UserWarning)
            action = np.asarray(self.policy.get_action(obs), dtype=np.float64)
        action[:3] = np.clip(action[:3], -1.0, 1.0) * self.speed
        noise = np.clip(
            self._rng.normal(0.0, self.action_noise, size=4), -self.noise_clip, self.noise_clip
        )
        return np.clip(action + noise, -1.0, 1.0).astype(np.float32)


def make_metaworld_expert(env: gymnasium.Env, **kwargs: Any) -> MetaWorldExpert:
    """The registered tasks' expert factory: a :class:`MetaWorldExpert` for ``env``'s task with
    the task's variation from :data:`EXPERT_VARIATION` (the class's defaults elsewhere);
    ``kwargs`` override both."""
    env_name = getattr(env.unwrapped, "env_name", None)
    settings = dict(EXPERT_VARIATION.get(env_name, {}))
    settings.update(kwargs)
    return MetaWorldExpert(env, **settings)


class MetaWorldDescription(TaskDescription):
    """A Meta-World task's features, chunk preview and safe action (hand xyz = obs[0:3], object =
    obs[4:7], goal = obs[-3:]).

    Features: ``path_length`` and ``jerk`` of the hand, ``final_distance`` (the hand's to the goal for
    reach tasks, the object's otherwise), ``time`` (steps), ``effort`` (sum of |a_xyz|^2),
    ``gripper_use`` (mean of the gripper command mapped to [0, 1]: 0 always open, 1 always closed).
    The preview moves the hand by ``clip(a_xyz) * 1 cm`` per step (Meta-World's mocap) and keeps the
    rest of the observation; the safe action holds the hand still and keeps the last gripper command
    (so a grasped object is not dropped).
    """

    feature_names = ("path_length", "jerk", "final_distance", "time", "effort", "gripper_use")
    dt = CONTROL_DT
    action_low, action_high = (-1.0,) * 4, (1.0,) * 4
    obs_dim, action_dim = 39, 4

    def features(self, observations: np.ndarray, actions: np.ndarray, info: Any) -> np.ndarray:
        self.check(observations, actions)
        hand, obj, goal = observations[:, 0:3], observations[:, 4:7], observations[:, -3:]
        moved = hand if self.task_id[len(TASK_PREFIX):].startswith("reach") else obj
        gripper = (np.clip(actions[:, 3], -1.0, 1.0) + 1.0) / 2.0
        return np.array([
            path_length(hand), squared_jerk(hand), float(np.linalg.norm(moved[-1] - goal[-1])),
            float(actions.shape[0]), float((actions[:, :3] ** 2).sum()), float(gripper.mean()),
        ])

    def preview(self, last_observation: np.ndarray, actions: np.ndarray) -> np.ndarray:
        hand = last_observation[:3] + np.cumsum(np.clip(actions[:, :3], -1.0, 1.0) * HAND_STEP, axis=0)
        rest = np.broadcast_to(last_observation[3:], (len(actions), last_observation.size - 3))
        return np.concatenate([hand, rest], axis=1)

    def safe_action(self, last_action: np.ndarray | None) -> np.ndarray:
        action = np.zeros(4, dtype=np.float32)
        if last_action is not None:
            action[3] = np.asarray(last_action, dtype=np.float32).reshape(-1)[3]
        return action


def register_metaworld_tasks() -> list[str]:
    """Register every Meta-World v3 task but :data:`EXCLUDED_ENV_NAMES` (nothing where
    Meta-World is not installed).

    Returns the registered task ids. Imports neither metaworld nor mujoco.
    """
    if importlib.util.find_spec("metaworld") is None:
        return []
    from .registry import register_task

    ids = []
    for name in REGISTERED_ENV_NAMES:
        task_id = metaworld_task_id(name)
        register_task(
            task_id=task_id,
            entry_point=f"{__name__}:MetaWorldTaskEnv",
            max_episode_steps=MAX_PATH_LENGTH,
            expert=f"{__name__}:make_metaworld_expert",
            description=f"{__name__}:MetaWorldDescription",
            kwargs={"env_name": name, "terminate_on_success": True},
        )
        ids.append(task_id)
    return ids


register_metaworld_tasks()
