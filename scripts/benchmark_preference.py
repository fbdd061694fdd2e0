"""Preference learning's two costs per batch, measured side by side: the posterior update (rounds
and wall time of every sampler, and its error against a long MALA run) and query generation from
pools of 10^3 to 10^5 candidate pairs.

    python scripts/benchmark_preference.py --out results/preference_benchmark
    python scripts/benchmark_preference.py --quick          # small sizes, a smoke run

Posterior: reward weights in d = 7 with a Gaussian prior (the log-concave setting of parallel
Langevin, arXiv 2401.09016), ``--answers`` Bradley-Terry answers (beta 5) of a hidden w_true to
queries with feature differences ~ N(0, 2 I) (standardized features). Every sampler runs its
default chain layout (20 chains, 200 kept draws, burn-in 200, thin 10: 300 steps) from
``init="modes"``; MALA adapts its step, ULA and Picard-ULA use eps = 0.1 / L with L a global
Lipschitz constant of the gradient (ULA diverges above eps = 2 / L). "rounds" counts sequential
(batched) evaluations of the log-density or its gradient, the 150 climbing steps included; wall
time is the median over ``--repeats`` seeds, and the error is the largest absolute difference of
the mean or covariance entries between those seeds' pooled draws and a long MALA run (the
posterior's s.d. is in the table's header). The sphere-prior MH row is the learner's default.

Query generation: information gain of every candidate under 200 posterior samples, then the batch
of 10: DPP greedy MAP over the default preselection (the 200 best), or over the whole pool (dense
kernel up to 2000 candidates, a 256-landmark Nystrom factor above), or an exact k-DPP sample over
the whole pool. Times are the median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from policy_sampler.benchmark import machine_name
from policy_sampler.preference.acquisition import acquisition_scores
from policy_sampler.preference.batch import select_batch
from policy_sampler.preference.posterior import sample_posterior
from policy_sampler.preference.response import ResponseModel
from policy_sampler.serialization import atomic_write_bytes, jsonable


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def _problem(d: int, answers: int, seed: int = 0) -> tuple[ResponseModel, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    w_true = torch.tensor(rng.standard_normal(d))
    psi = torch.tensor(rng.standard_normal((answers, d)) * np.sqrt(2.0))
    response = ResponseModel("bradley_terry", 5.0)
    return response, psi, response.sample(w_true / w_true.norm(), psi, torch.Generator().manual_seed(seed))


def _smoothness(response: ResponseModel, psi: torch.Tensor) -> float:
    """A global Lipschitz constant of the log-posterior's gradient: 1 (the prior) plus
    beta^2 / 4 times the largest eigenvalue of psi^T psi (logsigmoid'' >= -1/4)."""
    return 1.0 + response.beta**2 / 4 * float(torch.linalg.eigvalsh(psi.T @ psi).max())


def posterior_table(answers: int, repeats: int, quick: bool) -> dict[str, Any]:
    response, psi, choices = _problem(7, answers)
    gaussian = dict(prior="gaussian")
    reference = sample_posterior(response, psi, choices, generator=torch.Generator().manual_seed(99), sampler="mala",
                                 n_samples=4000 if quick else 40000, n_chains=100, burn_in=500, thin=10, **gaussian).samples
    eps = 0.1 / _smoothness(response, psi)
    step = float(np.sqrt(eps))
    steps = 200 + 10 * 10  # the default layout: burn-in 200, 10 kept draws per chain, thin 10

    def error(samples: torch.Tensor) -> float:
        return max(float((samples.mean(0) - reference.mean(0)).abs().max()),
                   float((torch.cov(samples.T) - torch.cov(reference.T)).abs().max()))

    rows = [
        ("mh, sphere prior (learner default)", dict(), False),
        ("mh", dict(sampler="mh", **gaussian), True),
        ("mh, init=map", dict(sampler="mh", init="map", **gaussian), True),
        ("mala", dict(sampler="mala", **gaussian), True),
        ("ula", dict(sampler="ula", step=step, **gaussian), True),
        ("picard_ula, block 16", dict(sampler="picard_ula", step=step, picard={"block": 16}, **gaussian), True),
        ("picard_ula, block 64", dict(sampler="picard_ula", step=step, picard={"block": 64}, **gaussian), True),
        (f"picard_ula, one block of {steps}", dict(sampler="picard_ula", step=step, picard={"block": steps}, **gaussian), True),
    ]
    out = []
    for name, options, comparable in rows:
        times, draws = [], []
        for seed in range(repeats):
            start = time.perf_counter()
            result = sample_posterior(response, psi, choices, generator=torch.Generator().manual_seed(seed), **options)
            times.append(time.perf_counter() - start)
            draws.append(result.samples)
        out.append({"sampler": name, "rounds": result.rounds, "ms": 1000 * float(np.median(times)),
                    "error": error(torch.cat(draws)) if comparable else None, "acceptance": result.acceptance})
    return {"answers": answers, "eps": eps, "posterior_sd": reference.std(0).tolist(), "rows": out}


def pool_table(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    response, psi_answered, choices = _problem(7, 50)
    samples = sample_posterior(response, psi_answered, choices, generator=torch.Generator().manual_seed(0)).samples
    rows = []
    for n in sizes:
        psi = torch.tensor(np.random.default_rng(n).standard_normal((n, 7)) * np.sqrt(2.0))
        score_s, scores = _timed(lambda: acquisition_scores("information_gain", response, samples, psi), repeats)
        psi_np, scores_np = psi.numpy(), scores.numpy()
        row = {"n": n, "scores_ms": 1000 * score_s}
        for key, options in (("preselect_map_ms", {}), ("all_map_ms", {"preselect": n}),
                             ("all_sample_ms", {"preselect": n, "dpp_mode": "sample"})):
            seconds, chosen = _timed(lambda: select_batch("dpp", psi_np, scores_np, 10, np.random.default_rng(0), **options),
                                     repeats)
            assert len(set(chosen.tolist())) == 10
            row[key] = 1000 * seconds
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, nargs="*", default=[20, 150], help="posterior tables (none: skip them)")
    parser.add_argument("--pool-sizes", type=int, nargs="*", default=[1000, 10000, 100000], help="pool tables (none: skip)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes and one repeat: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="write results.json here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.answers, args.pool_sizes, args.repeats = [20], [1000, 3000], 2
    machine = machine_name(torch.device("cpu"))
    print(f"Machine: {machine}\n")
    posterior = [posterior_table(a, args.repeats, args.quick) for a in args.answers]
    for table in posterior:
        sd = ", ".join(f"{v:.2f}" for v in table["posterior_sd"])
        print(f"Posterior update, d = 7, {table['answers']} answers (Gaussian prior; posterior s.d. {sd}; "
              f"ULA eps = 0.1 / L = {table['eps']:.2g}):\n")
        print("| sampler | rounds | wall ms per update | error vs long MALA | acceptance |")
        print("| --- | --- | --- | --- | --- |")
        for r in table["rows"]:
            err = "-" if r["error"] is None else f"{r['error']:.3f}"
            print(f"| {r['sampler']} | {r['rounds']} | {r['ms']:.0f} | {err} | {r['acceptance']:.2f} |")
        print()
    pools = pool_table(args.pool_sizes, args.repeats)
    if pools:
        print("Query generation, batch of 10 (information gain under 200 posterior samples, then DPP), ms:\n")
        print("| candidates | scores | DPP MAP, preselected 200 | DPP MAP, whole pool | k-DPP sample, whole pool |")
        print("| --- | --- | --- | --- | --- |")
    for r in pools:
        print(f"| {r['n']} | {r['scores_ms']:.0f} | {r['preselect_map_ms']:.1f} | {r['all_map_ms']:.0f} | {r['all_sample_ms']:.0f} |")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out / "results.json", json.dumps(jsonable(
            {"machine": machine, "posterior": posterior, "pools": pools})).encode())
        print(f"\nwrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
