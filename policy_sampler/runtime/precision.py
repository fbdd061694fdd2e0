"""TF32 for float32 convolutions and matmuls on CUDA, switched for one runtime's calls and put back.

PyTorch keeps these flags per process, in two API families that are views of one state: the older
``torch.set_float32_matmul_precision`` and ``torch.backends.cudnn.allow_tf32`` (with
``torch.backends.cuda.matmul.allow_tf32``), and since torch 2.9 per-backend strings
(``torch.backends.cuda.matmul.fp32_precision``, ``torch.backends.cudnn.conv.fp32_precision``, ...).
Setting one backend through the new strings leaves the older getters disagreeing, and they then raise
("a mix of the legacy and new APIs"); inductor and user code call them. Measured on torch 2.13: the
older setters keep both families consistent. So this module sets the flags through the older
setters, and restores them through the same setters followed by every per-backend string read
before (the older setters also touch backends the strings keep apart, e.g. oneDNN's matmul); only
when the process already set the flags through the new strings (the older getters raise) does it set
and restore the strings alone. The exact previous state comes back either way (tested).

``tf32=None`` means "leave the process's settings" (PyTorch's default: TF32 convolutions, IEEE float32
matmuls); True or False forces TF32 on or off for the duration of the ``with`` block only.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

NEW_API = hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(torch.backends.cudnn, "conv")


def _new_api_targets() -> list[tuple[Any, str]]:
    """The flags TF32 on CUDA means, as new-API strings: cuBLAS matmuls and cuDNN convolutions (and
    RNNs, kept equal to them so cuDNN's older getter stays readable)."""
    cudnn = torch.backends.cudnn
    return [(torch.backends.cuda.matmul, "fp32_precision"), (cudnn.conv, "fp32_precision"),
            (cudnn.rnn, "fp32_precision")]


def _all_strings() -> list[tuple[Any, str]]:
    """Every per-backend precision string, parents before children (the order to restore them in)."""
    if not NEW_API:
        return []
    b = torch.backends
    owners = [b, b.cuda.matmul, b.cudnn, b.cudnn.conv, b.cudnn.rnn, b.mkldnn,
              *(getattr(b.mkldnn, op, None) for op in ("matmul", "conv", "rnn"))]
    return [(o, "fp32_precision") for o in owners if o is not None and hasattr(o, "fp32_precision")]


def _legacy_state() -> tuple[str, bool] | None:
    """(float32 matmul precision, cuDNN TF32) through the older getters, or None if they raise."""
    try:
        return torch.get_float32_matmul_precision(), bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        return None


def _set_legacy(matmul: str, cudnn: bool) -> None:
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = cudnn


def check_tf32(tf32: object) -> bool | None:
    """``tf32`` if it is True, False or None, else a ``ValueError``."""
    if tf32 is not None and not isinstance(tf32, bool):
        raise ValueError(f"tf32 must be True, False or None (leave the process's setting), got {tf32!r}")
    return tf32


@contextlib.contextmanager
def tf32_mode(tf32: bool | None) -> Iterator[None]:
    """Inside the block float32 convolutions and matmuls on CUDA use TF32 iff ``tf32`` (None: as
    they were); the previous state is restored on exit (see the module docstring)."""
    if check_tf32(tf32) is None:
        yield
        return
    legacy = _legacy_state()
    if legacy is not None:
        strings = [(obj, name, getattr(obj, name)) for obj, name in _all_strings()]
        try:
            _set_legacy("high" if tf32 else "highest", tf32)
            yield
        finally:
            _set_legacy(*legacy)
            for obj, name, old in strings:
                setattr(obj, name, old)
        return
    targets = _new_api_targets()
    before = [getattr(obj, name) for obj, name in targets]
    try:
        for obj, name in targets:
            setattr(obj, name, "tf32" if tf32 else "ieee")
        yield
    finally:
        for (obj, name), old in zip(targets, before):
            setattr(obj, name, old)
