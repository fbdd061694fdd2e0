"""The tables of docs/vision_transformer.md, from the outputs of scripts/vision_transformer_study.sh.

    python scripts/vision_transformer_tables.py --out results/vision_transformer \
        --runs reach_vision metaworld_vision reach_transformer reach_unet

Reads ``<out>/eval_<run>/results.json`` (success of each sampler, episodes rolled side by side),
``<out>/rounds_<run>/results.json`` (rounds per chunk at batch 1), ``<out>/<run>/train_log.json`` (the
training runs) and ``<out>/training_benchmark.json`` (scripts/benchmark_training.py) where present, and
prints the markdown tables (also written to ``<out>/tables.md``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

RUN_LABELS = {
    "reach_unet": "state U-Net (ObstacleReach)",
    "reach_transformer": "state DP-T (ObstacleReach)",
    "reach_vision": "vision U-Net (ObstacleReach, top camera)",
    "metaworld_vision": "vision U-Net (Meta-World button-press-topdown, corner4 camera)",
}


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _success(row: dict[str, Any]) -> str:
    return (f"{row['successes']}/{row['n_episodes']} = {row['success_rate']:.2f} "
            f"[{row['success_ci_low']:.2f}, {row['success_ci_high']:.2f}]")


def success_table(out: Path, runs: list[str]) -> list[str]:
    lines = ["| policy | sampler | success [Wilson 95% CI] | rounds per chunk | NFE per chunk | mean batch |",
             "|---|---|---|---|---|---|"]
    machine = None
    for run in runs:
        data = _load(out / f"eval_{run}" / "results.json")
        if data is None:
            continue
        machine = data["machine"]
        for row in data["results"]:
            label = row["label"] + (" (baseline, other law)" if row["baseline"] else "")
            lines.append(f"| {RUN_LABELS.get(run, run)} | {label} | {_success(row)} | {row['rounds_mean']:.1f} "
                         f"| {row['nfe_mean']:.1f} | {row['mean_batch']:.1f} |")
        seeds = data["env_seeds"]
        lines.append(f"| | *{data['n_episodes']} episodes, env seeds {seeds[0]}..{seeds[-1]}, "
                     f"{data['max_steps'] or 'registered'} steps max* | | | | |")
    if machine is None:
        return []
    head = [f"Success (episodes rolled side by side: rounds and NFE are per chunk call on the batch of active "
            f"envs, the slowest row deciding), {machine}", ""]
    return head + lines


def rounds_table(out: Path, runs: list[str]) -> list[str]:
    data = {run: _load(out / f"rounds_{run}" / "results.json") for run in runs}
    data = {run: d for run, d in data.items() if d is not None}
    if not data:
        return []
    labels: list[str] = []
    for d in data.values():
        labels += [s["summary"]["label"] for s in d["samplers"] if s["summary"]["label"] not in labels + ["ddpm"]]
    runs = list(data)
    head = ["Rounds per chunk at batch 1 (one env at a time: mean / median / max over every chunk; NFE mean), "
            f"{next(iter(data.values()))['machine']}", "",
            "| sampler | exact | " + " | ".join(RUN_LABELS.get(r, r) for r in runs) + " |",
            "|---|---|" + "---|" * len(runs),
            "| ddpm | yes | " + " | ".join("100 / 100 / 100 (NFE 100)" for _ in runs) + " |"]
    for label in labels:
        cells, exact = [], "-"
        for run in runs:
            match = [s for s in data[run]["samplers"] if s["summary"]["label"] == label]
            if not match:
                cells.append("-")
                continue
            rounds = [c["rounds"] for c in match[0]["chunks"]]
            summary = match[0]["summary"]
            exact = "yes" if summary["exact"] else ("no (other law)" if summary["baseline"] else "no (tolerance)")
            cells.append(f"{statistics.mean(rounds):.2f} / {statistics.median(rounds):g} / {max(rounds)} "
                         f"(NFE {match[0]['summary']['nfe_mean']:.0f}; {len(rounds)} chunks)")
        head.append(f"| {label} | {exact} | " + " | ".join(cells) + " |")
    return head


def training_table(out: Path, runs: list[str]) -> list[str]:
    lines = ["Training runs (one torch thread, sharing the CPU with other jobs: wall times are an upper bound; "
             "scripts/benchmark_training.py measures throughput alone)", "",
             "| policy | steps x batch | wall (min) | samples/s | peak RSS (MB) | params (denoiser + encoder) "
             "| best val loss |", "|---|---|---|---|---|---|---|"]
    found = False
    for run in runs:
        log = _load(out / run / "train_log.json")
        if log is None:
            continue
        found = True
        t = log["metadata"]["train"]
        params = log.get("parameters", {})
        total = " + ".join(f"{v / 1e6:.3f}M" for v in params.values())
        lines.append(f"| {RUN_LABELS.get(run, run)} | {t['steps']} x {t['batch_size']} | {log['seconds'] / 60:.1f} "
                     f"| {log.get('samples_per_second', float('nan')):.1f} | {log.get('peak_rss_mb', float('nan')):.0f} "
                     f"| {total} | {log['best_loss']:.4f} |")
    return lines if found else []


def benchmark_table(out: Path) -> list[str]:
    path = out / "training_benchmark.md"
    return path.read_text().rstrip("\n").splitlines() if path.is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the study's output folder")
    parser.add_argument("--runs", nargs="+", default=list(RUN_LABELS))
    args = parser.parse_args()
    out = Path(args.out)
    if not out.is_dir():
        parser.error(f"--out {out} is not a folder")
    blocks = [success_table(out, args.runs), rounds_table(out, args.runs), training_table(out, args.runs),
              benchmark_table(out)]
    text = "\n\n".join("\n".join(b) for b in blocks if b) + "\n"
    print(text)
    from policy_sampler.serialization import atomic_write_bytes

    atomic_write_bytes(out / "tables.md", text.encode())
    print(f"wrote {out / 'tables.md'}")


if __name__ == "__main__":
    main()
