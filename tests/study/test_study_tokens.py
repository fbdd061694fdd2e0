"""Secrets at rest: the tokens file is created 0600 (never chmod'ed after), the database holds only
hashes (no plaintext token in the db, -wal or -shm), a restart keeps the same tokens, a lost tokens
file is refused with the way out, and a rotation issues new tokens and keeps every answer."""

from __future__ import annotations

import json
import os
import stat
import uuid

import pytest

from policy_sampler.study.db import StudyDB, record_answer
from policy_sampler.study.tokens import TokenCheck, Tokens, ensure_tokens, token_hash


@pytest.fixture
def no_chmod(monkeypatch):
    """Fail on any chmod: a secret file's mode must be right when it is created."""
    def refuse(*args, **kwargs):
        raise AssertionError("chmod called on a secret file: create it with the right mode instead")
    for name in ("chmod", "fchmod", "lchmod"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)


def test_tokens_file_is_created_private_and_the_db_keeps_only_hashes(tmp_path, no_chmod):
    old = os.umask(0)
    try:
        db = StudyDB(tmp_path / "s.db")
        tokens = ensure_tokens(db, tmp_path / "tokens.json", 3)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "tokens.json").st_mode) == 0o600
    assert json.loads((tmp_path / "tokens.json").read_text()) == {"admin": tokens.admin, "annotators": list(tokens.annotators)}
    assert len({tokens.admin, *tokens.annotators}) == 4 and all(len(t) >= 43 for t in tokens.annotators)
    db.writer.close()  # the WAL still holds the transactions (no checkpoint at close by another connection)
    files = [p for p in tmp_path.iterdir() if p.name.startswith("s.db")]
    assert {p.name for p in files} >= {"s.db", "s.db-wal"}
    for path in files:
        data = path.read_bytes()
        for token in (tokens.admin, *tokens.annotators):
            assert token.encode() not in data, f"a plaintext token in {path.name}"
    admin_hash, hashes = StudyDB(tmp_path / "s.db").token_hashes()
    assert admin_hash == token_hash(tokens.admin) and [h for _, h in hashes] == [token_hash(t) for t in tokens.annotators]


def test_restart_same_tokens_lost_file_refused_rotation_keeps_answers(tmp_path):
    db = StudyDB(tmp_path / "s.db")
    db.ensure_trajectories([{"index": i, "content_hash": f"h{i}", "video": f"v{i}.mp4", "info": {}} for i in range(2)])
    path = tmp_path / "tokens.json"
    first = ensure_tokens(db, path, 2)
    assert ensure_tokens(db, path, None) == first  # a restart: the same tokens
    more = ensure_tokens(db, path, 3)  # one more annotator
    assert more.admin == first.admin and more.annotators[:2] == first.annotators and len(more.annotators) == 3
    assert Tokens.read(path) == more
    with pytest.raises(ValueError, match="annotators=1"):
        ensure_tokens(db, path, 1)
    from policy_sampler.study.db import add_batch
    db.write(add_batch, 1, 0, "fixed", [(0, 1, 0, None)])
    db.write(record_answer, 1, db.current_query(1)["query_id"], "left", str(uuid.uuid4()))
    path.unlink()
    with pytest.raises(ValueError, match="rotate_tokens=true"):
        ensure_tokens(db, path, None)
    Tokens("forged", first.annotators).write(path)
    with pytest.raises(ValueError, match="does not hold this study's tokens"):
        ensure_tokens(db, path, None)
    rotated = ensure_tokens(db, path, None, rotate=True)
    assert len(rotated.annotators) == 3 and not {rotated.admin, *rotated.annotators} & {more.admin, *more.annotators}
    check = TokenCheck(*db.token_hashes())
    assert [check.annotator(t) for t in rotated.annotators] == [1, 2, 3]
    assert check.annotator(more.annotators[0]) is None and not check.is_admin(more.admin) and check.is_admin(rotated.admin)
    assert ensure_tokens(db, path, None) == rotated  # and a normal restart after it
    assert [a["annotator"] for a in db.answers()] == [1]  # the answer kept its annotator
