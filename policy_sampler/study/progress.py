"""Admin views of a study: the answers as a JSON list or CSV and the full JSON export (research note
§5.2, "Export"), each streamed a page of answers at a time from a worker thread (one query per page;
the JSON rendered by SQLite itself, outside Python's GIL), so a large study's export neither holds
the event loop nor the writer."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from typing import Any

from policy_sampler.serialization import jsonable
from policy_sampler.study.db import StudyDB

ANSWER_FIELDS = ("answer_id", "annotator", "query_id", "batch", "position", "traj_a", "traj_b", "left_traj",
                 "right_traj", "choice", "preference", "client_id", "repeat_of", "shown_at", "answered_at",
                 "latency_ms", "retracted_at")


def answers_json(db: StudyDB, prefix: bytes = b"[", suffix: bytes = b"]") -> Iterator[bytes]:
    """Every stored answer as a JSON list (between ``prefix`` and ``suffix``), a page per chunk."""
    yield prefix
    sep = b""
    for page in db.answer_json_pages():
        yield sep + page.encode()
        sep = b","
    yield suffix


def answers_csv(db: StudyDB) -> Iterator[bytes]:
    """Every stored answer as CSV rows (``ANSWER_FIELDS``), a page per chunk. ``preference`` is the
    learner's label for (traj_a, traj_b): 1 = traj_a preferred, -1 = traj_b, 0 = about equal, empty
    for a skip; ``retracted_at`` is set on answers undone; ``repeat_of`` on consistency repeats."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=ANSWER_FIELDS, lineterminator="\n")
    writer.writeheader()
    for page in db.answer_pages():
        writer.writerows({k: row.get(k) for k in ANSWER_FIELDS} for row in page)
        yield out.getvalue().encode()
        out.seek(0)
        out.truncate()
    if out.tell():
        yield out.getvalue().encode()


def export_head(db: StudyDB) -> dict[str, Any]:
    """The export without its answers: the stored config, the feature normalization constants and
    the pool (content hashes, episode info); with every answer after it, enough to replay the study
    through the learner."""
    config, normalizer = db.get_meta("study_config"), db.get_meta("feature_normalizer")
    return jsonable({
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "schema_version": db.get_meta("schema_version"),
        "study": json.loads(config) if config else None,
        "feature_normalizer": json.loads(normalizer) if normalizer else None,
        "trajectories": db.trajectories(),
    })
