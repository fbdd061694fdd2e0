"""The study's single file of state: SQLite in WAL mode with ``synchronous=FULL`` (research note §5.2).

Every answer is committed in its own ``BEGIN IMMEDIATE`` transaction before the caller is told it is
stored. The ``answer`` table is append-only (triggers refuse UPDATE and DELETE), ``client_id`` is
UNIQUE so a retried or double-clicked submission is stored once, and a query takes one answer.
Batches are stored with their queries (and which trajectory is shown on the left) when they are
created, so what an annotator is shown never changes after a restart. Each thread gets its own
connection; concurrent writers wait on SQLite's lock (``busy_timeout``) instead of failing.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHOICES = ("left", "right", "equal")
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS annotator (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS trajectory (
    id INTEGER PRIMARY KEY,
    content_hash TEXT NOT NULL UNIQUE,
    video TEXT NOT NULL,
    info_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batch (
    id INTEGER PRIMARY KEY,
    annotator_id INTEGER NOT NULL REFERENCES annotator(id),
    number INTEGER NOT NULL,
    method TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (annotator_id, number)
);
CREATE TABLE IF NOT EXISTS query (
    id TEXT PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batch(id),
    position INTEGER NOT NULL,
    traj_a INTEGER NOT NULL REFERENCES trajectory(id),
    traj_b INTEGER NOT NULL REFERENCES trajectory(id),
    left_traj INTEGER NOT NULL REFERENCES trajectory(id),
    first_shown_at REAL,
    UNIQUE (batch_id, position),
    CHECK (left_traj IN (traj_a, traj_b))
);
CREATE TABLE IF NOT EXISTS answer (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    query_id TEXT NOT NULL UNIQUE REFERENCES query(id),
    annotator_id INTEGER NOT NULL REFERENCES annotator(id),
    client_id TEXT NOT NULL UNIQUE,
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'equal')),
    left_traj INTEGER NOT NULL,
    right_traj INTEGER NOT NULL,
    preference INTEGER NOT NULL CHECK (preference IN (-1, 0, 1)),
    shown_at REAL,
    answered_at REAL NOT NULL,
    latency_ms REAL
);
CREATE TRIGGER IF NOT EXISTS answer_no_update BEFORE UPDATE ON answer
    BEGIN SELECT RAISE(ABORT, 'answers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS answer_no_delete BEFORE DELETE ON answer
    BEGIN SELECT RAISE(ABORT, 'answers are append-only'); END;
"""

_QUERY_COLUMNS = """q.id AS query_id, q.position, q.traj_a, q.traj_b, q.left_traj,
    CASE WHEN q.left_traj = q.traj_a THEN q.traj_b ELSE q.traj_a END AS right_traj,
    q.first_shown_at, b.number AS batch, b.annotator_id, b.method"""


class AnswerRejected(ValueError):
    """A submission that changes nothing; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def preference_of(choice: str, left_traj: int, traj_a: int) -> int:
    """The answer as the learner's label for the pair (a, b): 1 = a preferred, -1 = b, 0 = equal."""
    if choice == "equal":
        return 0
    left_is_a = left_traj == traj_a
    return 1 if (choice == "left") == left_is_a else -1


