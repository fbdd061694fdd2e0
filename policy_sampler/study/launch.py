"""Assemble a study from its config: pool, database, tokens, batch source and the ASGI app.

A study config (``configs/study/<name>.yaml``) names the task, the pool's episodes (scripted-expert
env seeds, or a ``candidates.npz`` of policy rollouts), the video size, how batches are made
(``mode: active`` with the preference library's learner, or ``mode: fixed`` with a list of
batches) and how many consistency repeats each batch carries. The first start stores the config,
the pool (content hashes) and the token hashes in the database and the tokens in the tokens file;
a later start on the same database checks the pool and the tokens and serves what was stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp

from policy_sampler.data.candidates import load_candidates
from policy_sampler.data.demos import Episode
from policy_sampler.study.app import AppOptions, create_app
from policy_sampler.study.db import StudyDB
from policy_sampler.study.pool import StudyPool, build_pool, expert_episodes
from policy_sampler.study.session import ActiveBatches, BatchSource, FixedBatches, Study
from policy_sampler.study.tokens import TokenCheck, ensure_tokens
from policy_sampler_envs import canonical_task_id

MODES = ("active", "fixed")
KNOWN_KEYS = {"": {"name", "task", "instructions", "pool", "video", "batches"}, "pool": {"seeds", "candidates"},
              "video": {"width", "height"}, "batches": {"mode", "method", "batch_size", "n_batches", "seed", "fixed", "repeats"}}


def _check_keys(cfg: dict[str, Any]) -> None:
    for section, known in KNOWN_KEYS.items():
        part = cfg if not section else (cfg.get(section) or {})
        unknown = sorted(set(part) - known)
        if unknown:
            where = f"{section}." if section else ""
            raise ValueError(f"study config: unknown key(s) {[where + k for k in unknown]}; known: {sorted(known)}")


@dataclass
class StudySettings:
    """A study config, checked: see ``configs/study/demo.yaml`` for each field."""

    name: str
    task: str
    seeds: list[int]
    mode: str = "active"
    method: str = "dpp"
    batch_size: int = 4
    n_batches: int = 3
    seed: int = 0
    fixed_batches: list[list[list[int]]] | None = None
    repeats: int = 0  # consistency repeats per batch (earlier queries asked again, sides swapped)
    candidates: str | None = None  # a candidates.npz of policy rollouts (policy_sampler.data.candidates) instead of seeds
    width: int = 320
    height: int = 320
    instructions: str = ""

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> StudySettings:
        """``ValueError`` naming the field for anything unknown, missing or out of range."""
        _check_keys(cfg)

        def need(key: str) -> Any:
            if cfg.get(key) is None:
                raise ValueError(f"study config: {key} is required")
            return cfg[key]

        pool = dict(need("pool"))
        candidates = pool.get("candidates")
        if candidates is not None:
            if pool.get("seeds") is not None:
                raise ValueError("study config: give pool.seeds (scripted expert) or pool.candidates (policy rollouts), not both")
            if not Path(str(candidates)).is_file():
                raise ValueError(f"study config: pool.candidates {candidates!r} is not a file "
                                 "(write one with scripts/preference_loop.py or policy_sampler.sweep.generate_candidates)")
            pool["seeds"] = [int(e.seed) for e in load_candidates(candidates)]
        seeds = pool.get("seeds")
        if isinstance(seeds, dict):
            seeds = list(range(int(seeds.get("start", 0)), int(seeds.get("start", 0)) + int(seeds["count"])))
        if not isinstance(seeds, list) or len(seeds) < 2 or not all(isinstance(s, int) for s in seeds):
            raise ValueError(f"study config: pool.seeds must be a list of >= 2 ints or {{start, count}}, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise ValueError("study config: pool.seeds has repeated seeds")
        batches = dict(need("batches"))
        video = dict(cfg.get("video") or {})
        settings = cls(
            name=str(need("name")), task=canonical_task_id(str(need("task"))), seeds=seeds,
            mode=str(batches.get("mode", "active")), method=str(batches.get("method", "dpp")),
            batch_size=int(batches.get("batch_size", 4)), n_batches=int(batches.get("n_batches", 3)),
            seed=int(batches.get("seed", 0)), fixed_batches=batches.get("fixed"), repeats=int(batches.get("repeats") or 0),
            candidates=None if candidates is None else str(Path(str(candidates)).resolve()),
            width=int(video.get("width", 320)), height=int(video.get("height", 320)),
            instructions=str(cfg.get("instructions") or ""))
        if settings.mode not in MODES:
            raise ValueError(f"study config: batches.mode must be one of {list(MODES)}, got {settings.mode!r}")
        if settings.batch_size < 1 or settings.n_batches < 1:
            raise ValueError("study config: batches.batch_size and batches.n_batches must be >= 1")
        if settings.repeats < 0:
            raise ValueError(f"study config: batches.repeats must be >= 0, got {settings.repeats}")
        return settings

    def as_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def make_source(settings: StudySettings, pool: StudyPool, db: StudyDB) -> BatchSource:
    """The study's batch source: the preference learner (active; the feature normalization
    constants are stored in ``db`` for the export) or the fixed batches."""
    if settings.mode == "fixed":
        if settings.fixed_batches is not None:
            return FixedBatches(settings.fixed_batches, len(pool))
        return FixedBatches.random(len(pool), settings.n_batches, settings.batch_size, settings.seed)
    try:
        features, normalizer = pool.features()
    except ImportError as exc:
        raise ValueError(f"batches.mode=active needs policy_sampler.preference ({exc}); "
                         "use batches.mode=fixed") from exc
    db.set_meta("feature_normalizer", json.dumps(normalizer, sort_keys=True))
    return ActiveBatches(features, settings.batch_size, settings.n_batches, settings.method, settings.seed)


def prepare_study(
    settings: StudySettings,
    db_path: str | Path,
    cache_dir: str | Path,
    annotators: int | None = None,
    *,
    tokens_file: str | Path,
    rotate_tokens: bool = False,
    episodes: Sequence[Episode] | None = None,
    progress: Callable[[str], None] | None = None,
    options: AppOptions | None = None,
) -> tuple[ASGIApp, str, list[str]]:
    """``(app, admin token, annotator tokens)`` for ``settings`` backed by the SQLite file ``db_path``,
    with the tokens in ``tokens_file`` (see :func:`policy_sampler.study.tokens.ensure_tokens`;
    ``rotate_tokens`` issues new ones). ``episodes`` replaces the scripted-expert pool (e.g. a
    policy-sampled one); videos go to ``cache_dir``. ``ValueError`` when the database belongs to
    another study or pool, or its tokens cannot be recovered."""
    db = StudyDB(db_path)
    stored = db.get_meta("study_config")
    if stored is not None and json.loads(stored)["name"] != settings.name:
        raise ValueError(f"{db_path} holds study {json.loads(stored)['name']!r}, not {settings.name!r}")
    if stored is not None and stored != settings.as_json() and progress is not None:
        progress("note: the study config changed since this database was created; stored batches stand")
    if annotators is None and stored is None:
        raise ValueError("annotators is required for a new study database")
    if episodes is None and settings.candidates is not None:
        episodes = load_candidates(settings.candidates)
    if episodes is None:
        episodes = expert_episodes(settings.task, settings.seeds)
    pool = build_pool(settings.task, episodes, cache_dir, settings.width, settings.height, progress)
    db.ensure_trajectories([t.row() for t in pool.trajectories])
    source = make_source(settings, pool, db)
    if stored is None:
        db.set_meta("study_config", settings.as_json())
    tokens = ensure_tokens(db, Path(tokens_file), annotators, rotate=rotate_tokens)
    admin_hash, annotator_hashes = db.token_hashes()
    study = Study(db, source, instructions=settings.instructions, repeats=settings.repeats, seed=settings.seed)
    app = create_app(study, TokenCheck(admin_hash, annotator_hashes), pool.video_dir, options)
    return app, tokens.admin, list(tokens.annotators)
