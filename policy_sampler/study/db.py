"""The study's single file of state: SQLite in WAL mode with ``synchronous=FULL`` (research note §5.2).

- **Private.** The database file is created empty with mode 0600 (``os.open``, so no umask widens
  it) before SQLite opens it; SQLite gives its ``-wal`` and ``-shm`` files the database's mode. An
  existing database that others can read is refused. Tokens are never stored: only their SHA-256
  (see :mod:`policy_sampler.study.tokens`).
- **Durable, fast.** Every write goes through one :class:`GroupCommitWriter` thread: concurrent
  answers share one transaction and one fsync, and nobody is told "stored" before the commit.
  Reads use one connection per thread (``query_only``), which WAL lets run beside the writer.
- **Append-only.** Answers and retractions (undo) are never updated or deleted (triggers refuse
  it). An answer is *live* until a retraction names it; a query is done when it has a live answer
  (a skip is an answer without a preference). ``client_id`` is UNIQUE across answers and retractions,
  so a retried or double-clicked submission is stored once.
- **Resumable.** Batches are stored with their queries (and which trajectory is shown on the left)
  when they are made, so what an annotator is shown never changes after a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, TypeVar

from policy_sampler.study.writer import GroupCommitWriter

CHOICES = ("left", "right", "equal")
SKIP = "skip"
SCHEMA_VERSION = "2"
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS annotator (
    id INTEGER PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
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
    repeat_of TEXT REFERENCES query(id),
    first_shown_at REAL,
    UNIQUE (batch_id, position),
    CHECK (left_traj IN (traj_a, traj_b))
);
CREATE INDEX IF NOT EXISTS query_repeat_of ON query(repeat_of);
CREATE TABLE IF NOT EXISTS answer (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    query_id TEXT NOT NULL REFERENCES query(id),
    annotator_id INTEGER NOT NULL REFERENCES annotator(id),
    client_id TEXT NOT NULL UNIQUE,
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'equal', 'skip')),
    left_traj INTEGER NOT NULL,
    right_traj INTEGER NOT NULL,
    preference INTEGER CHECK ((choice = 'skip') = (preference IS NULL) AND preference IN (-1, 0, 1)),
    shown_at REAL,
    answered_at REAL NOT NULL,
    latency_ms REAL
);
CREATE INDEX IF NOT EXISTS answer_query ON answer(query_id);
CREATE INDEX IF NOT EXISTS answer_annotator ON answer(annotator_id, id);
CREATE TABLE IF NOT EXISTS retraction (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    answer_id INTEGER NOT NULL UNIQUE REFERENCES answer(id),
    annotator_id INTEGER NOT NULL REFERENCES annotator(id),
    client_id TEXT NOT NULL UNIQUE,
    retracted_at REAL NOT NULL
);
CREATE TRIGGER IF NOT EXISTS answer_no_update BEFORE UPDATE ON answer
    BEGIN SELECT RAISE(ABORT, 'answers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS answer_no_delete BEFORE DELETE ON answer
    BEGIN SELECT RAISE(ABORT, 'answers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS retraction_no_update BEFORE UPDATE ON retraction
    BEGIN SELECT RAISE(ABORT, 'retractions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS retraction_no_delete BEFORE DELETE ON retraction
    BEGIN SELECT RAISE(ABORT, 'retractions are append-only'); END;
"""

_LIVE = "NOT EXISTS (SELECT 1 FROM retraction r WHERE r.answer_id = a.id)"
_QUERY_COLUMNS = """q.id AS query_id, q.position, q.traj_a, q.traj_b, q.left_traj, q.repeat_of,
    CASE WHEN q.left_traj = q.traj_a THEN q.traj_b ELSE q.traj_a END AS right_traj,
    q.first_shown_at, b.number AS batch, b.annotator_id, b.method"""
_ANSWER_COLUMNS = (("answer_id", "a.id"), ("annotator", "a.annotator_id"), ("query_id", "a.query_id"), ("batch", "b.number"),
                   ("position", "q.position"), ("traj_a", "q.traj_a"), ("traj_b", "q.traj_b"),
                   ("left_traj", "a.left_traj"), ("right_traj", "a.right_traj"), ("choice", "a.choice"),
                   ("preference", "a.preference"), ("client_id", "a.client_id"), ("repeat_of", "q.repeat_of"),
                   ("shown_at", "a.shown_at"), ("answered_at", "a.answered_at"), ("latency_ms", "a.latency_ms"),
                   ("retracted_at", "r.retracted_at"))
