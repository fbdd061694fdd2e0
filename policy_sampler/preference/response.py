"""How a person answers a pairwise query, as a likelihood of the answer given reward weights w.

A query is a pair of trajectories (A, B) with feature difference psi = phi(A) - phi(B); the
reward is w . phi, so every model below depends on u = beta * w . psi only. Answers are
``1`` (A preferred), ``-1`` (B preferred) and ``0`` ("about equal").

- ``"bradley_terry"``: P(1) = sigmoid(u), P(-1) = sigmoid(-u) (the logistic model of
  arXiv 2402.15757 and APReL's softmax user with rationality beta).
- ``"strict"``: the hinge ("min-exp") likelihood P(s) = min(1, exp(s u)) of the CoRL 2018
  code (arXiv 1810.04303, after Sadigh et al. 2017): flat where w ranks the pair as answered,
  log-linear where it does not. Normalized over the two answers it equals Bradley-Terry
  (min(1, e^u) / (min(1, e^u) + min(1, e^-u)) = sigmoid(u)), so it changes the posterior, not
  the answer probabilities used to score queries.
- ``"weak"``: the weak comparison of "Asking Easy Questions" / APReL with threshold delta > 0:
  P(1) = 1 / (1 + exp(delta - u)), P(-1) = 1 / (1 + exp(delta + u)),
  P(0) = (exp(2 delta) - 1) P(1) P(-1); the three sum to one.

Under ``"bradley_terry"`` and ``"strict"`` queries offer two answers, and a ``0`` answer (if a
person gives one anyway) is scored with the weak model's P(0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["RESPONSES", "ResponseModel"]

RESPONSES: tuple[str, ...] = ("bradley_terry", "strict", "weak")


@dataclass(frozen=True)
class ResponseModel:
    """Answer model ``kind`` with rationality ``beta`` (> 0) and weak-comparison ``delta`` (> 0)."""

    kind: str = "bradley_terry"
    beta: float = 1.0
    delta: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in RESPONSES:
            raise ValueError(f"response must be one of {RESPONSES}, got {self.kind!r}")
        for name in ("beta", "delta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    @property
    def outcomes(self) -> tuple[int, ...]:
        """The answers a query offers, in the order of :meth:`probabilities`' last axis."""
        return (1, -1, 0) if self.kind == "weak" else (1, -1)

    def _log_better(self, u: torch.Tensor) -> torch.Tensor:
        """log P(the first of the pair is preferred) for ``u = beta w . psi``."""
        if self.kind == "bradley_terry":
            return F.logsigmoid(u)
        if self.kind == "strict":
            return torch.clamp(u, max=0.0)
        return F.logsigmoid(u - self.delta)

    def _log_equal(self, u: torch.Tensor) -> torch.Tensor:
        """log P(0) under the weak comparison model."""
        return math.log(math.expm1(2.0 * self.delta)) + F.logsigmoid(u - self.delta) + F.logsigmoid(-u - self.delta)

    def log_likelihood(self, w: torch.Tensor, psi: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
        """Sum over answers of log P(choice_i | w, psi_i): ``w`` [C, d], ``psi`` [n, d], ``choices`` [n]
        in {1, -1, 0}; returns [C]."""
        if psi.shape[0] == 0:
            return torch.zeros(w.shape[0], dtype=w.dtype)
        u = self.beta * (w @ psi.T)
        c = choices.to(w.dtype)
        per = self._log_better(torch.where(c < 0, -u, u))
        if bool((c == 0).any()):
            per = torch.where(c == 0, self._log_equal(u), per)
        return per.sum(dim=-1)

    def probabilities(self, w: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        """P(answer | w_m, psi_q) for ``w`` [M, d], ``psi`` [P, d]: [M, P, len(outcomes)]."""
        u = self.beta * (w @ psi.T)
        if self.kind != "weak":
            return torch.stack([torch.sigmoid(u), torch.sigmoid(-u)], dim=-1)
        logs = torch.stack([self._log_better(u), self._log_better(-u), self._log_equal(u)], dim=-1)
        return logs.exp()

    def sample(self, w: torch.Tensor, psi: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Answers [P] in ``outcomes`` drawn for one ``w`` [d] to queries ``psi`` [P, d]."""
        probs = self.probabilities(w.reshape(1, -1), psi)[0]
        index = torch.multinomial(probs, 1, generator=generator).reshape(-1)
        return torch.tensor(self.outcomes, dtype=torch.long)[index]