class StudyDB:
    """Thread-safe access to one study database file (created with its schema if new)."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        self.busy_timeout_s = float(busy_timeout_s)
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self.connection()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        if self.get_meta("schema_version") is None:
            self.set_meta("schema_version", SCHEMA_VERSION)

    # ------------------------------------------------------------------ connections
    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode: transactions are explicit)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error): one writer at a time."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # ------------------------------------------------------------------ meta and annotators
    def get_meta(self, key: str) -> str | None:
        row = self.connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as tx:
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def ensure_tokens(self, annotators: int | None) -> tuple[str, list[str]]:
        """The admin token and the annotators' tokens, created (``secrets.token_urlsafe``) on first use.
        ``annotators`` larger than the stored count adds annotators; smaller is an error; None keeps them."""
        with self.transaction() as tx:
            row = tx.execute("SELECT value FROM meta WHERE key = 'admin_token'").fetchone()
            admin = row["value"] if row else secrets.token_urlsafe(24)
            if row is None:
                tx.execute("INSERT INTO meta (key, value) VALUES ('admin_token', ?)", (admin,))
            have = tx.execute("SELECT COUNT(*) FROM annotator").fetchone()[0]
            if annotators is not None and annotators < have:
                raise ValueError(f"annotators={annotators} but this database already has {have} annotators; "
                                 f"pass annotators={have} or more (or leave it out)")
            for _ in range(max(0, (annotators or 0) - have)):
                tx.execute("INSERT INTO annotator (token, created_at) VALUES (?, ?)",
                           (secrets.token_urlsafe(24), time.time()))
            tokens = [r["token"] for r in tx.execute("SELECT token FROM annotator ORDER BY id")]
        return admin, tokens

    def annotator_ids(self) -> dict[str, int]:
        """``{token: annotator id}``."""
        rows = self.connection().execute("SELECT id, token FROM annotator ORDER BY id")
        return {r["token"]: int(r["id"]) for r in rows}

    # ------------------------------------------------------------------ trajectories
    def ensure_trajectories(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store the pool (``index``, ``content_hash``, ``video``, ``info``) on first start; on a later
        start the pool must be the same one, else ``ValueError`` (stored queries refer to it)."""
        with self.transaction() as tx:
            stored = {int(r["id"]): r["content_hash"] for r in tx.execute("SELECT id, content_hash FROM trajectory")}
            if stored:
                given = {int(r["index"]): r["content_hash"] for r in rows}
                if given != stored:
                    raise ValueError(f"the trajectory pool differs from the one stored in {self.path} "
                                     f"({len(given)} given, {len(stored)} stored, content hashes differ); "
                                     "use a new db for a new pool")
                return
            tx.executemany(
                "INSERT INTO trajectory (id, content_hash, video, info_json) VALUES (?, ?, ?, ?)",
                [(int(r["index"]), r["content_hash"], r["video"], json.dumps(r["info"], sort_keys=True))
                 for r in rows])

    def trajectories(self) -> list[dict[str, Any]]:
        rows = self.connection().execute("SELECT * FROM trajectory ORDER BY id").fetchall()
        return [{"index": r["id"], "content_hash": r["content_hash"], "video": r["video"],
                 "info": json.loads(r["info_json"])} for r in rows]

    # ------------------------------------------------------------------ batches and queries
    def batch_count(self, annotator_id: int) -> int:
        row = self.connection().execute("SELECT COUNT(*) FROM batch WHERE annotator_id = ?", (annotator_id,))
        return int(row.fetchone()[0])

    def history(self, annotator_id: int) -> list[list[tuple[int, int, int | None]]]:
        """Per stored batch, in order: ``(traj_a, traj_b, preference or None if unanswered)``."""
        rows = self.connection().execute(
            """SELECT b.number, q.traj_a, q.traj_b, a.preference FROM query q JOIN batch b ON q.batch_id = b.id
               LEFT JOIN answer a ON a.query_id = q.id WHERE b.annotator_id = ? ORDER BY b.number, q.position""",
            (annotator_id,)).fetchall()
        batches: dict[int, list[tuple[int, int, int | None]]] = {}
        for r in rows:
            pref = None if r["preference"] is None else int(r["preference"])
            batches.setdefault(int(r["number"]), []).append((int(r["traj_a"]), int(r["traj_b"]), pref))
        return [batches[k] for k in sorted(batches)]

    def add_batch(self, annotator_id: int, number: int, method: str,
                  pairs: Sequence[tuple[int, int, int]]) -> bool:
        """Store batch ``number`` with its queries ``(traj_a, traj_b, left_traj)``. False (nothing
        written) when that batch already exists, e.g. made by a concurrent request."""
        with self.transaction() as tx:
            if tx.execute("SELECT 1 FROM batch WHERE annotator_id = ? AND number = ?",
                          (annotator_id, number)).fetchone():
                return False
            cur = tx.execute("INSERT INTO batch (annotator_id, number, method, created_at) VALUES (?, ?, ?, ?)",
                             (annotator_id, number, method, time.time()))
            tx.executemany(
                "INSERT INTO query (id, batch_id, position, traj_a, traj_b, left_traj) VALUES (?, ?, ?, ?, ?, ?)",
                [(secrets.token_urlsafe(12), cur.lastrowid, pos, int(a), int(b), int(left))
                 for pos, (a, b, left) in enumerate(pairs)])
        return True

    def current_query(self, annotator_id: int, conn: sqlite3.Connection | None = None) -> dict[str, Any] | None:
        """The annotator's first unanswered query (lowest batch, then position), or None."""
        conn = conn or self.connection()
        row = conn.execute(
            f"""SELECT {_QUERY_COLUMNS}, (SELECT COUNT(*) FROM query q2 WHERE q2.batch_id = b.id) AS batch_size
                FROM query q JOIN batch b ON q.batch_id = b.id LEFT JOIN answer a ON a.query_id = q.id
                WHERE b.annotator_id = ? AND a.id IS NULL ORDER BY b.number, q.position LIMIT 1""",
            (annotator_id,)).fetchone()
        return None if row is None else dict(row)

    def mark_shown(self, query_id: str) -> None:
        """Record when a query was first served (its answer's latency is measured from then)."""
        with self.transaction() as tx:
            tx.execute("UPDATE query SET first_shown_at = ? WHERE id = ? AND first_shown_at IS NULL",
                       (time.time(), query_id))

    # ------------------------------------------------------------------ answers
    def submit(self, annotator_id: int, query_id: str, choice: str, client_id: str) -> tuple[bool, dict[str, Any]]:
        """Store one answer; returns ``(created, stored row)``: ``created`` is False when this
        ``client_id`` was stored before with the same query and choice (the stored row comes back).
        Raises :class:`AnswerRejected` (404 not this annotator's query, 409 conflict) writing nothing."""
        if choice not in CHOICES:
            raise AnswerRejected(422, f"choice must be one of {list(CHOICES)}, got {choice!r}")
        with self.transaction() as tx:
            old = tx.execute("SELECT * FROM answer WHERE client_id = ?", (client_id,)).fetchone()
            if old is not None:
                if (old["annotator_id"], old["query_id"], old["choice"]) == (annotator_id, query_id, choice):
                    return False, self._answer_row(tx, int(old["id"]))
                raise AnswerRejected(409, f"client_id {client_id!r} was already used for another answer")
            q = tx.execute(
                f"SELECT {_QUERY_COLUMNS} FROM query q JOIN batch b ON q.batch_id = b.id WHERE q.id = ?",
                (query_id,)).fetchone()
            if q is None or int(q["annotator_id"]) != annotator_id:
                raise AnswerRejected(404, f"no query {query_id!r} for this annotator")
            if tx.execute("SELECT 1 FROM answer WHERE query_id = ?", (query_id,)).fetchone():
                raise AnswerRejected(409, f"query {query_id!r} is already answered (with another client_id)")
            current = self.current_query(annotator_id, tx)
            if current is None or current["query_id"] != query_id:
                raise AnswerRejected(409, f"query {query_id!r} is not issued yet: answer the current query first")
            now = time.time()
            shown = q["first_shown_at"]
            cur = tx.execute(
                """INSERT INTO answer (query_id, annotator_id, client_id, choice, left_traj, right_traj,
                   preference, shown_at, answered_at, latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (query_id, annotator_id, client_id, choice, q["left_traj"], q["right_traj"],
                 preference_of(choice, q["left_traj"], q["traj_a"]), shown, now,
                 None if shown is None else 1000.0 * (now - shown)))
            return True, self._answer_row(tx, int(cur.lastrowid))

    @staticmethod
    def _answer_row(conn: sqlite3.Connection, answer_id: int) -> dict[str, Any]:
        row = conn.execute(
            """SELECT a.id AS answer_id, a.annotator_id AS annotator, a.query_id, b.number AS batch, q.position,
                      q.traj_a, q.traj_b, a.left_traj, a.right_traj, a.choice, a.preference, a.client_id,
                      a.shown_at, a.answered_at, a.latency_ms
               FROM answer a JOIN query q ON a.query_id = q.id JOIN batch b ON q.batch_id = b.id
               WHERE a.id = ?""", (answer_id,)).fetchone()
        return dict(row)

    def answers(self) -> list[dict[str, Any]]:
        """Every stored answer, in the order stored."""
        conn = self.connection()
        ids = [int(r[0]) for r in conn.execute("SELECT id FROM answer ORDER BY id")]
        return [self._answer_row(conn, i) for i in ids]

    def progress(self) -> list[dict[str, Any]]:
        """Per annotator: batches issued, queries issued and answered, time of the last answer."""
        rows = self.connection().execute(
            """SELECT an.id AS annotator,
                      (SELECT COUNT(*) FROM batch b WHERE b.annotator_id = an.id) AS batches_issued,
                      (SELECT COUNT(*) FROM query q JOIN batch b ON q.batch_id = b.id
                        WHERE b.annotator_id = an.id) AS queries_issued,
                      (SELECT COUNT(*) FROM answer a WHERE a.annotator_id = an.id) AS answered,
                      (SELECT MAX(answered_at) FROM answer a WHERE a.annotator_id = an.id) AS last_answer_at
               FROM annotator an ORDER BY an.id""").fetchall()
        return [dict(r) for r in rows]
