"""The HTTP contract against a real SQLite file (Starlette TestClient): next/answer flow, idempotent
retries, auth, every bad input as a JSON 4xx that changes nothing, admin views, resume after a
restart, and the videos (H.264 MP4, HTTP Range)."""

from __future__ import annotations

import csv
import io
import json
import uuid

import imageio.v3 as iio
import pytest

CONTRACT_KEYS = {"query_id", "left", "right", "batch", "position", "batch_size"}


def _answer(client, token, query_id, choice="left", client_id=None):
    body = {"query_id": query_id, "choice": choice, "client_id": client_id or str(uuid.uuid4())}
    return client.post("/api/answers", json=body, headers={"Authorization": f"Bearer {token}"})


def test_flow_idempotent_retry_and_admin_views(make_client, bearer, fixed_batches):
    client, admin, (tok, other) = make_client()
    seen = []
    while (r := client.get("/api/next", headers=bearer(tok))).status_code == 200:
        q = r.json()
        assert CONTRACT_KEYS <= set(q) and q["batch_size"] == len(fixed_batches[q["batch"]])
        assert (q["batch"], q["position"]) == (len(seen) >= 3, len(seen) if len(seen) < 3 else len(seen) - 3)
        cid = str(uuid.uuid4())
        first = _answer(client, tok, q["query_id"], "right", cid)
        again = _answer(client, tok, q["query_id"], "right", cid)  # a retry / double click
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["answer"] == again.json()["answer"]
        seen.append((q, first.json()["answer"]))
    assert r.status_code == 204 and len(seen) == 5
    answers = client.get("/api/admin/answers", headers=bearer(admin)).json()
    assert len(answers) == 5 and {a["annotator"] for a in answers} == {1}
    assert [{k: a[k] for k in ("query_id", "choice", "client_id")} for a in answers] == [
        {k: row[k] for k in ("query_id", "choice", "client_id")} for _, row in seen]
    for q, row in seen:  # the server stored which trajectory was on the left, and the pair's label
        pair = {row["traj_a"], row["traj_b"]}
        assert {row["left_traj"], row["right_traj"]} == pair and q["left"]["video"].endswith(".mp4")
        assert row["preference"] == (1 if row["right_traj"] == row["traj_a"] else -1)
    assert sorted((r["traj_a"], r["traj_b"]) for r in answers) == sorted(tuple(p) for b in fixed_batches for p in b)
    progress = client.get("/api/admin/progress", headers=bearer(admin)).json()
    assert [(p["annotator"], p["answered"], p["done"]) for p in progress] == [(1, 5, True), (2, 0, False)]
    rows = list(csv.DictReader(io.StringIO(client.get("/api/admin/answers.csv", headers=bearer(admin)).text)))
    assert [r["client_id"] for r in rows] == [a["client_id"] for a in answers]
    export = client.get("/api/admin/export", headers=bearer(admin)).json()
    assert len(export["answers"]) == 5 and len(export["trajectories"]) == 6 and export["study"]["name"] == "test"
    assert client.get("/api/next", headers=bearer(other)).json()["position"] == 0  # untouched


