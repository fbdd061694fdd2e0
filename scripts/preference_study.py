"""Run a preference-query study server (docs/study.md).

    python scripts/preference_study.py study=demo annotators=2 port=8765 db=study.db tokens_file=tokens.json
    python scripts/preference_study.py study=demo_fixed annotators=3 port=8765 db=s.db tokens_file=t.json host=0.0.0.0

Builds (or reuses) the study's trajectory pool and videos, opens the SQLite database ``db``, writes
``{"admin": "<token>", "annotators": ["<token>", ...]}`` to ``tokens_file`` atomically, prints each
annotator's URL and then serves on ``host:port`` until interrupted. Started again on the same ``db``
it resumes: same tokens, nothing lost, each annotator back at their query. Bad arguments exit with
status 2. Options: configs/preference_study.yaml and configs/study/*.yaml.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def _fail(message: str, status: int = 2) -> None:
    print(f"preference_study: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def _path(cfg: DictConfig, key: str) -> Path:
    if OmegaConf.is_missing(cfg, key) or cfg[key] in (None, ""):
        _fail(f"{key} is required: python scripts/preference_study.py study=demo annotators=2 port=8765 "
              "db=study.db tokens_file=tokens.json")
    return Path(to_absolute_path(str(cfg[key])))


def run(cfg: DictConfig) -> int:
    db = _path(cfg, "db")
    tokens_file = _path(cfg, "tokens_file")
    annotators, port = cfg.annotators, cfg.port
    if annotators is None and not db.exists():
        _fail(f"annotators is required for a new study database ({db} does not exist)")
    if annotators is not None and (isinstance(annotators, bool) or not isinstance(annotators, int) or annotators < 1):
        _fail(f"annotators must be an integer >= 1, got {annotators!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        _fail(f"port must be an integer in [1, 65535], got {port!r}")
    max_body = cfg.max_body_bytes
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 256:
        _fail(f"max_body_bytes must be an integer >= 256, got {max_body!r}")
    cache_dir = Path(to_absolute_path(str(cfg.cache_dir))) if cfg.cache_dir else db.parent / "study_videos"

    import uvicorn

    from policy_sampler.serialization import atomic_write_bytes
    from policy_sampler.study import StudySettings, prepare_study

    try:
        settings = StudySettings.from_config(OmegaConf.to_container(cfg.study, resolve=True))
        app, admin, tokens = prepare_study(
            settings, db, cache_dir, annotators, progress=lambda line: print(line, flush=True),
            max_body_bytes=max_body)
    except ValueError as exc:
        _fail(str(exc))
    atomic_write_bytes(tokens_file, json.dumps({"admin": admin, "annotators": tokens}, indent=1).encode())
    os.chmod(tokens_file, 0o600)
    base = f"http://{cfg.host}:{port}"
    print(f"study {settings.name!r}: {len(tokens)} annotator(s), database {db}, tokens in {tokens_file}")
    for k, token in enumerate(tokens, 1):
        print(f"  annotator {k}: {base}/?token={token}")
    print(f"  admin:       {base}/admin?token={admin}", flush=True)
    uvicorn.run(app, host=str(cfg.host), port=port, log_level=str(cfg.log_level), access_log=False)
    return 0


@hydra.main(config_path="../configs", config_name="preference_study", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
