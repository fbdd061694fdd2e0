"""Choose a batch of b queries from scored candidates (arXiv 1810.04303 Sec. IV; DPP from
arXiv 1906.07975 / 2402.15757).

Every method but ``greedy`` and ``random`` first keeps the ``preselect`` best-scoring candidates
(the papers' B = 20 b), then picks b of them:

- ``greedy``: the b best scores (no diversity);
- ``medoids``: the medoids of k-medoids (b clusters) on the Euclidean distances between the
  candidates' psi (Park & Jun 2009: their initialization, then alternate assignment/update);
- ``boundary_medoids``: the same on the vertices of the convex hull of the psi's only, topped up
  with the best-scoring remaining candidates when there are fewer than b vertices;
- ``successive_elimination``: while more than b remain, take the closest pair and drop whichever
  of the two scores lower;
- ``dpp``: the greedy MAP of the quality-similarity DPP (:mod:`.dpp`; ``dpp_mode="sample"``
  draws an exact k-DPP sample instead);
- ``random``: b candidates uniformly.

Large pools (DPP only). Over more than ``DENSE_LIMIT`` preselected candidates (``preselect``
set high, e.g. to the pool size) the DPP works from a Nystrom factor F [B, r] of its kernel
(``dpp_landmarks`` landmarks, default ``DEFAULT_LANDMARKS``; :func:`.dpp.nystrom_factor`): greedy
MAP in O(B r k) and exact k-DPP sampling of F F^T in dual form in O(B r^2), never the B x B
kernel. ``dpp_landmarks`` given forces this path at any size.

Degenerate pools (DPP only). A DPP cannot pick more items than its kernel's numerical rank r
(eigenvalues above ``RANK_RTOL`` of the largest; near-duplicate or nearly one-dimensional
candidates, zero scores). When r < b the DPP picks r items (a k-DPP sample of size r, or greedy
MAP until no item adds determinant) and the batch is filled with the best-scoring remaining
preselected candidates, ties broken by index; a :class:`DegeneratePoolWarning` says so. Any pool
of at least one candidate gets ``min(b, P)`` distinct candidates.
"""

from __future__ import annotations

import warnings

import numpy as np

from policy_sampler.preference.dpp import (
    RANK_RTOL, KDPPSampler, default_bandwidth, greedy_map, greedy_map_low_rank, nystrom_factor, quality_similarity_kernel)

__all__ = ["METHODS", "DegeneratePoolWarning", "select_batch", "k_medoids"]

METHODS: tuple[str, ...] = ("dpp", "greedy", "medoids", "boundary_medoids", "successive_elimination", "random")
DPP_MODES: tuple[str, ...] = ("map", "sample")
DENSE_LIMIT = 2000
DEFAULT_LANDMARKS = 256


class DegeneratePoolWarning(UserWarning):
    """The candidates span fewer than b directions of the DPP kernel: the batch was topped up with
    the best-scoring remaining candidates (module docstring)."""


def _distances(psi: np.ndarray) -> np.ndarray:
    sq = (psi * psi).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * psi @ psi.T, 0.0))


def k_medoids(distances: np.ndarray, k: int, max_iter: int = 100) -> np.ndarray:
    """Indices of k medoids for a distance matrix [n, n] (Park & Jun 2009)."""
    n = distances.shape[0]
    k = min(k, n)
    totals = distances.sum(1, keepdims=True)
    totals[totals == 0] = 1.0
    medoids = np.argsort((distances / totals.T).sum(1), kind="stable")[:k]
    for _ in range(max_iter):
        labels = np.argmin(distances[:, medoids], axis=1)
        updated = medoids.copy()
        for c in range(k):
            members = np.flatnonzero(labels == c)
            if members.size:
                updated[c] = members[np.argmin(distances[np.ix_(members, members)].sum(1))]
        if np.array_equal(np.sort(updated), np.sort(medoids)):
            break
        medoids = updated
    return medoids


def _hull_vertices(psi: np.ndarray) -> np.ndarray:
    from scipy.spatial import ConvexHull, QhullError

    if psi.shape[0] <= psi.shape[1] + 1:
        return np.arange(psi.shape[0])
    try:
        return np.sort(ConvexHull(psi).vertices)
    except (QhullError, ValueError):  # flat point sets: every point counts as on the boundary
        return np.arange(psi.shape[0])


