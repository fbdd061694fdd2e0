"""Simulated batch active preference learning on pools of scripted-expert trajectories.

    python scripts/preference_experiment.py                 # the full run (docs/preference.md)
    python scripts/preference_experiment.py quick=true      # a ~1 min smoke run

For each task: roll ``n_trajectories`` expert episodes (cached as .npz under ``cache_dir``),
featurize and normalize them; for each batch method and seed, a simulated person with hidden
unit w_true (uniform on the sphere, drawn from the seed) answers batches of ``batch_size``
queries chosen by a ``PreferenceLearner``. Records the alignment m = E[w . w_true / |w|] after
every batch, the posterior time and the query-generation time (acquisition scores plus batch
selection) per batch. Prints, per task, two markdown tables: per method, the queries at which the
seed-mean curve reaches m = ``target`` with a seed-bootstrap 95% interval, m at a few query counts
and the mean m over queries ``batch_size``..``n_queries`` with Student-t 95% intervals, and times;
and the paired differences (by seed: same w_true, same candidate pairs) between ``reference`` and
every other method, with Student-t and bootstrap 95% intervals. Writes
``preference_<task><image_suffix>.png`` plots and a JSON of everything. A method named
``dpp_sample`` is ``dpp`` with ``dpp_mode="sample"`` (an exact k-DPP draw instead of greedy MAP).
Options: configs/preference_experiment.yaml.
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


def _method_options(method: str) -> dict[str, Any]:
    return {"method": "dpp", "dpp_mode": "sample"} if method == "dpp_sample" else {"method": method}


def run_one(features: np.ndarray, method: str, seed: int, cfg: DictConfig) -> dict[str, Any]:
    """One simulated session: alignment after 0, b, 2b, ... queries and per-batch timings."""
    from policy_sampler.preference import PreferenceLearner, SimulatedPerson, alignment
    from policy_sampler.preference.response import ResponseModel
    from policy_sampler.preference.simulated import random_unit_weights

    w_true = random_unit_weights(features.shape[1], np.random.default_rng([seed, 0xA11]))
    response = None if cfg.user == "noiseless" else ResponseModel("bradley_terry", float(cfg.user_beta))
    person = SimulatedPerson(w_true, features, response, seed=seed)
    learner = PreferenceLearner(
        features, batch_size=int(cfg.batch_size), **_method_options(method), acquisition=str(cfg.acquisition),
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


def _fmt_queries(value: float, n_queries: int) -> str:
    return f"> {n_queries}" if not np.isfinite(value) else str(int(value))


def summarize(runs: list[dict[str, Any]], cfg: DictConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Seed statistics of one (task, method): mean curve with t intervals, queries to the target
    with a bootstrap interval, mean m over the run (queries b..n) and timings."""
    from policy_sampler.preference.statistics import bootstrap_queries_to_reach, mean_interval, queries_to_reach

    b, target = int(cfg.batch_size), float(cfg.target)
    curves = np.array([r["alignment"] for r in runs])
    intervals = [mean_interval(curves[:, j]) for j in range(curves.shape[1])]
    per_seed = [queries_to_reach(c, b, target) for c in curves]
    point, low, high = bootstrap_queries_to_reach(curves, b, target, rng)
    return {
        "mean": curves.mean(0).tolist(),
        "ci95": [[lo, hi] for _, lo, hi in intervals],
        "stderr": (curves.std(0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else np.zeros(curves.shape[1])).tolist(),
        "queries_to_target": point, "queries_to_target_ci95": [low, high],
        "seeds_reaching": int(np.isfinite(per_seed).sum()),
        "median_queries_per_seed": float(np.median(per_seed)),
        "mean_over_run": mean_interval(curves[:, 1:].mean(1)),
        "query_ms": 1000 * float(np.mean([np.mean(r["query_s"]) for r in runs])),
        "posterior_ms": 1000 * float(np.mean([np.mean(r["posterior_s"]) for r in runs])),
        "runs": runs,
    }


def paired_differences(summary: dict[str, Any], reference: str, points: list[int], rng: np.random.Generator) -> dict[str, Any]:
    """reference - method, per seed, for the mean m over the run and m at ``points`` (indices into
    the curve): mean with Student-t and bootstrap 95% intervals, and how many seeds favour each."""
    from policy_sampler.preference.statistics import bootstrap_mean_interval, mean_interval

    ref = np.array([r["alignment"] for r in summary[reference]["runs"]])
    table: dict[str, Any] = {}
    for method, s in summary.items():
        if method == reference:
            continue
        other = np.array([r["alignment"] for r in s["runs"]])
        rows = {"mean_over_run": ref[:, 1:].mean(1) - other[:, 1:].mean(1)}
        rows.update({f"m_at_{j}": ref[:, j] - other[:, j] for j in points})
        table[method] = {
            key: {"t_ci95": mean_interval(diff), "bootstrap_ci95": bootstrap_mean_interval(diff, rng),
                  "reference_better": int((diff > 0).sum()), "method_better": int((diff < 0).sum())}
            for key, diff in rows.items()
        }
    return table


def _print_tables(task: str, summary: dict[str, Any], differences: dict[str, Any], reference: str, points: list[int],
                  cfg: DictConfig) -> None:
    b, n, target, seeds = int(cfg.batch_size), int(cfg.n_queries), float(cfg.target), int(cfg.seeds)

    def ci(mean: float, low: float, high: float) -> str:
        return f"{mean:.3f} [{low:.3f}, {high:.3f}]"

    print(f"\n{task}: {seeds} seeds; mean and Student-t 95% interval over seeds; queries to the target from "
          f"the seed-mean curve with a seed-bootstrap 95% interval")
    heads = " | ".join(f"m at {j * b}" for j in points)
    print(f"| method | queries to mean m >= {target} [95% CI] | seeds reaching it (median queries) | {heads} | "
          f"mean m over {b}-{n} | query generation ms/batch | posterior ms/batch |")
    print("| --- " * (6 + len(points)) + "|")
    for method, s in summary.items():
        low, high = s["queries_to_target_ci95"]
        curve = [ci(s["mean"][j], *s["ci95"][j]) for j in points]
        print(f"| {method} | {_fmt_queries(s['queries_to_target'], n)} [{_fmt_queries(low, n)}, {_fmt_queries(high, n)}] | "
              f"{s['seeds_reaching']}/{seeds} ({_fmt_queries(s['median_queries_per_seed'], n)}) | {' | '.join(curve)} | "
              f"{ci(*s['mean_over_run'])} | {s['query_ms']:.1f} | {s['posterior_ms']:.1f} |")
    print(f"\nPaired by seed: {reference} minus method (positive: {reference} aligns better); mean [Student-t 95% CI] "
          f"[bootstrap 95% CI]; seeds where {reference} / the method is higher")
    keys = ["mean_over_run"] + [f"m_at_{j}" for j in points]
    print("| method | " + " | ".join(f"mean m over {b}-{n}" if k == "mean_over_run" else f"m at {int(k[5:]) * b}" for k in keys) + " |")
    print("| --- " * (1 + len(keys)) + "|")
    for method, rows in differences.items():
        cells = []
        for key in keys:
            r = rows[key]
            mean, low, high = r["t_ci95"]
            bl, bh = r["bootstrap_ci95"]
            cells.append(f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] [{bl:+.3f}, {bh:+.3f}] {r['reference_better']}/{r['method_better']}")
        print(f"| {method} | " + " | ".join(cells) + " |", flush=True)


def _plot(task: str, summary: dict[str, Any], batch_size: int, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    for method, s in summary.items():
        mean, band = np.array(s["mean"]), np.array(s["ci95"])
        x = np.arange(mean.size) * batch_size
        ax.plot(x, mean, label=method)
        ax.fill_between(x, band[:, 0], band[:, 1], alpha=0.12)
    ax.axhline(target, color="grey", linestyle=":", linewidth=1)
    seeds = len(next(iter(summary.values()))["runs"])
    ax.set(xlabel="queries answered", ylabel="alignment m", title=f"{task}: m vs queries (mean, 95% CI, {seeds} seeds)")
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
        rng = np.random.default_rng(0)  # the bootstrap's resamples
        for method in cfg.methods:
            start = time.perf_counter()
            runs = []
            for seed in range(int(cfg.seeds)):
                runs.append(run_one(features, str(method), seed, cfg))
                if (seed + 1) % 8 == 0 or seed + 1 == int(cfg.seeds):
                    print(f"  {method}: {seed + 1}/{cfg.seeds} seeds, {time.perf_counter() - start:.0f} s", flush=True)
            summary[str(method)] = summarize(runs, cfg, rng)
            print(f"  {method}: m after {cfg.n_queries} queries {summary[str(method)]['mean'][-1]:.3f}", flush=True)
        n_points = int(cfg.n_queries) // b + 1
        points = sorted({min(max(1, int(q) // b), n_points - 1) for q in cfg.report_queries})
        reference = str(cfg.reference) if str(cfg.reference) in summary else next(iter(summary))
        differences = paired_differences(summary, reference, points, rng)
        results["tasks"][str(task)] = {"feature_names": names, "methods": summary, "paired_differences": differences,
                                       "reference": reference, "report_points": points}
        _print_tables(str(task), summary, differences, reference, points, cfg)
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
