"""The real server (``python -m policy_sampler.study`` under uvicorn): the tokens file, SIGKILL
mid-batch and restart on the same db (same tokens, nothing lost, the annotator back at the same
query), bad arguments, small versions of the loopback load test (concurrent duplicates stored
exactly once; SIGKILL mid-stream), hostile bodies on a keep-alive connection, slowloris, and the
streamed export."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from policy_sampler.study.loadtest import run_load

REPO = Path(__file__).resolve().parents[2]


def test_sigkill_mid_batch_then_restart_loses_nothing(server_factory, bearer, tmp_path):
    server = server_factory(annotators=2, overrides=("study.batches.batch_size=3", "study.batches.n_batches=2"))
    server.start()
    tokens = server.tokens
    assert set(tokens) == {"admin", "annotators"} and len(tokens["annotators"]) == 2
    for path in (server.tokens_file, server.db, server.workdir / "study.db-wal", server.workdir / "study.db-shm"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    tok = tokens["annotators"][0]
    stored = []
    for _ in range(2):
        q = httpx.get(server.url + "/api/next", headers=bearer(tok)).json()
        r = httpx.post(server.url + "/api/answers", headers=bearer(tok),
                       json={"query_id": q["query_id"], "choice": "equal", "client_id": str(uuid.uuid4())})
        assert r.status_code == 201
        stored.append(r.json()["answer"])
    current = httpx.get(server.url + "/api/next", headers=bearer(tok)).json()
    assert (current["batch"], current["position"]) == (0, 2)
    server.kill()  # SIGKILL right after the 201s: they must be on disk
    for path in server.workdir.glob("study.db*"):  # only hashes of the tokens are at rest in the database
        data = path.read_bytes()
        assert not any(t.encode() in data for t in (tokens["admin"], *tokens["annotators"])), path
    server.args = [a for a in server.args if not a.startswith("annotators=")]  # resume without annotators=
    server.start()
    assert server.tokens == tokens
    assert httpx.get(server.url + "/api/next", headers=bearer(tok)).json() == current
    answers = httpx.get(server.url + "/api/admin/answers", headers=bearer(tokens["admin"])).json()
    assert answers == stored
    retry = httpx.post(server.url + "/api/answers", headers=bearer(tok), json={
        "query_id": stored[1]["query_id"], "choice": "equal", "client_id": stored[1]["client_id"]})
    assert retry.status_code == 200 and retry.json()["answer"] == stored[1]  # a retry across the crash
    server.stop()


def test_bad_arguments_exit_2_and_write_nothing(tmp_path):
    cases = [["annotators=0", "port=8123", f"db={tmp_path / 'a.db'}", f"tokens_file={tmp_path / 't.json'}"],
             ["annotators=2", "port=8123", f"tokens_file={tmp_path / 't.json'}"]]
    for args in cases:
        r = subprocess.run([sys.executable, str(REPO / "scripts" / "preference_study.py"), *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "preference_study: error:" in r.stderr, r.stderr
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "a.db").exists()


def test_small_load_test_stores_every_answer_exactly_once(server_factory):
    server = server_factory(annotators=6, overrides=("study.batches.batch_size=4", "study.batches.n_batches=2"))
    server.start()
    tokens = server.tokens
    figures = run_load(server.url, tokens["admin"], tokens["annotators"], duplicates=0.5, seed=1)
    assert figures["problems"] == []
    assert figures["answers_stored"] == 6 * 2 * 4 and figures["duplicate_posts"] > 0
    assert json.dumps(figures)  # JSON-able, as the script writes it


def test_every_hostile_body_leaves_the_keep_alive_connection_usable(server_factory, bearer, hostile_requests):
    server = server_factory(annotators=1)
    server.start()
    tok = server.tokens["annotators"][0]
    with httpx.Client(base_url=server.url, headers=bearer(tok), timeout=10) as client:
        q = client.get("/api/next").json()
        for path in ("/api/answers", "/api/undo"):
            for body, status in hostile_requests(q["query_id"]):
                bad = client.post(path, content=body, headers={"Content-Type": "application/json"})
                good = client.get("/api/next")
                assert bad.status_code == status and "error" in bad.json(), (path, body[:80], bad.text)
                assert good.status_code == 200 and good.json()["query_id"] == q["query_id"], (body[:80], good.text)
                same = [r.extensions["network_stream"].get_extra_info("client_addr") for r in (bad, good)]
                assert same[0] == same[1], (path, body[:80])  # the same connection served both
        chunked = client.post("/api/answers", content=(b"y" * 1000 for _ in range(100)))  # no Content-Length
        good = client.get("/api/next")
        assert chunked.status_code == 413 and good.status_code == 200
        assert len({r.extensions["network_stream"].get_extra_info("client_addr") for r in (chunked, good)}) == 1
    admin = server.tokens["admin"]
    assert httpx.get(server.url + "/api/admin/answers", headers=bearer(admin)).json() == []
    log = (server.workdir / "server.log").read_text()
    assert "Traceback" not in log and "Exception" not in log, log


def test_slowloris_is_cut_off_and_does_not_starve_a_real_client(server_factory, bearer):
    server = server_factory(annotators=1, overrides=("head_timeout_s=1.5", "max_waiting_connections=20",
                                                     "limit_concurrency=30", "body_timeout_s=1.0"))
    server.start()
    tok = server.tokens["annotators"][0]
    slow = []

    def attack(n: int) -> None:  # request heads that never end
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"GET /api/next HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(s)

    attack(60)  # twice uvicorn's limit_concurrency: without the cap on waiting connections, 503 for everyone
    start = time.monotonic()
    with httpx.Client(base_url=server.url, headers=bearer(tok), timeout=5,
                      limits=httpx.Limits(max_keepalive_connections=0)) as client:  # a new visitor each time
        while time.monotonic() - start < 3.0:
            for s in slow:
                try:
                    s.sendall(b"X-Slow: 1\r\n")  # one header line at a time, never the blank line
                except OSError:
                    pass
            attack(5)
            t = time.perf_counter()
            r = client.get("/api/next")
            assert r.status_code == 200 and time.perf_counter() - t < 1.0, r.text
            time.sleep(0.2)
    time.sleep(1.6)
    closed = 0
    for s in slow:
        s.settimeout(3)
        try:
            data = s.recv(1024)
        except ConnectionResetError:
            data = b""
        except TimeoutError:  # still open
            data = None
        closed += data == b""
        s.close()
    assert closed == len(slow)  # every half-open connection was closed by the server
    with socket.create_connection(("127.0.0.1", server.port)) as s:  # a body that never ends: 408, closed
        s.sendall(f"POST /api/answers HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
        s.settimeout(5)
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 408") and b'"error"' in reply


def test_sigkill_mid_stream_loses_no_acknowledged_answer(server_factory):
    server = server_factory(annotators=3, overrides=("study.batches.batch_size=10", "study.batches.n_batches=6"))
    server.start()
    tokens = server.tokens
    figures = run_load(server.url, tokens["admin"], tokens["annotators"], duplicates=0.3, seed=2,
                       server=server, kills=1, kill_every_answers=60)  # mid-stream at any machine speed
    assert figures["problems"] == [] and figures["kills"] == 1
    assert figures["answers_stored"] == figures["acknowledged"] == 3 * 6 * 10


def test_server_settings_are_checked():
    import pytest

    from policy_sampler.study.server import LOOPBACK_HOSTS, ServerSettings

    assert ServerSettings.from_config({}).accepted_hosts() == LOOPBACK_HOSTS
    assert ServerSettings.from_config({"host": "0.0.0.0"}).accepted_hosts() is None
    assert ServerSettings.from_config({"host": "0.0.0.0", "allowed_hosts": ["study.lab"]}).accepted_hosts() == ("study.lab",)
    bad = [({"port": 0}, "port"), ({"port": 70000}, "port"), ({"head_timeout_s": 0}, "head_timeout_s"),
           ({"body_timeout_s": float("inf")}, "body_timeout_s"), ({"limit_concurrency": True}, "limit_concurrency"),
           ({"max_body_bytes": 10}, "max_body_bytes"), ({"allowed_hosts": "localhost"}, "allowed_hosts"),
           ({"max_waiting": 3}, "unknown server setting")]
    for cfg, message in bad:
        with pytest.raises(ValueError, match=message):
            ServerSettings.from_config(cfg)
