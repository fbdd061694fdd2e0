"""Host-sync audit: run code with every device-to-host synchronization counted, and on CUDA refused.

The samplers' contract is at most one host sync per round (the ``tolist`` of the round's step indices
and the non-finite flag) plus the final check, also a ``tolist``. :func:`host_sync_audit` makes that
checkable: on CUDA it runs the block under ``torch.cuda.set_sync_debug_mode("error")``, so a hidden
``.item()``, ``bool(tensor)``, ``nonzero``, boolean-mask index or blocking host-to-device copy raises,
while ``Tensor.tolist`` of a device tensor is let through and counted. On the CPU, where nothing
syncs, it counts the same host reads (``tolist`` calls and the scalar reads, nonzero and masked
selects that the dispatcher sees), so a test can bound them per round without a GPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ops whose result size or value the host must read: a sync on CUDA
_HOST_READS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default"}


@dataclass
class SyncCount:
    """``tolist``: allowed syncs taken (``Tensor.tolist`` of a tensor on the audited device type);
    ``other``: other host reads seen (CPU audits only; on CUDA they raise instead), by op name."""

    tolist: int = 0
    other: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.tolist + sum(self.other.values())


class _CountHostReads(TorchDispatchMode):
    def __init__(self, count: SyncCount) -> None:
        super().__init__()
        self.count = count

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name in _HOST_READS:
            self.count.other[name] = self.count.other.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def host_sync_audit(device: torch.device | str) -> Iterator[SyncCount]:
    """Count (and on CUDA, refuse all but ``tolist``) host syncs inside the block; see the module
    docstring. Process-wide while it lasts (it patches ``torch.Tensor.tolist``): audit one thing at
    a time."""
    kind = torch.device(device).type
    count = SyncCount()
    original = torch.Tensor.tolist

    def counted_tolist(tensor: torch.Tensor):
        if tensor.device.type != kind:
            return original(tensor)
        count.tolist += 1
        if kind != "cuda":
            return original(tensor)
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode(0)
        try:
            return original(tensor)
        finally:
            torch.cuda.set_sync_debug_mode(mode)

    torch.Tensor.tolist = counted_tolist
    try:
        if kind == "cuda":
            before = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("error")
            try:
                yield count
            finally:
                torch.cuda.set_sync_debug_mode(before)
        else:
            with _CountHostReads(count):
                yield count
    finally:
        torch.Tensor.tolist = original
