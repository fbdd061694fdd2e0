"""The study's ASGI app (Starlette): the annotator page, its JSON API, the admin views and the videos.

API (every call carries ``Authorization: Bearer <token>``; errors are JSON ``{"error": ...}``):

- ``GET /api/next`` -> 200 the annotator's current query, or 204 when they have nothing left.
- ``POST /api/answers`` ``{"query_id", "choice": "left"|"right"|"equal", "client_id": "<uuid>"}``
  -> 201 stored, 200 when that ``client_id`` was stored before (the stored answer comes back);
  400 malformed JSON, 413 body over ``max_body_bytes``, 422 wrong fields or types, 404 not this
  annotator's query, 409 query answered already or not issued yet / client_id reused.
- Admin token only: ``GET /api/admin/answers`` (JSON list), ``/api/admin/answers.csv``,
  ``/api/admin/progress``, ``/api/admin/export`` (config, pool and answers).
- Pages: ``/?token=<annotator token>`` and ``/admin?token=<admin token>``; videos at
  ``/videos/<name>?token=<any token>`` with HTTP Range support (seeking).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from policy_sampler.study.db import CHOICES, AnswerRejected
from policy_sampler.study.progress import answers_csv, export
from policy_sampler.study.session import Study

STATIC_DIR = Path(__file__).with_name("static")
ANSWER_KEYS = {"query_id", "choice", "client_id"}
NO_STORE = {"Cache-Control": "no-store"}


def _error(status: int, message: str) -> JSONResponse:
    headers = dict(NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Rejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def create_app(study: Study, admin_token: str, video_dir: str | Path, max_body_bytes: int = 16 * 1024) -> Starlette:
    """The app serving ``study``; ``video_dir`` holds the pool's MP4s."""
    video_dir = Path(video_dir)
    annotators = study.db.annotator_ids()
    videos = set(study.videos.values())

    def bearer(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Rejected(401, "missing 'Authorization: Bearer <token>' header")
        return token.strip()

    def annotator(request: Request) -> int:
        token = bearer(request)
        if token not in annotators:
            raise _Rejected(403 if token == admin_token else 401,
                            "the admin token cannot answer queries" if token == admin_token else "unknown token")
        return annotators[token]

    def admin(request: Request) -> None:
        token = bearer(request)
        if token != admin_token:
            raise _Rejected(403 if token in annotators else 401,
                            "admin token required" if token in annotators else "unknown token")

    async def read_json(request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            raise _Rejected(413, f"request body over {max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise _Rejected(413, f"request body over {max_body_bytes} bytes")
        try:
            return json.loads(bytes(body))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Rejected(400, f"malformed JSON body: {exc}") from None

    async def next_query(request: Request) -> Response:
        annotator_id = annotator(request)
        query = await run_in_threadpool(study.next_query, annotator_id)
        if query is None:
            return Response(status_code=204, headers=NO_STORE)
        return JSONResponse(query, headers=NO_STORE)

    async def post_answer(request: Request) -> Response:
        annotator_id = annotator(request)
        payload = await read_json(request)
        if not isinstance(payload, dict):
            raise _Rejected(422, f"the body must be a JSON object with keys {sorted(ANSWER_KEYS)}")
        if set(payload) != ANSWER_KEYS:
            missing, extra = sorted(ANSWER_KEYS - set(payload)), sorted(set(payload) - ANSWER_KEYS)
            raise _Rejected(422, f"answer keys must be exactly {sorted(ANSWER_KEYS)} (missing {missing}, unknown {extra})")
        for key in ANSWER_KEYS:
            if not isinstance(payload[key], str):
                raise _Rejected(422, f"{key} must be a string, got {type(payload[key]).__name__}")
        if payload["choice"] not in CHOICES:
            raise _Rejected(422, f"choice must be one of {list(CHOICES)}, got {payload['choice']!r}")
        try:
            uuid.UUID(payload["client_id"])
        except ValueError:
            raise _Rejected(422, f"client_id must be a UUID, got {payload['client_id']!r}") from None
        if len(payload["client_id"]) > 64 or len(payload["query_id"]) > 64:
            raise _Rejected(422, "query_id and client_id must be at most 64 characters")
        try:
            created, row = await run_in_threadpool(
                study.submit, annotator_id, payload["query_id"], payload["choice"], payload["client_id"])
        except AnswerRejected as exc:
            raise _Rejected(exc.status, str(exc)) from None
        return JSONResponse({"stored": created, "answer": row}, status_code=201 if created else 200, headers=NO_STORE)

    async def admin_answers(request: Request) -> Response:
        admin(request)
        return JSONResponse(await run_in_threadpool(study.db.answers), headers=NO_STORE)

    async def admin_answers_csv(request: Request) -> Response:
        admin(request)
        text = answers_csv(await run_in_threadpool(study.db.answers))
        return PlainTextResponse(text, media_type="text/csv", headers={
            **NO_STORE, "Content-Disposition": 'attachment; filename="answers.csv"'})

    async def admin_progress(request: Request) -> Response:
        admin(request)
        return JSONResponse(await run_in_threadpool(study.progress), headers=NO_STORE)

    async def admin_export(request: Request) -> Response:
        admin(request)
        return JSONResponse(await run_in_threadpool(export, study.db), headers={
            **NO_STORE, "Content-Disposition": 'attachment; filename="study_export.json"'})

    async def video(request: Request) -> Response:
        token = request.query_params.get("token") or bearer(request)
        if token not in annotators and token != admin_token:
            raise _Rejected(401, "unknown token")
        name = request.path_params["name"]
        if name not in videos or not (video_dir / name).is_file():
            raise _Rejected(404, f"no video {name!r}")
        return FileResponse(video_dir / name, media_type="video/mp4")

    async def page(request: Request) -> Response:
        name = "admin.html" if request.url.path.rstrip("/") == "/admin" else "index.html"
        return FileResponse(STATIC_DIR / name, media_type="text/html", headers=NO_STORE)

    async def rejected(request: Request, exc: Exception) -> Response:
        return _error(exc.status, str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        return _error(exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error(500, f"internal error: {type(exc).__name__}")

    routes = [
        Route("/", page),
        Route("/admin", page),
        Route("/api/next", next_query, methods=["GET"]),
        Route("/api/answers", post_answer, methods=["POST"]),
        Route("/api/admin/answers", admin_answers, methods=["GET"]),
        Route("/api/admin/answers.csv", admin_answers_csv, methods=["GET"]),
        Route("/api/admin/progress", admin_progress, methods=["GET"]),
        Route("/api/admin/export", admin_export, methods=["GET"]),
        Route("/videos/{name}", video, methods=["GET", "HEAD"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={
        _Rejected: rejected, HTTPException: http_error, Exception: server_error})
