"""Law fidelity: how far each way of sampling a trained policy moves its chunk distribution from ``ddpm``'s.

    python scripts/law_fidelity.py --checkpoint assets/policies/obstacle_reach_small \\
        --student runs/obstacle_student --out results/law/obstacle_reach
    python scripts/law_fidelity.py --checkpoint runs/drawer_open/policy --student runs/drawer_student \\
        --out results/law/drawer_open --chunks 2000 --chunk-indices 0 3

Observations: the observation histories at the chunk boundaries ``--chunk-indices`` of ``--episodes``
held-out episodes (env seeds ``--seed`` ..., rolled with ``ddpm`` through the project's rollout loop).
For ObstacleReach chunk 0 is before the fork (the puck has not committed to a side).

At each observation every method draws ``--chunks`` chunks (all observations in one batch); each is
compared with a ``ddpm`` run on independent seeds by a permutation test of the energy distance
(``--permutations``), a z-test of the spread (mean squared distance to the pooled mean, which extra
noise inflates) and, for ObstacleReach, a two-proportion test of the share of chunks heading left
(the sign of the chunk's summed x velocity). A method is "same law" unless the smallest p-value,
Bonferroni-corrected over statistics and observations, is below ``--alpha``. The calibration rows:
a second, independent ``ddpm`` run (must pass) and ``ddpm`` with every step's noise 5% larger (must
fail). Depth is the sequential network calls per chunk (rounds for our samplers, steps otherwise).

Writes ``law.json``, ``law.md`` (the table) and ``law.png`` (energy distance against depth) into
``--out`` and prints the table with the machine named. Heavy: tens of minutes on one CPU thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from policy_sampler import DiffusionPolicy, make_sampler  # noqa: E402
from policy_sampler.baselines import dpm_solver_sample  # noqa: E402
from policy_sampler.benchmark import machine_name  # noqa: E402
from policy_sampler.samplers.sequential import DDPMSampler, run_chain  # noqa: E402
from policy_sampler.serialization import atomic_write_bytes, jsonable  # noqa: E402


class ExtraNoiseDDPM(DDPMSampler):
    """The calibration's wrong sampler: ``ddpm`` with every step's noise std 5% larger."""

    name = "ddpm"
    exact = False

    def _sample(self, call, schedule, x_T, noise, generator):
        chain = schedule.ddpm_chain()
        chain = dataclasses.replace(chain, sigma=chain.sigma * 1.05, _cache={})
        return call.result(run_chain(call, chain, x_T, noise), [call.rounds] * x_T.shape[0])


@dataclasses.dataclass
class Method:
    label: str
    kind: str  # "sampler", "dpm", "extra_noise", "guess_draft" (an exact sampler drafting from a fast one)
    name: str = ""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    steps: int | None = None  # the schedule's steps (None: the policy's own)
    exact: bool = False
    seed: int = 0


def methods(student: str | None) -> list[Method]:
    out = [
        Method("ddpm (second run)", "sampler", "ddpm", exact=True, seed=1),
        Method("ddpm, noise x1.05 (control)", "extra_noise", seed=2),
        Method("speculative_picard", "sampler", "speculative_picard", exact=True, seed=3),
        Method("speculative", "sampler", "speculative", exact=True, seed=4),
        Method("autospeculative", "sampler", "autospeculative", exact=True, seed=5),
        Method("paradigms (tol 0.1)", "sampler", "paradigms", seed=6),
        Method("picard (tol 0.1)", "sampler", "picard", seed=7),
        Method("ddim-16", "sampler", "ddim", steps=16, seed=8),
        Method("ddim-10", "sampler", "ddim", steps=10, seed=9),
        Method("ddim-5", "sampler", "ddim", steps=5, seed=10),
        Method("dpm-solver++ 10", "dpm", steps=10, seed=11),
        Method("dpm-solver++ 5", "dpm", steps=5, seed=12),
    ]
    if student:
        out += [
            Method("student, 1 step", "sampler", "consistency_student", {"checkpoint": student, "steps": 1}, seed=13),
            Method("student, 3 steps", "sampler", "consistency_student", {"checkpoint": student, "steps": 3}, seed=14),
            Method("speculative_picard, student draft", "guess_draft", "speculative_picard",
                   {"guess": "consistency_student", "checkpoint": student}, exact=True, seed=15),
        ]
    out.append(Method("speculative_picard, ddim-5 draft", "guess_draft", "speculative_picard", {"guess": "ddim"},
                      steps=5, exact=True, seed=16))
    return out


# ------------------------------------------------------------------------------------ observations
def held_out_observations(policy: DiffusionPolicy, task: str, episodes: int, seed: int,
                          chunk_indices: list[int]) -> tuple[dict[str, torch.Tensor], list[dict[str, int]]]:
    """Observation histories ``{key: [M, n_obs_steps, d]}`` at the given chunk boundaries of held-out
    ``ddpm`` episodes, and where each one comes from."""
    from policy_sampler.rollout import RolloutConfig, SamplerSpec, evaluate_sampler

    report, _ = evaluate_sampler(policy, task, SamplerSpec("ddpm", "ddpm"), episodes, seed,
                                 rollout=RolloutConfig(stop_on_success=True, record_trajectories=True))
    c = policy.config
    histories, where = [], []
    for episode, traj in sorted(report.trajectories.items()):
        obs = traj["observations"]
        for chunk in chunk_indices:
            step = chunk * c.n_action_steps
            if step >= len(obs):
                continue
            frames = [obs[max(step - c.n_obs_steps + 1 + i, 0)] for i in range(c.n_obs_steps)]
            histories.append(np.stack(frames))
            where.append({"episode": int(episode), "env_seed": seed + int(episode), "chunk": chunk})
    if not histories:
        raise ValueError(f"no episode reached the chunk indices {chunk_indices}")
    if len(c.obs_keys) != 1:
        raise ValueError("law_fidelity supports policies with one observation key")
    return {c.obs_keys[0]: torch.as_tensor(np.stack(histories))}, where


# ------------------------------------------------------------------------------------------ sampling
def draw_chunks(policy: DiffusionPolicy, method: Method, cond: torch.Tensor, n: int,
                batch_rows: int) -> tuple[torch.Tensor, float, float]:
    """``n`` chunks per observation row of ``cond`` [M, C] -> (normalized chunks [M, n, H, A], mean
    sequential network calls per chunk, seconds)."""
    c = policy.config
    M = cond.shape[0]
    rows = cond.repeat_interleave(n, 0)
    g = torch.Generator().manual_seed(1000 * method.seed + 17)
    out, depth = [], []
    start = time.perf_counter()
    for lo in range(0, rows.shape[0], batch_rows):
        cr = rows[lo:lo + batch_rows]
        x_T = torch.randn(cr.shape[0], c.horizon, c.action_dim, generator=g)
        with torch.no_grad():
            sample, d = _sample(policy, method, x_T, cr, g)
        out.append(sample)
        depth.append(d)
    chunks = torch.cat(out).reshape(M, n, c.horizon, c.action_dim)
    return chunks, float(np.concatenate(depth).mean()), time.perf_counter() - start


def _sample(policy, method: Method, x_T, cond, g) -> tuple[torch.Tensor, np.ndarray]:
    B = x_T.shape[0]
    if method.kind == "dpm":
        x = dpm_solver_sample(policy.denoiser(), policy.noise_scheduler, x_T, cond, method.steps)
        return x, np.full(B, method.steps, dtype=float)
    schedule = policy.schedule_for(method.steps)
    if method.kind == "extra_noise":
        res = ExtraNoiseDDPM().sample(policy.denoiser(), schedule, x_T, cond=cond, generator=g)
        return res.sample, np.asarray(res.rounds_per_row, dtype=float)
    if method.kind == "guess_draft":  # the first draft assumes a fast sampler's chunk from the same x_T (legal)
        options = dict(method.options)
        drafter = make_sampler(options.pop("guess"), **options)
        guess = drafter.sample(policy.denoiser(), schedule, x_T, cond=cond, generator=g)
        res = make_sampler(method.name).sample(policy.denoiser(), policy.schedule, x_T, cond=cond, generator=g,
                                               x0_guess=guess.sample)
        return res.sample, np.asarray(res.rounds_per_row, dtype=float) + guess.rounds
    res = make_sampler(method.name, **method.options).sample(policy.denoiser(), schedule, x_T, cond=cond, generator=g)
    return res.sample, np.asarray(res.rounds_per_row, dtype=float)


# ---------------------------------------------------------------------------------------- statistics
def energy_test(x: torch.Tensor, y: torch.Tensor, permutations: int, seed: int) -> tuple[float, float]:
    """(energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'|, its permutation p-value) for samples [n, D]."""
    z = torch.cat([x, y]).float()
    n = x.shape[0]
    N = z.shape[0]
    dist = torch.cdist(z, z)
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(permutations + 1, N)
    labels[0, :n] = 1
    for i in range(1, permutations + 1):
        labels[i, torch.randperm(N, generator=g)[:n]] = 1
    a, b = labels, 1 - labels
    da = dist @ a.T  # [N, P+1]
    xx = (a.T * da).sum(0) / n**2
    xy = (b.T * da).sum(0) / (n * (N - n))
    yy = (b.T * (dist @ b.T)).sum(0) / (N - n) ** 2
    e = 2 * xy - xx - yy
    return float(e[0]), float(((e[1:] >= e[0]).sum() + 1) / (permutations + 1))


def spread_test(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(ratio of mean squared distances to the pooled mean, y over x; Welch two-sided p-value)."""
    m = torch.cat([x, y]).mean(0)
    sx, sy = (x - m).pow(2).sum(1).double(), (y - m).pow(2).sum(1).double()
    z = (sy.mean() - sx.mean()) / torch.sqrt(sx.var() / len(sx) + sy.var() / len(sy))
    return float(sy.mean() / sx.mean()), float(2 * stats.norm.sf(abs(float(z))))


def left_share(policy: DiffusionPolicy, chunks: torch.Tensor) -> torch.Tensor:
    """ObstacleReach: share of chunks [n, H, A] whose summed x velocity is negative (heading left)."""
    actions = policy.normalizer.unnormalize("action", chunks)
    return (actions[..., 0].sum(-1) < 0).double()


def share_test(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-proportion z-test p-value (two-sided) of 0/1 samples; 1 when both are constant and equal."""
    pa, pb, na, nb = float(a.mean()), float(b.mean()), len(a), len(b)
    pool = (pa * na + pb * nb) / (na + nb)
    se = math.sqrt(pool * (1 - pool) * (1 / na + 1 / nb))
    if se == 0:
        return 1.0 if pa == pb else 0.0
    return float(2 * stats.norm.sf(abs(pa - pb) / se))


# --------------------------------------------------------------------------------------------- output
def write_figure(rows: list[dict], floor: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for r in rows:
        if r["label"].startswith("ddpm (second"):
            continue
        color = "tab:green" if r["exact"] else ("tab:red" if "control" in r["label"] else "tab:blue")
        ax.scatter(r["depth"], max(r["energy_mean"], 1e-6), color=color, s=30)
        ax.annotate(r["label"], (r["depth"], max(r["energy_mean"], 1e-6)), fontsize=7, xytext=(3, 2),
                    textcoords="offset points")
    ax.axhline(floor, color="gray", ls="--", lw=1, label="ddpm vs an independent ddpm run")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequential network calls per chunk (rounds or steps)")
    ax.set_ylabel("energy distance to ddpm (mean over observations)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def table(rows: list[dict], machine: str, modes: bool) -> str:
    head = "| method | exact | depth (calls/chunk) | energy dist (mean) | worst energy p | spread ratio | worst spread p |"
    line = "|---|---|---|---|---|---|---|"
    if modes:
        head += " left share per observation | worst mode p |"
        line += "---|---|"
    head += " same law as ddpm? |"
    line += "---|"
    out = [f"Measured on {machine}.", "", head, line]
    for r in rows:
        cells = [r["label"], "yes" if r["exact"] else "no", f"{r['depth']:.1f}", f"{r['energy_mean']:.2e}",
                 f"{r['energy_p_min']:.3f}", f"{r['spread_mean']:.3f}", f"{r['spread_p_min']:.1e}"]
        if modes:
            cells += [" / ".join(f"{s:.2f}" for s in r["left_share"]), f"{r['mode_p_min']:.1e}"]
        cells.append("yes" if r["same_law"] else f"**no** (p = {r['p_adjusted']:.1e})")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--task", help="default: the task recorded in the checkpoint")
    parser.add_argument("--student", help="a consistency student of the checkpoint (baselines.distill)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--chunk-indices", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--chunks", type=int, default=2000, help="chunks per method per observation")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1000, help="first held-out env seed")
    parser.add_argument("--batch-rows", type=int, default=4000, help="chunks per sampler call")
    parser.add_argument("--only", nargs="+", help="run only these method labels (plus the ddpm reference)")
    args = parser.parse_args()
    if min(args.episodes, args.chunks, args.permutations, args.batch_rows) < 1 or not 0 < args.alpha < 1:
        parser.error("--episodes, --chunks, --permutations, --batch-rows must be >= 1 and 0 < --alpha < 1")
    torch.set_num_threads(1)
    policy = DiffusionPolicy.load(args.checkpoint)
    task = args.task or policy.metadata.get("task")
    if not task:
        parser.error("the checkpoint records no task: pass --task")
    obs, where = held_out_observations(policy, task, args.episodes, args.seed, args.chunk_indices)
    cond = policy.global_cond(obs)
    M = cond.shape[0]
    modes = "ObstacleReach" in task
    machine = machine_name(torch.device("cpu"))
    print(f"{task}: {M} observations {where}, {args.chunks} chunks each; {machine}", flush=True)

    reference = Method("ddpm", "sampler", "ddpm", exact=True, seed=0)
    ref, ref_depth, ref_s = draw_chunks(policy, reference, cond, args.chunks, args.batch_rows)
    ref_flat = ref.flatten(2)
    ref_left = [float(left_share(policy, ref[i]).mean()) for i in range(M)] if modes else []
    print(f"ddpm: {ref_s:.0f} s", flush=True)
    chosen = [m for m in methods(args.student) if not args.only or m.label in args.only]
    rows: list[dict[str, Any]] = []
    n_stats = 3 if modes else 2
    header = {"task": task, "checkpoint": str(args.checkpoint), "student": args.student, "machine": machine,
              "observations": where, "chunks": args.chunks, "permutations": args.permutations, "alpha": args.alpha,
              "ddpm_left_share": ref_left, "ddpm_seconds": ref_s}
    text = ""
    for method in chosen:
        chunks, depth, seconds = draw_chunks(policy, method, cond, args.chunks, args.batch_rows)
        flat = chunks.flatten(2)
        energy, energy_p, spread, spread_p, shares, mode_p = [], [], [], [], [], []
        for i in range(M):
            e, p = energy_test(ref_flat[i], flat[i], args.permutations, seed=i)
            energy.append(e)
            energy_p.append(p)
            s, sp = spread_test(ref_flat[i], flat[i])
            spread.append(s)
            spread_p.append(sp)
            if modes:
                left = left_share(policy, chunks[i])
                shares.append(float(left.mean()))
                mode_p.append(share_test(left_share(policy, ref[i]), left))
        p_min = min(energy_p + spread_p + mode_p)
        p_adj = min(1.0, p_min * n_stats * M)
        row = {"label": method.label, "exact": method.exact, "depth": depth, "seconds": seconds,
               "energy": energy, "energy_p": energy_p, "energy_mean": float(np.mean(energy)),
               "energy_p_min": min(energy_p), "spread": spread, "spread_p": spread_p,
               "spread_mean": float(np.mean(spread)), "spread_p_min": min(spread_p),
               "left_share": shares, "mode_p": mode_p, "mode_p_min": min(mode_p) if mode_p else None,
               "p_adjusted": p_adj, "same_law": p_adj >= args.alpha}
        rows.append(row)
        print(f"{method.label}: depth {depth:.1f}, energy {row['energy_mean']:.2e} (p_min {row['energy_p_min']:.3f}), "
              f"spread {row['spread_mean']:.3f} (p_min {row['spread_p_min']:.1e}), same law {row['same_law']}, "
              f"{seconds:.0f} s", flush=True)
        # the table, figure and json so far after every method: a long run that stops keeps its rows
        text = write_outputs(Path(args.out), rows, header, ref_left)
    print(text)


def write_outputs(out: Path, rows: list[dict], header: dict[str, Any], ref_left: list[float]) -> str:
    """Write ``law.json``, ``law.md`` and ``law.png`` for the rows so far; returns the table."""
    floor = next((r["energy_mean"] for r in rows if r["label"].startswith("ddpm (second")), float("nan"))
    atomic_write_bytes(out / "law.json", json.dumps(jsonable({**header, "rows": rows}), indent=1).encode())
    text = table(rows, header["machine"], bool(ref_left))
    if ref_left:
        text += "\n\nddpm's left share per observation: " + " / ".join(f"{s:.2f}" for s in ref_left)
    atomic_write_bytes(out / "law.md", (text + "\n").encode())
    write_figure(rows, floor, out / "law.png",
                 f"{header['task']}: {len(header['observations'])} observations, {header['chunks']} chunks each")
    return text


if __name__ == "__main__":
    main()
