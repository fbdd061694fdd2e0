"""Evaluate a trained DiffusionPolicy under several samplers on the same seeded episodes.

    python scripts/evaluate.py checkpoint=checkpoints/reach
    python scripts/evaluate.py checkpoint=<dir> samplers=[ddpm,paradigms] n_episodes=10 out_dir=eval/run
    python scripts/evaluate.py checkpoint=<dir> sampler_options.paradigms.tolerance=0.05 baselines=[]

Every sampler configuration (the ``samplers`` asked for, with options from ``configs/sampler/<name>.yaml``
and ``sampler_options.<name>.<option>=...`` overrides, then the DDIM-16 and DDIM-10 ``baselines``)
runs ``n_episodes`` episodes with env seeds ``seed + i`` and a generator seeded with ``seed``. Writes
``results.json``, ``results.csv``, ``results.png`` and ``videos/`` into ``out_dir`` (see
``policy_sampler.evaluation``) and prints the markdown table with the machine name. Bad arguments
(missing checkpoint, unknown sampler or task, n_episodes < 1, ...) exit with status 2 and write nothing.
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
    value = cfg[key]
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(f"{key} must be an integer >= {minimum}{' or null' if allow_none else ''}, got {value!r}")
    return value


def run(cfg: DictConfig) -> int:
    if OmegaConf.is_missing(cfg, "checkpoint") or cfg.checkpoint in (None, ""):
        _fail("checkpoint is required: python scripts/evaluate.py checkpoint=<checkpoint dir>")
    n_episodes = _int(cfg, "n_episodes", 1)
    seed = _int(cfg, "seed", 0)
    videos = _int(cfg, "videos", 0)
    video_samplers = _int(cfg, "video_samplers", 0)
    n_envs = _int(cfg, "n_envs", 1, allow_none=True)
    max_steps = _int(cfg, "max_steps", 1, allow_none=True)
    num_threads = _int(cfg, "num_threads", 1, allow_none=True)
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
    from policy_sampler import DiffusionPolicy
    from policy_sampler.data.demos import _available_tasks, canonical_task_id
    from policy_sampler.evaluation import evaluate, format_table, load_sampler_specs, write_results

    try:
        specs = load_sampler_specs(samplers, SAMPLER_CONFIGS, overrides, baselines=baselines)
    except ValueError as exc:
        _fail(str(exc))
    checkpoint = Path(to_absolute_path(str(cfg.checkpoint)))
    try:
        ckpt = DiffusionPolicy.resolve_checkpoint(checkpoint)
    except FileNotFoundError as exc:
        _fail(str(exc))
    device = str(cfg.device)
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:
        _fail(f"device {device!r} is not available: {exc}")
    try:
        policy = DiffusionPolicy.load(ckpt, device=device)
    except (ValueError, OSError) as exc:
        _fail(f"cannot load checkpoint {ckpt}: {exc}")
    task = cfg.task if cfg.task is not None else policy.metadata.get("task")
    if not task:
        _fail(f"the checkpoint {ckpt} records no task; pass task=<task id>")
    task = canonical_task_id(str(task))
    tasks = _available_tasks()
    if task not in tasks:
        _fail(f"unknown task {task!r}; available tasks:\n  " + "\n  ".join(tasks))
    for spec in specs:
        try:
            policy.schedule_for(spec.num_inference_steps)
        except ValueError as exc:
            _fail(f"{spec.label}: {exc}")
    out_dir = Path(to_absolute_path(str(cfg.out_dir)))
    if out_dir.exists() and not out_dir.is_dir():
        _fail(f"out_dir {out_dir} exists and is not a directory")

    meta = {
        "checkpoint": str(ckpt), "checkpoint_metadata": policy.metadata, "device": device,
        "num_threads": torch.get_num_threads(), "n_envs": n_envs, "max_steps": max_steps,
        "stop_on_success": bool(cfg.stop_on_success), "env_kwargs": env_kwargs,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv[1:],
    }
    start = time.perf_counter()
    report = evaluate(
        policy, task, specs, n_episodes, seed, videos=videos, video_samplers=video_samplers,
        progress=bool(cfg.progress), meta=meta, n_envs=n_envs, env_kwargs=env_kwargs, max_steps=max_steps,
        stop_on_success=bool(cfg.stop_on_success),
    )
    report.meta["wall_s"] = time.perf_counter() - start
    written = write_results(report, out_dir)
    print()
    print(format_table(report))
    print()
    n_videos = sum(1 for k in written if k.startswith("video:"))
    extra = f", {n_videos} video(s) in {out_dir / 'videos'}" if n_videos else ""
    png = ", results.png" if "png" in written else " (no results.png: matplotlib is not installed)"
    print(f"wrote {out_dir}/results.json, results.csv{png}{extra} in {report.meta['wall_s']:.1f} s", flush=True)
    return 0


def _config_name(name: str) -> str:
    data = OmegaConf.load(SAMPLER_CONFIGS / f"{name}.yaml")
    return str(data.get("name", name))


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
