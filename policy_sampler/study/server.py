"""Serve the study app with uvicorn, with the limits that keep one slow or hostile client from
holding the server: a deadline for each request head, a cap on connections waiting for one, the
keep-alive timeout, the header size limit and a concurrency limit.

uvicorn's own keep-alive timer is cancelled by any byte received, and no timer runs before a
connection's first request, so a client that sends a request head one byte at a time (slowloris)
would hold its connection forever; and ``limit_concurrency`` counts such connections, so enough of
them would make uvicorn answer every real client 503. :func:`guarded_h11` closes a connection whose
request head is not complete ``head_timeout_s`` after it started waiting for one, and when more
than ``max_waiting_connections`` connections are waiting it closes the one waiting longest. Real
clients send their head at once, so they are never the ones waiting longest for long.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, fields
from typing import Any

from policy_sampler.validation import check_int, check_number

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServerSettings:
    """How the study is served (``server.*`` in configs/preference_study.yaml)."""

    host: str = "127.0.0.1"
    port: int = 8765
    max_body_bytes: int = 16 * 1024     # larger request bodies: 413
    body_timeout_s: float = 10.0        # a request body not complete by then: 408 and the connection closed
    head_timeout_s: float = 10.0        # a request head not complete by then: the connection is closed
    max_waiting_connections: int = 256  # connections waiting for a request head, beyond which the oldest is closed
    limit_concurrency: int = 1024       # connections or requests in flight beyond which uvicorn answers 503
    timeout_keep_alive_s: int = 5       # an idle keep-alive connection is closed after this
    max_header_bytes: int = 16 * 1024   # h11's limit on a request head
    allowed_hosts: tuple[str, ...] | None = None  # Host names accepted; None: the loopback names when bound to loopback
    log_level: str = "warning"

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ServerSettings:
        """Checked settings from a mapping; ``ValueError`` naming the key for anything wrong."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(cfg) - set(known))
        if unknown:
            raise ValueError(f"unknown server setting(s) {unknown}; known: {sorted(known)}")
        values = {**{k: getattr(cls, k) for k in known}, **cfg}
        minimums = {"port": 1, "max_body_bytes": 256, "max_waiting_connections": 1, "limit_concurrency": 1,
                    "timeout_keep_alive_s": 1, "max_header_bytes": 1024}
        for key, minimum in minimums.items():
            values[key] = check_int(key, values[key], minimum=minimum, maximum=65535 if key == "port" else None)
        for key in ("body_timeout_s", "head_timeout_s"):
            values[key] = check_number(key, values[key], positive=True, maximum=3600)
        hosts = values["allowed_hosts"]
        if hosts is not None:
            if isinstance(hosts, str) or not all(isinstance(h, str) and h for h in hosts):
                raise ValueError(f"allowed_hosts must be a list of host names or null, got {hosts!r}")
            values["allowed_hosts"] = tuple(hosts)
        values["host"], values["log_level"] = str(values["host"]), str(values["log_level"])
        return cls(**values)

    def accepted_hosts(self) -> tuple[str, ...] | None:
        """The ``Host`` names the app accepts: the configured ones, else the loopback names when
        bound to a loopback address, else any (None)."""
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        return LOOPBACK_HOSTS if self.host in LOOPBACK_HOSTS or self.host.startswith("127.") else None


def guarded_h11(head_timeout_s: float, max_waiting: int) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a request-head deadline and a cap on waiting connections."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    waiting: dict[Any, None] = {}  # connections waiting for a request head, longest first

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._wait_for_head()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._stop_waiting()  # a request head arrived

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._wait_for_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _wait_for_head(self) -> None:
            self._stop_waiting()
            waiting[self] = None
            self._head_timer = self.loop.call_later(head_timeout_s, self._head_timeout)
            while len(waiting) > max_waiting:
                oldest = next(iter(waiting))
                oldest._stop_waiting()
                oldest.transport.close()

        def _stop_waiting(self) -> None:
            waiting.pop(self, None)
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self in waiting:
                waiting.pop(self, None)
                self.transport.close()

    return GuardedH11Protocol


def serve(app: Any, settings: ServerSettings) -> None:
    """Run ``app`` under uvicorn with ``settings``' limits until interrupted.

    Everything allocated so far (the imported libraries: about 200 000 objects with torch) is moved
    out of the garbage collector's sight first (``gc.freeze``): a full collection over them takes
    about 75 ms here, which every request waiting at that moment would add to its latency."""
    import gc

    import uvicorn

    gc.collect()
    gc.freeze()

    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False,
        http=guarded_h11(settings.head_timeout_s, settings.max_waiting_connections),
        limit_concurrency=settings.limit_concurrency, timeout_keep_alive=settings.timeout_keep_alive_s,
        h11_max_incomplete_event_size=settings.max_header_bytes, server_header=False, lifespan="off")
    uvicorn.Server(config).run()
