"""The PreferenceLearner facade: replayable batches, answer validation, persistence, learning."""

import json
import math

import numpy as np
import pytest
import torch

from policy_sampler.preference import PreferenceLearner, SimulatedPerson, alignment
from policy_sampler.preference.batch import METHODS
from policy_sampler.preference.response import ResponseModel

FAST = dict(n_samples=100, n_chains=20, burn_in=60, thin=4)


def _pool(n=60, d=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def _play(learner, person, rounds):
    batches = []
    for _ in range(rounds):
        batch = learner.next_batch()
        batches.append(batch)
        learner.add_answers(person.answer(batch))
    return batches


@pytest.mark.parametrize("method", METHODS)
def test_replay_gives_the_same_batches(method):
    feats = _pool()
    person = SimulatedPerson(np.array([1.0, 0.0, 0.0, 0.0]), feats, ResponseModel(), seed=0)
    first = PreferenceLearner(feats, batch_size=5, method=method, seed=7, **FAST)
    batches = _play(first, person, 3)
    assert all(len(b) == 5 and len(set(b)) == 5 for b in batches)
    asked = [tuple(sorted(p)) for b in batches for p in b]
    assert len(set(asked)) == len(asked)  # no pair is asked twice
    # a new learner fed the same answers (as the study server replays them) asks the same next batch
    replay = PreferenceLearner(feats, batch_size=5, method=method, seed=7, **FAST)
    replay.add_answers(first.answers)
    assert replay.next_batch() == first.next_batch()
    assert np.array_equal(replay.weights_mean(), first.weights_mean())
    # and batch by batch
    again = PreferenceLearner(feats, batch_size=5, method=method, seed=7, **FAST)
    for batch, answers in zip(batches, np.array_split(np.array(first.answers), 3)):
        assert again.next_batch() == batch
        again.add_answers(answers.tolist())


def test_seed_changes_candidates_and_batches():
    feats = _pool(n=200)
    a = PreferenceLearner(feats, seed=0, **FAST)
    b = PreferenceLearner(feats, seed=1, **FAST)
    assert not np.array_equal(a.pairs, b.pairs)
    assert a.next_batch() != b.next_batch()
    assert len(a.pairs) == 1000 and len({tuple(p) for p in a.pairs.tolist()}) == 1000
    small = PreferenceLearner(_pool(n=10), **FAST)
    assert len(small.pairs) == 45  # all pairs of a small pool


def test_global_rng_does_not_matter():
    feats = _pool()
    torch.manual_seed(0)
    np.random.seed(0)
    a = PreferenceLearner(feats, **FAST).next_batch()
    torch.manual_seed(123)
    np.random.seed(123)
    torch.rand(5)
    assert PreferenceLearner(feats, **FAST).next_batch() == a


@pytest.mark.parametrize(
    "bad,match",
    [
        ((0, 60, 1), "out of range"),
        ((-1, 2, 1), "out of range"),
        ((3, 3, 1), "i == j"),
        ((1, 2, 2), "choice must be"),
        ((1, 2, float("nan")), "integer"),
        ((1.5, 2, 1), "integer"),
        ((1, 2), "triple"),
        ((1, 2, True), "bool"),
        ((1, "2", 1), "integer"),
    ],
)
def test_bad_answers_are_rejected_with_no_state_change(bad, match):
    learner = PreferenceLearner(_pool(), **FAST)
    learner.add_answers([(0, 1, 1)])
    before = learner.state_dict()
    batch = learner.next_batch()
    with pytest.raises(ValueError, match=match) as info:
        learner.add_answers([(2, 3, -1), bad, (4, 5, 0)])
    assert "answer 1" in str(info.value)
    assert learner.state_dict() == before and learner.n_answers == 1
    assert learner.next_batch() == batch


def test_numpy_and_float_integers_are_accepted():
    learner = PreferenceLearner(_pool(), **FAST)
    learner.add_answers([(np.int64(0), np.int32(1), np.int8(-1)), (2.0, 3.0, 0.0)])
    assert learner.answers == [(0, 1, -1), (2, 3, 0)]


def test_state_dict_round_trip_is_json_and_replays():
    feats = _pool()
    learner = PreferenceLearner(feats, batch_size=4, method="medoids", acquisition="volume_removal", beta=2.0, seed=3, **FAST)
    learner.add_answers([(0, 1, 1), (2, 5, -1), (7, 9, 0)])
    state = json.loads(json.dumps(learner.state_dict()))
    restored = PreferenceLearner.from_state_dict(feats, state)
    assert restored.next_batch() == learner.next_batch()
    assert restored.n_answers == 3 and restored.config() == learner.config()
    with pytest.raises(ValueError, match="shape"):
        PreferenceLearner.from_state_dict(feats[:, :3], state)


def test_weights_and_samples_shapes():
    learner = PreferenceLearner(torch.as_tensor(_pool()), **FAST)
    w = learner.weights_mean()
    assert w.shape == (4,) and math.isclose(float(np.linalg.norm(w)), 1.0)
    assert learner.posterior_samples().shape == (100, 4)


def test_bad_constructor_arguments():
    feats = _pool()
    with pytest.raises(ValueError, match="method"):
        PreferenceLearner(feats, method="kmeans")
    with pytest.raises(ValueError, match="acquisition"):
        PreferenceLearner(feats, acquisition="entropy")
    with pytest.raises(ValueError, match="response"):
        PreferenceLearner(feats, response="probit")
    with pytest.raises(ValueError, match="pairs"):
        PreferenceLearner(feats, pairs=[[0, 0]])
    with pytest.raises(ValueError, match="features"):
        PreferenceLearner(np.full((5, 2), np.nan))
    with pytest.raises(TypeError, match="unknown posterior option"):
        PreferenceLearner(feats, n_sample=10)
    with pytest.raises(ValueError, match="needs prior='gaussian'"):
        PreferenceLearner(feats, sampler="mala")


def test_given_pairs_are_used_and_run_out():
    feats = _pool()
    learner = PreferenceLearner(feats, batch_size=3, pairs=[[0, 1], [2, 3], [4, 5], [6, 7]], **FAST)
    first = learner.next_batch()
    assert len(first) == 3 and set(first) <= {(0, 1), (2, 3), (4, 5), (6, 7)}
    learner.add_answers([(i, j, 1) for i, j in first])
    assert len(learner.next_batch()) == 1
    learner.add_answers([(i, j, 1) for i, j in learner.next_batch()])
    assert learner.next_batch() == []


@pytest.mark.parametrize("options", [{}, {"prior": "gaussian", "sampler": "mala"}, {"response": "strict"}, {"acquisition": "max_regret"}])
def test_learns_the_hidden_weights(options):
    feats = _pool(n=150, d=4, seed=1)
    w_true = np.array([0.6, -0.5, 0.5, 0.37])
    w_true /= np.linalg.norm(w_true)
    person = SimulatedPerson(w_true, feats, None)
    learner = PreferenceLearner(feats, batch_size=10, seed=0, **{**FAST, **options})
    prior_alignment = alignment(learner.posterior_samples(), w_true)
    _play(learner, person, 5)
    assert abs(prior_alignment) < 0.2
    assert alignment(learner.posterior_samples(), w_true) > 0.8
    assert float(learner.weights_mean() @ w_true) > 0.9
