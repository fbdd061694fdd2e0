"""Where a sweep's units run: :class:`LocalLauncher` (in this process, one after the other; the default)
or :class:`RayLauncher` (Ray tasks on a local instance or a cluster). Both call the same unit function
on the same checkpoint bytes, so they produce the same per-episode records.

    launcher = make_launcher("ray", address="auto", num_gpus_per_unit=1)
    for unit, record, arrays in launcher.run(units, {blob.digest: blob}):
        ...

``run`` yields each unit as it finishes (Ray: in completion order); closing the generator early (an
interrupt, an error in the caller) cancels the units still pending.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from policy_sampler.sweep.checkpoint import CheckpointBlob
from policy_sampler.sweep.units import Unit, run_unit
from policy_sampler.validation import check_int, check_number

__all__ = ["LAUNCHERS", "Launcher", "LocalLauncher", "RayLauncher", "UnitFn", "make_launcher"]

LAUNCHERS = ("local", "ray")
UnitFn = Callable[[Unit, Callable[[], CheckpointBlob]], tuple[dict[str, Any], dict[str, np.ndarray]]]
Finished = tuple[Unit, dict[str, Any], dict[str, np.ndarray]]


class Launcher:
    """Runs units; ``run`` yields ``(unit, record, arrays)`` per finished unit."""

    name = "launcher"

    def run(self, units: Sequence[Unit], checkpoints: Mapping[str, CheckpointBlob],
            unit_fn: UnitFn = run_unit) -> Iterator[Finished]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release what the launcher started (nothing for the local one)."""


def _blob(digest: str, checkpoints: Mapping[str, CheckpointBlob]) -> CheckpointBlob:
    if digest not in checkpoints:
        raise ValueError(f"no checkpoint with digest {digest[:12]} among the sweep's checkpoints")
    return checkpoints[digest]


class LocalLauncher(Launcher):
    """Every unit in this process, in plan order (torch's thread settings are left as they are)."""

    name = "local"

    def run(self, units: Sequence[Unit], checkpoints: Mapping[str, CheckpointBlob],
            unit_fn: UnitFn = run_unit) -> Iterator[Finished]:
        for unit in units:
            blob = _blob(unit.checkpoint, checkpoints)
            record, arrays = unit_fn(unit, lambda: blob)
            yield unit, record, arrays


def _ray_unit(unit_fn: UnitFn, unit: Unit, blob_ref: list, num_threads: int):
    """A Ray task: one unit on ``num_threads`` torch threads, the checkpoint fetched from the object
    store only when this worker process has not loaded it yet (``blob_ref`` is a list, so Ray hands
    the reference over instead of the bytes)."""
    import ray
    import torch

    torch.set_num_threads(num_threads)
    return unit_fn(unit, lambda: ray.get(blob_ref[0]))


def _check_address(address: str) -> None:
    """``auto`` or ``[ray://]host:port`` with a port that accepts a connection within 5 s."""
    if address == "auto":
        return
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad Ray address {address!r}: expected null (start a local instance), 'auto' "
                         "(the cluster started on this machine with `ray start --head`) or host:port")
    try:
        socket.create_connection((host, int(port)), timeout=5.0).close()
    except OSError as exc:
        raise ValueError(f"cannot reach a Ray cluster at {address!r} ({exc}); is `ray start --head` running "
                         "there, and is the port open?") from exc


