"""Shared fixtures of the study tests: a small pool (tiny videos, rendered once per session), an
in-process app on a real SQLite file, and the real server script started on a free port."""

from __future__ import annotations

import uuid
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


HOSTILE_BODIES = [  # (body, status): each must be a JSON 4xx that changes nothing
    ('{"query_id": "\\ud800", "choice": "left", "client_id": "%s"}', 422),   # lone surrogate, in each field
    ('{"query_id": "%%s", "choice": "\\udfff", "client_id": "%s"}', 422),
    ('{"query_id": "%%s", "choice": "left", "client_id": "\\ud83d%s"}', 422),
    ('{"query_id": "%%s", "choice": "left", "client_id": "%s", "\\ud800": 1}', 422),  # ... and in a key
    ('{"query_id": "%%s", "choice": "left", "client_id": "%s", "\\ud800": "\\udc00"}', 422),
    ("[" * 5000 + "]" * 5000 + "%.0s", 400),                                 # nested too deeply to parse
    ('{"query_id": ' + "[" * 3000 + "]" * 3000 + ', "choice": "left", "client_id": "%s"}', 400),
    ('{"query_id": [["%%s"]], "choice": "left", "client_id": "%s"}', 422),   # wrong types
    ('{"query_id": 1' + "1" * 5000 + ', "choice": "left", "client_id": "%s"}', 400),  # over Python's int digits
    ('{"query_id": NaN, "choice": "left", "client_id": "%s"}', 422),
    ('{"query_id": null, "choice": "left", "client_id": "%s"}', 422),
    ('{"query_id": "%%s", "choice": "left", "client_id": "%s", "choice": 1}', 422),  # a repeated key
    ('{"query_id": "%%s", "choice": "left", "client_id": "not-%s"}', 422),
    ('{"query_id": "../../etc/passwd", "choice": "left", "client_id": "%s"}', 422),
    ("null%.0s", 422), ("42%.0s", 422), ('"text"%.0s', 422), ("%.0s", 400),
]


def _hostile_requests(query_id: str) -> list[tuple[bytes, int]]:
    """The hostile bodies for a query (UTF-8, some with invalid bytes), plus one over the size limit."""
    out = []
    for template, status in HOSTILE_BODIES:
        body = template % str(uuid.uuid4())
        out.append((body.replace("%s", query_id).encode(), status))
    cid = str(uuid.uuid4()).encode()
    out += [(b'{"query_id": "\xed\xa0\x80", "choice": "left", "client_id": "' + cid + b'"}', 422),  # UTF-8 of a surrogate
            (b"\xff\xfe{}", 400), (b'{"query_id": "\xc3"}', 400), (b"x" * 1_000_000, 413)]
    return out


@pytest.fixture
def hostile_requests():
    """``hostile_requests(query_id)`` -> ``[(body bytes, expected 4xx status), ...]``."""
    return _hostile_requests


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
