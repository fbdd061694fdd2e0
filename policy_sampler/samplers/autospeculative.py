"""Autospeculative decoding for DDPM (ASD; Hu, Das, Sadigh, Anari, arXiv 2505.03983).

In the stochastic-localization coordinates ``y = sqrt(a) / (1 - a) * x`` at ``t = a / (1 - a)``
(a = alpha_bar, t the SNR), the DDPM ``fixed_small`` posterior step from t_k to t_{k+1} is exactly
the SL Euler step

    y' = y + eta_k * x0_hat + sqrt(eta_k) * z,     eta_k = t_{k+1} - t_k,

(tests/samplers/test_speculative.py checks it to 1e-12 in float64). ASD drafts every future increment from
the law of the *next* increment with the current clean prediction, ``N(eta_i x0_hat, eta_i I)``;
mapped back to DDPM coordinates this is exactly the frozen-x0 draft of ``speculative``, and ASD's
verifier (its Gaussian rejection sampler: accept, else replace the sample by its reflection and
drop the rest) is the same reflection maximal coupling. So this sampler *is*
``speculative(draft='frozen', lookahead=spec_len)``: it shares that code (a thin subclass) and has
the same law (exactly ``ddpm``'s). Option ``spec_len``: drafted steps per round, int >= 1, or None
for infinite speculation (draft all remaining steps, ASD's ``spec_ddpm_inf``).
"""

from __future__ import annotations

from policy_sampler.samplers.base import register_sampler
from policy_sampler.samplers.speculative import SpeculativeSampler, _optional_positive


@register_sampler
class AutospeculativeSampler(SpeculativeSampler):
    """ASD (arXiv 2505.03983): ``speculative`` with the frozen-x0 draft; see the module docstring."""

    name = "autospeculative"

    def __init__(self, spec_len: int | None = None) -> None:
        self.spec_len = _optional_positive("spec_len", spec_len)
        super().__init__(lookahead=spec_len, draft="frozen", adaptive_window=False)