_ANSWER_FROM = """FROM answer a JOIN query q ON a.query_id = q.id JOIN batch b ON q.batch_id = b.id
    LEFT JOIN retraction r ON r.answer_id = a.id"""
_REAL_COLUMNS = ("shown_at", "answered_at", "latency_ms", "retracted_at")  # json_object keeps 15 digits: give 17
_ANSWER_JSON_FIELDS = ", ".join(
    f"'{name}', CASE WHEN {column} IS NULL THEN NULL ELSE json(printf('%!.17g', {column})) END" if name in _REAL_COLUMNS
    else f"'{name}', {column}" for name, column in _ANSWER_COLUMNS)
_ANSWER_SELECT = "SELECT " + ", ".join(f"{column} AS {name}" for name, column in _ANSWER_COLUMNS) + " " + _ANSWER_FROM


class AnswerRejected(ValueError):
    """A submission that changes nothing; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def preference_of(choice: str, left_traj: int, traj_a: int) -> int | None:
    """The answer as the learner's label for the pair (a, b): 1 = a preferred, -1 = b, 0 = equal,
    None for a skip."""
    if choice == SKIP:
        return None
    if choice == "equal":
        return 0
    left_is_a = left_traj == traj_a
    return 1 if (choice == "left") == left_is_a else -1


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists (True when created). An existing file
    that its group or others can access is refused with ``ValueError``: it may hold secrets."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise ValueError(f"{path} has mode {mode:o}: its group or others can read it; "
                             f"restrict it (chmod 600 {path}) before starting the study") from None
        return False
    os.close(fd)
    return True


class StudyDB:
    """Access to one study database file (created private with its schema if new)."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        self.busy_timeout_s = float(busy_timeout_s)
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if suffix == "" or side.exists():
                create_private_file(side)
        conn = self._open()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            version = (conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                       if _has_meta(conn) else None)
            if version is not None and version[0] != SCHEMA_VERSION:
                raise ValueError(f"{self.path} has study schema version {version[0]}, this server needs "
                                 f"{SCHEMA_VERSION} (version 1 stored tokens in plaintext): start a new database")
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        finally:
            conn.close()
        self.writer = GroupCommitWriter(self._open)

    # ------------------------------------------------------------------ connections
    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's read-only connection (``PRAGMA query_only``); writes go through :attr:`writer`."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the writer's next group and return its result once committed."""
        return self.writer.call(lambda conn: fn(conn, *args))

    async def write_async(self, fn: Callable[..., T], *args: Any) -> T:
        """:meth:`write` for the event loop: awaits the commit without blocking the loop."""
        return await asyncio.wrap_future(self.writer.submit(lambda conn: fn(conn, *args)))

    def write_later(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(conn, *args)`` for the next group without waiting (a write nobody is told of)."""
        self.writer.submit(lambda conn: fn(conn, *args))

    def close(self) -> None:
        """Commit what is queued and stop the writer; close this thread's read connection."""
        self.writer.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------------ meta and annotators
    def get_meta(self, key: str) -> str | None:
        row = self.connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        self.write(_set_meta, key, value)

    def token_hashes(self) -> tuple[str | None, list[tuple[int, str]]]:
        """``(admin token hash or None, [(annotator id, token hash), ...] by id)``."""
        rows = self.connection().execute("SELECT id, token_sha256 FROM annotator ORDER BY id").fetchall()
        return self.get_meta("admin_token_sha256"), [(int(r["id"]), str(r["token_sha256"])) for r in rows]

    # ------------------------------------------------------------------ trajectories
    def ensure_trajectories(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store the pool (``index``, ``content_hash``, ``video``, ``info``) on first start; on a later
        start the pool must be the same one, else ``ValueError`` (stored queries refer to it)."""
        self.write(_ensure_trajectories, list(rows), str(self.path))

    def trajectories(self) -> list[dict[str, Any]]:
        rows = self.connection().execute("SELECT * FROM trajectory ORDER BY id").fetchall()
        return [{"index": r["id"], "content_hash": r["content_hash"], "video": r["video"],
                 "info": json.loads(r["info_json"])} for r in rows]

    # ------------------------------------------------------------------ queries
    def batch_count(self, annotator_id: int) -> int:
        row = self.connection().execute("SELECT COUNT(*) FROM batch WHERE annotator_id = ?", (annotator_id,))
        return int(row.fetchone()[0])

    def current_query(self, annotator_id: int) -> dict[str, Any] | None:
        """The annotator's first query without a live answer (lowest batch, then position), or None."""
        return current_query(self.connection(), annotator_id)

    def last_live_answer(self, annotator_id: int) -> str | None:
        """The query id of the annotator's latest live answer (what undo would retract), or None."""
        row = self.connection().execute(
            f"SELECT a.query_id FROM answer a WHERE a.annotator_id = ? AND {_LIVE} ORDER BY a.id DESC LIMIT 1",
            (annotator_id,)).fetchone()
        return None if row is None else str(row[0])

    def learner_answers(self) -> list[tuple[int, int, int]]:
        """Every annotator's live preferences ``(traj_a, traj_b, preference)`` in the order stored:
        no skips, no consistency repeats (their originals count once)."""
        rows = self.connection().execute(
            f"""SELECT q.traj_a, q.traj_b, a.preference FROM answer a JOIN query q ON a.query_id = q.id
                WHERE a.preference IS NOT NULL AND q.repeat_of IS NULL AND {_LIVE} ORDER BY a.id""").fetchall()
        return [(int(r[0]), int(r[1]), int(r[2])) for r in rows]

    def repeat_candidates(self, annotator_id: int) -> list[tuple[str, int, int, int]]:
        """The annotator's live preference answers on original queries not repeated yet:
        ``(query_id, traj_a, traj_b, left_traj)`` in the order answered."""
        rows = self.connection().execute(
            f"""SELECT q.id, q.traj_a, q.traj_b, q.left_traj FROM answer a JOIN query q ON a.query_id = q.id
                WHERE a.annotator_id = ? AND a.preference IS NOT NULL AND q.repeat_of IS NULL AND {_LIVE}
                  AND NOT EXISTS (SELECT 1 FROM query r WHERE r.repeat_of = q.id) ORDER BY a.id""",
            (annotator_id,)).fetchall()
        return [(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]

    # ------------------------------------------------------------------ answers
    def answer_pages(self, page_size: int = 500) -> Iterator[list[dict[str, Any]]]:
        """Every answer ever stored (live or retracted) in the order stored, ``page_size`` rows at a
        time: one indexed query per page, up to the last answer stored when the iteration began."""
        last = self.connection().execute("SELECT COALESCE(MAX(id), 0) FROM answer").fetchone()[0]
        after = 0
        while after < last:
            rows = self.connection().execute(
                f"{_ANSWER_SELECT} WHERE a.id > ? AND a.id <= ? ORDER BY a.id LIMIT ?", (after, last, page_size)).fetchall()
            if not rows:
                return
            after = int(rows[-1]["answer_id"])
            yield [dict(r) for r in rows]

    def answer_json_pages(self, page_size: int = 500) -> Iterator[str]:
        """:meth:`answer_pages` rendered by SQLite (``json_object``, which runs without Python's GIL):
        each page a string of comma-separated JSON objects."""
        last = self.connection().execute("SELECT COALESCE(MAX(id), 0) FROM answer").fetchone()[0]
        after = 0
        while after < last:
            row = self.connection().execute(
                f"""SELECT group_concat(doc, ','), MAX(id) FROM (SELECT json_object({_ANSWER_JSON_FIELDS}) AS doc, a.id
                    {_ANSWER_FROM} WHERE a.id > ? AND a.id <= ? ORDER BY a.id LIMIT ?)""",
                (after, last, page_size)).fetchone()
            if row[1] is None:
                return
            after = int(row[1])
            yield row[0]

    def answers(self) -> list[dict[str, Any]]:
        """Every stored answer (``retracted_at`` set on undone ones), in the order stored."""
        return [row for page in self.answer_pages() for row in page]

    def progress(self) -> list[dict[str, Any]]:
        """Per annotator: batches and queries issued, live answers (skips among them), answers undone,
        the time of the last answer, and the consistency repeats answered with the share that agree
        with the annotator's own earlier answer (``self_agreement``, None before any)."""
        rows = [dict(r) for r in self.connection().execute(
            f"""SELECT an.id AS annotator,
                      (SELECT COUNT(*) FROM batch b WHERE b.annotator_id = an.id) AS batches_issued,
                      (SELECT COUNT(*) FROM query q JOIN batch b ON q.batch_id = b.id
                        WHERE b.annotator_id = an.id) AS queries_issued,
                      (SELECT COUNT(*) FROM answer a WHERE a.annotator_id = an.id AND {_LIVE}) AS answered,
                      (SELECT COUNT(*) FROM answer a WHERE a.annotator_id = an.id AND a.choice = 'skip'
                        AND {_LIVE}) AS skipped,
                      (SELECT COUNT(*) FROM retraction r WHERE r.annotator_id = an.id) AS undone,
                      (SELECT MAX(answered_at) FROM answer a WHERE a.annotator_id = an.id) AS last_answer_at
               FROM annotator an ORDER BY an.id""")]
        pairs = self.connection().execute(
            f"""SELECT a.annotator_id, a.preference, o.preference FROM answer a JOIN query q ON a.query_id = q.id
                JOIN answer o ON o.query_id = q.repeat_of
                WHERE a.preference IS NOT NULL AND o.preference IS NOT NULL AND {_LIVE}
                  AND NOT EXISTS (SELECT 1 FROM retraction r WHERE r.answer_id = o.id)""").fetchall()
        for row in rows:
            mine = [(int(p[1]), int(p[2])) for p in pairs if int(p[0]) == row["annotator"]]
            row["repeats_answered"] = len(mine)
            row["self_agreement"] = sum(a == b for a, b in mine) / len(mine) if mine else None
        return rows


# ---------------------------------------------------------------------- reads shared with the writer
def _has_meta(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is not None


def current_query(conn: sqlite3.Connection, annotator_id: int) -> dict[str, Any] | None:
    """The annotator's first query without a live answer (lowest batch, then position), or None."""
    row = conn.execute(
        f"""SELECT {_QUERY_COLUMNS}, (SELECT COUNT(*) FROM query q2 WHERE q2.batch_id = b.id) AS batch_size
            FROM query q JOIN batch b ON q.batch_id = b.id
            WHERE b.annotator_id = ? AND NOT EXISTS (SELECT 1 FROM answer a WHERE a.query_id = q.id AND {_LIVE})
            ORDER BY b.number, q.position LIMIT 1""",
        (annotator_id,)).fetchone()
    return None if row is None else dict(row)


def answer_row(conn: sqlite3.Connection, answer_id: int) -> dict[str, Any]:
    return dict(conn.execute(f"{_ANSWER_SELECT} WHERE a.id = ?", (answer_id,)).fetchone())


# ---------------------------------------------------------------------- writes (run by the writer)
def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def store_token_hashes(conn: sqlite3.Connection, admin_hash: str, annotator_hashes: Sequence[str],
                       replace: bool = False) -> None:
    """Set the admin token hash and add annotators with ``annotator_hashes`` (``replace``: give the
    existing annotators, in id order, these hashes instead: a token rotation)."""
    _set_meta(conn, "admin_token_sha256", admin_hash)
    if replace:
        ids = [int(r[0]) for r in conn.execute("SELECT id FROM annotator ORDER BY id")]
        if len(ids) != len(annotator_hashes):
            raise ValueError(f"{len(annotator_hashes)} new token hashes for {len(ids)} annotators")
        conn.execute("UPDATE annotator SET token_sha256 = 'rotating:' || id")
        conn.executemany("UPDATE annotator SET token_sha256 = ? WHERE id = ?", list(zip(annotator_hashes, ids)))
        return
    conn.executemany("INSERT INTO annotator (token_sha256, created_at) VALUES (?, ?)",
                     [(h, time.time()) for h in annotator_hashes])


def _ensure_trajectories(conn: sqlite3.Connection, rows: list[dict[str, Any]], where: str) -> None:
    stored = {int(r["id"]): r["content_hash"] for r in conn.execute("SELECT id, content_hash FROM trajectory")}
    if stored:
        given = {int(r["index"]): r["content_hash"] for r in rows}
        if given != stored:
            raise ValueError(f"the trajectory pool differs from the one stored in {where} "
                             f"({len(given)} given, {len(stored)} stored, content hashes differ); "
                             "use a new db for a new pool")
        return
    conn.executemany("INSERT INTO trajectory (id, content_hash, video, info_json) VALUES (?, ?, ?, ?)",
                     [(int(r["index"]), r["content_hash"], r["video"], json.dumps(r["info"], sort_keys=True))
                      for r in rows])


def add_batch(conn: sqlite3.Connection, annotator_id: int, number: int, method: str,
              queries: Sequence[tuple[int, int, int, str | None]]) -> bool:
    """Store batch ``number`` with its queries ``(traj_a, traj_b, left_traj, repeat_of)``. False
    (nothing written) when that batch exists already."""
    if conn.execute("SELECT 1 FROM batch WHERE annotator_id = ? AND number = ?", (annotator_id, number)).fetchone():
        return False
    cur = conn.execute("INSERT INTO batch (annotator_id, number, method, created_at) VALUES (?, ?, ?, ?)",
                       (annotator_id, number, method, time.time()))
    conn.executemany(
        "INSERT INTO query (id, batch_id, position, traj_a, traj_b, left_traj, repeat_of) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(secrets.token_urlsafe(12), cur.lastrowid, pos, int(a), int(b), int(left), repeat_of)
         for pos, (a, b, left, repeat_of) in enumerate(queries)])
    return True


def mark_shown(conn: sqlite3.Connection, query_id: str, when: float) -> None:
    """Record when a query was first served (its answer's latency is measured from then)."""
    conn.execute("UPDATE query SET first_shown_at = ? WHERE id = ? AND first_shown_at IS NULL", (when, query_id))


def _client_id_owner(conn: sqlite3.Connection, client_id: str) -> tuple[str, sqlite3.Row] | None:
    row = conn.execute("SELECT * FROM answer WHERE client_id = ?", (client_id,)).fetchone()
    if row is not None:
        return "answer", row
    row = conn.execute("SELECT * FROM retraction WHERE client_id = ?", (client_id,)).fetchone()
    return None if row is None else ("retraction", row)


def record_answer(conn: sqlite3.Connection, annotator_id: int, query_id: str, choice: str,
                  client_id: str) -> tuple[bool, dict[str, Any]]:
    """Store one answer (``choice`` left / right / equal, or skip); returns ``(created, stored row)``:
    ``created`` is False when this ``client_id`` was stored before with the same query and choice.
    Raises :class:`AnswerRejected` (404 not this annotator's query, 409 conflict, 422 bad choice)."""
    if choice not in (*CHOICES, SKIP):
        raise AnswerRejected(422, f"choice must be one of {list(CHOICES)}, got {choice!r}")
    owner = _client_id_owner(conn, client_id)
    if owner is not None:
        kind, old = owner
        if kind == "answer" and (old["annotator_id"], old["query_id"], old["choice"]) == (annotator_id, query_id, choice):
            return False, answer_row(conn, int(old["id"]))
        raise AnswerRejected(409, f"client_id {client_id} was already used for another submission")
    q = conn.execute(f"SELECT {_QUERY_COLUMNS} FROM query q JOIN batch b ON q.batch_id = b.id WHERE q.id = ?",
                     (query_id,)).fetchone()
    if q is None or int(q["annotator_id"]) != annotator_id:
        raise AnswerRejected(404, f"no query {query_id!r} for this annotator")
    if conn.execute(f"SELECT 1 FROM answer a WHERE a.query_id = ? AND {_LIVE}", (query_id,)).fetchone():
        raise AnswerRejected(409, f"query {query_id!r} is already answered (with another client_id)")
    current = current_query(conn, annotator_id)
    if current is None or current["query_id"] != query_id:
        raise AnswerRejected(409, f"query {query_id!r} is not issued yet: answer the current query first")
    now = time.time()
    shown = q["first_shown_at"]
    cur = conn.execute(
        """INSERT INTO answer (query_id, annotator_id, client_id, choice, left_traj, right_traj,
           preference, shown_at, answered_at, latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (query_id, annotator_id, client_id, choice, q["left_traj"], q["right_traj"],
         preference_of(choice, q["left_traj"], q["traj_a"]), shown, now,
         None if shown is None else 1000.0 * (now - shown)))
    return True, answer_row(conn, int(cur.lastrowid))


def retract_answer(conn: sqlite3.Connection, annotator_id: int, query_id: str,
                   client_id: str) -> tuple[bool, dict[str, Any]]:
    """Undo: retract the annotator's latest live answer, which must be the one to ``query_id`` (the
    answer stays, marked retracted; its query is served again). Returns ``(created, the answer
    row)``; ``created`` is False for a retry with the same ``client_id``. 409 when ``query_id``'s
    answer is not the latest live one or nothing is left to undo."""
    owner = _client_id_owner(conn, client_id)
    if owner is not None:
        kind, old = owner
        if kind == "retraction" and int(old["annotator_id"]) == annotator_id:
            row = answer_row(conn, int(old["answer_id"]))
            if row["query_id"] == query_id:
                return False, row
        raise AnswerRejected(409, f"client_id {client_id} was already used for another submission")
    last = conn.execute(
        f"SELECT a.id, a.query_id FROM answer a WHERE a.annotator_id = ? AND {_LIVE} ORDER BY a.id DESC LIMIT 1",
        (annotator_id,)).fetchone()
    if last is None:
        raise AnswerRejected(409, "there is no answer to undo")
    if last["query_id"] != query_id:
        raise AnswerRejected(409, f"only the last answer can be undone: that is the one to query {last['query_id']!r}")
    conn.execute("INSERT INTO retraction (answer_id, annotator_id, client_id, retracted_at) VALUES (?, ?, ?, ?)",
                 (int(last["id"]), annotator_id, client_id, time.time()))
    return True, answer_row(conn, int(last["id"]))
