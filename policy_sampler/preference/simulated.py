"""A simulated person with hidden reward weights w_true who answers pairwise queries through a
response model (the synthetic user of arXiv 1810.04303 Sec. V), for experiments and tests."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from policy_sampler.preference.response import ResponseModel

__all__ = ["SimulatedPerson", "random_unit_weights"]


def random_unit_weights(d: int, rng: np.random.Generator) -> np.ndarray:
    """w_true uniform on the unit sphere in R^d."""
    w = rng.standard_normal(d)
    return w / np.linalg.norm(w)


class SimulatedPerson:
    """Answers (i, j) with 1/-1/0 for the pool ``features`` [N, d]: by ``response`` (a
    :class:`ResponseModel`) or, with ``response=None``, noiselessly: sign(w_true . psi)."""

    def __init__(self, w_true: np.ndarray, features: np.ndarray, response: ResponseModel | None, seed: int = 0):
        self.w_true = np.asarray(w_true, dtype=np.float64).reshape(-1)
        self.features = np.asarray(features, dtype=np.float64)
        if self.features.ndim != 2 or self.features.shape[1] != self.w_true.size:
            raise ValueError(f"features must be [N, {self.w_true.size}], got shape {self.features.shape}")
        self.response = response
        self._generator = torch.Generator().manual_seed(int(seed))

    def answer(self, pairs: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
        """(i, j, choice) for each pair."""
        if len(pairs) == 0:
            return []
        index = np.asarray(pairs, dtype=np.int64)
        psi = self.features[index[:, 0]] - self.features[index[:, 1]]
        if self.response is None:
            choices = np.sign(psi @ self.w_true).astype(np.int64)
        else:
            choices = self.response.sample(torch.as_tensor(self.w_true), torch.as_tensor(psi), self._generator).numpy()
        return [(int(i), int(j), int(c)) for (i, j), c in zip(index, choices)]
