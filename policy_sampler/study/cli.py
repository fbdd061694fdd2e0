"""The study server's command line: ``python -m policy_sampler.study`` (and its wrapper
``scripts/preference_study.py``); see docs/study.md.

    python -m policy_sampler.study study=demo annotators=2 port=8765 db=study.db tokens_file=tokens.json
    python -m policy_sampler.study study=demo db=study.db tokens_file=tokens.json rotate_tokens=true

Builds (or reuses) the study's trajectory pool and videos, opens the SQLite database ``db``, writes
``{"admin": "<token>", "annotators": ["<token>", ...]}`` to ``tokens_file`` (atomically, mode 0600),
prints each annotator's URL and then serves on ``host:port`` until interrupted. Started again on
the same ``db`` it resumes: same tokens, nothing lost, each annotator back at their query. Bad
arguments exit with status 2. Options: configs/preference_study.yaml and configs/study/*.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from policy_sampler.validation import check_bool, check_int

SERVER_KEYS = ("host", "port", "max_body_bytes", "body_timeout_s", "head_timeout_s", "max_waiting_connections",
               "limit_concurrency", "timeout_keep_alive_s", "max_header_bytes", "allowed_hosts", "log_level")
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def _fail(message: str, status: int = 2) -> None:
    print(f"preference_study: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def _path(cfg: DictConfig, key: str) -> Path:
    if OmegaConf.is_missing(cfg, key) or cfg[key] in (None, ""):
        _fail(f"{key} is required: python -m policy_sampler.study study=demo annotators=2 port=8765 "
              "db=study.db tokens_file=tokens.json")
    return Path(to_absolute_path(str(cfg[key])))


def run(cfg: DictConfig) -> int:
    """Check the arguments, prepare the study, print the links and serve."""
    db = _path(cfg, "db")
    tokens_file = _path(cfg, "tokens_file")
    if cfg.annotators is None and not db.exists():
        _fail(f"annotators is required for a new study database ({db} does not exist)")
    try:
        annotators = check_int("annotators", cfg.annotators, minimum=1, allow_none=True)
        rotate_tokens = check_bool("rotate_tokens", cfg.rotate_tokens)
    except ValueError as exc:
        _fail(str(exc))
    cache_dir = Path(to_absolute_path(str(cfg.cache_dir))) if cfg.cache_dir else db.parent / "study_videos"

    from policy_sampler.study.app import AppOptions
    from policy_sampler.study.launch import StudySettings, prepare_study
    from policy_sampler.study.server import ServerSettings, serve

    try:
        server = ServerSettings.from_config({k: OmegaConf.to_object(cfg[k]) if OmegaConf.is_config(cfg[k]) else cfg[k]
                                             for k in SERVER_KEYS})
        settings = StudySettings.from_config(OmegaConf.to_container(cfg.study, resolve=True))
        options = AppOptions(server.max_body_bytes, server.body_timeout_s, server.accepted_hosts())
        app, admin, tokens = prepare_study(
            settings, db, cache_dir, annotators, tokens_file=tokens_file, rotate_tokens=rotate_tokens,
            progress=lambda line: print(line, flush=True), options=options)
    except ValueError as exc:
        _fail(str(exc))
    base = f"http://{server.host}:{server.port}"
    print(f"study {settings.name!r}: {len(tokens)} annotator(s), database {db}, tokens in {tokens_file}")
    for k, token in enumerate(tokens, 1):
        print(f"  annotator {k}: {base}/?token={token}")
    print(f"  admin:       {base}/admin?token={admin}", flush=True)
    serve(app, server)
    return 0


@hydra.main(config_path=CONFIG_DIR, config_name="preference_study", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)
