"""The reflection maximal coupling: acceptance 2 Phi(-delta/2), output law exactly N(q, sigma^2 I),
accepted outputs bitwise the draft, no NaN; and the naive resample-on-rejection variant is caught."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from policy_sampler.samplers.coupling import CouplingResult, reflection_coupling


def resample_on_rejection(draft, p, q, sigma, z, u, event_dims):
    """WRONG on purpose (negative control): a fresh target draw on rejection. Its law is
    min(N_p, N_q) + TV * N_q, not N_q."""
    res = reflection_coupling(draft, p, q, sigma, z, u, event_dims)
    g = torch.Generator().manual_seed(12345)
    fresh = torch.randn(z.shape, generator=g, dtype=z.dtype)
    sig = torch.as_tensor(sigma, dtype=draft.dtype).expand(res.accepted.shape)
    sig = sig.reshape(*res.accepted.shape, *([1] * event_dims))
    mask = res.accepted.reshape(*res.accepted.shape, *([1] * event_dims))
    return CouplingResult(torch.where(mask, draft, q + sig * fresh), res.accepted, res.delta, res.s, res.log_ratio)


def _draw(coupling, delta: float, dim: int, n: int, seed: int, sigma: float = 0.7):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(dim, generator=g, dtype=torch.float64)
    e /= e.norm()
    p = torch.randn(dim, generator=g, dtype=torch.float64).expand(n, dim)
    q = p + delta * sigma * e
    z = torch.randn(n, dim, generator=g, dtype=torch.float64)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    draft = p + sigma * z
    res = coupling(draft, p, q, torch.full((n,), sigma, dtype=torch.float64), z, u, 1)
    return res, draft, q, e, sigma


def law_check(coupling, delta: float, dim: int, n: int, seed: int = 0, alpha: float = 1e-4) -> dict:
    """p-values of: acceptance rate vs 2 Phi(-delta/2) (normal approximation), KS of the output's
    projection onto e and onto a direction orthogonal to e against N(0, 1); ``ok`` if all pass at
    ``alpha`` (Bonferroni over the three)."""
    res, draft, q, e, sigma = _draw(coupling, delta, dim, n, seed)
    y = res.sample
    assert not torch.isnan(y).any() and not torch.isnan(res.log_ratio).any()
    acc = res.accepted
    assert torch.equal(y[acc], draft[acc]), "accepted outputs must be bitwise the draft"
    rate = 2 * stats.norm.cdf(-delta / 2)
    se = max(math.sqrt(rate * (1 - rate) / n), 1 / n)
    z_acc = abs(acc.double().mean().item() - rate) / se
    w = (y - q) / sigma
    out = {"accept_z": z_acc, "ks_e": stats.kstest((w @ e).numpy(), "norm").pvalue}
    if dim > 1:
        g = torch.Generator().manual_seed(seed + 1)
        v = torch.randn(dim, generator=g, dtype=torch.float64)
        v -= (v @ e) * e
        v /= v.norm()
        out["ks_orth"] = stats.kstest((w @ v).numpy(), "norm").pvalue
    pvals = [p for k, p in out.items() if k.startswith("ks")]
    out["ok"] = z_acc <= 4 and min(pvals) > alpha / len(pvals)
    return out


DELTAS = [0.0, 1e-6, 0.1, 1.0, 3.0, 40.0]


@pytest.mark.parametrize("delta", DELTAS)
@pytest.mark.parametrize("dim", [1, 2, 16])
def test_reflection_coupling_law(delta, dim):
    out = law_check(reflection_coupling, delta, dim, n=20000, seed=int(delta * 7) + dim)
    assert out["ok"], out


@pytest.mark.parametrize("delta", DELTAS)
def test_reflection_coupling_high_dimension(delta):
    out = law_check(reflection_coupling, delta, 100_000, n=200, seed=3)
    assert out["ok"], out


@pytest.mark.parametrize("delta", [0.3, 1.0, 2.0])
def test_resample_on_rejection_fails_the_same_law_test(delta):
    out = law_check(resample_on_rejection, delta, 2, n=20000, seed=5)
    assert out["accept_z"] <= 4  # same acceptance: only the rejected part is wrong...
    assert not out["ok"], out    # ...and the law test sees it


def test_zero_delta_always_accepts_and_large_delta_never_nan():
    res, draft, *_ = _draw(reflection_coupling, 0.0, 8, 1000, 1)
    assert bool(res.accepted.all()) and torch.equal(res.sample, draft)
    for delta in [40.0, 1e3, 1e8]:
        res, *_ = _draw(reflection_coupling, delta, 100_000, 4, 2)
        assert torch.isfinite(res.sample).all() and torch.isfinite(res.log_ratio).all()
        assert not bool(res.accepted.any())


def test_rejected_output_is_the_reflection():
    res, draft, q, e, sigma = _draw(reflection_coupling, 1.0, 5, 2000, 4)
    rej = ~res.accepted
    assert rej.any()
    z = (draft - (q - 1.0 * sigma * e)) / sigma  # the draft's noise (p = q - delta sigma e)
    s = z @ e
    expected = q + sigma * (z - 2 * s[:, None] * e)
    torch.testing.assert_close(res.sample[rej], expected[rej])
    # the coordinate along e becomes delta - s; orthogonal parts are kept
    w = (res.sample - q) / sigma
    torch.testing.assert_close((w @ e)[rej], -s[rej])


def test_batch_and_window_dims_float32_and_deterministic_steps():
    g = torch.Generator().manual_seed(0)
    R, W, E = 5, 7, (3, 4)
    p = torch.randn(R, W, *E, generator=g)
    q = p + 0.05 * torch.randn(R, W, *E, generator=g)
    z = torch.randn(R, W, *E, generator=g)
    sigma = torch.full((R, W), 0.1, dtype=torch.float64)
    sigma[:, -1] = 0.0  # a zero-variance step: accept iff q == p exactly, else q
    q[0, -1] = p[0, -1]
    draft = p + sigma[..., None, None].float() * z
    u = torch.rand(R, W, generator=g, dtype=torch.float64)
    res = reflection_coupling(draft, p, q, sigma, z, u, 2)
    assert res.sample.dtype == torch.float32 and res.sample.shape == draft.shape
    assert res.accepted.shape == (R, W)
    assert bool(res.accepted[0, -1]) and not bool(res.accepted[1:, -1].any())
    torch.testing.assert_close(res.sample[1:, -1], q[1:, -1])
    acc = res.accepted
    assert torch.equal(res.sample[acc], draft[acc])
    # per element identical to coupling each (row, position) alone
    i, j = 2, 3
    one = reflection_coupling(draft[i, j][None], p[i, j][None], q[i, j][None], sigma[i, j][None], z[i, j][None],
                              u[i, j][None], 2)
    assert bool(one.accepted[0]) == bool(acc[i, j])
    torch.testing.assert_close(one.sample[0], res.sample[i, j])
