"""Admin views of a study: answers as CSV and the full JSON export (research note §5.2, "Export")."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

from policy_sampler.serialization import jsonable
from policy_sampler.study.db import StudyDB

ANSWER_FIELDS = ("answer_id", "annotator", "query_id", "batch", "position", "traj_a", "traj_b", "left_traj",
                 "right_traj", "choice", "preference", "client_id", "shown_at", "answered_at", "latency_ms")


def answers_csv(answers: list[dict[str, Any]]) -> str:
    """One CSV row per answer; ``preference`` is the learner's label for (traj_a, traj_b):
    1 = traj_a preferred, -1 = traj_b, 0 = about equal."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=ANSWER_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in answers:
        writer.writerow({k: row.get(k) for k in ANSWER_FIELDS})
    return out.getvalue()


def export(db: StudyDB) -> dict[str, Any]:
    """Everything needed to replay the study through the learner: its stored config, the feature
    normalization constants, the pool (content hashes, episode info), every answer, and when."""
    config, normalizer = db.get_meta("study_config"), db.get_meta("feature_normalizer")
    return jsonable({
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "schema_version": db.get_meta("schema_version"),
        "study": json.loads(config) if config else None,
        "feature_normalizer": json.loads(normalizer) if normalizer else None,
        "trajectories": db.trajectories(),
        "answers": db.answers(),
    })
