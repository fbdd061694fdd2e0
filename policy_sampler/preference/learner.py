"""The batch active preference learner: a pool of trajectories, a posterior over reward weights
w, and batches of pairwise queries chosen to learn w fast (arXiv 2402.15757, Alg. 1).

    learner = PreferenceLearner(features, batch_size=10, method="dpp")
    batch = learner.next_batch()             # [(i, j), ...] pool indices
    learner.add_answers([(i, j, 1), ...])    # 1: i preferred, -1: j preferred, 0: about equal
    w = learner.weights_mean()

Each batch: sample the posterior given every answer so far (:mod:`.posterior`), score the
not-yet-asked candidate pairs (:mod:`.acquisition`), choose ``batch_size`` of them
(:mod:`.batch`). Every random draw comes from generators seeded by (seed, number of answers,
purpose), so a learner rebuilt from the same arguments and answers returns the same batch.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from policy_sampler.preference.acquisition import ACQUISITIONS, acquisition_scores
from policy_sampler.preference.batch import DPP_MODES, METHODS, select_batch
from policy_sampler.preference.posterior import PosteriorSamples, sample_posterior
from policy_sampler.preference.response import ResponseModel

__all__ = ["PreferenceLearner", "alignment"]

STATE_VERSION = 1
DEFAULT_CANDIDATE_PAIRS = 1000
_POSTERIOR_KEYS = ("prior", "sampler", "n_samples", "n_chains", "burn_in", "thin", "step", "prior_scale", "init", "picard")
_PURPOSES = {"pairs": 0, "posterior": 1, "batch": 2}


def alignment(samples: torch.Tensor | np.ndarray, w_true: torch.Tensor | np.ndarray) -> float:
    """m = E_w[w . w_true / (|w| |w_true|)]: the mean cosine over posterior samples (arXiv 1810.04303 Sec. V)."""
    w = torch.as_tensor(np.asarray(samples), dtype=torch.float64)
    t = torch.as_tensor(np.asarray(w_true), dtype=torch.float64).reshape(-1)
    return float(((w @ t) / (w.norm(dim=-1).clamp(min=1e-300) * t.norm())).mean())


def _generator(seed: int, n_answers: int, purpose: str) -> tuple[torch.Generator, np.random.Generator]:
    sequence = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(n_answers), _PURPOSES[purpose]])
    torch_seed = int(sequence.generate_state(2, dtype=np.uint32).astype(np.uint64)[0])
    return torch.Generator().manual_seed(torch_seed), np.random.default_rng(sequence)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class PreferenceLearner:
    """Batch active learning of reward weights from pairwise answers over a fixed pool.

    ``features`` [N, d]: the (normalized) features of the pool's trajectories.
    ``pairs`` [P, 2]: candidate pairs of pool indices; ``None`` draws ``n_candidate_pairs``
    distinct unordered pairs (all of them when the pool has fewer), seeded by ``seed``.
    ``posterior_options``: ``prior``, ``sampler``, ``n_samples``, ``n_chains``, ``burn_in``,
    ``thin``, ``step``, ``prior_scale``, ``init``, ``picard`` (a dict) of :func:`sample_posterior`.
    """

    def __init__(
        self,
        features: np.ndarray | torch.Tensor,
        batch_size: int = 10,
        method: str = "dpp",
        acquisition: str = "information_gain",
        beta: float = 1.0,
        response: str = "bradley_terry",
        pairs: np.ndarray | Sequence[Sequence[int]] | None = None,
        seed: int = 0,
        *,
        delta: float = 0.1,
        n_candidate_pairs: int = DEFAULT_CANDIDATE_PAIRS,
        preselect: int | None = None,
        dpp_gamma: float = 0.25,
        dpp_bandwidth: float | None = None,
        dpp_mode: str = "map",
        dpp_landmarks: int | None = None,
        **posterior_options: Any,
    ):
        feats = torch.as_tensor(np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features), dtype=torch.float64)
        if feats.ndim != 2 or feats.shape[0] < 2 or feats.shape[1] < 1:
            raise ValueError(f"features must be [N >= 2, d >= 1], got shape {tuple(feats.shape)}")
        if not torch.isfinite(feats).all():
            raise ValueError("features contain NaN or inf")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"acquisition must be one of {ACQUISITIONS}, got {acquisition!r}")
        if dpp_mode not in DPP_MODES:
            raise ValueError(f"dpp_mode must be one of {DPP_MODES}, got {dpp_mode!r}")
        unknown = sorted(set(posterior_options) - set(_POSTERIOR_KEYS))
        if unknown:
            raise TypeError(f"unknown posterior option(s) {unknown}; known: {list(_POSTERIOR_KEYS)}")
        self.features = feats
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        self.n_candidate_pairs = _check_int("n_candidate_pairs", n_candidate_pairs, 1)
        self.preselect = None if preselect is None else _check_int("preselect", preselect, 1)
        self.method, self.acquisition, self.dpp_mode = method, acquisition, dpp_mode
        self.dpp_gamma = float(dpp_gamma)
        self.dpp_bandwidth = None if dpp_bandwidth is None else float(dpp_bandwidth)
        self.dpp_landmarks = None if dpp_landmarks is None else _check_int("dpp_landmarks", dpp_landmarks, 1)
        if not (math.isfinite(self.dpp_gamma) and self.dpp_gamma >= 0):
            raise ValueError(f"dpp_gamma must be a finite number >= 0, got {dpp_gamma!r}")
        self.response = ResponseModel(response, beta, delta)
        self.posterior_options = dict(posterior_options)
        self.pairs = self._candidate_pairs(pairs)
        self._answers: list[tuple[int, int, int]] = []
        self._cache: tuple[int, PosteriorSamples] | None = None
        sample_posterior(  # validates the posterior options now, not at the first batch
            self.response, self.features[:0], torch.zeros(0), generator=torch.Generator().manual_seed(0),
            **{**self.posterior_options, "burn_in": 0, "thin": 1, "n_samples": 1, "n_chains": 1},
        )

    # ------------------------------------------------------------------ candidate pairs
    def _candidate_pairs(self, pairs: Any) -> np.ndarray:
        n = self.features.shape[0]
        if pairs is not None:
            arr = np.asarray(pairs)
            if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1 or not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"pairs must be a non-empty [P, 2] integer array, got shape {arr.shape} dtype {arr.dtype}")
            bad = np.flatnonzero((arr < 0).any(1) | (arr >= n).any(1) | (arr[:, 0] == arr[:, 1]))
            if bad.size:
                raise ValueError(f"pairs[{bad[0]}] = {arr[bad[0]].tolist()}: indices must differ and lie in [0, {n})")
            return arr.astype(np.int64)
        total = n * (n - 1) // 2
        _, rng = _generator(self.seed, 0, "pairs")
        if total <= self.n_candidate_pairs:
            i, j = np.triu_indices(n, k=1)
            return np.stack([i, j], 1).astype(np.int64)
        chosen: set[tuple[int, int]] = set()
        while len(chosen) < self.n_candidate_pairs:
            draw = rng.integers(0, n, size=(self.n_candidate_pairs, 2))
            for a, b in draw:
                if a != b and len(chosen) < self.n_candidate_pairs:
                    chosen.add((int(min(a, b)), int(max(a, b))))
        return np.array(sorted(chosen), dtype=np.int64)

    # ------------------------------------------------------------------ answers
    @property
    def n_answers(self) -> int:
        return len(self._answers)

    @property
    def answers(self) -> list[tuple[int, int, int]]:
        return list(self._answers)

    def add_answers(self, answers: Iterable[Sequence[Any]]) -> None:
        """Record answers ``(i, j, choice)``: choice 1 = i preferred, -1 = j preferred, 0 = about
        equal. All are checked first; one bad item raises ``ValueError`` naming it, and none is added."""
        n = self.features.shape[0]
        parsed: list[tuple[int, int, int]] = []
        for k, item in enumerate(list(answers)):
            try:
                i, j, choice = item
            except (TypeError, ValueError):
                raise ValueError(f"answer {k} ({item!r}) is not an (i, j, choice) triple") from None
            values = []
            for name, value in (("i", i), ("j", j), ("choice", choice)):
                if isinstance(value, (bool, np.bool_)):
                    raise ValueError(f"answer {k} ({item!r}): {name} must be an integer, got a bool")
                if isinstance(value, (float, np.floating)):
                    if not math.isfinite(value) or value != int(value):
                        raise ValueError(f"answer {k} ({item!r}): {name} must be an integer, got {value!r}")
                    value = int(value)
                if not isinstance(value, (int, np.integer)):
                    raise ValueError(f"answer {k} ({item!r}): {name} must be an integer, got {type(value).__name__}")
                values.append(int(value))
            i, j, choice = values
            if not (0 <= i < n and 0 <= j < n):
                raise ValueError(f"answer {k} ({item!r}): pool index out of range [0, {n})")
            if i == j:
                raise ValueError(f"answer {k} ({item!r}): i == j (a trajectory compared with itself)")
            if choice not in (1, -1, 0):
                raise ValueError(f"answer {k} ({item!r}): choice must be 1, -1 or 0, got {choice}")
            parsed.append((i, j, choice))
        self._answers.extend(parsed)

    # ------------------------------------------------------------------ posterior
    def _psi(self, pairs: np.ndarray) -> torch.Tensor:
        index = torch.as_tensor(pairs, dtype=torch.long)
        return self.features[index[:, 0]] - self.features[index[:, 1]]

    def posterior(self) -> PosteriorSamples:
        """Posterior samples given every answer so far (cached until the next answer)."""
        if self._cache is None or self._cache[0] != self.n_answers:
            data = np.asarray(self._answers, dtype=np.int64).reshape(-1, 3)
            generator, _ = _generator(self.seed, self.n_answers, "posterior")
            samples = sample_posterior(
                self.response, self._psi(data[:, :2]), torch.as_tensor(data[:, 2]), generator=generator, **self.posterior_options
            )
            self._cache = (self.n_answers, samples)
        return self._cache[1]

    def posterior_samples(self) -> torch.Tensor:
        """[M, d] posterior samples of w (float64)."""
        return self.posterior().samples.clone()

    def weights_mean(self) -> np.ndarray:
        """The normalized mean of the unit-normalized posterior samples: [d], unit norm."""
        w = self.posterior().samples
        mean = (w / w.norm(dim=-1, keepdim=True).clamp(min=1e-300)).mean(0)
        norm = mean.norm()
        if norm < 1e-12:
            mean, norm = w.mean(0), w.mean(0).norm()
        return (mean / norm.clamp(min=1e-300)).numpy()

    # ------------------------------------------------------------------ batches
    def _open_pairs(self) -> np.ndarray:
        if not self._answers:
            return self.pairs
        n = self.features.shape[0]
        answered = np.asarray(self._answers, dtype=np.int64)[:, :2]
        asked = np.minimum(answered[:, 0], answered[:, 1]) * n + np.maximum(answered[:, 0], answered[:, 1])
        keys = self.pairs.min(1) * n + self.pairs.max(1)
        return self.pairs[~np.isin(keys, asked)]

    def next_batch(self) -> list[tuple[int, int]]:
        """The next ``batch_size`` pairs to ask (fewer when fewer unasked candidates remain);
        a function of the constructor arguments and the answers so far only."""
        candidates = self._open_pairs()
        if len(candidates) == 0:
            return []
        _, rng = _generator(self.seed, self.n_answers, "batch")
        psi = self._psi(candidates)
        if self.method == "random":
            scores = torch.zeros(len(candidates), dtype=torch.float64)
        else:
            scores = acquisition_scores(self.acquisition, self.response, self.posterior().samples, psi)
        chosen = select_batch(
            self.method, psi.numpy(), scores.numpy(), self.batch_size, rng,
            preselect=self.preselect, dpp_gamma=self.dpp_gamma, dpp_bandwidth=self.dpp_bandwidth, dpp_mode=self.dpp_mode,
            dpp_landmarks=self.dpp_landmarks,
        )
        return [(int(candidates[c, 0]), int(candidates[c, 1])) for c in chosen]

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        """The constructor arguments (besides ``features``) as JSON-able values."""
        return {
            "batch_size": self.batch_size, "method": self.method, "acquisition": self.acquisition,
            "beta": self.response.beta, "response": self.response.kind, "delta": self.response.delta,
            "pairs": self.pairs.tolist(), "seed": self.seed, "n_candidate_pairs": self.n_candidate_pairs,
            "preselect": self.preselect, "dpp_gamma": self.dpp_gamma, "dpp_bandwidth": self.dpp_bandwidth,
            "dpp_mode": self.dpp_mode, "dpp_landmarks": self.dpp_landmarks, **self.posterior_options,
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: version, pool shape, config and the answers in order."""
        return {
            "version": STATE_VERSION,
            "pool_shape": list(self.features.shape),
            "config": self.config(),
            "answers": [list(a) for a in self._answers],
        }

    @classmethod
    def from_state_dict(cls, features: np.ndarray | torch.Tensor, state: dict[str, Any]) -> "PreferenceLearner":
        """A learner over ``features`` with ``state``'s config and answers (same next batch)."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"state must be a dict with version {STATE_VERSION}, got {type(state).__name__} "
                             f"version {state.get('version') if isinstance(state, dict) else None!r}")
        shape = tuple(np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features).shape)
        if list(shape) != list(state["pool_shape"]):
            raise ValueError(f"features have shape {shape}, but the state was saved for a pool of shape {tuple(state['pool_shape'])}")
        config = dict(state["config"])
        learner = cls(features, **config)
        learner.add_answers(state["answers"])
        return learner
