"""The study's ASGI app (Starlette): the annotator page, its JSON API, the admin views and the videos.

API (every call carries ``Authorization: Bearer <token>``; errors are JSON ``{"error": ...}``):

- ``GET /api/next`` -> 200 the annotator's current query (with ``undo``: the query whose answer
  undo would retract, or null), or 204 when they have nothing left. ``HEAD`` says the same and
  changes nothing.
- ``POST /api/answers`` ``{"query_id", "choice": "left"|"right"|"equal", "client_id": "<uuid>"}``
  -> 201 stored, 200 when that ``client_id`` was stored before (the stored answer comes back).
- ``POST /api/skip`` ``{"query_id", "client_id"}``: the query is done without a preference (201 / 200).
- ``POST /api/undo`` ``{"query_id", "client_id"}``: retract the annotator's last answer, which
  must be the one to ``query_id``; it stays stored, marked retracted, and its query is served again.
- Bad requests change nothing: 400 malformed JSON (bad UTF-8, too deep), 408 body too slow, 413 body
  over ``max_body_bytes``, 422 wrong fields or types, 404 not this annotator's query, 409 conflicts.
- Admin token only: ``GET /api/admin/answers`` (JSON list), ``/api/admin/answers.csv``,
  ``/api/admin/progress``, ``/api/admin/export`` (config, pool and answers); the lists are
  streamed a page at a time from a worker thread, so they never hold the event loop or the writer.
- Pages: ``/?token=<annotator token>`` and ``/admin?token=<admin token>``; videos at
  ``/videos/<name>?token=<any token>`` with HTTP Range support (seeking).

Every response carries ``X-Content-Type-Options: nosniff``, a ``Content-Security-Policy`` that
allows only this origin's scripts, styles and media (no inline code, no framing),
``Referrer-Policy: no-referrer`` and ``X-Frame-Options: DENY``. With ``allowed_hosts`` set (the
launcher sets the loopback names when it binds to loopback), a request whose ``Host`` is another
name is refused (400): a page of another site that rebinds its DNS name to 127.0.0.1 cannot read
the API.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from policy_sampler.study.db import CHOICES, SKIP, AnswerRejected, record_answer, retract_answer
from policy_sampler.study.progress import answers_csv, answers_json, export_head
from policy_sampler.study.session import Study
from policy_sampler.study.tokens import TokenCheck

STATIC_DIR = Path(__file__).with_name("static")
NO_STORE = {"Cache-Control": "no-store"}
QUERY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", CSP.encode()),
                    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]


@dataclass(frozen=True)
class AppOptions:
    """Request limits and the accepted ``Host`` names (None: any)."""

    max_body_bytes: int = 16 * 1024
    body_timeout_s: float = 10.0
    allowed_hosts: tuple[str, ...] | None = None


class ASCIIJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: any string (even a lone surrogate) renders."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class _Rejected(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    headers = {**NO_STORE, **(headers or {})}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return ASCIIJSONResponse({"error": message}, status_code=status, headers=headers)


def _host_name(host: str) -> str:
    """The name of a ``Host`` header without its port (``[::1]:80`` -> ``::1``)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class SecurityHeaders:
    """Pure ASGI middleware: refuse unexpected ``Host`` names, add the security headers."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...] | None):
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        if self.allowed is not None:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if _host_name(host).lower() not in self.allowed:
                await _error(400, "unexpected Host header")(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)


async def _read_json(request: Request, options: AppOptions) -> Any:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > options.max_body_bytes):
        raise _Rejected(413, f"request body over {options.max_body_bytes} bytes")

    async def collect() -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > options.max_body_bytes:
                raise _Rejected(413, f"request body over {options.max_body_bytes} bytes")
        return bytes(body)

    try:
        body = await asyncio.wait_for(collect(), options.body_timeout_s)
    except TimeoutError:
        raise _Rejected(408, f"the request body did not arrive within {options.body_timeout_s} s",
                        {"Connection": "close"}) from None
    try:
        return json.loads(body)
    except RecursionError:
        raise _Rejected(400, "malformed JSON body: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, bad UTF-8, over-long integers
        raise _Rejected(400, f"malformed JSON body: {type(exc).__name__}") from None


def _fields(payload: Any, keys: tuple[str, ...]) -> dict[str, str]:
    """``payload`` as exactly ``keys``, each an ASCII string; ``client_id`` canonical, ``query_id`` a query id."""
    if not isinstance(payload, dict):
        raise _Rejected(422, f"the body must be a JSON object with keys {list(keys)}")
    if set(payload) != set(keys):
        missing, extra = sorted(set(keys) - set(payload)), sorted(set(payload) - set(keys))
        raise _Rejected(422, f"the keys must be exactly {list(keys)} (missing {missing}, unknown {ascii(extra)[:200]})")
    for key in keys:
        value = payload[key]
        if not isinstance(value, str):
            raise _Rejected(422, f"{key} must be a string, got {type(value).__name__}")
        if not value.isascii():
            raise _Rejected(422, f"{key} must be ASCII, got {ascii(value)[:80]}")
    out = dict(payload)
    if not QUERY_ID.fullmatch(out["query_id"]):
        raise _Rejected(422, f"query_id must be 1-64 letters, digits, '-' or '_', got {out['query_id'][:80]!r}")
    try:
        if len(out["client_id"]) > 45:
            raise ValueError
        out["client_id"] = str(uuid.UUID(out["client_id"]))  # canonical: an upper-case retry is a retry
    except ValueError:
        raise _Rejected(422, f"client_id must be a UUID, got {out['client_id'][:80]!r}") from None
    if "choice" in out and out["choice"] not in CHOICES:
        raise _Rejected(422, f"choice must be one of {list(CHOICES)}, got {out['choice'][:80]!r}")
    return out


def create_app(study: Study, tokens: TokenCheck, video_dir: str | Path, options: AppOptions | None = None) -> ASGIApp:
    """The app serving ``study`` to the holders of ``tokens``; ``video_dir`` holds the pool's MP4s."""
    options = options or AppOptions()
    video_dir = Path(video_dir)
    videos = set(study.videos.values())
    db = study.db

    def bearer(request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Rejected(401, "missing 'Authorization: Bearer <token>' header")
        return token.strip()

    def annotator(request: Request) -> int:
        token = bearer(request)
        found = tokens.annotator(token)
        if found is None:
            if tokens.is_admin(token):
                raise _Rejected(403, "the admin token cannot answer queries")
            raise _Rejected(401, "unknown token")
        return found

    def admin(request: Request) -> None:
        token = bearer(request)
        if not tokens.is_admin(token):
            if tokens.annotator(token) is not None:
                raise _Rejected(403, "admin token required")
            raise _Rejected(401, "unknown token")

    async def next_query(request: Request) -> Response:
        annotator_id = annotator(request)
        if request.method == "HEAD":  # says whether GET has a query, and changes nothing
            return Response(status_code=200 if study.has_next(annotator_id) else 204, headers=NO_STORE)
        query = await study.next_query(annotator_id)
        if query is None:
            return Response(status_code=204, headers=NO_STORE)
        return ASCIIJSONResponse(query, headers=NO_STORE)

    async def stored(key: str, fn: Any, *args: Any) -> Response:
        try:
            created, row = await db.write_async(fn, *args)
        except AnswerRejected as exc:
            raise _Rejected(exc.status, str(exc)) from None
        return ASCIIJSONResponse({"stored": created, key: row}, status_code=201 if created else 200, headers=NO_STORE)

    async def post_answer(request: Request) -> Response:
        annotator_id = annotator(request)
        body = _fields(await _read_json(request, options), ("query_id", "choice", "client_id"))
        return await stored("answer", record_answer, annotator_id, body["query_id"], body["choice"], body["client_id"])

    async def post_skip(request: Request) -> Response:
        annotator_id = annotator(request)
        body = _fields(await _read_json(request, options), ("query_id", "client_id"))
        return await stored("answer", record_answer, annotator_id, body["query_id"], SKIP, body["client_id"])

    async def post_undo(request: Request) -> Response:
        annotator_id = annotator(request)
        body = _fields(await _read_json(request, options), ("query_id", "client_id"))
        return await stored("undone", retract_answer, annotator_id, body["query_id"], body["client_id"])

    async def admin_answers(request: Request) -> Response:
        admin(request)
        return StreamingResponse(answers_json(db), media_type="application/json", headers=NO_STORE)

    async def admin_answers_csv(request: Request) -> Response:
        admin(request)
        return StreamingResponse(answers_csv(db), media_type="text/csv", headers={
            **NO_STORE, "Content-Disposition": 'attachment; filename="answers.csv"'})

    async def admin_progress(request: Request) -> Response:
        admin(request)
        return ASCIIJSONResponse(await run_in_threadpool(study.progress), headers=NO_STORE)

    async def admin_export(request: Request) -> Response:
        admin(request)
        head = await run_in_threadpool(export_head, db)
        prefix = json.dumps(head, separators=(",", ":"))[:-1].encode() + b',"answers":['
        return StreamingResponse(answers_json(db, prefix, b"]}"), media_type="application/json", headers={
            **NO_STORE, "Content-Disposition": 'attachment; filename="study_export.json"'})

    async def video(request: Request) -> Response:
        token = request.query_params.get("token") or bearer(request)
        if tokens.annotator(token) is None and not tokens.is_admin(token):
            raise _Rejected(401, "unknown token")
        name = request.path_params["name"]
        if name not in videos or not (video_dir / name).is_file():
            raise _Rejected(404, f"no video {name[:80]!r}")
        return FileResponse(video_dir / name, media_type="video/mp4")

    async def page(request: Request) -> Response:
        name = "admin.html" if request.url.path.rstrip("/") == "/admin" else "index.html"
        return FileResponse(STATIC_DIR / name, media_type="text/html", headers=NO_STORE)

    async def rejected(request: Request, exc: Exception) -> Response:
        return _error(exc.status, str(exc), exc.headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error(500, f"internal error: {type(exc).__name__}")

    routes = [
        Route("/", page),
        Route("/admin", page),
        Route("/api/next", next_query, methods=["GET", "HEAD"]),
        Route("/api/answers", post_answer, methods=["POST"]),
        Route("/api/skip", post_skip, methods=["POST"]),
        Route("/api/undo", post_undo, methods=["POST"]),
        Route("/api/admin/answers", admin_answers, methods=["GET"]),
        Route("/api/admin/answers.csv", admin_answers_csv, methods=["GET"]),
        Route("/api/admin/progress", admin_progress, methods=["GET"]),
        Route("/api/admin/export", admin_export, methods=["GET"]),
        Route("/videos/{name}", video, methods=["GET", "HEAD"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={
        _Rejected: rejected, HTTPException: http_error, Exception: server_error})
    return SecurityHeaders(app, options.allowed_hosts)
