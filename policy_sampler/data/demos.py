"""Scripted-expert demonstrations in robomimic's HDF5 layout, and the loader that reads them back.

Collect::

    episodes = collect("PolicySampler/ObstacleReach-v0", n_demos=100, seed=0)
    print(f"expert success: {episodes.successes}/{episodes.attempts}")
    write_robomimic_hdf5("demos.hdf5", episodes, env_args=make_env_args(task_id))

Episode ``i`` of a collection (counting attempts, kept or not) resets the env with seed
``seed + i`` and the expert with :func:`expert_seed` of it: a seed derived from, but not equal
to, the env seed. (With equal integer seeds, the env's and the expert's generators would draw
the same stream: ObstacleReach's first start jitter would then decide the expert's side.)

File layout (what :func:`write_robomimic_hdf5` writes; robomimic's ``SequenceDataset`` reads it)::

    data                        attrs: total (int64, sum of num_samples),
                                       env_args (JSON: {"env_name", "type": "gymnasium", "env_kwargs"}),
                                       collection (JSON: how the demos were collected; not robomimic's)
    data/demo_<i>               i = 0..N-1, contiguous; attrs: num_samples (int64), seed (env seed, int64),
                                       expert_seed (int64), success (bool), side (str, when the task
                                       reports one), final_info (JSON of the last step's scalar info)
    data/demo_<i>/obs/state       (T, obs_dim) float32: observation before each action
    data/demo_<i>/next_obs/state  (T, obs_dim) float32: observation after each action
    data/demo_<i>/actions         (T, act_dim) float32
    data/demo_<i>/rewards         (T,) float32
    data/demo_<i>/dones           (T,) int64, 1 at the last step only
    mask/train, mask/valid      1-d arrays of bytes demo names (b"demo_3", ...), sorted by index,
                                a seeded random split (valid may be empty for tiny collections)

The file is written to ``<path>.tmp-<pid>`` in the destination directory, then renamed onto
``path`` with :func:`os.replace`: an interrupted or failed write leaves neither a partial file
under ``path`` (a file already there is untouched) nor the temporary file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import h5py
import numpy as np

from policy_sampler.data.observations import flat_observation
from policy_sampler.serialization import atomic_path, scalar_info
from policy_sampler.validation import check_int

__all__ = [
    "OBS_KEY",
    "Episode",
    "EpisodeList",
    "NotEnoughDemosError",
    "check_output_path",
    "collect",
    "collect_episode",
    "dataset_statistics",
    "diffusion_policy_window",
    "expert_seed",
    "demo_names",
    "load_sequence_dataset",
    "make_env_args",
    "split_train_valid",
    "write_robomimic_hdf5",
]

OBS_KEY = "state"  # the single low-dim observation key: the task's flat observation vector
_ENV_PREFIX = "policy_sampler_envs:"
_EXPERT_SEED_SALT = 0x5EED_E4BE  # mixes the env seed into the expert seed


# ----------------------------------------------------------------------------- episodes
@dataclass
class Episode:
    """One expert rollout. Arrays are aligned: step ``t`` saw ``observations[t]``, took
    ``actions[t]``, got ``rewards[t]`` and ``next_observations[t]``; ``dones[-1] == 1``."""

    observations: np.ndarray  # (T, obs_dim) float32
    next_observations: np.ndarray  # (T, obs_dim) float32
    actions: np.ndarray  # (T, act_dim) float32
    rewards: np.ndarray  # (T,) float32
    dones: np.ndarray  # (T,) int64
    success: bool  # info["is_success"] was True at some step (the last one when stop_on_success)
    seed: int  # env reset seed
    expert_seed: int
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # last step's info, JSON-able scalars only

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def side(self) -> str | None:
        side = self.info.get("side")
        return side if isinstance(side, str) else None


class EpisodeList(list):
    """A ``list[Episode]`` that also counts the attempts behind it (kept or not)."""

    def __init__(self, episodes: Iterable[Episode] = (), attempts: int = 0, successes: int = 0):
        super().__init__(episodes)
        self.attempts = int(attempts)
        self.successes = int(successes)

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else float("nan")

    def summary(self) -> str:
        """``"expert success: 48/50 = 96.0%"``."""
        return f"expert success: {self.successes}/{self.attempts} = {100.0 * self.success_rate:.1f}%"


class NotEnoughDemosError(RuntimeError):
    """The expert did not succeed often enough within ``max_attempts``; ``.episodes`` holds
    the successful ones, with the attempt counts."""

    def __init__(self, message: str, episodes: EpisodeList):
        super().__init__(message)
        self.episodes = episodes


def expert_seed(seed: int) -> int:
    """The expert's seed for the episode whose env seed is ``seed`` (deterministic, distinct)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, _EXPERT_SEED_SALT])
    return int(state.generate_state(1, dtype=np.uint32)[0])


