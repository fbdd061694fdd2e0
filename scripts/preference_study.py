"""Run a preference-query study server (docs/study.md): the same as ``python -m policy_sampler.study``.

    python scripts/preference_study.py study=demo annotators=2 port=8765 db=study.db tokens_file=tokens.json
    python scripts/preference_study.py study=demo_fixed annotators=3 port=8765 db=s.db tokens_file=t.json host=0.0.0.0

Options: configs/preference_study.yaml and configs/study/*.yaml; see policy_sampler/study/cli.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from policy_sampler.study.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
