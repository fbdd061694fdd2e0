"""The preference loop closed on a trained policy: the policy proposes, a person compares, the reward
learns, and the robot's choices change.

    python scripts/preference_loop.py checkpoint=<dir>              # the run in docs/preference.md
    python scripts/preference_loop.py checkpoint=<dir> quick=true   # a ~1 min smoke run

1. A pool of ``pool.size`` trajectories sampled by the policy (``pool.sampler``) and rolled out in the
   task (:func:`policy_sampler.sweep.generate_candidates`; cached in ``out_dir/pool``), featurized and
   normalized; the generation time is reported.
2. For each seed, a simulated person holding the hidden reward ``preference`` answers DPP-selected
   batches (:class:`PreferenceLoop`, state saved in ``out_dir/seed<k>/loop.json``, so a run resumes).
3. After each count in ``queries``, the policy runs ``evaluation.n_episodes`` held-out episodes with
   reward-chosen actions (best-of-``num_candidates`` under the posterior, :class:`RewardSelector`), next
   to the plain policy. Reports the share of episodes showing the preference (passing left), the true
   reward, the success rate (Wilson 95% intervals pooled over seeds) and the chunk latency of best-of-N;
   writes ``results.json`` and ``preference_loop.png`` in ``out_dir``. Options: configs/preference_loop.yaml.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hydra
import numpy as np
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def _fail(message: str) -> None:
    print(f"preference_loop: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def evaluate_policy(policy, task, label, control, n_episodes, seed, w_true, normalizer) -> dict[str, Any]:
    """Held-out episodes through ChunkRunner; the preference share, true reward and success."""
    from policy_sampler.preference import featurize
    from policy_sampler.rollout import RolloutConfig, SamplerSpec, evaluate_sampler, summarize, wilson_interval
    from policy_sampler_envs import describe_task

    spec = SamplerSpec(label, "ddpm", control={"inference_delay": 0, **control})
    report, _ = evaluate_sampler(policy, task, spec, n_episodes, seed, rollout=RolloutConfig(record_trajectories=True))
    trajs = [SimpleNamespace(**report.trajectories[i]) for i in sorted(report.trajectories)]
    true_reward = normalizer.transform(featurize(describe_task(task), trajs)) @ w_true
    left = sum(1 for e in report.episodes if e.get("side") == "left")
    success = sum(1 for e in report.episodes if e["success"])
    row = summarize(report)
    return {"label": label, "n": n_episodes, "left": left, "success": success,
            "left_ci": wilson_interval(left, n_episodes), "success_ci": wilson_interval(success, n_episodes),
            "true_reward": float(np.mean(true_reward)), "latency_p50_s": row["latency_p50_s"]}


def pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from policy_sampler.rollout import wilson_interval

    n = sum(r["n"] for r in rows)
    left, success = sum(r["left"] for r in rows), sum(r["success"] for r in rows)
    rewards = [r["true_reward"] for r in rows]
    return {"n": n, "left_share": left / n, "left_ci": wilson_interval(left, n), "success_rate": success / n,
            "success_ci": wilson_interval(success, n), "true_reward_mean": float(np.mean(rewards)),
            "true_reward_std": float(np.std(rewards)),
            "latency_p50_s": float(np.median([r["latency_p50_s"] for r in rows]))}


def run(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "checkpoint"):
        _fail("checkpoint is required: python scripts/preference_loop.py checkpoint=<dir>")
    import torch

    torch.set_num_threads(int(cfg.num_threads))
    from policy_sampler import DiffusionPolicy
    from policy_sampler.benchmark import machine_name
    from policy_sampler.preference import FeatureNormalizer, PreferenceLoop, RewardSelector, SimulatedPerson, featurize
    from policy_sampler.preference.response import ResponseModel
    from policy_sampler.sweep.candidates import POOL_NAME, generate_candidates, load_candidates

    ckpt = DiffusionPolicy.resolve_checkpoint(Path(to_absolute_path(str(cfg.checkpoint))))
    policy = DiffusionPolicy.load(ckpt)
    from policy_sampler_envs import canonical_task_id, describe_task

    task = canonical_task_id(str(cfg.task or policy.metadata.get("task")))
    description = describe_task(task)
    names = list(description.feature_names)
    preference = OmegaConf.to_container(cfg.preference)
    unknown = sorted(set(preference) - set(names))
    if unknown:
        _fail(f"preference names unknown feature(s) {unknown}; features of {task}: {names}")
    w_true = np.array([float(preference.get(n, 0.0)) for n in names])
    if not np.linalg.norm(w_true) > 0:
        _fail("preference must give a nonzero weight to at least one feature")
    w_true /= np.linalg.norm(w_true)
    quick = bool(cfg.quick)
    pool_size = 24 if quick else int(cfg.pool.size)
    seeds = list(cfg.seeds)[:1] if quick else list(cfg.seeds)
    queries = [10] if quick else sorted(int(q) for q in cfg.queries)
    n_eval = 2 if quick else int(cfg.evaluation.n_episodes)
    out = Path(to_absolute_path(str(cfg.out_dir)))

    pool_dir = out / "pool"
    start = time.perf_counter()
    if (pool_dir / POOL_NAME).exists():
        episodes = load_candidates(pool_dir / POOL_NAME)
        pool_note = "loaded from cache"
    else:
        episodes = generate_candidates(ckpt, task, pool_size, sampler=str(cfg.pool.sampler), seed=int(cfg.pool.seed),
                                       out_dir=pool_dir)
        pool_note = f"generated in {time.perf_counter() - start:.1f} s"
    raw = featurize(description, episodes)
    normalizer = FeatureNormalizer.fit(raw, names)
    features = normalizer.transform(raw)
    pool_left = np.mean([e.side == "left" for e in episodes])
    print(f"pool: {len(episodes)} trajectories sampled by the policy ({cfg.pool.sampler}), {pool_note}; "
          f"left share {pool_left:.2f}", flush=True)

    evaluation = cfg.evaluation
    plain = evaluate_policy(policy, task, "plain", {}, n_eval, int(evaluation.seed), w_true, normalizer)
    print(f"plain policy: left {plain['left']}/{n_eval}, success {plain['success']}/{n_eval}", flush=True)
    results: dict[int, list[dict[str, Any]]] = {q: [] for q in queries}
    learner_options = OmegaConf.to_container(cfg.learner)
    for seed in seeds:
        response = None if cfg.person.response is None else ResponseModel(str(cfg.person.response), float(cfg.person.beta))
        person = SimulatedPerson(w_true, features, response, seed=int(seed))
        loop = PreferenceLoop(features, person.answer, out / f"seed{seed}" / "loop.json", seed=int(seed),
                              **learner_options)
        for q in queries:
            loop.run_until(q)
            selector = RewardSelector(description, loop.learner.posterior_samples().numpy(), normalizer,
                                      mode=str(evaluation.mode))
            reward_file = selector.save(out / f"seed{seed}" / f"reward_q{loop.n_answers}.json")  # also for evaluate.py
            row = evaluate_policy(policy, task, f"seed{seed} q{q}",
                                  {"num_candidates": int(evaluation.num_candidates), "reward": str(reward_file)},
                                  n_eval, int(evaluation.seed), w_true, normalizer)
            row.update(seed=int(seed), queries=loop.n_answers,
                       alignment=float(loop.learner.weights_mean() @ w_true))
            results[q].append(row)
            print(f"  seed {seed}, {loop.n_answers} answers: left {row['left']}/{n_eval}, success "
                  f"{row['success']}/{n_eval}, alignment {row['alignment']:.2f}", flush=True)

    table = [{"queries": 0, **pooled([plain])}] + [{"queries": q, **pooled(results[q])} for q in queries]
    print(f"\n{task}: hidden preference {preference}; best-of-{evaluation.num_candidates} ({evaluation.mode}); "
          f"{n_eval} held-out episodes x {len(seeds)} seed(s); machine: {machine_name(policy.device)}\n")
    print("| answers | passes left [95% CI] | success [95% CI] | true reward (mean ± std over seeds) | chunk latency p50 (ms) |")
    print("|---|---|---|---|---|")
    for r in table:
        print(f"| {r['queries']} | {r['left_share']:.2f} [{r['left_ci'][0]:.2f}, {r['left_ci'][1]:.2f}] | "
              f"{r['success_rate']:.2f} [{r['success_ci'][0]:.2f}, {r['success_ci'][1]:.2f}] | "
              f"{r['true_reward_mean']:.2f} ± {r['true_reward_std']:.2f} | {1000 * r['latency_p50_s']:.0f} |")
    from policy_sampler.serialization import atomic_write_bytes

    atomic_write_bytes(out / "results.json", json.dumps(
        {"task": task, "preference": preference, "pool": {"size": len(episodes), "left_share": float(pool_left)},
         "plain": plain, "runs": results, "table": table}, indent=1, default=float).encode())
    _plot(table, out / "preference_loop.png", int(evaluation.num_candidates))
    print(f"\nwrote {out / 'results.json'} and {out / 'preference_loop.png'}")


def _plot(table: list[dict[str, Any]], path: Path, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = [r["queries"] for r in table]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for key, ci, label in [("left_share", "left_ci", "passes left (the hidden preference)"),
                           ("success_rate", "success_ci", "success")]:
        y = np.array([r[key] for r in table])
        lo = y - np.array([r[ci][0] for r in table])
        hi = np.array([r[ci][1] for r in table]) - y
        ax.errorbar(q, y, yerr=[lo, hi], marker="o", capsize=3, label=label)
    ax.set_xlabel("answered queries (0 = plain policy)")
    ax.set_ylabel(f"share of episodes (best-of-{n})")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


@hydra.main(config_path="../configs", config_name="preference_loop", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