def _successive_elimination(psi: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    dist = _distances(psi)
    dist[dist == 0] = np.inf  # the diagonal and duplicates are never "closest"
    alive = np.ones(len(scores), dtype=bool)
    while alive.sum() > k:
        masked = np.where(alive[:, None] & alive[None, :], dist, np.inf)
        i, j = np.unravel_index(np.argmin(masked), masked.shape)
        if not np.isfinite(masked[i, j]):  # only duplicates left: drop the lowest score
            alive[np.flatnonzero(alive)[np.argmin(scores[alive])]] = False
            continue
        alive[i if scores[i] < scores[j] else j] = False
    return np.flatnonzero(alive)


def select_batch(
    method: str,
    psi: np.ndarray,
    scores: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    *,
    preselect: int | None = None,
    dpp_gamma: float = 0.25,
    dpp_bandwidth: float | None = None,
    dpp_mode: str = "map",
    dpp_landmarks: int | None = None,
) -> np.ndarray:
    """Indices (into the candidates) of ``min(batch_size, P)`` queries chosen by ``method`` from
    candidates with differences ``psi`` [P, d] and scores ``scores`` [P] (>= 0, higher is better).
    ``preselect`` defaults to 20 * batch_size."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if dpp_mode not in DPP_MODES:
        raise ValueError(f"dpp_mode must be one of {DPP_MODES}, got {dpp_mode!r}")
    if dpp_landmarks is not None and (isinstance(dpp_landmarks, bool) or not isinstance(dpp_landmarks, (int, np.integer))
                                      or dpp_landmarks < 1):
        raise ValueError(f"dpp_landmarks must be None or an integer >= 1, got {dpp_landmarks!r}")
    n = len(scores)
    k = min(int(batch_size), n)
    if method == "random":
        return np.sort(rng.choice(n, size=k, replace=False))
    order = np.argsort(-scores, kind="stable")
    if method == "greedy":
        return order[:k]
    keep = order[: max(k, min(n, 20 * k if preselect is None else int(preselect)))]
    psi_b, scores_b = psi[keep], scores[keep]
    if method == "medoids":
        chosen = k_medoids(_distances(psi_b), k)
    elif method == "boundary_medoids":
        vertices = _hull_vertices(psi_b)
        chosen = vertices[k_medoids(_distances(psi_b[vertices]), k)]
        if chosen.size < k:
            rest = np.setdiff1d(np.arange(len(keep)), chosen)  # keep is sorted by score
            chosen = np.concatenate([chosen, rest[: k - chosen.size]])
    elif method == "successive_elimination":
        chosen = _successive_elimination(psi_b, scores_b, k)
    else:
        quality = np.clip(scores_b, 0.0, None) ** dpp_gamma
        bandwidth = default_bandwidth(psi_b, k) if dpp_bandwidth is None else float(dpp_bandwidth)
        dense = dpp_landmarks is None and len(keep) <= DENSE_LIMIT
        if dense:
            kernel = quality_similarity_kernel(psi_b, quality, bandwidth)
        else:
            factor = nystrom_factor(psi_b, quality, bandwidth, dpp_landmarks or DEFAULT_LANDMARKS, rng)
        if dpp_mode == "sample":
            sampler = KDPPSampler(kernel) if dense else KDPPSampler.from_factor(factor)
            chosen = np.asarray(sampler.sample(min(k, sampler.rank), rng), dtype=int)
        else:
            chosen = np.asarray(greedy_map(kernel, k) if dense else greedy_map_low_rank(factor, k), dtype=int)
        chosen = _top_up(chosen, k, len(keep))
    return keep[np.asarray(chosen, dtype=int)]


def _top_up(chosen: np.ndarray, k: int, n_keep: int) -> np.ndarray:
    """``chosen`` (indices into the ``n_keep`` preselected candidates, which are sorted by score,
    best first, ties by index) filled to k with the best remaining ones, warning when any was needed."""
    if chosen.size < k:
        warnings.warn(
            f"the DPP found only {chosen.size} of {k} candidates with a positive determinant (its kernel's numerical "
            f"rank; eigenvalues above {RANK_RTOL:g} of the largest count): near-duplicate, nearly collinear or "
            f"zero-score candidates; the other {k - chosen.size} queries are the best-scoring remaining candidates",
            DegeneratePoolWarning, stacklevel=3,
        )
        rest = np.setdiff1d(np.arange(n_keep), chosen)
        chosen = np.concatenate([chosen, rest[: k - chosen.size]])
    return chosen