def test_auth(make_client, bearer):
    client, admin, (tok, _) = make_client()
    assert client.get("/api/next").status_code == 401
    assert client.get("/api/next", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.get("/api/next", headers=bearer("not-a-token")).status_code == 401
    assert client.get("/api/next", headers=bearer(admin)).status_code == 403
    for path in ("/api/admin/answers", "/api/admin/answers.csv", "/api/admin/progress", "/api/admin/export"):
        assert client.get(path, headers=bearer(tok)).status_code == 403
        r = client.get(path)
        assert r.status_code == 401 and "error" in r.json()


def test_bad_input_is_a_json_4xx_and_changes_nothing(make_client, bearer):
    client, admin, (tok, other) = make_client()
    q = client.get("/api/next", headers=bearer(tok)).json()
    q_other = client.get("/api/next", headers=bearer(other)).json()
    good = {"query_id": q["query_id"], "choice": "left", "client_id": str(uuid.uuid4())}
    raw = {"content": None, "headers": {**bearer(tok), "Content-Type": "application/json"}}
    cases = [
        (json.dumps({**good, "choice": "up"}), 422),
        (json.dumps({**good, "choice": 1}), 422),
        (json.dumps({**good, "client_id": "123"}), 422),
        (json.dumps({k: v for k, v in good.items() if k != "client_id"}), 422),
        (json.dumps({**good, "extra": 1}), 422),
        (json.dumps([good]), 422),
        ('{"query_id": ', 400),
        (b"\xff\xfe", 400),
        (json.dumps({**good, "query_id": "x" * 20000}), 413),
        (json.dumps({**good, "query_id": q_other["query_id"]}), 404),  # another annotator's query
        (json.dumps({**good, "query_id": "no-such-query"}), 404),
    ]
    for body, status in cases:
        r = client.post("/api/answers", **{**raw, "content": body})
        assert r.status_code == status, (body, r.text)
        assert isinstance(r.json()["error"], str)
    assert client.get("/api/admin/answers", headers=bearer(admin)).json() == []
    assert _answer(client, tok, q["query_id"]).status_code == 201
    assert _answer(client, tok, q["query_id"]).status_code == 409  # answered, another client_id
    assert len(client.get("/api/admin/answers", headers=bearer(admin)).json()) == 1
    assert client.get("/api/nope", headers=bearer(tok)).json()["error"]
    assert client.delete("/api/answers", headers=bearer(tok)).status_code == 405


def test_restart_on_the_same_db_resumes(make_client, tmp_path, bearer):
    client, admin, tokens = make_client()
    for _ in range(2):
        assert _answer(client, tokens[0], client.get("/api/next", headers=bearer(tokens[0])).json()["query_id"]).status_code == 201
    current = client.get("/api/next", headers=bearer(tokens[0])).json()
    again, admin2, tokens2 = make_client(annotators=None, db=tmp_path / "study.db")  # a new process's app
    assert (admin2, tokens2) == (admin, tokens)
    assert again.get("/api/next", headers=bearer(tokens[0])).json() == current
    assert len(again.get("/api/admin/answers", headers=bearer(admin)).json()) == 2
    more, _, tokens3 = make_client(annotators=3, db=tmp_path / "study.db")
    assert tokens3[:2] == tokens and len(tokens3) == 3


def test_videos_are_h264_and_served_with_range_requests(make_client, video_cache, bearer):
    client, _, (tok, _) = make_client()
    url = client.get("/api/next", headers=bearer(tok)).json()["left"]["video"]
    data = (video_cache / url.rsplit("/", 1)[1]).read_bytes()
    assert b"avc1" in data and 0 < data.find(b"moov") < data.find(b"mdat")  # H.264, index first (faststart)
    meta = iio.immeta(video_cache / url.rsplit("/", 1)[1], plugin="FFMPEG")
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    full = client.get(url, params={"token": tok})
    assert full.status_code == 200 and full.content == data and full.headers["accept-ranges"] == "bytes"
    part = client.get(url, params={"token": tok}, headers={"Range": "bytes=100-299"})
    assert part.status_code == 206 and part.content == data[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(data)}"
    assert client.get(url).status_code == 401
    assert client.get("/videos/other.mp4", params={"token": tok}).status_code == 404


def test_pages(make_client):
    client, _, _ = make_client()
    for path, marker in (("/", "video-left"), ("/admin", "progress"), ("/static/app.js", "api/answers")):
        r = client.get(path)
        assert r.status_code == 200 and marker in r.text


def test_study_config_and_pool_errors(make_client, study_settings, tmp_path):
    from policy_sampler.study import StudySettings

    base = {"name": "x", "task": "PolicySampler/ObstacleReach-v0", "pool": {"seeds": {"start": 0, "count": 4}},
            "batches": {"mode": "fixed"}}
    assert StudySettings.from_config(base).seeds == [0, 1, 2, 3]
    bad = [({**base, "batches": {"mode": "fixed", "batch_sise": 3}}, "batches.batch_sise"),
           ({**base, "batches": {"mode": "loop"}}, "batches.mode"),
           ({**base, "pool": {"seeds": [1, 1]}}, "repeated"),
           ({k: v for k, v in base.items() if k != "task"}, "task is required")]
    for cfg, message in bad:
        with pytest.raises(ValueError, match=message):
            StudySettings.from_config(cfg)
    make_client()
    with pytest.raises(ValueError, match="pool differs"):  # the same db with another pool
        make_client(annotators=None, db=tmp_path / "study.db", settings=study_settings(seeds=list(range(1, 7))))
    with pytest.raises(ValueError, match="holds study 'test'"):
        make_client(annotators=None, db=tmp_path / "study.db", settings=study_settings(name="other"))
    with pytest.raises(ValueError, match="fixed_batches"):
        make_client(db=tmp_path / "new.db", settings=study_settings(fixed_batches=[[[0, 9]]]))


def test_a_study_on_policy_rollouts(make_client, study_settings, tmp_path, bearer):
    """pool.candidates: the pool is a candidates.npz of rollouts (here scripted ones written in that
    format), replayed for the videos; its queries are served like any other."""
    from policy_sampler.study import StudySettings
    from policy_sampler.study.pool import expert_episodes
    from policy_sampler.data.candidates import write_candidates

    path = write_candidates(expert_episodes("PolicySampler/ObstacleReach-v0", [40, 41, 42, 43]), tmp_path / "candidates.npz")
    cfg = {"name": "policy-test", "task": "PolicySampler/ObstacleReach-v0", "pool": {"candidates": str(path)},
           "video": {"width": 32, "height": 32},
           "batches": {"mode": "fixed", "batch_size": 2, "n_batches": 1, "fixed": [[[0, 1], [2, 3]]]}}
    settings = StudySettings.from_config(cfg)
    assert settings.seeds == [40, 41, 42, 43]
    client, _, tokens = make_client(settings=settings, db=tmp_path / "policy.db")
    query = client.get("/api/next", headers=bearer(tokens[0]))
    assert query.status_code == 200 and query.json()["batch_size"] == 2
    with pytest.raises(ValueError, match="not a file"):
        StudySettings.from_config({**cfg, "pool": {"candidates": str(tmp_path / "missing.npz")}})
    with pytest.raises(ValueError, match="not both"):
        StudySettings.from_config({**cfg, "pool": {"candidates": str(path), "seeds": [1, 2]}})


def test_hostile_bodies_are_json_4xx_and_change_nothing(make_client, bearer, hostile_requests):
    client, admin, (tok, _) = make_client()
    q = client.get("/api/next", headers=bearer(tok)).json()
    for path in ("/api/answers", "/api/skip", "/api/undo"):
        for body, status in hostile_requests(q["query_id"]):
            r = client.post(path, content=body, headers={**bearer(tok), "Content-Type": "application/json"})
            assert r.status_code == status, (path, body[:80], r.text)
            assert isinstance(r.json()["error"], str)
    assert client.get("/api/admin/answers", headers=bearer(admin)).json() == []
    assert client.get("/api/next", headers=bearer(tok)).json()["query_id"] == q["query_id"]


def test_client_ids_compare_in_canonical_form(make_client, bearer):
    client, admin, (tok, _) = make_client()
    q = client.get("/api/next", headers=bearer(tok)).json()
    cid = uuid.uuid4()
    first = _answer(client, tok, q["query_id"], "left", str(cid).upper())
    assert first.status_code == 201 and first.json()["answer"]["client_id"] == str(cid)
    for form in (str(cid), "{%s}" % str(cid).upper(), f"urn:uuid:{cid}", cid.hex):  # the same UUID: a retry
        again = _answer(client, tok, q["query_id"], "left", form)
        assert again.status_code == 200 and again.json()["answer"] == first.json()["answer"], form
    assert len(client.get("/api/admin/answers", headers=bearer(admin)).json()) == 1


def test_head_next_changes_nothing(make_client, bearer, tmp_path):
    client, admin, (tok, _) = make_client()
    for _ in range(3):
        r = client.head("/api/next", headers=bearer(tok))
        assert r.status_code == 200 and r.content == b""
    progress = client.get("/api/admin/progress", headers=bearer(admin)).json()
    assert progress[0]["batches_issued"] == 0  # no batch was made
    q = client.get("/api/next", headers=bearer(tok)).json()
    from policy_sampler.study.db import StudyDB
    db = StudyDB(tmp_path / "study.db")
    shown = db.connection().execute("SELECT first_shown_at FROM query WHERE id = ?", (q["query_id"],)).fetchone()[0]
    assert client.head("/api/next", headers=bearer(tok)).status_code == 200
    assert db.connection().execute("SELECT first_shown_at FROM query WHERE id = ?", (q["query_id"],)).fetchone()[0] == shown
    assert client.head("/api/next", headers=bearer(admin)).status_code == 403


def test_skip_and_undo(make_client, bearer):
    client, admin, (tok, _) = make_client()
    q1 = client.get("/api/next", headers=bearer(tok)).json()
    assert q1["undo"] is None
    assert _answer(client, tok, q1["query_id"], "left").status_code == 201
    q2 = client.get("/api/next", headers=bearer(tok)).json()
    assert q2["undo"] == q1["query_id"] and q2["position"] == 1
    skip = {"query_id": q2["query_id"], "client_id": str(uuid.uuid4())}
    r = client.post("/api/skip", json=skip, headers=bearer(tok))
    assert r.status_code == 201 and r.json()["answer"]["choice"] == "skip" and r.json()["answer"]["preference"] is None
    assert client.post("/api/skip", json=skip, headers=bearer(tok)).status_code == 200  # a retry
    q3 = client.get("/api/next", headers=bearer(tok)).json()
    assert q3["position"] == 2 and q3["undo"] == q2["query_id"]
    bad = client.post("/api/undo", json={"query_id": q1["query_id"], "client_id": str(uuid.uuid4())}, headers=bearer(tok))
    assert bad.status_code == 409 and "last answer" in bad.json()["error"]
    undo = {"query_id": q2["query_id"], "client_id": str(uuid.uuid4())}
    r = client.post("/api/undo", json=undo, headers=bearer(tok))
    assert r.status_code == 201 and r.json()["undone"]["retracted_at"] is not None
    assert client.post("/api/undo", json=undo, headers=bearer(tok)).status_code == 200
    again = client.get("/api/next", headers=bearer(tok)).json()
    assert again["query_id"] == q2["query_id"] and again["undo"] == q1["query_id"]
    assert _answer(client, tok, q2["query_id"], "right").status_code == 201
    answers = client.get("/api/admin/answers", headers=bearer(admin)).json()
    assert [(a["query_id"], a["choice"], a["retracted_at"] is None) for a in answers] == [
        (q1["query_id"], "left", True), (q2["query_id"], "skip", False), (q2["query_id"], "right", True)]
    rows = list(csv.DictReader(io.StringIO(client.get("/api/admin/answers.csv", headers=bearer(admin)).text)))
    assert [r["choice"] for r in rows] == ["left", "skip", "right"] and rows[1]["retracted_at"]
    progress = client.get("/api/admin/progress", headers=bearer(admin)).json()[0]
    assert (progress["answered"], progress["skipped"], progress["undone"]) == (2, 0, 1)


def test_consistency_repeats_and_self_agreement(make_client, study_settings, bearer, tmp_path):
    client, admin, (tok, other) = make_client(settings=study_settings(repeats=1))
    from policy_sampler.study.db import StudyDB
    db = StudyDB(tmp_path / "study.db")
    for token, agree in ((tok, True), (other, False)):
        while (r := client.get("/api/next", headers=bearer(token))).status_code == 200:
            q = r.json()
            row = db.connection().execute("SELECT repeat_of FROM query WHERE id = ?", (q["query_id"],)).fetchone()
            if row[0] is None:
                choice = "left"
            else:  # the repeat shows the original's pair with the sides swapped
                assert q["batch"] == 1 and q["batch_size"] == 3
                choice = "right" if agree else "left"
            assert _answer(client, token, q["query_id"], choice).status_code == 201
    progress = client.get("/api/admin/progress", headers=bearer(admin)).json()
    assert [(p["repeats_answered"], p["self_agreement"], p["done"]) for p in progress] == [(1, 1.0, True), (1, 0.0, True)]
    answers = client.get("/api/admin/answers", headers=bearer(admin)).json()
    repeats = [a for a in answers if a["repeat_of"]]
    assert len(repeats) == 2 and all(a["repeat_of"] in {b["query_id"] for b in answers} for a in repeats)
    for a in repeats:
        original = next(b for b in answers if b["query_id"] == a["repeat_of"])
        assert (a["traj_a"], a["traj_b"]) == (original["traj_a"], original["traj_b"])
        assert a["left_traj"] == original["right_traj"]


def test_security_headers_and_host_check(study_settings, tmp_path, video_cache, bearer):
    from starlette.testclient import TestClient

    from policy_sampler.study import prepare_study
    from policy_sampler.study.app import AppOptions
    from policy_sampler.study.server import LOOPBACK_HOSTS

    app, admin, (tok,) = prepare_study(study_settings(), tmp_path / "h.db", video_cache, 1, tokens_file=tmp_path / "t.json",
                                       options=AppOptions(allowed_hosts=LOOPBACK_HOSTS))
    client = TestClient(app, base_url="http://127.0.0.1:8765")
    q = client.get("/api/next", headers=bearer(tok)).json()
    for r in (client.get("/"), client.get("/admin"), client.get("/static/app.js"), client.get("/api/next"),
              client.get(q["left"]["video"], params={"token": tok}), client.get("/nope")):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["referrer-policy"] == "no-referrer" and r.headers["x-frame-options"] == "DENY"
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST"):
        assert client.get("/api/next", headers={**bearer(tok), "Host": host}).status_code == 200, host
    for host in ("evil.example:8765", "evil.example", "127.0.0.1.evil.example", "", "localhost.:80"):
        r = client.get("/api/next", headers={**bearer(tok), "Host": host})
        assert r.status_code == 400 and r.json()["error"] == "unexpected Host header", host
    assert client.get("/api/admin/progress", headers={**bearer(admin), "Host": "evil.example"}).status_code == 400
    client.close()
