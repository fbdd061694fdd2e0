"""Acquisition functions and response models on hand-worked cases."""

import math

import numpy as np
import pytest
import torch

from policy_sampler.preference.acquisition import acquisition_scores, information_gain, max_regret, volume_removal
from policy_sampler.preference.response import ResponseModel

LOGIT_09 = math.log(9.0)  # sigmoid(log 9) = 0.9
# Two posterior samples w1 = e1, w2 = e2 and three queries:
#   A: psi = (log 9, -log 9): w1 says 0.9 for "first", w2 says 0.1 -> the samples disagree;
#   B: psi = (log 9,  log 9): both say 0.9 -> the answer is nearly certain;
#   C: psi = (0, 0): two identical trajectories -> both say 0.5.
W = torch.eye(2, dtype=torch.float64)
PSI = torch.tensor([[LOGIT_09, -LOGIT_09], [LOGIT_09, LOGIT_09], [0.0, 0.0]], dtype=torch.float64)


def _h(p):
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def test_probabilities_are_the_hand_values():
    probs = ResponseModel("bradley_terry").probabilities(W, PSI)
    expected = torch.tensor([[[0.9, 0.1], [0.9, 0.1], [0.5, 0.5]], [[0.1, 0.9], [0.9, 0.1], [0.5, 0.5]]], dtype=torch.float64)
    assert torch.allclose(probs, expected)


def test_volume_removal_hand_values_and_sign():
    probs = ResponseModel().probabilities(W, PSI)
    # Pbar: A (0.5, 0.5) -> 1 - 0.5 = 0.5; B (0.9, 0.1) -> 1 - 0.82 = 0.18; C -> 0.5.
    assert torch.allclose(volume_removal(probs), torch.tensor([0.5, 0.18, 0.5], dtype=torch.float64))
    assert int(torch.argmax(volume_removal(probs[:, :2]))) == 0
    # APReL's inverted sign (argmax of sum_q Pbar(q)^2) picks the near-certain query B instead.
    apre_l = (probs[:, :2].mean(0) ** 2).sum(-1)
    assert int(torch.argmax(apre_l)) == 1


def test_information_gain_hand_values():
    ig = information_gain(ResponseModel().probabilities(W, PSI))
    # A: H(0.5) - mean(H(0.9), H(0.1)) = 1 - H(0.9); B: H(0.9) - H(0.9) = 0; C: 1 - 1 = 0.
    assert torch.allclose(ig, torch.tensor([1 - _h(0.9), 0.0, 0.0], dtype=torch.float64), atol=1e-12)
    # Unlike volume removal, it does not like the query of two identical trajectories.
    assert float(ig[0]) > 0.5 and float(ig[2]) == pytest.approx(0.0, abs=1e-12)


def test_information_gain_three_outcomes_by_hand():
    # One query, weak model: each sample gives a distribution over (1, -1, 0).
    probs = torch.tensor([[[0.7, 0.2, 0.1]], [[0.1, 0.6, 0.3]]], dtype=torch.float64)
    pbar = [0.4, 0.4, 0.2]
    h = lambda p: -sum(x * math.log2(x) for x in p)  # noqa: E731
    expected = h(pbar) - (h([0.7, 0.2, 0.1]) + h([0.1, 0.6, 0.3])) / 2
    assert float(information_gain(probs)[0]) == pytest.approx(expected)
    assert float(volume_removal(probs)[0]) == pytest.approx(1 - (0.16 + 0.16 + 0.04))


def test_max_regret_hand_values():
    w = torch.eye(2, dtype=torch.float64)
    psi = torch.tensor([[2.0, -1.0], [1.0, 1.0], [-0.5, 3.0]], dtype=torch.float64)
    # (2,-1): u = (2, -1) -> 2 + 1 = 3; (1,1): all samples agree -> 0; (-0.5,3): u = (-0.5, 3) -> 3 + 0.5.
    assert torch.allclose(max_regret(w, psi), torch.tensor([3.0, 0.0, 3.5], dtype=torch.float64))
    assert torch.equal(acquisition_scores("max_regret", ResponseModel(), w, psi), max_regret(w, psi))


def test_weak_model_by_hand_and_normalized():
    model = ResponseModel("weak", beta=1.0, delta=0.5)
    p = model.probabilities(torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64))[0, 0]
    p1 = 1 / (1 + math.exp(0.5))
    assert p.tolist() == pytest.approx([p1, p1, (math.e - 1) * p1 * p1])
    u = torch.linspace(-5, 5, 11, dtype=torch.float64)
    probs = model.probabilities(torch.tensor([[1.0]], dtype=torch.float64), u[:, None])
    assert torch.allclose(probs.sum(-1), torch.ones_like(probs.sum(-1)))
    # log-likelihood of answers matches the probabilities.
    choices = torch.tensor([1, -1, 0])
    ll = model.log_likelihood(torch.tensor([[1.0]], dtype=torch.float64), u[:3, None], choices)
    assert float(ll[0]) == pytest.approx(float(torch.log(probs[0, [0, 1, 2], [0, 1, 2]]).sum()))


def test_strict_likelihood_is_the_hinge_and_bt_is_logistic():
    u = torch.tensor([[2.0], [-3.0]], dtype=torch.float64)
    w = torch.tensor([[1.0]], dtype=torch.float64)
    strict = ResponseModel("strict", beta=1.0)
    assert float(strict.log_likelihood(w, u, torch.tensor([1, 1]))[0]) == pytest.approx(0.0 + -3.0)
    bt = ResponseModel("bradley_terry", beta=2.0)
    expected = math.log(1 / (1 + math.exp(-4.0))) + math.log(1 / (1 + math.exp(-6.0)))
    assert float(bt.log_likelihood(w, u, torch.tensor([1, -1]))[0]) == pytest.approx(expected)


@pytest.mark.parametrize("kwargs", [{"kind": "logit"}, {"beta": 0.0}, {"beta": float("nan")}, {"delta": -1.0}])
def test_bad_response_model_raises(kwargs):
    with pytest.raises(ValueError):
        ResponseModel(**kwargs)


def test_unknown_acquisition_raises():
    with pytest.raises(ValueError, match="acquisition must be one of"):
        acquisition_scores("entropy", ResponseModel(), W, PSI)


def test_simulated_person_noiseless_and_noisy():
    from policy_sampler.preference.simulated import SimulatedPerson

    feats = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    person = SimulatedPerson(np.array([1.0, 0.0]), feats, None)
    assert person.answer([(0, 1), (1, 0), (2, 1)]) == [(0, 1, 1), (1, 0, -1), (2, 1, 1)]
    noisy = SimulatedPerson(np.array([1.0, 0.0]), feats, ResponseModel(beta=1.0), seed=0)
    answers = [c for _, _, c in noisy.answer([(0, 1)] * 4000)]
    assert np.mean(np.array(answers) == 1) == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.03)
