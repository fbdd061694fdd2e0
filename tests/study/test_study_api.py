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
    from policy_sampler.sweep.candidates import write_candidates

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