def collect_episode(
    env: Any,
    expert: Any,
    seed: int,
    *,
    expert_seed_value: int | None = None,
    stop_on_success: bool = True,
    max_steps: int | None = None,
) -> Episode:
    """Roll ``expert`` in ``env`` for one episode: ``env.reset(seed=seed)``, then
    ``expert.reset(expert_seed(seed))`` (or ``expert_seed_value``), then steps until
    ``terminated`` or ``truncated`` (the registration's time limit), the first success when
    ``stop_on_success`` (tasks such as Meta-World's never terminate on success), or
    ``max_steps`` steps (counted as truncation)."""
    seed = int(seed)
    e_seed = expert_seed(seed) if expert_seed_value is None else int(expert_seed_value)
    obs, info = env.reset(seed=seed)
    expert.reset(e_seed)
    obs = flat_observation(obs)
    observations, next_observations, actions, rewards = [], [], [], []
    success = bool(info.get("is_success", False))
    terminated = truncated = False
    while True:
        action = np.asarray(expert.act(obs), dtype=np.float32).reshape(-1)
        next_obs, reward, terminated, truncated, info = env.step(action)
        next_obs = flat_observation(next_obs)
        observations.append(obs)
        next_observations.append(next_obs)
        actions.append(action)
        rewards.append(float(reward))
        success = success or bool(info.get("is_success", False))
        obs = next_obs
        if max_steps is not None and len(actions) >= max_steps and not terminated:
            truncated = True
        if terminated or truncated or (stop_on_success and success):
            break
    T = len(actions)
    dones = np.zeros(T, dtype=np.int64)
    dones[-1] = 1
    return Episode(
        observations=np.stack(observations).astype(np.float32),
        next_observations=np.stack(next_observations).astype(np.float32),
        actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        dones=dones,
        success=success,
        seed=seed,
        expert_seed=e_seed,
        terminated=bool(terminated),
        truncated=bool(truncated),
        info=scalar_info(info),
    )


# ----------------------------------------------------------------------------- tasks
def make_env_args(task_id: str, env: Any = None, env_kwargs: dict[str, Any] | None = None) -> dict:
    """robomimic's ``env_args``: ``{"env_name", "type": "gymnasium", "env_kwargs"}``.

    ``env_kwargs`` are the registration's kwargs (``env.spec.kwargs``) updated with the ones
    given, so ``gymnasium.make(env_name, **env_kwargs)`` rebuilds the env; also
    ``max_episode_steps`` from the spec when there is one.
    """
    kwargs: dict[str, Any] = {}
    spec = getattr(env, "spec", None)
    if spec is not None:
        kwargs.update(spec.kwargs or {})
    kwargs.update(env_kwargs or {})
    from policy_sampler_envs import canonical_task_id

    args = {"env_name": canonical_task_id(task_id), "type": "gymnasium", "env_kwargs": kwargs}
    if spec is not None and spec.max_episode_steps is not None:
        args["max_episode_steps"] = int(spec.max_episode_steps)
    json.dumps(args)  # fail here, not mid-write, on anything JSON cannot hold
    return args


