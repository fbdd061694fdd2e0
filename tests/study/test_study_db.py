"""The SQLite guarantees: WAL + synchronous=FULL, append-only answers, one answer per client_id and
per query, rejections that change nothing, and concurrent writers that never lose or double an answer."""

from __future__ import annotations

import sqlite3
import threading
import uuid

import pytest

from policy_sampler.study.db import AnswerRejected, StudyDB, preference_of


def _study_db(tmp_path, annotators=2, pairs=((0, 1, 0), (2, 3, 3), (4, 5, 4))) -> tuple[StudyDB, list[int]]:
    db = StudyDB(tmp_path / "s.db")
    db.ensure_trajectories([{"index": i, "content_hash": f"h{i}", "video": f"v{i}.mp4", "info": {}} for i in range(6)])
    db.ensure_tokens(annotators)
    ids = sorted(db.annotator_ids().values())
    for a in ids:
        db.add_batch(a, 0, "fixed", list(pairs))
    return db, ids


def test_pragmas_and_append_only(tmp_path):
    db, (a, _) = _study_db(tmp_path)
    conn = db.connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    q = db.current_query(a)["query_id"]
    db.submit(a, q, "left", str(uuid.uuid4()))
    for sql in ("UPDATE answer SET choice = 'right'", "DELETE FROM answer"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    assert [r["choice"] for r in db.answers()] == ["left"]


def test_left_right_order_maps_back_to_the_same_pair_label():
    # pair (a=7, b=9): "7 is better" is +1 whichever side 7 was shown on
    assert preference_of("left", left_traj=7, traj_a=7) == 1
    assert preference_of("right", left_traj=9, traj_a=7) == 1
    assert preference_of("right", left_traj=7, traj_a=7) == -1
    assert preference_of("left", left_traj=9, traj_a=7) == -1
    assert preference_of("equal", left_traj=9, traj_a=7) == 0


def test_rejections_change_nothing(tmp_path):
    db, (a, b) = _study_db(tmp_path)
    first, cid = db.current_query(a)["query_id"], str(uuid.uuid4())
    assert db.submit(a, first, "right", cid)[0] is True
    second = db.current_query(a)["query_id"]
    later = db.connection().execute("SELECT q.id FROM query q JOIN batch b ON q.batch_id = b.id "
                                    "WHERE b.annotator_id = ? ORDER BY q.position DESC", (a,)).fetchone()[0]
    before = db.answers()
    cases = [
        (b, first, "left", str(uuid.uuid4()), 404),          # another annotator's query
        (a, "nope", "left", str(uuid.uuid4()), 404),         # no such query
        (a, first, "left", str(uuid.uuid4()), 409),          # answered already, another client_id
        (a, second, "left", cid, 409),                       # client_id reused for another query
        (a, first, "left", cid, 409),                        # same client_id, different choice
        (a, later, "left", str(uuid.uuid4()), 409),          # not issued yet (position 2 before 1)
        (a, second, "maybe", str(uuid.uuid4()), 422),
    ]
    for annotator, query, choice, client, status in cases:
        with pytest.raises(AnswerRejected) as err:
            db.submit(annotator, query, choice, client)
        assert err.value.status == status, (query, choice, str(err.value))
    assert db.answers() == before
    created, row = db.submit(a, first, "right", cid)  # the retry: stored once, same row back
    assert created is False and row == before[0]


def test_concurrent_writers_store_each_answer_exactly_once(tmp_path):
    pairs = [(i % 6, (i + 1) % 6, i % 6) for i in range(12)]
    db, ids = _study_db(tmp_path, annotators=4, pairs=pairs)
    statuses: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def annotate(annotator: int) -> None:
        local = StudyDB(db.path)  # own connection per thread, as the server's threadpool does
        while (q := local.current_query(annotator)) is not None:
            cid = str(uuid.uuid4())
            results = []
            racers = [threading.Thread(target=lambda: results.append(local.submit(annotator, q["query_id"], "equal", cid)))
                      for _ in range(2)]  # a double click: the same client_id twice at once
            for t in racers:
                t.start()
            for t in racers:
                t.join()
            with lock:
                statuses.extend((annotator, created) for created, _ in results)
            assert len({row["answer_id"] for _, row in results}) == 1

    threads = [threading.Thread(target=annotate, args=(a,)) for a in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    answers = db.answers()
    assert len(answers) == 4 * 12
    assert len({r["client_id"] for r in answers}) == len({r["query_id"] for r in answers}) == 48
    assert sum(created for _, created in statuses) == 48 and len(statuses) == 96
    assert all(db.current_query(a) is None for a in ids)
