"""Where chunks are computed in real time: one background thread per sampler, jobs that can be cancelled.

A job is a function of a cancellation event. Cancelling a job sets its event; a sampler wrapped by
:func:`cancellable` checks it before each denoiser call and raises :class:`ChunkCancelled`, so a
cancelled chunk stops within one denoiser call and the next job on the same thread does not queue
behind a whole chunk (a job not yet started is cancelled outright).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from policy_sampler.samplers import Sampler

__all__ = ["ChunkCancelled", "Job", "ThreadWorker", "cancellable"]


class ChunkCancelled(Exception):
    """Raised in a cancelled job at its next denoiser call."""


class Job:
    """A job submitted to a :class:`ThreadWorker`: its future and its cancellation event."""

    def __init__(self, future: Future, cancelled: threading.Event) -> None:
        self.future = future
        self.cancelled = cancelled

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> Any:
        return self.future.result()

    def cancel(self) -> None:
        self.cancelled.set()
        self.future.cancel()


class ThreadWorker:
    """One background thread running jobs one after another."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        # start the thread now: starting it later, while another worker holds the GIL, would cost
        # the control loop several switch intervals
        self._pool.submit(lambda: None).result()

    def submit(self, job: Callable[[threading.Event], Any]) -> Job:
        cancelled = threading.Event()
        return Job(self._pool.submit(job, cancelled), cancelled)

    def shutdown(self, wait: bool = False) -> None:
        """Stop taking jobs; a job that has started runs to its next denoiser call (if cancelled).
        ``wait``: return only once the thread has stopped."""
        self._pool.shutdown(wait=wait, cancel_futures=True)


class _Cancellable(Sampler):
    """``inner`` with a check of ``cancelled`` before every denoiser call."""

    name = "cancellable"
    exact = False

    def __init__(self, inner: Sampler, cancelled: threading.Event) -> None:
        self.inner = inner
        self.cancelled = cancelled
        # the wrapped sampler's identity, so predict_action reports and checks it
        for attr in ("name", "exact", "warm_start", "anytime", "draft_guess"):
            setattr(self, attr, getattr(inner, attr))

    def sample(self, denoiser: Any, *args: Any, **kwargs: Any) -> Any:
        def checked(x, t, cond):
            if self.cancelled.is_set():
                raise ChunkCancelled
            return denoiser(x, t, cond)

        return self.inner.sample(checked, *args, **kwargs)

    def _sample(self, *args: Any, **kwargs: Any) -> Any:  # sample() delegates to the wrapped sampler
        raise NotImplementedError


def cancellable(sampler: Sampler, cancelled: threading.Event | None) -> Sampler:
    """``sampler`` stopping with :class:`ChunkCancelled` at the first denoiser call after
    ``cancelled`` is set (``sampler`` itself when there is no event)."""
    return sampler if cancelled is None else _Cancellable(sampler, cancelled)