class RayLauncher(Launcher):
    """Units as Ray tasks, each asking for ``num_cpus_per_unit`` CPUs and ``num_gpus_per_unit`` GPUs
    (units then run on ``cuda``: plan them with ``device="cuda"``), retried up to ``max_retries`` times
    when their worker dies (an exception raised by a unit is not retried: it stops the sweep). Every
    checkpoint is put in the object store once and shared by all tasks.

    ``address``: None starts a local instance with ``num_cpus`` CPUs (all of them when None); ``"auto"``
    joins the cluster this machine belongs to; ``"host:port"`` / ``"ray://host:port"`` joins that one.
    When Ray is already initialised in this process, that instance is used as it is (and left running).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, num_cpus_per_unit: float = 1,
                 num_gpus_per_unit: float = 0, max_retries: int = 3,
                 init_kwargs: Mapping[str, Any] | None = None) -> None:
        for key, value in (("num_cpus_per_unit", num_cpus_per_unit), ("num_gpus_per_unit", num_gpus_per_unit),
                           ("max_retries", max_retries)):
            check_number(f"ray {key}", value, minimum=0)
        check_int("ray num_cpus", num_cpus, minimum=1, allow_none=True)
        if address is not None and not isinstance(address, str):
            raise ValueError(f"ray address must be null, 'auto' or host:port, got {address!r}")
        if address is not None and num_cpus is not None:
            raise ValueError("ray num_cpus sizes a local instance; it cannot be set with ray.address "
                             "(the cluster's nodes declare their CPUs in `ray start --num-cpus`)")
        if address is not None:
            _check_address(address)
        self.address, self.num_cpus = address, num_cpus
        self.num_cpus_per_unit, self.num_gpus_per_unit = num_cpus_per_unit, num_gpus_per_unit
        self.max_retries = int(max_retries)
        self.init_kwargs = dict(init_kwargs or {})
        self._owned = False

    def _start(self):
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError("launcher=ray needs Ray: pip install 'policy_sampler[ray]'") from exc
        if ray.is_initialized():
            return ray
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, **self.init_kwargs}
        if self.address is None:
            kwargs["num_cpus"] = self.num_cpus
        try:
            ray.init(address=self.address, **kwargs)
        except ConnectionError as exc:
            raise ValueError(f"cannot connect to a Ray cluster at address={self.address!r}: {exc}") from exc
        self._owned = True
        return ray

    def describe(self) -> str:
        import ray

        if not ray.is_initialized():
            return "ray (not started)"
        res = ray.cluster_resources()
        return (f"ray: {len(ray.nodes())} node(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs; "
                f"{self.num_cpus_per_unit:g} CPU(s), {self.num_gpus_per_unit:g} GPU(s) per unit")

    def run(self, units: Sequence[Unit], checkpoints: Mapping[str, CheckpointBlob],
            unit_fn: UnitFn = run_unit) -> Iterator[Finished]:
        ray = self._start()
        needed = {unit.checkpoint for unit in units}
        refs = {digest: ray.put(_blob(digest, checkpoints)) for digest in sorted(needed)}
        task = ray.remote(_ray_unit).options(
            num_cpus=self.num_cpus_per_unit, num_gpus=self.num_gpus_per_unit, max_retries=self.max_retries,
            retry_exceptions=False,
        )
        threads = max(1, int(self.num_cpus_per_unit))
        pending = {task.remote(unit_fn, unit, [refs[unit.checkpoint]], threads): unit for unit in units}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                unit = pending.pop(done[0])
                try:
                    record, arrays = ray.get(done[0])
                except ray.exceptions.RayTaskError as exc:
                    raise RuntimeError(f"unit {unit.describe()} failed: {exc.cause!r}") from exc
                except ray.exceptions.RayError as exc:
                    raise RuntimeError(f"unit {unit.describe()} did not finish after {self.max_retries} "
                                       f"retries: {type(exc).__name__}: {exc}") from exc
                yield unit, record, arrays
        finally:
            for ref in pending:
                # force: a running unit's worker process is killed (Ray starts a fresh one). A plain
                # cancel raises KeyboardInterrupt wherever the unit is, even inside an import, which
                # can leave that worker's modules half-initialized for every later unit it runs.
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False


def make_launcher(name: str | Launcher, **options: Any) -> Launcher:
    """``"local"`` or ``"ray"`` (``options``: :class:`RayLauncher`'s arguments); a launcher passes through."""
    if isinstance(name, Launcher):
        if options:
            raise ValueError("launcher options are given to the launcher's constructor, not with an instance")
        return name
    if name == "local":
        if options:
            raise ValueError(f"the local launcher takes no options, got {sorted(options)}")
        return LocalLauncher()
    if name == "ray":
        return RayLauncher(**options)
    raise ValueError(f"unknown launcher {name!r}; valid: {', '.join(LAUNCHERS)}")
