"""Simulated batch active preference learning on pools of scripted-expert trajectories.

    python scripts/preference_experiment.py                 # the full run (docs/preference.md)
    python scripts/preference_experiment.py quick=true      # a ~1 min smoke run

For each task: roll ``n_trajectories`` expert episodes (cached as .npz under ``cache_dir``),
featurize and normalize them; for each batch method and seed, a simulated person with hidden
unit w_true (uniform on the sphere, drawn from the seed) answers batches of ``batch_size``
queries chosen by a ``PreferenceLearner``. Records the alignment m = E[w . w_true / |w|] after
every batch, the posterior time and the query-generation time (acquisition scores plus batch
selection) per batch; prints markdown tables (queries to reach m = ``target``, times) and
writes ``preference_<task><image_suffix>.png`` plots and a JSON of everything. Options:
configs/preference_experiment.yaml.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
import numpy as np
from omegaconf import DictConfig, OmegaConf

QUICK = {"n_trajectories": 40, "n_candidate_pairs": 200, "n_queries": 40, "seeds": 2,
         "posterior": {"n_samples": 100, "n_chains": 20, "burn_in": 100, "thin": 5}}


def _slug(task: str) -> str:
    return task.split("/")[-1].replace("-", "_").lower()


def load_pool(task: str, n: int, cache_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Raw features [n, d] of n expert rollouts (env seeds 0..n-1), cached as .npz."""
    from policy_sampler.preference import featurize

    path = cache_dir / f"{_slug(task)}_{n}.npz"
    if path.exists():
        with np.load(path) as data:
            return data["features"], [str(x) for x in data["names"]]
    from policy_sampler.data.demos import collect_episode
    from policy_sampler.serialization import atomic_path
    from policy_sampler_envs import describe_task, make_env, make_expert

    env = make_env(task)
    expert = make_expert(task, env)
    episodes = [collect_episode(env, expert, seed) for seed in range(n)]
    env.close()
    description = describe_task(task)
    features, names = featurize(description, episodes), list(description.feature_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, features=features, names=np.array(names))
    return features, names


