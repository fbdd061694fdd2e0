"""Drive a running study server the way many annotators at once would, and check nothing was lost.

:class:`StudyServer` starts ``scripts/preference_study.py`` in a subprocess on a free loopback
port (and can SIGKILL it); :func:`run_load` runs one asyncio client per annotator, each answering
every query it is served, re-sending some answers with the same ``client_id`` (at once, as a
double click, and later, as a retry), then checks through the admin API that every query was
answered exactly once, and returns the answer rate and the POST latency percentiles.
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
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "preference_study.py"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class StudyServer:
    """``preference_study.py <overrides>`` in a subprocess, writing ``workdir/{study.db, tokens.json,
    server.log}``; :meth:`start` returns once it answers HTTP."""

    def __init__(self, workdir: str | Path, overrides: list[str], port: int | None = None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.db, self.tokens_file = self.workdir / "study.db", self.workdir / "tokens.json"
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, str(SCRIPT), f"port={self.port}", f"db={self.db}",
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
                time.sleep(0.1)
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


async def _annotate(client: httpx.AsyncClient, token: str, rng: random.Random, duplicates: float,
                    latencies: list[float], problems: list[str]) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    answered = 0

    async def post(body: dict) -> httpx.Response:
        start = time.perf_counter()
        response = await client.post("/api/answers", json=body, headers=headers)
        latencies.append(time.perf_counter() - start)
        return response

    while True:
        r = await client.get("/api/next", headers=headers)
        if r.status_code == 204:
            return answered
        if r.status_code != 200:
            problems.append(f"GET /api/next -> {r.status_code} {r.text}")
            return answered
        body = {"query_id": r.json()["query_id"], "choice": rng.choice(["left", "right", "equal"]),
                "client_id": str(uuid.uuid4())}
        if rng.random() < duplicates:  # a double click: the same answer twice at once
            responses = await asyncio.gather(post(body), post(body))
        else:
            responses = [await post(body)]
        if rng.random() < duplicates:  # a retry after the answer was stored
            responses.append(await post(body))
        codes = sorted(x.status_code for x in responses)
        if codes != [200] * (len(codes) - 1) + [201] or len({x.json()["answer"]["answer_id"] for x in responses}) != 1:
            problems.append(f"query {body['query_id']}: statuses {codes}, answers {[x.text for x in responses]}")
        answered += 1


async def _drive(url: str, tokens: list[str], duplicates: float, seed: int) -> tuple[float, list[float], list[str], int]:
    latencies: list[float] = []
    problems: list[str] = []
    limits = httpx.Limits(max_connections=2 * len(tokens) + 4, max_keepalive_connections=2 * len(tokens) + 4)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:
        start = time.perf_counter()
        counts = await asyncio.gather(*[
            _annotate(client, token, random.Random(seed * 1000 + k), duplicates, latencies, problems)
            for k, token in enumerate(tokens)])
        wall = time.perf_counter() - start
    return wall, latencies, problems, sum(counts)


def run_load(url: str, admin: str, tokens: list[str], duplicates: float = 0.3, seed: int = 0) -> dict[str, Any]:
    """Every annotator answers everything at once; returns the figures and ``problems`` (empty when
    every answer was stored exactly once and every duplicate got 200 with the stored answer)."""
    wall, latencies, problems, answered = asyncio.run(_drive(url, tokens, duplicates, seed))
    stored = httpx.get(url + "/api/admin/answers", headers={"Authorization": f"Bearer {admin}"}, timeout=60).json()
    progress = httpx.get(url + "/api/admin/progress", headers={"Authorization": f"Bearer {admin}"}, timeout=60).json()
    if len(stored) != answered:
        problems.append(f"{answered} queries answered but {len(stored)} answers stored")
    if len({a["client_id"] for a in stored}) != len(stored) or len({a["query_id"] for a in stored}) != len(stored):
        problems.append("a client_id or a query_id appears in more than one stored answer")
    unfinished = [p["annotator"] for p in progress if not p["done"]]
    if unfinished:
        problems.append(f"annotators {unfinished} have unanswered queries")
    ms = 1000.0 * np.asarray(latencies)
    return {
        "annotators": len(tokens), "answers_stored": len(stored), "posts": len(latencies),
        "duplicate_posts": len(latencies) - answered, "wall_s": wall,
        "answers_per_s": answered / wall, "posts_per_s": len(latencies) / wall,
        "post_latency_ms_p50": float(np.percentile(ms, 50)), "post_latency_ms_p99": float(np.percentile(ms, 99)),
        "post_latency_ms_max": float(ms.max()), "problems": problems,
    }
