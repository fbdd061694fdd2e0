"""What each annotator is shown next: the server's side of the loop (research note §5.2, "Resumable sessions").

The next query is always read from the database: the annotator's first query without a live
answer, lowest batch first. When their batches are all answered, the next one is planned by the
study's batch source, stored with its queries (and a random left/right order per query) and only
then served. Two sources:

- :class:`FixedBatches`: a fixed list of pre-generated batches, the same for every annotator.
- :class:`ActiveBatches`: the active loop with **one shared reward posterior**: a single
  :class:`policy_sampler.preference.PreferenceLearner` holds every annotator's live answers (skips,
  undone answers and consistency repeats left out), and each annotator's next batch is its DPP
  batch after the posterior update on all of them. The learner is deterministic given its seed and
  the answers added, so after a restart (or an undo, which removes an answer) it is rebuilt from
  the stored answers; stored batches, not the rebuild, decide what is served.

**Consistency repeats**: from an annotator's second batch on, ``repeats`` of their earlier answered
queries are asked again at random places in the batch, with the sides swapped; the admin view
reports how often the repeat agrees with the original (``self_agreement``).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from starlette.concurrency import run_in_threadpool

from policy_sampler.study.db import StudyDB, add_batch, mark_shown

LearnerAnswers = list[tuple[int, int, int]]


class BatchSource(Protocol):
    method: str
    n_batches: int

    def pairs(self, annotator_id: int, number: int, answers: LearnerAnswers) -> list[tuple[int, int]]:
        """Pool index pairs of the annotator's batch ``number`` given every live answer so far ([] = none left)."""


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
        """``n_batches`` batches of ``batch_size`` random pairs (numpy seed ``seed``)."""
        rng = np.random.default_rng(seed)
        batches = [[tuple(int(v) for v in rng.choice(pool_size, size=2, replace=False)) for _ in range(batch_size)]
                   for _ in range(n_batches)]
        return cls(batches, pool_size)

    def pairs(self, annotator_id: int, number: int, answers: LearnerAnswers) -> list[tuple[int, int]]:
        return list(self.batches[number])


class ActiveBatches:
    """DPP batches (``method``) from one :class:`PreferenceLearner` shared by every annotator."""

    def __init__(self, features: np.ndarray, batch_size: int, n_batches: int, method: str = "dpp", seed: int = 0):
        from policy_sampler.preference import PreferenceLearner

        self._factory = lambda: PreferenceLearner(features, batch_size=batch_size, method=method, seed=seed)
        self.pool_size = int(np.asarray(features).shape[0])
        self.method = str(method)
        self.n_batches = int(n_batches)
        self._learner = self._factory()
        self._lock = threading.Lock()

    def pairs(self, annotator_id: int, number: int, answers: LearnerAnswers) -> list[tuple[int, int]]:
        with self._lock:
            known = self._learner.answers
            if known != answers[:len(known)]:  # an undo removed an answer (or a restart): rebuild
                self._learner = self._factory()
                known = []
            self._learner.add_answers(answers[len(known):])
            chosen = self._learner.next_batch()
        return _check_pairs(chosen, self.pool_size, f"{self.method} batch") if chosen else []


class Study:
    """Serves each annotator's queries from ``db``; ``repeats`` consistency repeats per batch."""

    def __init__(self, db: StudyDB, source: BatchSource, instructions: str = "", repeats: int = 0,
                 seed: int = 0, video_url: str = "/videos/"):
        self.db = db
        self.source = source
        self.instructions = instructions
        self.repeats = int(repeats)
        self.seed = int(seed)
        self.videos = {t["index"]: t["video"] for t in db.trajectories()}
        self.video_url = video_url
        self._locks: dict[int, asyncio.Lock] = {}

    def plan_batch(self, annotator_id: int, number: int) -> list[tuple[int, int, int, str | None]]:
        """The queries ``(traj_a, traj_b, left_traj, repeat_of)`` of the annotator's batch ``number``:
        the source's pairs (random sides) with the consistency repeats placed at random."""
        pairs = self.source.pairs(annotator_id, number, self.db.learner_answers())
        if not pairs:
            return []
        queries: list[tuple[int, int, int, str | None]] = [(a, b, a if secrets.randbelow(2) else b, None) for a, b in pairs]
        candidates = self.db.repeat_candidates(annotator_id) if self.repeats else []
        rng = np.random.default_rng([self.seed, annotator_id, number])
        for k in rng.permutation(len(candidates))[:self.repeats]:
            query_id, a, b, left = candidates[int(k)]
            queries.insert(int(rng.integers(0, len(queries) + 1)), (a, b, b if left == a else a, query_id))
        return queries

    async def next_query(self, annotator_id: int) -> dict[str, Any] | None:
        """The annotator's current query as the API returns it, making their next batch when the
        last one is answered; None when they have nothing left."""
        query = self.db.current_query(annotator_id)
        if query is None:
            lock = self._locks.setdefault(annotator_id, asyncio.Lock())
            async with lock:
                query = self.db.current_query(annotator_id)
                number = self.db.batch_count(annotator_id)
                if query is None and number < self.source.n_batches:
                    queries = await run_in_threadpool(self.plan_batch, annotator_id, number)
                    if not queries:
                        return None
                    await self.db.write_async(add_batch, annotator_id, number, self.source.method, queries)
                    query = self.db.current_query(annotator_id)
        if query is None:
            return None
        if query["first_shown_at"] is None:
            self.db.write_later(mark_shown, query["query_id"], time.time())
        return self.view(query, annotator_id)

    def has_next(self, annotator_id: int) -> bool:
        """Whether :meth:`next_query` would return a query (read-only: what ``HEAD /api/next`` says)."""
        return (self.db.current_query(annotator_id) is not None
                or self.db.batch_count(annotator_id) < self.source.n_batches)

    def view(self, query: dict[str, Any], annotator_id: int) -> dict[str, Any]:
        return {
            "query_id": query["query_id"],
            "left": {"video": self.video_url + self.videos[query["left_traj"]]},
            "right": {"video": self.video_url + self.videos[query["right_traj"]]},
            "batch": int(query["batch"]),
            "position": int(query["position"]),
            "batch_size": int(query["batch_size"]),
            "n_batches": self.source.n_batches,
            "instructions": self.instructions,
            "undo": self.db.last_live_answer(annotator_id),
        }

    def progress(self) -> list[dict[str, Any]]:
        """Per annotator progress (see :meth:`StudyDB.progress`) with ``n_batches`` and ``done``."""
        rows = self.db.progress()
        for row in rows:
            row["n_batches"] = self.source.n_batches
            row["done"] = row["batches_issued"] >= self.source.n_batches and row["answered"] == row["queries_issued"]
        return rows
