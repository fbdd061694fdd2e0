"""Load test of the preference study server on loopback (docs/study.md, "Load test").

    python scripts/study_load_test.py                       # 40 annotators x 5 batches x 10 queries
    python scripts/study_load_test.py --annotators 4 --batches 2 --batch-size 3 --json out.json

Starts ``scripts/preference_study.py study=loadtest`` on a free port with a fresh database in a
temporary folder (``--workdir`` to keep it), lets every annotator answer all their queries at
once, re-sending a share (``--duplicates``) of the answers with the same client_id both
concurrently and later, then checks through the admin API that each answer is stored exactly
once. Prints the answer rate and the POST latency p50/p99 with the machine; exits 1 on any problem.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, default=40)
    parser.add_argument("--batches", type=int, default=5, help="batches per annotator")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--duplicates", type=float, default=0.3, help="share of answers sent again (0..1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the database and log here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.annotators < 1 or args.batches < 1 or args.batch_size < 1 or not 0.0 <= args.duplicates <= 1.0:
        parser.error("annotators, batches and batch-size must be >= 1 and duplicates in [0, 1]")

    from policy_sampler.serialization import atomic_write_bytes
    from policy_sampler.study.loadtest import StudyServer, run_load

    with tempfile.TemporaryDirectory(prefix="study_load_") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        server = StudyServer(workdir, [
            "study=loadtest", f"annotators={args.annotators}", f"study.batches.n_batches={args.batches}",
            f"study.batches.batch_size={args.batch_size}", f"cache_dir={workdir / 'videos'}"])
        server.start()
        try:
            tokens = server.tokens
            figures = run_load(server.url, tokens["admin"], tokens["annotators"], args.duplicates, args.seed)
        finally:
            server.stop()
    figures.update(machine=f"{platform.machine()} {os.cpu_count()}-core CPU ({platform.node()})",
                   batches=args.batches, batch_size=args.batch_size, duplicates=args.duplicates)
    print(f"{figures['annotators']} annotators at once, {figures['answers_stored']} answers stored once each "
          f"({figures['duplicate_posts']} duplicate POSTs answered 200) in {figures['wall_s']:.2f} s: "
          f"{figures['answers_per_s']:.0f} answers/s, {figures['posts_per_s']:.0f} POST/s; POST latency "
          f"p50 {figures['post_latency_ms_p50']:.1f} ms, p99 {figures['post_latency_ms_p99']:.1f} ms, "
          f"max {figures['post_latency_ms_max']:.1f} ms; {figures['machine']}")
    for problem in figures["problems"]:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    if args.json is not None:
        atomic_write_bytes(args.json, json.dumps(figures, indent=1).encode())
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
