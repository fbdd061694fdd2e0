"""Shared fixtures of the study tests: a small pool (tiny videos, rendered once per session), an
in-process app on a real SQLite file, and the real server script started on a free port."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from policy_sampler.study import StudySettings, prepare_study
from policy_sampler.study.loadtest import StudyServer

TASK = "PolicySampler/ObstacleReach-v0"
FIXED = [[[0, 1], [2, 3], [4, 5]], [[1, 2], [3, 4]]]  # two batches: 3 then 2 queries


def small_settings(**changes) -> StudySettings:
    settings = StudySettings(name="test", task=TASK, seeds=list(range(6)), mode="fixed", batch_size=3,
                             n_batches=2, fixed_batches=FIXED, width=32, height=32)
    settings.__dict__.update(changes)
    return settings


@pytest.fixture(scope="session")
def video_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("study_videos")


@pytest.fixture
def make_client(tmp_path, video_cache):
    """``make(annotators=2, db=None, settings=None) -> (TestClient, admin token, annotator tokens)``."""
    clients = []

    def make(annotators: int | None = 2, db: Path | None = None, settings: StudySettings | None = None):
        db = db or tmp_path / "study.db"
        app, admin, tokens = prepare_study(settings or small_settings(), db, video_cache, annotators,
                                           tokens_file=db.with_name(db.stem + "_tokens.json"))
        client = TestClient(app)
        clients.append(client)
        return client, admin, tokens

    yield make
    for client in clients:
        client.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def bearer():
    """``bearer(token)`` -> the ``Authorization`` header of an API call."""
    return _bearer


@pytest.fixture
def study_settings():
    """``study_settings(**changes)`` -> the small test study's :class:`StudySettings`."""
    return small_settings


@pytest.fixture
def fixed_batches() -> list:
    """The batches of :func:`small_settings` (pool index pairs)."""
    return FIXED


@pytest.fixture
def server_factory(tmp_path, video_cache):
    servers = []

    def make(annotators: int = 2, overrides: tuple[str, ...] = (), workdir: Path | None = None) -> StudyServer:
        """``python -m policy_sampler.study study=loadtest`` (tiny videos) in a subprocess, not started."""
        server = StudyServer(workdir or tmp_path, ["study=loadtest", f"annotators={annotators}", f"cache_dir={video_cache}",
                                                   "study.video.width=32", "study.video.height=32", *overrides])
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
