"""The active loop with one shared reward posterior: every annotator's next DPP batch comes from one
PreferenceLearner holding every annotator's live answers, is stored when made, and is unchanged by
a restart (the learner is rebuilt from the stored answers)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from policy_sampler.study.db import StudyDB
from policy_sampler.study.pool import build_pool, expert_episodes

preference = pytest.importorskip("policy_sampler.preference", reason="the preference library is not importable")


def _batch_pairs(db: StudyDB, annotator: int, number: int) -> list[tuple[int, int]]:
    rows = db.connection().execute(
        "SELECT q.traj_a, q.traj_b FROM query q JOIN batch b ON q.batch_id = b.id WHERE b.annotator_id = ? "
        "AND b.number = ? AND q.repeat_of IS NULL ORDER BY q.position", (annotator, number)).fetchall()
    return [(int(a), int(b)) for a, b in rows]


def _answer_batch(client, token, bearer, choice) -> None:
    first = client.get("/api/next", headers=bearer(token)).json()
    q = first
    while q["batch"] == first["batch"]:
        body = {"query_id": q["query_id"], "choice": choice, "client_id": str(uuid.uuid4())}
        assert client.post("/api/answers", json=body, headers=bearer(token)).status_code == 201
        q = client.get("/api/next", headers=bearer(token)).json()  # the last one makes the next batch


def test_one_posterior_learned_from_every_annotator_drives_the_next_batches(
        make_client, study_settings, tmp_path, video_cache, bearer):
    settings = study_settings(mode="active", method="dpp", fixed_batches=None, batch_size=3, n_batches=3,
                              seeds=list(range(8)))
    client, admin, (tok1, tok2) = make_client(settings=settings)
    db = StudyDB(tmp_path / "study.db")
    pool = build_pool(settings.task, expert_episodes(settings.task, settings.seeds), video_cache, 32, 32)
    features, _ = pool.features()

    def learner(answers):
        fresh = preference.PreferenceLearner(features, batch_size=3, method="dpp", seed=0)
        fresh.add_answers(answers)
        return fresh.next_batch()

    _answer_batch(client, tok1, bearer, "right")
    ann1 = db.learner_answers()
    assert len(ann1) == 3 and _batch_pairs(db, 1, 0) == learner([])
    assert _batch_pairs(db, 1, 1) == learner(ann1)
    _answer_batch(client, tok2, bearer, "left")
    everyone = db.learner_answers()
    assert everyone[:3] == ann1 and len(everyone) == 6
    shared = _batch_pairs(db, 2, 1)
    assert shared == learner(everyone)  # annotator 2's batch used annotator 1's answers too
    assert shared != learner(everyone[3:])  # ... which a learner of their own answers would not give
    current = client.get("/api/next", headers=bearer(tok1)).json()
    again, _, _ = make_client(annotators=None, db=tmp_path / "study.db", settings=settings)
    assert again.get("/api/next", headers=bearer(tok1)).json() == current  # a restart serves the stored batch
    _answer_batch(again, tok1, bearer, "equal")  # the rebuilt learner: every live answer so far
    assert _batch_pairs(db, 1, 2) == learner(db.learner_answers())
    export = again.get("/api/admin/export", headers=bearer(admin)).json()
    assert np.asarray(export["feature_normalizer"]["mean"]).shape == (features.shape[1],)
