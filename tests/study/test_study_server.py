"""The real server script under uvicorn: the tokens file, SIGKILL mid-batch and restart on the same
db (same tokens, nothing lost, the annotator back at the same query), bad arguments, and a small
version of the loopback load test (concurrent duplicates stored exactly once)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from policy_sampler.study.loadtest import SCRIPT, run_load

REPO = Path(__file__).resolve().parents[2]


def test_sigkill_mid_batch_then_restart_loses_nothing(server_factory, bearer, tmp_path):
    server = server_factory(annotators=2, overrides=("study.batches.batch_size=3", "study.batches.n_batches=2"))
    server.start()
    tokens = server.tokens
    assert set(tokens) == {"admin", "annotators"} and len(tokens["annotators"]) == 2
    assert (server.tokens_file.stat().st_mode & 0o777) == 0o600
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
        r = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
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