def collect(
    task_id: str,
    n_demos: int,
    seed: int = 0,
    keep_only_successful: bool = True,
    max_attempts: int | None = None,
    *,
    env_kwargs: dict[str, Any] | None = None,
    stop_on_success: bool = True,
    max_steps: int | None = None,
    progress: bool = True,
    env: Any = None,
) -> EpisodeList:
    """Roll the task's scripted expert for seeded episodes (seeds ``seed, seed + 1, ...``).

    With ``keep_only_successful`` it rolls until ``n_demos`` episodes succeeded, at most
    ``max_attempts`` episodes (default ``3 * n_demos``), and raises
    :class:`NotEnoughDemosError` if it falls short; otherwise it rolls exactly ``n_demos``
    episodes and keeps them all. The result counts ``attempts`` and ``successes``.
    ``env`` reuses an env already made for ``task_id`` (it is then not closed).
    """
    from tqdm import tqdm

    import policy_sampler_envs

    n_demos = check_int("n_demos", n_demos, minimum=1)
    if max_attempts is None:
        max_attempts = 3 * n_demos if keep_only_successful else n_demos
    if not keep_only_successful:
        max_attempts = n_demos
    if max_attempts < n_demos:
        raise ValueError(f"max_attempts ({max_attempts}) must be >= n_demos ({n_demos})")

    task = policy_sampler_envs.canonical_task_id(task_id)
    own_env = env is None
    if own_env:
        env = policy_sampler_envs.make_env(task, **dict(env_kwargs or {}))
    expert = policy_sampler_envs.make_expert(task, env)
    kept = EpisodeList()
    bar = tqdm(total=n_demos, desc=f"collect {task}", unit="demo", disable=not progress, leave=True)
    try:
        for attempt in range(max_attempts):
            if len(kept) >= n_demos:
                break
            episode = collect_episode(
                env, expert, seed + attempt, stop_on_success=stop_on_success, max_steps=max_steps
            )
            kept.attempts += 1
            kept.successes += int(episode.success)
            if episode.success or not keep_only_successful:
                kept.append(episode)
                bar.update(1)
            bar.set_postfix(success=f"{kept.successes}/{kept.attempts}", refresh=False)
    finally:
        bar.close()
        if own_env:
            env.close()
    if len(kept) < n_demos:
        raise NotEnoughDemosError(
            f"the expert of {task} succeeded in {kept.successes} of {kept.attempts} attempts, "
            f"fewer than the {n_demos} demos asked for (raise max_attempts)",
            kept,
        )
    return kept


# ----------------------------------------------------------------------------- writing
def check_output_path(path: str | os.PathLike) -> Path:
    """Absolute ``path`` if a file can be written there, else a ``ValueError`` that says why.

    The parent directory must exist and be writable (checked by creating and removing a
    temporary file there, which also catches read-only file systems and root); ``path``
    must not be a directory. Nothing is left behind.
    """
    if path is None or str(path).strip() == "":
        raise ValueError("output path is empty")
    out = Path(os.path.abspath(os.path.expanduser(str(path))))
    parent = out.parent
    if out.is_dir():
        raise ValueError(f"output path {out} is a directory; give a file name such as {out}/demos.hdf5")
    if not parent.exists():
        raise ValueError(f"cannot write {out}: directory {parent} does not exist (create it first)")
    if not parent.is_dir():
        raise ValueError(f"cannot write {out}: {parent} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write {out}: directory {parent} is not writable ({exc.strerror or exc})") from None
    return out


