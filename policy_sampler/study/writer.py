"""Group commit: one thread owns the study's write connection and commits many callers' writes at once.

Every write is a function ``fn(conn) -> result`` handed to :meth:`GroupCommitWriter.submit`. The
writer thread takes every write that is waiting, runs them in one ``BEGIN IMMEDIATE`` transaction,
each inside its own ``SAVEPOINT`` (a write that raises is rolled back alone and its caller gets the
exception), and commits once: with ``synchronous=FULL`` that is one fsync of the WAL for the whole
group. Only after the ``COMMIT`` returns does any caller's future resolve, so an acknowledged write
is on disk. While one group is being fsync'd the next one gathers, which is how concurrent
annotators share fsyncs (the technique of database group commit) without waiting for a timer.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_GROUP = 512


class GroupCommitWriter:
    """The single writer of one SQLite database; ``connect()`` opens its connection (in its thread)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str = "study-writer"):
        self._connect = connect
        self._queue: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], Future] | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.commits = 0  # transactions committed (each one fsync), for the load test's figures
        self.writes = 0   # writes committed in them
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> Future:
        """Queue ``fn`` to run in the next group; the future resolves after its group is committed."""
        future: Future = Future()
        if not self._thread.is_alive():
            future.set_exception(RuntimeError("the study database writer is closed"))
            return future
        self._queue.put((fn, future))
        return future

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``submit(fn)`` and wait for its result (or exception)."""
        return self.submit(fn).result()

    def close(self) -> None:
        """Commit what is queued, then stop the thread and close its connection."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # reported by __init__
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                item = self._queue.get()
                stop = item is None
                group = [] if stop else [item]
                while len(group) < MAX_GROUP:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    group.append(more)
                if group:
                    self._commit(conn, group)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, group: list[tuple[Callable, Future]]) -> None:
        outcomes: list[tuple[Future, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, future in group:
                conn.execute("SAVEPOINT one_write")
                try:
                    result = fn(conn)
                except Exception as exc:  # this write only: the others of the group stand
                    conn.execute("ROLLBACK TO one_write")
                    outcomes.append((future, None, exc))
                else:
                    outcomes.append((future, result, None))
                conn.execute("RELEASE one_write")
            conn.execute("COMMIT")
        except BaseException as exc:  # the transaction failed (I/O error, disk full): nothing of it is stored
            log.error("study database commit failed: %s", exc)
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the connection is broken: SQLite rolls back when it is reopened
            for _, future in group:
                future.set_exception(exc)
            return
        self.commits += 1
        self.writes += len(group)
        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
