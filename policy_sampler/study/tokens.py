"""The study's tokens: issued once, kept in plaintext only in the tokens file, hashed in the database.

Each token is ``secrets.token_urlsafe(32)`` (256 random bits); the database stores its SHA-256 (a
fast hash is enough for a high-entropy token: nobody can search 2**256 guesses) and the server
compares hashes with :func:`hmac.compare_digest`. The tokens file ``{"admin": ..., "annotators":
[...]}`` is the only place the plaintext lives; it is written atomically and created with mode 0600
(``os.open``: no moment exists where others could read it).

- A new database: fresh tokens, written to the file, then their hashes committed.
- A restart: the file must hold tokens whose hashes are the stored ones (the same tokens as
  before); it is written again unchanged. More annotators get new tokens, added to the file first.
- The file lost (or not this study's): the start is refused, and ``rotate=True``
  (``rotate_tokens=true`` on the command line) issues new tokens for the admin and every annotator
  (same annotator ids, every answer kept) and writes them to the file. The old tokens stop working.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from policy_sampler.serialization import atomic_path
from policy_sampler.study.db import StudyDB, store_token_hashes


def token_hash(token: str) -> str:
    """SHA-256 of the token's UTF-8 bytes, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically through a temporary file created with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


@dataclass(frozen=True)
class Tokens:
    """The plaintext tokens: the admin's and the annotators' (annotator ``k + 1`` has ``annotators[k]``)."""

    admin: str
    annotators: tuple[str, ...]

    def write(self, path: Path) -> None:
        write_private(path, json.dumps({"admin": self.admin, "annotators": list(self.annotators)}, indent=1).encode())

    @classmethod
    def read(cls, path: Path) -> Tokens | None:
        """The tokens in ``path``, or None when it is missing or not a tokens file."""
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if (not isinstance(doc, dict) or not isinstance(doc.get("admin"), str)
                or not isinstance(doc.get("annotators"), list) or not all(isinstance(t, str) for t in doc["annotators"])):
            return None
        return cls(doc["admin"], tuple(doc["annotators"]))


class TokenCheck:
    """Which annotator (or the admin) a presented token belongs to, by constant-time hash comparison."""

    def __init__(self, admin_hash: str, annotator_hashes: list[tuple[int, str]]):
        self._admin = bytes.fromhex(admin_hash)
        self._annotators = [(annotator_id, bytes.fromhex(h)) for annotator_id, h in annotator_hashes]

    def is_admin(self, token: str) -> bool:
        return hmac.compare_digest(bytes.fromhex(token_hash(token)), self._admin)

    def annotator(self, token: str) -> int | None:
        """The annotator id of ``token``, or None; compares against every stored hash (no early exit)."""
        digest = bytes.fromhex(token_hash(token))
        found = None
        for annotator_id, stored in self._annotators:
            if hmac.compare_digest(digest, stored):
                found = annotator_id
        return found


def ensure_tokens(db: StudyDB, tokens_file: Path, annotators: int | None, rotate: bool = False) -> Tokens:
    """The study's tokens, issued, checked against the database, or rotated (see the module doc);
    ``tokens_file`` holds them afterwards. ``ValueError`` when they cannot be recovered."""
    admin_hash, stored = db.token_hashes()
    have = len(stored)
    if annotators is not None and annotators < have:
        raise ValueError(f"annotators={annotators} but this database already has {have} annotators; "
                         f"pass annotators={have} or more (or leave it out)")
    want = max(have, annotators or 0)
    if admin_hash is None:  # a new database
        tokens = Tokens(new_token(), tuple(new_token() for _ in range(want)))
        tokens.write(tokens_file)
        db.write(store_token_hashes, token_hash(tokens.admin), [token_hash(t) for t in tokens.annotators])
        return tokens
    if rotate:
        tokens = Tokens(new_token(), tuple(new_token() for _ in range(want)))
        tokens.write(tokens_file)
        hashes = [token_hash(t) for t in tokens.annotators]
        db.write(store_token_hashes, token_hash(tokens.admin), hashes[:have], True)
        if want > have:
            db.write(store_token_hashes, token_hash(tokens.admin), hashes[have:])
        return tokens
    known = Tokens.read(tokens_file)
    if (known is None or token_hash(known.admin) != admin_hash or len(known.annotators) < have
            or [token_hash(t) for t in known.annotators[:have]] != [h for _, h in stored]):
        problem = "is missing" if not tokens_file.exists() else "does not hold this study's tokens"
        raise ValueError(f"tokens_file {tokens_file} {problem}; the database {db.path} keeps only hashes of the tokens. "
                         "Point tokens_file at the study's tokens file, or pass rotate_tokens=true to issue new "
                         "tokens for the admin and every annotator (answers are kept; the old links stop working)")
    tokens = Tokens(known.admin, tuple(known.annotators[:have]) + tuple(new_token() for _ in range(want - have)))
    tokens.write(tokens_file)
    if want > have:
        db.write(store_token_hashes, admin_hash, [token_hash(t) for t in tokens.annotators[have:]])
    return tokens
