"""Determinantal point processes over candidate queries: the kernel, greedy MAP and exact k-DPP
sampling (arXiv 1906.07975 / 2402.15757, Sec. "DPP-based batch selection"), densely or, for
large pools, from a low-rank (Nystrom) factor of the kernel without forming it.

Kernel: L_ij = q_i exp(-|psi_i - psi_j|^2 / (2 R^2)) q_j, with q_i = score_i^gamma the query's
quality (its acquisition score, raised to ``gamma``; the paper's code passes gamma/alpha = 1/4)
and the RBF of the feature differences its similarity, so det(L_S) grows with both the
informativeness and the diversity of the batch S.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["RANK_RTOL", "default_bandwidth", "quality_similarity_kernel", "greedy_map", "greedy_map_low_rank", "KDPPSampler",
           "nystrom_factor", "rbf_similarity"]

RANK_RTOL = 1e-10
"""The one numerical-rank rule of this package: an eigenvalue of L counts when it exceeds
``RANK_RTOL`` times the largest one (the rest is round-off of a low-rank kernel). The k-DPP
sampler treats the others as exactly zero, and batch selection asks it for at most that many items."""


def default_bandwidth(psi: np.ndarray, k: int) -> float:
    """The paper code's bandwidth R = (V / (2 k))^(1/d), V the volume of the bounding box of
    ``psi`` [B, d] (degenerate sides are left out; 1.0 if all are)."""
    ranges = psi.max(0) - psi.min(0)
    ranges = ranges[ranges > 1e-12]
    if ranges.size == 0:
        return 1.0
    return float(np.exp((np.log(ranges).sum() - math.log(2 * k)) / ranges.size))


def quality_similarity_kernel(psi: np.ndarray, quality: np.ndarray, bandwidth: float) -> np.ndarray:
    """L [B, B] from features ``psi`` [B, d], qualities ``quality`` [B] (>= 0) and bandwidth R > 0."""
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth!r}")
    if np.any(quality < 0) or not np.all(np.isfinite(quality)):
        raise ValueError("quality must be finite and >= 0")
    return quality[:, None] * rbf_similarity(psi, psi, bandwidth) * quality[None, :]


def rbf_similarity(a: np.ndarray, b: np.ndarray, bandwidth: float) -> np.ndarray:
    """exp(-|a_i - b_j|^2 / (2 R^2)) [len(a), len(b)]."""
    dist2 = np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)
    return np.exp(-dist2 / (2.0 * bandwidth**2))


def nystrom_factor(psi: np.ndarray, quality: np.ndarray, bandwidth: float, landmarks: int, rng: np.random.Generator,
                   chunk: int = 8192) -> np.ndarray:
    """F [N, r] with F F^T = the Nystrom approximation of the quality-similarity kernel
    (Williams & Seeger 2001): S ~ S_NM S_MM^+ S_MN over ``landmarks`` items drawn uniformly
    without replacement, times the qualities on both sides. Exact on the landmarks' rows and
    columns, and exact everywhere when every item is a landmark; r <= landmarks (eigenvalues of
    S_MM under :data:`RANK_RTOL` are dropped). O(N r (d + r)) time, O(N r) memory."""
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth!r}")
    if np.any(quality < 0) or not np.all(np.isfinite(quality)):
        raise ValueError("quality must be finite and >= 0")
    n = psi.shape[0]
    centers = psi[np.sort(rng.choice(n, size=min(int(landmarks), n), replace=False))]
    values, vectors = np.linalg.eigh(rbf_similarity(centers, centers, bandwidth))
    keep = values > RANK_RTOL * values.max()
    whiten = vectors[:, keep] / np.sqrt(values[keep])
    factor = np.empty((n, int(keep.sum())))
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        factor[part] = quality[part, None] * (rbf_similarity(psi[part], centers, bandwidth) @ whiten)
    return factor


def greedy_map(kernel: np.ndarray, k: int, eps: float = 1e-10) -> list[int]:
    """Greedy MAP of the DPP with kernel L [N, N]: k items, each maximizing log det L_S given the
    ones before (Chen, Zhang & Zhou 2018, Alg. 1: incremental Cholesky, O(N k^2)). Stops early
    when no item adds more than ``eps`` of determinant (the rest of L is then spanned)."""
    return _greedy(np.diag(kernel), lambda j: kernel[j, :], k, eps)


def greedy_map_low_rank(factor: np.ndarray, k: int, eps: float = 1e-10) -> list[int]:
    """:func:`greedy_map` for L = F F^T given only F [N, r]: each row of L costs O(N r), so the
    whole greedy is O(N r k) and never forms the N x N kernel."""
    return _greedy((factor * factor).sum(1), lambda j: factor @ factor[j], k, eps)


def _greedy(diagonal: np.ndarray, row, k: int, eps: float) -> list[int]:
    n = diagonal.shape[0]
    k = min(int(k), n)
    cis = np.zeros((k, n))
    d2 = np.asarray(diagonal, dtype=np.float64).copy()
    selected: list[int] = []
    for t in range(k):
        j = int(np.argmax(d2))
        if d2[j] < eps:
            break
        selected.append(j)
        e = (row(j) - cis[:t, j] @ cis[:t, :]) / math.sqrt(d2[j])
        cis[t, :] = e
        d2 = d2 - e * e
        d2[selected] = -np.inf
    return selected


class KDPPSampler:
    """Exact k-DPP sampling by the spectral method (Kulesza & Taskar 2012, Alg. 8 then Alg. 1):
    the eigendecomposition of L is done once here and reused by every :meth:`sample`.
    :meth:`from_factor` builds it from L = F F^T in dual form (K&T Sec. 3.3): the eigenvalues of
    L are those of the r x r matrix F^T F, and only the k eigenvectors a sample uses are lifted
    to the N items (u = F v / sqrt(lambda)), so nothing N x N is formed."""

    def __init__(self, kernel: np.ndarray):
        kernel = np.asarray(kernel, dtype=np.float64)
        if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
            raise ValueError(f"kernel must be a square matrix, got shape {kernel.shape}")
        values, vectors = np.linalg.eigh((kernel + kernel.T) / 2)
        self._set_spectrum(values)
        self.eigenvectors = vectors
        self.factor: np.ndarray | None = None

    @classmethod
    def from_factor(cls, factor: np.ndarray) -> "KDPPSampler":
        """The k-DPP of L = F F^T for ``factor`` F [N, r] (O(N r^2) once)."""
        factor = np.asarray(factor, dtype=np.float64)
        if factor.ndim != 2:
            raise ValueError(f"factor must be a matrix [N, r], got shape {factor.shape}")
        sampler = cls.__new__(cls)
        values, vectors = np.linalg.eigh(factor.T @ factor)
        sampler._set_spectrum(values)
        sampler._raw_eigenvalues = np.clip(values, 0.0, None)
        sampler.eigenvectors = vectors  # of F^T F, [r, r]
        sampler.factor = factor
        return sampler

    def _set_spectrum(self, values: np.ndarray) -> None:
        values = np.clip(values, 0.0, None)
        top = values.max() if values.size else 0.0
        values = values / top if top > 0 else values  # P(S) of a k-DPP is scale-free
        self.eigenvalues = np.where(values > RANK_RTOL, values, 0.0)  # round-off of a low-rank L
        self._polys: dict[int, np.ndarray] = {}

    @property
    def n_items(self) -> int:
        return int(self.eigenvectors.shape[0] if self.factor is None else self.factor.shape[0])

    @property
    def rank(self) -> int:
        """The numerical rank of L under :data:`RANK_RTOL`: the largest k :meth:`sample` accepts."""
        return int(np.count_nonzero(self.eigenvalues))

    def _item_vectors(self, chosen: list[int]) -> np.ndarray:
        """The chosen eigenvectors of L over the items, orthonormal columns [N, len(chosen)]."""
        if self.factor is None:
            return self.eigenvectors[:, chosen]
        return self.factor @ (self.eigenvectors[:, chosen] / np.sqrt(self._raw_eigenvalues[chosen]))

    def _elementary(self, k: int) -> np.ndarray:
        """E[l, n] = e_l(lambda_1..lambda_n), l = 0..k, n = 0..N (K&T Alg. 7)."""
        if k not in self._polys:
            n = self.eigenvalues.size
            table = np.zeros((k + 1, n + 1))
            table[0, :] = 1.0
            for m in range(1, n + 1):  # e_l(..m) = e_l(..m-1) + lambda_m e_{l-1}(..m-1), all l at once
                table[1:, m] = table[1:, m - 1] + self.eigenvalues[m - 1] * table[:-1, m - 1]
            self._polys[k] = table
        return self._polys[k]

    def sample(self, k: int, rng: np.random.Generator) -> list[int]:
        """k distinct item indices, sorted, with P(S) proportional to det(L_S)."""
        n, n_values = self.n_items, self.eigenvalues.size
        if not 0 <= k <= n:
            raise ValueError(f"k must be in [0, {n}], got {k}")
        if k > self.rank:
            raise ValueError(f"the kernel has numerical rank {self.rank} < k = {k} (eigenvalues above {RANK_RTOL:g} "
                             f"of the largest): no {k}-subset has a positive determinant")
        table = self._elementary(k)
        chosen, remaining = [], k
        for m in range(n_values, 0, -1):
            if remaining == 0:
                break
            if rng.random() < self.eigenvalues[m - 1] * table[remaining - 1, m - 1] / table[remaining, m]:
                chosen.append(m - 1)
                remaining -= 1
        basis = self._item_vectors(chosen)
        items: list[int] = []
        while basis.shape[1] > 0:
            weights = (basis**2).sum(1)
            item = int(rng.choice(n, p=weights / weights.sum()))
            items.append(item)
            pivot = int(np.argmax(np.abs(basis[item])))
            basis = basis - np.outer(basis[:, pivot] / basis[item, pivot], basis[item])
            basis = np.delete(basis, pivot, axis=1)
            if basis.shape[1]:
                basis, _ = np.linalg.qr(basis)
        return sorted(items)
