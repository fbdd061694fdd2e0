"""The active loop: each annotator's batches come from their own PreferenceLearner (DPP), updated
with their answers, stored when made, and unchanged by a restart (the learner is rebuilt by replay)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from policy_sampler.study.db import StudyDB
from policy_sampler.study.pool import build_pool, expert_episodes

preference = pytest.importorskip("policy_sampler.preference", reason="the preference library is not importable")


def test_batches_come_from_each_annotators_learner_and_survive_a_restart(
        make_client, study_settings, tmp_path, video_cache, bearer):
    settings = study_settings(mode="active", method="dpp", fixed_batches=None, batch_size=3, n_batches=2,
                              seeds=list(range(8)))
    client, admin, (tok1, tok2) = make_client(settings=settings)
    choices = {tok1: "equal", tok2: "left"}
    for tok in (tok1, tok2):  # the first batch, then the first query of the second
        for _ in range(4):
            q = client.get("/api/next", headers=bearer(tok)).json()
            body = {"query_id": q["query_id"], "choice": choices[tok], "client_id": str(uuid.uuid4())}
            if (q["batch"], q["position"]) != (1, 0):
                assert client.post("/api/answers", json=body, headers=bearer(tok)).status_code == 201
    db = StudyDB(tmp_path / "study.db")
    pool = build_pool(settings.task, expert_episodes(settings.task, settings.seeds), video_cache, 32, 32)
    features, _ = pool.features()
    for annotator in (1, 2):  # replay each annotator's answers through a fresh learner
        history = db.history(annotator)
        learner = preference.PreferenceLearner(features, batch_size=3, method="dpp", seed=0)
        assert [(a, b) for a, b, _ in history[0]] == learner.next_batch()
        learner.add_answers([(a, b, p) for a, b, p in history[0]])
        assert [(a, b) for a, b, _ in history[1]] == learner.next_batch()
    current = client.get("/api/next", headers=bearer(tok1)).json()
    again, _, _ = make_client(annotators=None, db=tmp_path / "study.db", settings=settings)
    assert again.get("/api/next", headers=bearer(tok1)).json() == current
    export = again.get("/api/admin/export", headers=bearer(admin)).json()
    assert np.asarray(export["feature_normalizer"]["mean"]).shape == (features.shape[1],)
