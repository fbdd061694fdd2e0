"""Evaluate a trained DiffusionPolicy under several samplers on the same seeded episodes.

    python scripts/evaluate.py checkpoint=checkpoints/reach
    .venv-lerobot/bin/python scripts/evaluate.py checkpoint=<LeRobot policy folder or lerobot-train output>
    python scripts/evaluate.py checkpoint=<dir> samplers=[ddpm,paradigms] n_episodes=10 out_dir=eval/run
    python scripts/evaluate.py checkpoint=<dir> sampler_options.paradigms.tolerance=0.05 baselines=[]
    python scripts/evaluate.py checkpoint=<dir> n_episodes=200 seeds_per_unit=20 launcher=ray ray.num_cpus=8
    python scripts/evaluate.py checkpoint=<dir> out_dir=eval/run resume=true        # after an interruption
    python scripts/evaluate.py checkpoints=[<dir a>,<dir b>] tasks=[<task a>,<task b>] out_dir=eval/tasks

Every sampler configuration (the ``samplers`` asked for, with options from ``configs/sampler/<name>.yaml``
and ``sampler_options.<name>.<option>=...`` overrides, then the DDIM-16 and DDIM-10 ``baselines``)
runs ``n_episodes`` episodes with env seeds ``seed + i``, split into units of ``seeds_per_unit``
episodes (default: one unit per configuration), each unit's generator seeded with its first env seed.
Units run in this process (``launcher=local``) or as Ray tasks (``launcher=ray``, see docs/scaling.md);
each finished unit is stored in ``out_dir/units/`` and ``resume=true`` skips the stored ones. Writes
``results.json``, ``results.csv``, ``results.png`` and ``videos/`` into ``out_dir`` once all units are
done (see ``policy_sampler.rollout``; one subfolder per task when several are swept) and prints the
markdown table with the machine name. Bad arguments (missing checkpoint, unknown sampler, task or
launcher, n_episodes < 1, an unreachable Ray address, ...) exit with status 2 and write nothing.
``checkpoint`` is one of our checkpoints or a LeRobot DiffusionPolicy folder (what LeRobot's
``save_pretrained`` writes; see ``policy_sampler.policy.load_policy`` and docs/lerobot.md).
Options: configs/evaluate.yaml.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

SAMPLER_CONFIGS = REPO / "configs" / "sampler"


def _fail(message: str, status: int = 2) -> None:
    print(f"evaluate: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def _int(cfg: DictConfig, key: str, minimum: int, allow_none: bool = False) -> int | None:
    from policy_sampler.validation import check_int

    try:
        return check_int(key, cfg[key], minimum=minimum, allow_none=allow_none)
    except ValueError as exc:
        _fail(str(exc))


def _list(cfg: DictConfig, key: str) -> list | None:
    value = cfg.get(key)
    if value is None:
        return None
    value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    if isinstance(value, (str, int)):
        value = [value]
    if not isinstance(value, list) or not value:
        _fail(f"{key} must be a non-empty list, got {value!r}")
    return [str(v) for v in value]


def _launcher(cfg: DictConfig):
    """The launcher named by ``launcher`` with the ``ray.*`` options (exit 2 on a bad one)."""
    from policy_sampler.sweep import LAUNCHERS, make_launcher

    name = str(cfg.launcher)
    if name not in LAUNCHERS:
        _fail(f"unknown launcher {name!r}; valid: {', '.join(LAUNCHERS)}")
    if name == "local":
        return make_launcher("local")
    opts = OmegaConf.to_container(cfg.ray, resolve=True) if cfg.get("ray") else {}
    unknown = sorted(set(opts) - {"address", "num_cpus", "num_cpus_per_unit", "num_gpus_per_unit", "max_retries"})
    if unknown:
        _fail(f"unknown ray option(s) {unknown}; valid: address, num_cpus, num_cpus_per_unit, num_gpus_per_unit, max_retries")
    if opts.get("num_gpus_per_unit") and str(cfg.device) == "cpu":
        _fail("ray.num_gpus_per_unit > 0 runs units on the GPU: pass device=cuda")
    try:
        return make_launcher("ray", **opts)
    except (ValueError, RuntimeError) as exc:
        _fail(str(exc))


def run(cfg: DictConfig) -> int:
    checkpoints = _list(cfg, "checkpoints")
    has_single = not OmegaConf.is_missing(cfg, "checkpoint") and cfg.checkpoint not in (None, "")
    if checkpoints is None and not has_single:
        _fail("checkpoint is required: python scripts/evaluate.py checkpoint=<checkpoint dir>")
    if checkpoints is not None and has_single:
        _fail("give either checkpoint=<dir> or checkpoints=[<dir>, ...], not both")
    tasks_asked = _list(cfg, "tasks")
    if tasks_asked is not None and cfg.task is not None:
        _fail("give either task=<id> or tasks=[<id>, ...], not both")
    checkpoints = checkpoints or [str(cfg.checkpoint)]
    if tasks_asked is None:
        tasks_asked = [None if cfg.task is None else str(cfg.task)] * len(checkpoints)
    if len(tasks_asked) != len(checkpoints):
        _fail(f"tasks has {len(tasks_asked)} entries but checkpoints {len(checkpoints)}: one checkpoint per task")
    n_episodes = _int(cfg, "n_episodes", 1)
    seed = _int(cfg, "seed", 0)
    videos = _int(cfg, "videos", 0)
    video_samplers = _int(cfg, "video_samplers", 0)
    n_envs = _int(cfg, "n_envs", 1, allow_none=True)
    max_steps = _int(cfg, "max_steps", 1, allow_none=True)
    num_threads = _int(cfg, "num_threads", 1, allow_none=True)
    seeds_per_unit = _int(cfg, "seeds_per_unit", 1, allow_none=True)
    samplers = OmegaConf.to_container(cfg.samplers, resolve=True) if cfg.samplers is not None else []
    if isinstance(samplers, str):
        samplers = [samplers]
    if not isinstance(samplers, list):
        _fail(f"samplers must be a list of sampler config names, got {samplers!r}")
    baselines = OmegaConf.to_container(cfg.baselines, resolve=True) if cfg.baselines is not None else []
    if not isinstance(baselines, list) or not all(isinstance(b, dict) for b in baselines):
        _fail(f"baselines must be a list of {{label, sampler, num_inference_steps, options}} mappings, got {baselines!r}")
    env_kwargs = OmegaConf.to_container(cfg.env_kwargs, resolve=True) if cfg.env_kwargs else {}
    if not isinstance(env_kwargs, dict):
        _fail(f"env_kwargs must be a mapping, got {env_kwargs!r}")
    valid = sorted(p.stem for p in SAMPLER_CONFIGS.glob("*.yaml"))
    unknown = [s for s in samplers if str(s) not in valid]
    if unknown:
        _fail(f"unknown sampler(s) {unknown}; valid samplers (configs/sampler/): {', '.join(valid)}")
    all_options = OmegaConf.to_container(cfg.sampler_options, resolve=True) if cfg.get("sampler_options") else {}
    overrides = {}
    for name in samplers:
        opts = dict(all_options.get(str(name)) or {})
        if "name" in opts and str(opts.pop("name")) != _config_name(str(name)):
            _fail(f"sampler_options.{name}.name cannot be changed; pick another sampler config instead")
        overrides[str(name)] = opts

    import torch

    if num_threads is not None:
        torch.set_num_threads(num_threads)
    from policy_sampler_envs import available_tasks, canonical_task_id, describe_task

    from policy_sampler.policy import load_policy, resolve_policy_dir
    from policy_sampler.rollout import RolloutConfig, format_table, load_sampler_specs, with_control, write_results
    from policy_sampler.sweep import CheckpointBlob, evaluate_sweep

    try:
        specs = load_sampler_specs(samplers, SAMPLER_CONFIGS, overrides, baselines=baselines)
        delays = _control_list(cfg, "inference_delays")
        reward = cfg.reward.file
        if reward is not None:
            reward = to_absolute_path(str(reward))
        if delays or reward is not None:
            smoothing = _control_list(cfg, "smoothing") or ["none"]
            specs = with_control(specs, delays or [0], smoothing, warm_start=bool(cfg.control.warm_start),
                                 reward=reward, num_candidates=int(cfg.reward.num_candidates),
                                 rtc_jacobian=str(cfg.control.rtc_jacobian),
                                 runner=OmegaConf.to_container(cfg.control.runner, resolve=True) or {})
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    device = str(cfg.device)
    launcher = _launcher(cfg)
    check_device = device if launcher.name == "local" else "cpu"  # Ray's units may run on other machines
    try:
        torch.empty(0, device=check_device)
    except (RuntimeError, AssertionError) as exc:
        _fail(f"device {device!r} is not available: {exc}")
    jobs, ckpt_meta = [], []
    available = available_tasks()
    for path, task in zip(checkpoints, tasks_asked):
        try:
            _, ckpt = resolve_policy_dir(Path(to_absolute_path(path)))  # ours, or a LeRobot policy folder
        except FileNotFoundError as exc:
            _fail(str(exc))
        try:
            policy = load_policy(ckpt, device=check_device)
        except ImportError as exc:  # a LeRobot folder without LeRobot installed: says how to install it
            _fail(f"cannot load {ckpt}: {exc}")
        except (ValueError, OSError) as exc:
            _fail(f"cannot load checkpoint {ckpt}: {exc}")
        task = task if task is not None else policy.metadata.get("task")
        if not task:
            _fail(f"the checkpoint {ckpt} records no task; pass task=<task id> (tasks=[...] for several)")
        task = canonical_task_id(str(task))
        if task not in available:
            _fail(f"unknown task {task!r}; available tasks:\n  " + "\n  ".join(available))
        if reward is not None:
            from policy_sampler.preference.selection import RewardSelector

            try:
                RewardSelector.load(reward, describe_task(task))  # a bad file fails before any rollout
            except ValueError as exc:
                _fail(str(exc))
        for spec in specs:
            try:
                policy.schedule_for(spec.num_inference_steps)
            except ValueError as exc:
                _fail(f"{spec.label}: {exc}")
        jobs.append((task, CheckpointBlob.read(ckpt)))
        ckpt_meta.append({"checkpoint": str(ckpt), "checkpoint_metadata": policy.metadata})
    tasks = [t for t, _ in jobs]
    if len(set(tasks)) != len(tasks):
        _fail(f"a task appears twice: {tasks}; one checkpoint per task")
    out_dir = Path(to_absolute_path(str(cfg.out_dir)))
    if out_dir.exists() and not out_dir.is_dir():
        _fail(f"out_dir {out_dir} exists and is not a directory")
    if bool(cfg.resume) and not (out_dir / "units").is_dir():
        print(f"resume: no units/ in {out_dir} yet; running every unit", flush=True)

    meta = {
        "device": device, "num_threads": torch.get_num_threads(), "n_envs": n_envs, "max_steps": max_steps,
        "stop_on_success": bool(cfg.stop_on_success), "env_kwargs": env_kwargs,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv[1:],
    }
    start = time.perf_counter()
    try:
        reports = evaluate_sweep(
            jobs, specs, n_episodes, seed, launcher=launcher, out_dir=out_dir, seeds_per_unit=seeds_per_unit,
            resume=bool(cfg.resume), videos=videos, video_samplers=video_samplers, device=device,
            progress=bool(cfg.progress), meta=meta,
            rollout=RolloutConfig(n_envs=n_envs, env_kwargs=env_kwargs, max_steps=max_steps,
                                  stop_on_success=bool(cfg.stop_on_success)),
        )
    finally:
        launcher.close()
    wall = time.perf_counter() - start
    for report, extra in zip(reports, ckpt_meta):
        report.meta.update(extra, wall_s=wall)
        target = out_dir if len(reports) == 1 else out_dir / _slug(report.task)
        written = write_results(report, target)
        print()
        print(format_table(report))
        print()
        n_videos = sum(1 for k in written if k.startswith("video:"))
        extra_videos = f", {n_videos} video(s) in {target / 'videos'}" if n_videos else ""
        png = ", results.png" if "png" in written else " (no results.png: matplotlib is not installed)"
        print(f"wrote {target}/results.json, results.csv{png}{extra_videos}", flush=True)
    print(f"{len(reports)} task(s) in {wall:.1f} s ({launcher.name} launcher)", flush=True)
    return 0


def _slug(task: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in task)


def _control_list(cfg: DictConfig, key: str) -> list:
    """``control.<key>`` as a list, checked: delays are ints >= 0, smoothing is none, rtc or ensemble."""
    value = OmegaConf.to_container(cfg.control, resolve=True).get(key) or []
    value = [value] if not isinstance(value, list) else value
    if key == "inference_delays" and not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise ValueError(f"control.inference_delays must be a list of ints >= 0 (control ticks), got {value!r}")
    if key == "smoothing" and not all(s in ("none", "rtc", "ensemble") for s in value):
        raise ValueError(f"control.smoothing must list none, rtc or ensemble, got {value!r}")
    return value


def _config_name(name: str) -> str:
    data = OmegaConf.load(SAMPLER_CONFIGS / f"{name}.yaml")
    return str(data.get("name", name))


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
