"""Distill a consistency student (1-3 network calls per chunk) from a trained DiffusionPolicy teacher.

    python scripts/distill_student.py --teacher assets/policies/obstacle_reach_small \\
        --dataset demo_out/demos.hdf5 --out runs/obstacle_student --steps 3000

The student is a baseline that samples another law than the teacher's DDPM chain (see
``policy_sampler.baselines.consistency`` and docs/exactness.md); evaluate it with
``scripts/evaluate.py ... baselines='[{label: student-1, sampler: consistency_student,
options: {checkpoint: runs/obstacle_student, steps: 1}}]'``. One CPU thread by default.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from policy_sampler import DiffusionPolicy  # noqa: E402
from policy_sampler.baselines import DistillConfig, distill  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="the teacher's checkpoint (scripts/train.py)")
    parser.add_argument("--dataset", required=True, help="the demonstrations the teacher was trained on")
    parser.add_argument("--out", required=True, help="the student checkpoint directory to write")
    defaults = DistillConfig()
    for f in fields(DistillConfig):
        value = getattr(defaults, f.name)
        kind = float if isinstance(value, float) else int
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=1 if f.name == "num_threads" else value)
    args = parser.parse_args()
    try:
        config = DistillConfig(**{f.name: getattr(args, f.name) for f in fields(DistillConfig)})
        path = distill(DiffusionPolicy.load(args.teacher), args.dataset, args.out, config)
    except (ValueError, FileNotFoundError) as error:
        print(f"distill_student: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"student: {path}")


if __name__ == "__main__":
    main()
