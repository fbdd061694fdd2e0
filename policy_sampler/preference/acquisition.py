"""How much a query is worth asking, scored from posterior samples (every score is >= 0, higher
is better).

Notation: w_m, m = 1..M, posterior samples; p_m(q) = P(answer q | query, w_m) from
:meth:`ResponseModel.probabilities`; Pbar(q) = mean_m p_m(q).

- **Volume removal** (arXiv 1810.04303 Eq. 5, in its general form): the expected volume left
  after the answer is sum_q Pbar(q)^2, to be MINIMIZED; the score is 1 - sum_q Pbar(q)^2.
  (APReL's ``volume_removal`` returns sum_q Pbar(q)^2 and its optimizer maximizes it, which
  picks the queries whose answer is most certain: the inverted sign.)
- **Information gain** (mutual information between answer and w, "Asking Easy Questions";
  the objective of arXiv 2402.15757's code since 2023): I = H(Pbar) - mean_m H(p_m), in bits.
- **Max regret** (Wilde et al. 2020, adapted to given candidate pairs and to reward
  differences, since normalized features make rewards of either sign): for the pair (A, B),
  the regret of answering by one posterior sample when another one holds, over the samples that
  disagree: [max_m w_m . psi]_+ + [max_m -w_m . psi]_+ if both are positive, else 0.
"""

from __future__ import annotations

import torch

from policy_sampler.preference.response import ResponseModel

__all__ = ["ACQUISITIONS", "information_gain", "volume_removal", "max_regret", "acquisition_scores"]

ACQUISITIONS: tuple[str, ...] = ("information_gain", "volume_removal", "max_regret")
CHUNK = 8192


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    return -(torch.special.xlogy(p, p)).sum(-1) / torch.log(torch.tensor(2.0, dtype=p.dtype))


def information_gain(probs: torch.Tensor) -> torch.Tensor:
    """Mutual information I(answer; w) per query from ``probs`` [M, P, K]: [P], in bits."""
    return (_entropy_bits(probs.mean(0)) - _entropy_bits(probs).mean(0)).clamp(min=0.0)


def volume_removal(probs: torch.Tensor) -> torch.Tensor:
    """1 - sum_q Pbar(q)^2 per query from ``probs`` [M, P, K]: [P] (maximizing it minimizes the
    expected remaining volume)."""
    return 1.0 - (probs.mean(0) ** 2).sum(-1)


def max_regret(w: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """Max regret per pair from samples ``w`` [M, d] and differences ``psi`` [P, d]: [P]."""
    u = w @ psi.T
    up = u.max(0).values
    down = (-u).max(0).values
    return torch.where((up > 0) & (down > 0), up + down, torch.zeros_like(up))


def acquisition_scores(name: str, response: ResponseModel, w: torch.Tensor, psi: torch.Tensor,
                       chunk: int = CHUNK) -> torch.Tensor:
    """Scores [P] of ``name`` for queries ``psi`` [P, d] under posterior samples ``w`` [M, d],
    ``chunk`` queries at a time (memory O(M chunk), whatever the pool size)."""
    if name not in ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {ACQUISITIONS}, got {name!r}")
    return torch.cat([_scores(name, response, w, psi[s : s + chunk]) for s in range(0, psi.shape[0], chunk)]) \
        if psi.shape[0] else torch.zeros(0, dtype=w.dtype)


def _scores(name: str, response: ResponseModel, w: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    if name == "max_regret":
        return max_regret(w, psi)
    if name == "information_gain":
        return information_gain(response.probabilities(w, psi))
    return volume_removal(response.probabilities(w, psi))
