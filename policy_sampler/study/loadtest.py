"""Drive a running study server the way many annotators at once would, and check nothing was lost.

:class:`StudyServer` starts ``python -m policy_sampler.study`` in a subprocess on a free loopback
port (and can SIGKILL it); :func:`run_load` runs one asyncio client per annotator, each answering
every query it is served, re-sending some answers with the same ``client_id`` (at once on a second
connection, as a double click, and later, as a retry). With ``kills`` it SIGKILLs and restarts the
server that many times mid-run while the clients retry, as a browser page does. At the end it
checks through the admin API that every acknowledged answer is stored, every query answered
exactly once, and returns the answer rate and the POST latency percentiles.

The annotators speak HTTP/1.1 over plain asyncio streams (:class:`KeepAliveConnection`), a few
tens of microseconds of client CPU per request: the figures measure the server, not the client
(httpx costs about 1.5 ms of CPU per request here, which alone would cap a 2-core run).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class StudyServer:
    """``python -m policy_sampler.study <overrides>`` in a subprocess, writing ``workdir/{study.db,
    tokens.json, server.log}``; :meth:`start` returns once it answers HTTP."""

    def __init__(self, workdir: str | Path, overrides: list[str], port: int | None = None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.db, self.tokens_file = self.workdir / "study.db", self.workdir / "tokens.json"
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "policy_sampler.study", f"port={self.port}", f"db={self.db}",
                     f"tokens_file={self.tokens_file}", *overrides]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> StudyServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        log_path = self.workdir / "server.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the study server exited with {self.proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(self.url + "/static/style.css", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the study server was not up after {timeout} s:\n{log_path.read_text()}")

    @property
    def tokens(self) -> dict[str, Any]:
        return json.loads(self.tokens_file.read_text())

    def kill(self) -> None:
        """SIGKILL (no shutdown code runs), then reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class KeepAliveConnection:
    """One HTTP/1.1 keep-alive connection; reconnects after the server closes it. Responses must
    carry ``Content-Length`` (every API response but the streamed admin lists does)."""

    def __init__(self, port: int, token: str):
        self.port = port
        self.head = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """``(status, body)``; ``ConnectionError`` when the server is unreachable or hangs up."""
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            extra = "" if body is None else f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            self.writer.write(f"{method} {path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode() + (body or b""))
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
            length = int(headers.get("content-length", 0))
            data = await self.reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            raise ConnectionError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if headers.get("connection") == "close":
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _retrying(conn: KeepAliveConnection, method: str, path: str, body: bytes | None = None,
                    deadline_s: float = 120.0) -> tuple[int, bytes]:
    """The request, re-sent unchanged until the server answers (as the page does across a restart)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await conn.request(method, path, body)
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


class _Annotator:
    def __init__(self, port: int, token: str, rng: random.Random, duplicates: float, record: dict[str, Any]):
        self.conns = (KeepAliveConnection(port, token), KeepAliveConnection(port, token))
        self.rng, self.duplicates, self.record = rng, duplicates, record

    async def post(self, conn: KeepAliveConnection, body: bytes) -> tuple[int, bytes]:
        start = time.perf_counter()
        status, data = await _retrying(conn, "POST", "/api/answers", body)
        self.record["latencies"].append(time.perf_counter() - start)
        return status, data

    async def run(self) -> int:
        answered = 0
        while True:
            status, data = await _retrying(self.conns[0], "GET", "/api/next")
            if status == 204:
                return answered
            if status != 200:
                self.record["problems"].append(f"GET /api/next -> {status} {data[:200]!r}")
                return answered
            cid = str(uuid.uuid4())
            body = json.dumps({"query_id": json.loads(data)["query_id"],
                               "choice": self.rng.choice(["left", "right", "equal"]), "client_id": cid}).encode()
            if self.rng.random() < self.duplicates:  # a double click: the same answer twice at once
                responses = list(await asyncio.gather(self.post(self.conns[0], body), self.post(self.conns[1], body)))
            else:
                responses = [await self.post(self.conns[0], body)]
            if self.rng.random() < self.duplicates:  # a retry after the answer was stored
                responses.append(await self.post(self.conns[0], body))
            codes = sorted(s for s, _ in responses)
            ids = {json.loads(d)["answer"]["answer_id"] for s, d in responses if s in (200, 201)}
            # across a kill the first attempt may have been stored without its 201 arriving: all 200 then
            if codes[:-1] != [200] * (len(codes) - 1) or codes[-1] not in (200, 201) or len(ids) != 1:
                self.record["problems"].append(f"client_id {cid}: statuses {codes}, answers {[d[:200] for _, d in responses]}")
            else:
                self.record["acknowledged"].add(cid)
            answered += 1


async def _drive(server_url: str, tokens: list[str], duplicates: float, seed: int, server: StudyServer | None,
                 kills: int, kill_every_s: float, kill_every_answers: int | None) -> tuple[float, dict[str, Any], int]:
    port = int(server_url.rsplit(":", 1)[1])
    record: dict[str, Any] = {"latencies": [], "problems": [], "acknowledged": set(), "downtime_s": 0.0, "kills": 0}
    annotators = [_Annotator(port, token, random.Random(seed * 1000 + k), duplicates, record)
                  for k, token in enumerate(tokens)]
    start = time.perf_counter()
    work = asyncio.gather(*[a.run() for a in annotators])

    async def next_kill_due() -> None:
        if kill_every_answers is None:
            await asyncio.sleep(kill_every_s)
            return
        target = len(record["acknowledged"]) + kill_every_answers
        while len(record["acknowledged"]) < target and not work.done():
            await asyncio.sleep(0.002)

    async def killer() -> None:
        for _ in range(kills):
            await next_kill_due()
            if work.done():
                return
            down = time.perf_counter()
            server.kill()
            record["kills"] += 1
            await asyncio.to_thread(server.start)
            record["downtime_s"] += time.perf_counter() - down

    killing = asyncio.ensure_future(killer()) if kills and server is not None else None
    counts = await work
    wall = time.perf_counter() - start
    if killing is not None:
        killing.cancel()
    for a in annotators:
        for conn in a.conns:
            conn.close()
    return wall, record, sum(counts)


def _poll_export(url: str, admin: str, stop: threading.Event, polls: list[float]) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as client:
        while not stop.is_set():
            start = time.perf_counter()
            with client.stream("GET", "/api/admin/export") as response:
                for _ in response.iter_bytes():
                    pass
            polls.append(time.perf_counter() - start)


def run_load(url: str, admin: str, tokens: list[str], duplicates: float = 0.3, seed: int = 0, *,
             server: StudyServer | None = None, kills: int = 0, kill_every_s: float = 0.25,
             kill_every_answers: int | None = None, poll_export: bool = False) -> dict[str, Any]:
    """Every annotator answers everything at once (up to ``kills`` SIGKILL + restarts of ``server``,
    ``kill_every_s`` after the start and after each restart, or, when ``kill_every_answers`` is given,
    once that many more answers are acknowledged, while work is left; ``poll_export``: an admin
    downloads the export in a loop);
    returns the figures and ``problems`` (empty when every acknowledged answer is stored, every
    query answered exactly once and every duplicate got 200 with the stored answer)."""
    stop, polls = threading.Event(), []
    poller = threading.Thread(target=_poll_export, args=(url, admin, stop, polls), daemon=True) if poll_export else None
    if poller is not None:
        poller.start()
    try:
        wall, record, answered = asyncio.run(_drive(url, tokens, duplicates, seed, server, kills, kill_every_s,
                                                  kill_every_answers))
    finally:
        stop.set()
        if poller is not None:
            poller.join()
    problems = record["problems"]
    auth = {"Authorization": f"Bearer {admin}"}
    stored = httpx.get(url + "/api/admin/answers", headers=auth, timeout=60).json()
    progress = httpx.get(url + "/api/admin/progress", headers=auth, timeout=60).json()
    live = [a for a in stored if a["retracted_at"] is None]
    if len(live) != answered:
        problems.append(f"{answered} queries answered but {len(live)} answers stored")
    if len({a["client_id"] for a in stored}) != len(stored) or len({a["query_id"] for a in live}) != len(live):
        problems.append("a client_id or a query_id appears in more than one stored answer")
    missing = record["acknowledged"] - {a["client_id"] for a in live}
    if missing:
        problems.append(f"{len(missing)} acknowledged answers are not stored, e.g. {sorted(missing)[:3]}")
    unfinished = [p["annotator"] for p in progress if not p["done"]]
    if unfinished:
        problems.append(f"annotators {unfinished} have unanswered queries")
    ms = 1000.0 * np.asarray(record["latencies"])
    return {
        "annotators": len(tokens), "answers_stored": len(live), "acknowledged": len(record["acknowledged"]),
        "posts": len(ms), "duplicate_posts": len(ms) - answered, "wall_s": wall,
        "answers_per_s": answered / wall, "posts_per_s": len(ms) / wall,
        "post_latency_ms_p50": float(np.percentile(ms, 50)), "post_latency_ms_p99": float(np.percentile(ms, 99)),
        "post_latency_ms_max": float(ms.max()), "kills": record["kills"],
        "downtime_s": record["downtime_s"], "export_polls": len(polls), "problems": problems,
    }