def split_train_valid(names: Sequence[str], valid_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """A seeded random split of demo names: ``round(valid_fraction * n)`` validation demos,
    at least one when ``valid_fraction > 0`` and ``n >= 2``, and always at least one training
    demo. Both lists are sorted by demo index."""
    if not 0.0 <= float(valid_fraction) < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
    n = len(names)
    n_valid = int(round(valid_fraction * n))
    if valid_fraction > 0 and n >= 2:
        n_valid = max(n_valid, 1)
    n_valid = min(n_valid, max(n - 1, 0))
    order = np.random.default_rng(seed).permutation(n)
    valid_idx = set(order[:n_valid].tolist())

    def key(name: str) -> int:
        return int(name.rsplit("_", 1)[1])

    train = sorted((names[i] for i in range(n) if i not in valid_idx), key=key)
    valid = sorted((names[i] for i in valid_idx), key=key)
    return train, valid


def _write_demo(group: h5py.Group, episode: Episode) -> None:
    T = len(episode)
    if T < 1:
        raise ValueError(f"episode with seed {episode.seed} is empty")
    for name, array in (("observations", episode.observations), ("next_observations", episode.next_observations)):
        if array.ndim != 2 or array.shape[0] != T:
            raise ValueError(f"episode {episode.seed}: {name} has shape {array.shape}, expected ({T}, obs_dim)")
    if episode.actions.ndim != 2:
        raise ValueError(f"episode {episode.seed}: actions must be (T, act_dim), got {episode.actions.shape}")
    if episode.rewards.shape != (T,) or episode.dones.shape != (T,):
        raise ValueError(f"episode {episode.seed}: rewards and dones must be ({T},)")
    group.attrs["num_samples"] = np.int64(T)
    group.attrs["seed"] = np.int64(episode.seed)
    group.attrs["expert_seed"] = np.int64(episode.expert_seed)
    group.attrs["success"] = bool(episode.success)
    if episode.side is not None:
        group.attrs["side"] = episode.side
    group.attrs["final_info"] = json.dumps(episode.info, sort_keys=True)
    group.create_dataset(f"obs/{OBS_KEY}", data=np.asarray(episode.observations, dtype=np.float32))
    group.create_dataset(f"next_obs/{OBS_KEY}", data=np.asarray(episode.next_observations, dtype=np.float32))
    group.create_dataset("actions", data=np.asarray(episode.actions, dtype=np.float32))
    group.create_dataset("rewards", data=np.asarray(episode.rewards, dtype=np.float32))
    group.create_dataset("dones", data=np.asarray(episode.dones, dtype=np.int64))


def write_robomimic_hdf5(
    path: str | os.PathLike,
    episodes: Sequence[Episode],
    env_args: dict,
    valid_fraction: float = 0.1,
    seed: int = 0,
    *,
    collection: dict | None = None,
) -> Path:
    """Write ``episodes`` as ``data/demo_0..N-1`` in robomimic's layout (see the module
    docstring), atomically: a temporary file in the same directory, renamed onto ``path``
    once complete and closed. On any error (or interrupt) the temporary file is removed and
    ``path`` is left as it was. ``seed`` seeds the train/valid split. Returns the path."""
    episodes = list(episodes)
    if not episodes:
        raise ValueError("no episodes to write")
    env_args_json = json.dumps(env_args, sort_keys=True)
    collection_json = json.dumps(collection or {}, sort_keys=True)
    names = [f"demo_{i}" for i in range(len(episodes))]
    train, valid = split_train_valid(names, valid_fraction, seed)
    out = check_output_path(path)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            total = 0
            for name, episode in zip(names, episodes):
                _write_demo(data.create_group(name), episode)
                total += len(episode)
            data.attrs["total"] = np.int64(total)
            data.attrs["env_args"] = env_args_json
            data.attrs["collection"] = collection_json
            mask = f.create_group("mask")
            mask.create_dataset("train", data=np.array([n.encode() for n in train], dtype="S"))
            mask.create_dataset("valid", data=np.array([n.encode() for n in valid], dtype="S"))
            f.flush()
    return out


# ----------------------------------------------------------------------------- reading
def _init_obs_utils(obs_keys: Sequence[str]) -> None:
    """Give robomimic's obs utils a modality for every key: keys already registered (by the
    caller, e.g. an rgb key) keep theirs, the others are registered as ``low_dim``."""
    import robomimic.utils.obs_utils as ObsUtils

    known = dict(ObsUtils.OBS_KEYS_TO_MODALITIES or {})
    missing = [k for k in obs_keys if k not in known]
    if not missing:
        return
    specs: dict[str, list[str]] = {}
    for key, modality in known.items():
        specs.setdefault(modality, []).append(key)
    specs.setdefault("low_dim", []).extend(missing)
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": specs})


def load_sequence_dataset(
    path: str | os.PathLike,
    n_obs_steps: int = 2,
    horizon: int = 16,
    split: str | None = "train",
    **kwargs: Any,
):
    """robomimic's ``SequenceDataset`` over ``path`` as DiffusionPolicy samples it.

    ``frame_stack = n_obs_steps`` and ``seq_length = horizon``, padded at both ends, with pad
    masks, cached in memory, no ``next_obs``; ``split`` names a ``mask/`` filter (``None``:
    every demo). ``kwargs`` override any SequenceDataset argument. robomimic's obs utils are
    initialized first (obs keys without a modality yet become ``low_dim``).

    Item ``i`` (one per demo step ``t``, ``len(ds) == sum(num_samples)`` of the split) holds
    ``n_obs_steps - 1 + horizon`` frames, steps ``t - n_obs_steps + 1 .. t + horizon - 1``
    (with n_obs_steps=2, horizon=16: 17 frames, ``t-1 .. t+15``)::

        item["obs"]["state"]  (17, obs_dim) float32
        item["actions"]       (17, act_dim) float32
        item["pad_mask"]      (17, 1) bool, False on frames padded by repetition (either end)
        item["obs"]["pad_mask"]  the same mask

    DiffusionPolicy's window for step ``t`` is the first ``horizon`` frames (``t-1 .. t+14``):
    ``obs = item["obs"]["state"][:n_obs_steps]`` (steps t-1, t), ``actions =
    item["actions"][:horizon]``; the executed actions are ``actions[n_obs_steps - 1:
    n_obs_steps - 1 + n_action_steps]``. See :func:`diffusion_policy_window`.
    """
    from robomimic.utils.dataset import SequenceDataset

    options = dict(
        hdf5_path=str(path),
        obs_keys=(OBS_KEY,),
        dataset_keys=("actions",),
        frame_stack=int(n_obs_steps),
        seq_length=int(horizon),
        pad_frame_stack=True,
        pad_seq_length=True,
        get_pad_mask=True,
        goal_mode=None,
        hdf5_cache_mode="all",
        hdf5_use_swmr=True,
        hdf5_normalize_obs=False,
        filter_by_attribute=split,
        load_next_obs=False,
    )
    options.update(kwargs)
    _init_obs_utils(options["obs_keys"])
    return SequenceDataset(**options)


def diffusion_policy_window(item: dict, n_obs_steps: int = 2, horizon: int = 16) -> dict[str, np.ndarray]:
    """DiffusionPolicy's ``obs`` (n_obs_steps frames), ``action`` (horizon frames) and
    ``pad_mask`` (horizon,) from one :func:`load_sequence_dataset` item."""
    return {
        "obs": np.asarray(item["obs"][OBS_KEY][:n_obs_steps]),
        "action": np.asarray(item["actions"][:horizon]),
        "pad_mask": np.asarray(item["pad_mask"][:horizon, 0]),
    }


def demo_names(source: str | os.PathLike | h5py.File, split: str | None = None) -> list[str]:
    """The demos of ``split`` (a ``mask/`` filter) in a file (a path or an open ``h5py.File``), sorted
    by index: ``None`` is every demo, and so is ``"train"`` in a file without masks; any other split
    the file lacks has no demos."""
    if not isinstance(source, h5py.File):
        with h5py.File(source, "r") as f:
            return demo_names(f, split)
    f = source
    if split is not None and "mask" in f and split in f["mask"]:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][split][()]]
    elif split is None or split == "train":
        names = list(f["data"].keys()) if "data" in f else []
    else:
        names = []
    return sorted(names, key=lambda n: int(n.rsplit("_", 1)[1]))


def dataset_statistics(path: str | os.PathLike, split: str | None = "train") -> dict:
    """Per-dimension min/max of the observations and actions over ``split`` (every demo when
    the file has no mask), for the policy's normalizer::

        {"obs": {"state": {"min": (obs_dim,), "max": (obs_dim,)}},
         "actions": {"min": (act_dim,), "max": (act_dim,)},
         "n_demos": int, "n_samples": int}
    """
    with h5py.File(path, "r") as f:
        names = demo_names(f, split)
        if not names:
            raise ValueError(f"{path}: split {split!r} has no demos")
        obs = np.concatenate([f[f"data/{n}/obs/{OBS_KEY}"][()] for n in names]).astype(np.float32)
        act = np.concatenate([f[f"data/{n}/actions"][()] for n in names]).astype(np.float32)
    return {
        "obs": {OBS_KEY: {"min": obs.min(axis=0), "max": obs.max(axis=0)}},
        "actions": {"min": act.min(axis=0), "max": act.max(axis=0)},
        "n_demos": len(names),
        "n_samples": int(act.shape[0]),
    }