def run_one(features: np.ndarray, method: str, seed: int, cfg: DictConfig) -> dict[str, Any]:
    """One simulated session: alignment after 0, b, 2b, ... queries and per-batch timings."""
    from policy_sampler.preference import PreferenceLearner, SimulatedPerson, alignment
    from policy_sampler.preference.response import ResponseModel
    from policy_sampler.preference.simulated import random_unit_weights

    w_true = random_unit_weights(features.shape[1], np.random.default_rng([seed, 0xA11]))
    response = None if cfg.user == "noiseless" else ResponseModel("bradley_terry", float(cfg.user_beta))
    person = SimulatedPerson(w_true, features, response, seed=seed)
    learner = PreferenceLearner(
        features, batch_size=int(cfg.batch_size), method=method, acquisition=str(cfg.acquisition),
        beta=float(cfg.learner_beta), seed=seed, n_candidate_pairs=int(cfg.n_candidate_pairs),
        **OmegaConf.to_container(cfg.posterior, resolve=True),
    )
    curve, posterior_s, query_s = [], [], []
    for _ in range(int(cfg.n_queries) // int(cfg.batch_size)):
        start = time.perf_counter()
        samples = learner.posterior_samples()
        posterior_s.append(time.perf_counter() - start)
        curve.append(alignment(samples, w_true))
        start = time.perf_counter()
        batch = learner.next_batch()
        query_s.append(time.perf_counter() - start)
        learner.add_answers(person.answer(batch))
    curve.append(alignment(learner.posterior_samples(), w_true))
    return {"alignment": curve, "posterior_s": posterior_s, "query_s": query_s}


def queries_to_reach(curve: np.ndarray, batch_size: int, target: float) -> int | None:
    hit = np.flatnonzero(curve >= target)
    return int(hit[0] * batch_size) if hit.size else None


def _plot(task: str, summary: dict[str, Any], batch_size: int, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    for method, s in summary.items():
        mean, err = np.array(s["mean"]), np.array(s["stderr"])
        x = np.arange(mean.size) * batch_size
        ax.plot(x, mean, label=method)
        ax.fill_between(x, mean - err, mean + err, alpha=0.15)
    ax.axhline(target, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="queries answered", ylabel="alignment m", title=f"{task}: m vs queries (mean +- s.e.)")
    ax.legend(fontsize=8)
    methods = list(summary)
    bx.bar(range(len(methods)), [summary[m]["query_ms"] for m in methods])
    bx.set_xticks(range(len(methods)), methods, rotation=40, ha="right", fontsize=8)
    bx.set(ylabel="ms per batch", title="query generation (2-core CPU)")
    bx.set_yscale("log")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg: DictConfig) -> int:
    import torch

    from policy_sampler.preference import FeatureNormalizer
    from policy_sampler.serialization import atomic_write_bytes, jsonable

    torch.set_num_threads(1)
    if cfg.quick:  # the quick sizes, except those given on the command line
        given = {o.split("=", 1)[0].lstrip("+~").split(".", 1)[0] for o in HydraConfig.get().overrides.task}
        cfg = OmegaConf.merge(cfg, {k: v for k, v in QUICK.items() if k not in given})
    if int(cfg.n_queries) % int(cfg.batch_size) or int(cfg.n_queries) < int(cfg.batch_size):
        print(f"preference_experiment: error: n_queries ({cfg.n_queries}) must be a positive multiple of batch_size ({cfg.batch_size})", file=sys.stderr)
        return 2
    if cfg.user not in ("bradley_terry", "noiseless"):
        print(f"preference_experiment: error: user must be bradley_terry or noiseless, got {cfg.user!r}", file=sys.stderr)
        return 2
    cache_dir = Path(hydra.utils.to_absolute_path(str(cfg.cache_dir)))
    results: dict[str, Any] = {"config": OmegaConf.to_container(cfg, resolve=True), "tasks": {}}
    b, target = int(cfg.batch_size), float(cfg.target)
    for task in cfg.tasks:
        start = time.perf_counter()
        raw, names = load_pool(str(task), int(cfg.n_trajectories), cache_dir)
        features = FeatureNormalizer.fit(raw, names).transform(raw)
        print(f"\n## {task}: pool of {len(features)} trajectories, d = {len(names)} ({', '.join(names)}); "
              f"pool ready in {time.perf_counter() - start:.1f} s", flush=True)
        summary: dict[str, Any] = {}
        for method in cfg.methods:
            runs = [run_one(features, str(method), seed, cfg) for seed in range(int(cfg.seeds))]
            curves = np.array([r["alignment"] for r in runs])
            mean = curves.mean(0)
            per_seed = [queries_to_reach(c, b, target) for c in curves]
            summary[str(method)] = {
                "mean": mean.tolist(),
                "stderr": (curves.std(0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else np.zeros_like(mean)).tolist(),
                "queries_to_target": queries_to_reach(mean, b, target),
                "seeds_reaching": sum(q is not None for q in per_seed),
                "median_queries_per_seed": float(np.median([q if q is not None else np.inf for q in per_seed])),
                "query_ms": 1000 * float(np.mean([np.mean(r["query_s"]) for r in runs])),
                "posterior_ms": 1000 * float(np.mean([np.mean(r["posterior_s"]) for r in runs])),
                "runs": runs,
            }
            print(f"  {method}: m after {cfg.n_queries} queries {mean[-1]:.3f}", flush=True)
        results["tasks"][str(task)] = {"feature_names": names, "methods": summary}
        print(f"\n| method | queries to mean m >= {target} | seeds reaching it (median queries) | m at {cfg.n_queries // 2} | "
              f"m at {cfg.n_queries} | query generation ms/batch | posterior ms/batch |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for method, s in summary.items():
            q = s["queries_to_target"]
            med = s["median_queries_per_seed"]
            print(f"| {method} | {q if q is not None else f'> {cfg.n_queries}'} | {s['seeds_reaching']}/{cfg.seeds} "
                  f"({'-' if not np.isfinite(med) else int(med)}) | {s['mean'][len(s['mean']) // 2]:.3f} | {s['mean'][-1]:.3f} | "
                  f"{s['query_ms']:.1f} | {s['posterior_ms']:.1f} |", flush=True)
        if cfg.images_dir:
            path = Path(hydra.utils.to_absolute_path(str(cfg.images_dir))) / f"preference_{_slug(str(task))}{cfg.image_suffix}.png"
            _plot(str(task), summary, b, target, path)
            print(f"wrote {path}")
    if cfg.results:
        path = Path(hydra.utils.to_absolute_path(str(cfg.results)))
        atomic_write_bytes(path, json.dumps(jsonable(results)).encode())
        print(f"wrote {path}")
    return 0


@hydra.main(config_path="../configs", config_name="preference_experiment", version_base="1.3")
def main(cfg: DictConfig) -> None:
    sys.exit(run(cfg))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
