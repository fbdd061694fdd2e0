"""Load test of the preference study server on loopback (docs/study.md, "Load test").

    python scripts/study_load_test.py                                  # 16 annotators x 5 batches x 10 queries
    python scripts/study_load_test.py --annotators 1 4 16              # one run per count, one table
    python scripts/study_load_test.py --annotators 4 --kills 3         # SIGKILL + restart 3 times mid-run
    python scripts/study_load_test.py --annotators 16 --poll-export    # an admin downloads the export meanwhile

Each run starts ``python -m policy_sampler.study study=loadtest`` on a free port with a fresh
database in a temporary folder (``--workdir`` to keep it), lets every annotator answer all their
queries at once, re-sending a share (``--duplicates``) of the answers with the same client_id both
concurrently and later, then checks through the admin API that every acknowledged answer is stored
exactly once. Prints one row per run (answer rate, POST latency p50/p99/max) with the machine;
exits 1 on any problem.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _machine() -> str:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.machine()} {os.cpu_count()}-core {model or 'CPU'}".strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, nargs="+", default=[16], help="one run per count")
    parser.add_argument("--batches", type=int, default=5, help="batches per annotator")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--duplicates", type=float, default=0.3, help="share of answers sent again (0..1)")
    parser.add_argument("--kills", type=int, default=0, help="SIGKILL and restart the server this many times mid-run")
    parser.add_argument("--kill-every", type=float, default=0.25, help="seconds from the start (or a restart) to a kill")
    parser.add_argument("--poll-export", action="store_true", help="an admin downloads the export in a loop meanwhile")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the databases and logs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if (min(args.annotators) < 1 or args.batches < 1 or args.batch_size < 1 or not 0.0 <= args.duplicates <= 1.0
            or args.kills < 0 or args.kill_every <= 0):
        parser.error("annotators, batches and batch-size must be >= 1, duplicates in [0, 1], kills >= 0, kill-every > 0")

    from policy_sampler.serialization import atomic_write_bytes
    from policy_sampler.study.loadtest import StudyServer, run_load

    rows = []
    with tempfile.TemporaryDirectory(prefix="study_load_") as tmp:
        root = (args.workdir or Path(tmp)).resolve()
        for count in args.annotators:
            workdir = root / f"annotators_{count}"
            server = StudyServer(workdir, [
                "study=loadtest", f"annotators={count}", f"study.batches.n_batches={args.batches}",
                f"study.batches.batch_size={args.batch_size}", f"cache_dir={root / 'videos'}"])
            server.start()
            try:
                tokens = server.tokens
                figures = run_load(server.url, tokens["admin"], tokens["annotators"], args.duplicates, args.seed,
                                   server=server, kills=args.kills, kill_every_s=args.kill_every,
                                   poll_export=args.poll_export)
            finally:
                server.stop()
            figures.update(machine=_machine(), batches=args.batches, batch_size=args.batch_size,
                           duplicates=args.duplicates, poll_export=args.poll_export)
            rows.append(figures)
    print("| annotators | answers stored (acknowledged) | duplicate POSTs | kills | export polls | wall s "
          "| answers/s | POST p50 ms | p99 ms | max ms | problems |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for f in rows:
        print(f"| {f['annotators']} | {f['answers_stored']} ({f['acknowledged']}) | {f['duplicate_posts']} | {f['kills']} "
              f"| {f['export_polls']} | {f['wall_s']:.2f} | {f['answers_per_s']:.0f} | {f['post_latency_ms_p50']:.1f} "
              f"| {f['post_latency_ms_p99']:.1f} | {f['post_latency_ms_max']:.1f} | {len(f['problems'])} |")
    print(f"machine: {rows[0]['machine']}; server and clients on the same machine, loopback")
    for f in rows:
        for problem in f["problems"]:
            print(f"PROBLEM ({f['annotators']} annotators): {problem}", file=sys.stderr)
    if args.json is not None:
        atomic_write_bytes(args.json, json.dumps(rows, indent=1).encode())
    return 1 if any(f["problems"] for f in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
