"""The reflection maximal coupling of two isotropic Gaussians with the same variance.

Speculative samplers (arXiv 2501.05370; the Gaussian rejection sampler of arXiv 2505.03983) verify a
drafted transition ``x~ = p + sigma * Z`` (draft mean ``p``, the step's standard normal draw ``Z``)
against the target kernel ``N(q, sigma^2 I)``. With ``Delta = (q - p) / sigma``, ``delta = |Delta|``
(over the event dimensions), ``e = Delta / delta`` and ``s = <e, Z>``:

    log r = log N(x~; q, sigma^2 I) - log N(x~; p, sigma^2 I) = delta * s - delta^2 / 2   (rank 1)
    accept  iff  delta == 0  or  log1p(-U) <= log r        -> the output is x~, bitwise
    reject                                                 -> q + sigma * (Z - 2 s e)

The accepted part has density min(N_p, N_q); the reflection ``x -> q + (I - 2 e e^T)(x - p)`` is an
isometry that maps the rejected mass (N_p - N_q)_+ exactly onto (N_q - N_p)_+, so the output is
exactly N(q, sigma^2 I) whatever p, with acceptance probability 2 Phi(-delta / 2) = 1 - TV, the most
any coupling achieves. No fresh randomness is drawn on rejection (resampling from the target there
would be biased: its law is min(N_p, N_q) + TV * N_q).

Everything is computed in float64 from the rank-1 form: no difference of squared norms, no
densities, so delta up to ~1e150 and any dimension give no NaN. A zero-variance step
(``sigma == 0``) is deterministic: it "accepts" iff q == p exactly and otherwise outputs q.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class CouplingResult:
    """``sample`` [*batch, *event] (dtype of the draft), ``accepted`` bool [*batch], and the float64
    diagnostics ``delta`` (|q - p| / sigma), ``s`` (<e, Z>) and ``log_ratio`` [*batch]."""

    sample: Tensor
    accepted: Tensor
    delta: Tensor
    s: Tensor
    log_ratio: Tensor


def reflection_coupling(
    draft: Tensor,
    p: Tensor,
    q: Tensor,
    sigma: Tensor | float,
    z: Tensor,
    u: Tensor,
    event_dims: int,
) -> CouplingResult:
    """Couple ``draft = p + sigma * z`` with ``N(q, sigma^2 I)``, vectorised over the batch dims.

    ``draft``, ``p``, ``q``, ``z``: [*batch, *event] (``event_dims`` trailing dims); ``sigma`` a
    number or a tensor broadcastable to [*batch]; ``u``: uniforms in [0, 1) shaped [*batch].
    """
    batch_shape = draft.shape[: draft.ndim - event_dims]
    nb = len(batch_shape)
    f64 = torch.float64
    sig = torch.as_tensor(sigma, dtype=f64, device=draft.device).expand(batch_shape)
    deterministic = sig == 0
    safe = torch.where(deterministic, torch.ones_like(sig), sig)
    diff = q.to(f64).flatten(nb) - p.to(f64).flatten(nb)  # [*batch, D]
    dvec = diff / safe.unsqueeze(-1)
    delta = torch.linalg.vector_norm(dvec, dim=-1)
    moved = delta > 0
    e = dvec / torch.where(moved, delta, torch.ones_like(delta)).unsqueeze(-1)
    zf = z.to(f64).flatten(nb)
    s = (e * zf).sum(-1)
    log_r = delta * s - 0.5 * delta * delta
    u = u.to(device=draft.device, dtype=f64).expand(batch_shape)
    accepted = ~moved | ((torch.log1p(-u) <= log_r) & ~deterministic)
    reflected = q.to(f64).flatten(nb) + sig.unsqueeze(-1) * (zf - 2 * s.unsqueeze(-1) * e)
    reflected = reflected.to(draft.dtype).reshape(draft.shape)
    mask = accepted.reshape(*batch_shape, *([1] * event_dims))
    sample = torch.where(mask, draft, reflected)
    return CouplingResult(sample=sample, accepted=accepted, delta=delta, s=s, log_ratio=log_r)
