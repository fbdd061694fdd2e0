"""What each annotator is shown next: the server's side of the loop (research note §5.2, "Resumable sessions").

The next query is always read from the database: the annotator's first unanswered query of their
lowest unfinished batch. When a batch is finished, the next one is made by the study's batch
source and stored with its queries (and a random left/right order per query) before its first
query is served. Two sources:

- :class:`FixedBatches`: a fixed list of pre-generated batches, the same for every annotator.
- :class:`ActiveBatches`: the active loop, one :class:`policy_sampler.preference.PreferenceLearner`
  per annotator (their own belief; preferences differ between people). Its next batch is selected
  by DPP after the posterior update on the annotator's answers. The learner is deterministic given
  its seed and the answers added, so after a restart it is rebuilt by replaying the stored batches
  and answers in order; the stored batches, not the replay, decide what is served.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from policy_sampler.study.db import StudyDB

log = logging.getLogger(__name__)

History = list[list[tuple[int, int, int | None]]]


class BatchSource(Protocol):
    method: str
    n_batches: int

    def pairs(self, annotator_id: int, history: History) -> list[tuple[int, int]]:
        """Pool index pairs of the annotator's next batch, given their finished batches ([] = none left)."""


def _check_pairs(pairs: Sequence[Sequence[int]], pool_size: int, where: str) -> list[tuple[int, int]]:
    out = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"{where}: a query is a pair of pool indices, got {list(pair)!r}")
        a, b = (int(v) for v in pair)
        if not (0 <= a < pool_size and 0 <= b < pool_size) or a == b:
            raise ValueError(f"{where}: pair ({a}, {b}) must be two different indices in [0, {pool_size})")
        out.append((a, b))
    if not out:
        raise ValueError(f"{where}: a batch needs at least one pair")
    return out


class FixedBatches:
    """The same pre-generated batches for every annotator, in order."""

    method = "fixed"

    def __init__(self, batches: Sequence[Sequence[Sequence[int]]], pool_size: int):
        if not batches:
            raise ValueError("fixed_batches: give at least one batch")
        self.batches = [_check_pairs(b, pool_size, f"fixed_batches[{k}]") for k, b in enumerate(batches)]
        self.n_batches = len(self.batches)

    @classmethod
    def random(cls, pool_size: int, n_batches: int, batch_size: int, seed: int) -> FixedBatches:
        """``n_batches`` batches of ``batch_size`` distinct random pairs (numpy seed ``seed``)."""
        rng = np.random.default_rng(seed)
        batches = []
        for _ in range(n_batches):
            batch: list[tuple[int, int]] = []
            while len(batch) < batch_size:
                a, b = (int(v) for v in rng.choice(pool_size, size=2, replace=False))
                batch.append((a, b))
            batches.append(batch)
        return cls(batches, pool_size)

    def pairs(self, annotator_id: int, history: History) -> list[tuple[int, int]]:
        return list(self.batches[len(history)])


class ActiveBatches:
    """Per-annotator :class:`PreferenceLearner` batches (``method``, e.g. ``"dpp"``)."""

    def __init__(self, features: np.ndarray, batch_size: int, n_batches: int, method: str = "dpp", seed: int = 0):
        from policy_sampler.preference import PreferenceLearner

        self._factory = lambda: PreferenceLearner(features, batch_size=batch_size, method=method, seed=seed)
        self.pool_size = int(np.asarray(features).shape[0])
        self.method = str(method)
        self.n_batches = int(n_batches)
        self._learners: dict[int, tuple[Any, int]] = {}  # annotator -> (learner, batches drawn from it)

    def pairs(self, annotator_id: int, history: History) -> list[tuple[int, int]]:
        done = len(history)
        learner, drawn = self._learners.pop(annotator_id, (None, -1))
        if learner is not None and drawn == done:
            learner.add_answers(_answered(history[-1]))
        else:  # a restart (or another process) made the stored batches: replay them
            learner = self._factory()
            for k, batch in enumerate(history):
                replayed = [tuple(int(v) for v in p) for p in learner.next_batch()]
                if replayed != [(a, b) for a, b, _ in batch]:
                    log.warning("annotator %d batch %d: the learner now selects %s, the stored batch is %s; "
                                "the stored one stands", annotator_id, k, replayed, [(a, b) for a, b, _ in batch])
                learner.add_answers(_answered(batch))
        chosen = learner.next_batch()
        self._learners[annotator_id] = (learner, done + 1)
        return _check_pairs(chosen, self.pool_size, f"{self.method} batch") if chosen else []


def _answered(batch: list[tuple[int, int, int | None]]) -> list[tuple[int, int, int]]:
    return [(a, b, int(p)) for a, b, p in batch if p is not None]


class Study:
    """Serves each annotator's queries from ``db`` and stores their answers."""

    def __init__(self, db: StudyDB, source: BatchSource, instructions: str = "", video_url: str = "/videos/"):
        self.db = db
        self.source = source
        self.instructions = instructions
        self.videos = {t["index"]: t["video"] for t in db.trajectories()}
        self.video_url = video_url
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, annotator_id: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(annotator_id, threading.Lock())

    def next_query(self, annotator_id: int) -> dict[str, Any] | None:
        """The annotator's current query as the API returns it, making their next batch when the
        last one is finished; None when they have nothing left."""
        query = self.db.current_query(annotator_id)
        if query is None:
            with self._lock(annotator_id):
                query = self.db.current_query(annotator_id)
                history = self.db.history(annotator_id)
                if query is None and len(history) < self.source.n_batches:
                    pairs = self.source.pairs(annotator_id, history)
                    if not pairs:
                        return None
                    self.db.add_batch(annotator_id, len(history), self.source.method,
                                      [(a, b, a if secrets.randbelow(2) else b) for a, b in pairs])
                    query = self.db.current_query(annotator_id)
        if query is None:
            return None
        if query["first_shown_at"] is None:
            self.db.mark_shown(query["query_id"])
        return {
            "query_id": query["query_id"],
            "left": {"video": self.video_url + self.videos[query["left_traj"]]},
            "right": {"video": self.video_url + self.videos[query["right_traj"]]},
            "batch": int(query["batch"]),
            "position": int(query["position"]),
            "batch_size": int(query["batch_size"]),
            "n_batches": self.source.n_batches,
            "instructions": self.instructions,
        }

    def submit(self, annotator_id: int, query_id: str, choice: str, client_id: str) -> tuple[bool, dict[str, Any]]:
        """See :meth:`StudyDB.submit`."""
        return self.db.submit(annotator_id, query_id, choice, client_id)

    def progress(self) -> list[dict[str, Any]]:
        """Per annotator progress with the number of queries planned when the batch sizes are known."""
        rows = self.db.progress()
        for row in rows:
            row["n_batches"] = self.source.n_batches
            row["done"] = row["batches_issued"] >= self.source.n_batches and row["answered"] == row["queries_issued"]
        return rows
