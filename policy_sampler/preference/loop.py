"""The preference loop closed: select a batch of queries -> get answers -> update -> repeat, resumable.

A :class:`PreferenceLoop` owns a :class:`PreferenceLearner` over a fixed pool of trajectories
(typically sampled by the policy itself, :func:`policy_sampler.sweep.generate_candidates`) and an
``answer`` callable (a :class:`SimulatedPerson`'s ``answer``, or answers collected by the study
tool). After every batch its state (the learner's config and every answer, in order, and the
history of posterior means) is written atomically to ``state_path``; a loop created again on the
same pool and path resumes where it stopped and, the learner being deterministic given its answers,
continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from policy_sampler.preference.learner import PreferenceLearner
from policy_sampler.serialization import atomic_write_bytes

__all__ = ["PreferenceLoop"]

LOOP_VERSION = 1
Answer = Callable[[Sequence[tuple[int, int]]], list[tuple[int, int, int]]]


class PreferenceLoop:
    """Batch active preference learning over ``features`` ([N, d], normalized), answered by
    ``answer(pairs) -> [(i, j, choice)]``; ``learner_options`` go to :class:`PreferenceLearner`."""

    def __init__(self, features: np.ndarray, answer: Answer, state_path: str | os.PathLike | None = None,
                 **learner_options: Any) -> None:
        self.features = np.asarray(features, dtype=np.float64)
        self.answer = answer
        self.state_path = None if state_path is None else Path(state_path)
        self.history: list[dict[str, Any]] = []
        if self.state_path is not None and self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            if state.get("version") != LOOP_VERSION:
                raise ValueError(f"{self.state_path} is not a preference-loop state (version {state.get('version')!r})")
            if learner_options and any(state["learner"]["config"].get(k) != v for k, v in learner_options.items()
                                       if k in state["learner"]["config"]):
                raise ValueError(f"{self.state_path} was saved with other learner options: "
                                 f"{ {k: state['learner']['config'].get(k) for k in learner_options} }")
            self.learner = PreferenceLearner.from_state_dict(self.features, state["learner"])
            self.history = list(state["history"])
        else:
            self.learner = PreferenceLearner(self.features, **learner_options)

    @property
    def n_answers(self) -> int:
        return self.learner.n_answers

    def step(self) -> list[tuple[int, int, int]]:
        """One batch: select it, get its answers, add them, record the posterior mean, save."""
        batch = self.learner.next_batch()
        if not batch:
            return []
        answers = self.answer(batch)
        self.learner.add_answers(answers)
        self.history.append({"n_answers": self.learner.n_answers, "weights_mean": self.learner.weights_mean().tolist()})
        self.save()
        return answers

    def run_until(self, n_answers: int) -> None:
        """Batches until at least ``n_answers`` answers are in (or the pool's pairs run out)."""
        while self.learner.n_answers < n_answers:
            if not self.step():
                break

    def state_dict(self) -> dict[str, Any]:
        return {"version": LOOP_VERSION, "learner": self.learner.state_dict(), "history": self.history}

    def save(self) -> None:
        if self.state_path is not None:
            atomic_write_bytes(self.state_path, json.dumps(self.state_dict()).encode())
