"""The SQLite guarantees: private files from the first byte, WAL + synchronous=FULL, append-only
answers and retractions, one live answer per query and one submission per client_id, rejections
that change nothing, undo that keeps the record, and group commit: concurrent writes share a
transaction and none is acknowledged before it is on disk."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import uuid

import pytest

from policy_sampler.study.db import AnswerRejected, StudyDB, add_batch, preference_of, record_answer, retract_answer
from policy_sampler.study.tokens import ensure_tokens


def _study_db(tmp_path, annotators=2, pairs=((0, 1, 0), (2, 3, 3), (4, 5, 4))) -> tuple[StudyDB, list[int]]:
    db = StudyDB(tmp_path / "s.db")
    db.ensure_trajectories([{"index": i, "content_hash": f"h{i}", "video": f"v{i}.mp4", "info": {}} for i in range(6)])
    ensure_tokens(db, tmp_path / "tokens.json", annotators)
    ids = [i for i, _ in db.token_hashes()[1]]
    for a in ids:
        db.write(add_batch, a, 0, "fixed", [(x, y, left, None) for x, y, left in pairs])
    return db, ids


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_database_files_are_private_from_creation(tmp_path):
    old = os.umask(0)  # the most permissive umask: only the mode given at creation protects the files
    try:
        db = StudyDB(tmp_path / "s.db")
        assert _mode(tmp_path / "s.db") == 0o600
        db.set_meta("x", "1")  # the first write creates the WAL and its index
        for suffix in ("-wal", "-shm"):
            assert (tmp_path / f"s.db{suffix}").exists() and _mode(tmp_path / f"s.db{suffix}") == 0o600
    finally:
        os.umask(old)
    readable = tmp_path / "readable.db"
    readable.touch(mode=0o644)
    os.chmod(readable, 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        StudyDB(readable)


def test_pragmas_and_append_only(tmp_path):
    db, (a, _) = _study_db(tmp_path)
    conn = db.connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.writer.call(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2  # the writer's too
    q = db.current_query(a)["query_id"]
    db.write(record_answer, a, q, "left", str(uuid.uuid4()))
    db.write(retract_answer, a, q, str(uuid.uuid4()))
    raw = sqlite3.connect(db.path)
    for sql in ("UPDATE answer SET choice = 'right'", "DELETE FROM answer", "UPDATE retraction SET retracted_at = 0",
                "DELETE FROM retraction"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute(sql)
    raw.close()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # reads cannot write
        conn.execute("DELETE FROM meta")
    assert [r["choice"] for r in db.answers()] == ["left"]


def test_left_right_order_maps_back_to_the_same_pair_label():
    # pair (a=7, b=9): "7 is better" is +1 whichever side 7 was shown on
    assert preference_of("left", left_traj=7, traj_a=7) == 1
    assert preference_of("right", left_traj=9, traj_a=7) == 1
    assert preference_of("right", left_traj=7, traj_a=7) == -1
    assert preference_of("left", left_traj=9, traj_a=7) == -1
    assert preference_of("equal", left_traj=9, traj_a=7) == 0
    assert preference_of("skip", left_traj=9, traj_a=7) is None


def test_rejections_change_nothing(tmp_path):
    db, (a, b) = _study_db(tmp_path)
    first, cid = db.current_query(a)["query_id"], str(uuid.uuid4())
    assert db.write(record_answer, a, first, "right", cid)[0] is True
    second = db.current_query(a)["query_id"]
    later = db.connection().execute("SELECT q.id FROM query q JOIN batch b ON q.batch_id = b.id "
                                    "WHERE b.annotator_id = ? ORDER BY q.position DESC", (a,)).fetchone()[0]
    before = db.answers()
    cases = [
        (record_answer, (b, first, "left", str(uuid.uuid4())), 404),   # another annotator's query
        (record_answer, (a, "nope", "left", str(uuid.uuid4())), 404),  # no such query
        (record_answer, (a, first, "left", str(uuid.uuid4())), 409),   # answered already, another client_id
        (record_answer, (a, second, "left", cid), 409),                # client_id reused for another query
        (record_answer, (a, first, "left", cid), 409),                 # same client_id, different choice
        (record_answer, (a, later, "left", str(uuid.uuid4())), 409),   # not issued yet (position 2 before 1)
        (record_answer, (a, second, "maybe", str(uuid.uuid4())), 422),
        (retract_answer, (a, second, str(uuid.uuid4())), 409),         # undo of a query not answered last
        (retract_answer, (b, first, str(uuid.uuid4())), 409),          # b has nothing to undo
        (retract_answer, (a, first, cid), 409),                        # an answer's client_id reused for undo
    ]
    for fn, args, status in cases:
        with pytest.raises(AnswerRejected) as err:
            db.write(fn, *args)
        assert err.value.status == status, (args, str(err.value))
    assert db.answers() == before
    created, row = db.write(record_answer, a, first, "right", cid)  # the retry: stored once, same row back
    assert created is False and row == before[0]


def test_undo_keeps_the_record_and_serves_the_query_again(tmp_path):
    db, (a, _) = _study_db(tmp_path)
    q1 = db.current_query(a)["query_id"]
    db.write(record_answer, a, q1, "left", str(uuid.uuid4()))
    q2 = db.current_query(a)["query_id"]
    db.write(record_answer, a, q2, "skip", str(uuid.uuid4()))
    assert db.learner_answers() == [(0, 1, 1)]  # the skip carries no preference
    undo = str(uuid.uuid4())
    created, row = db.write(retract_answer, a, q2, undo)
    assert created and row["query_id"] == q2 and row["retracted_at"] is not None
    assert db.write(retract_answer, a, q2, undo) == (False, row)  # a retried undo
    assert db.current_query(a)["query_id"] == q2 and db.last_live_answer(a) == q1
    created, again = db.write(record_answer, a, q2, "right", str(uuid.uuid4()))  # answered anew
    assert created and again["answer_id"] != row["answer_id"]
    db.write(retract_answer, a, q2, str(uuid.uuid4()))
    db.write(retract_answer, a, q1, str(uuid.uuid4()))  # undo again: the answer before
    assert db.learner_answers() == [] and db.current_query(a)["query_id"] == q1
    answers = db.answers()
    assert [(r["query_id"], r["choice"], r["retracted_at"] is not None) for r in answers] == [
        (q1, "left", True), (q2, "skip", True), (q2, "right", True)]  # every record stays
    progress = db.progress()[0]
    assert (progress["answered"], progress["undone"], progress["skipped"]) == (0, 3, 0)
    pages = list(db.answer_json_pages(page_size=2))  # the export's pages, rendered by SQLite
    assert len(pages) == 2 and json.loads("[" + ",".join(pages) + "]") == answers


def test_group_commit_shares_transactions_and_acknowledges_only_what_is_on_disk(tmp_path):
    db, (a, _) = _study_db(tmp_path)
    db.write(lambda c: c.execute("CREATE TABLE probe (k INTEGER PRIMARY KEY)"))
    commits_before = db.writer.commits
    seen: list[bool] = []

    def on_disk(k: int, future) -> None:  # runs when the caller is told: another connection must see it
        with sqlite3.connect(db.path) as other:
            seen.append(other.execute("SELECT 1 FROM probe WHERE k = ?", (k,)).fetchone() is not None)

    futures = []
    for k in range(200):
        future = db.writer.submit(lambda c, k=k: c.execute("INSERT INTO probe VALUES (?)", (k,)))
        future.add_done_callback(lambda f, k=k: on_disk(k, f))
        futures.append(future)
    bad = db.writer.submit(lambda c: c.execute("INSERT INTO probe VALUES (0)"))  # fails alone
    for f in futures:
        f.result()
    with pytest.raises(sqlite3.IntegrityError):
        bad.result()
    assert len(seen) == 200 and all(seen)
    assert db.writer.commits - commits_before <= 20  # 200 writes in a few shared transactions
    assert db.connection().execute("SELECT COUNT(*) FROM probe").fetchone()[0] == 200


def test_concurrent_writers_store_each_answer_exactly_once(tmp_path):
    pairs = [(i % 6, (i + 1) % 6, i % 6) for i in range(12)]
    db, ids = _study_db(tmp_path, annotators=4, pairs=pairs)
    statuses: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def annotate(annotator: int) -> None:
        while (q := db.current_query(annotator)) is not None:
            cid = str(uuid.uuid4())
            results = []
            def submit() -> None:
                results.append(db.write(record_answer, annotator, q["query_id"], "equal", cid))

            racers = [threading.Thread(target=submit) for _ in range(2)]  # a double click: the same client_id twice at once
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
