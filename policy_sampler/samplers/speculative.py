"""Exact speculative sampling of the DDPM chain (De Bortoli et al., arXiv 2501.05370) and its
Picard-refined sliding form.

Every round, for each batch row at committed step k with state x:

1. **Draft** a window of n = min(L, steps up to the next zero-variance step) future transitions with
   the step's own noise ``noise[k+j]``: ``x~_{j+1} = p_j + sigma_{k+j} noise[k+j]``. The ``frozen``
   draft holds the clipped clean prediction at an anchor A and re-applies each step's own formula,
   ``p_j = d0_{k+j} A + d1_{k+j} x~_j`` (solved in one shot by :class:`LinearRecurrence`); the
   ``independent`` draft runs ``draft_denoiser`` sequentially (no target rounds; counted in
   ``info['draft_rounds']``).
2. **Verify** with ONE batched target call on the drafted states x~_0 .. x~_n (x~_n, the leaf,
   included), each at its own timestep, giving target means q_j.
3. **Couple** each drafted transition with the target kernel in order (:func:`reflection_coupling`,
   uniforms from ``generator``); on the first rejection commit the reflected state and discard the
   rest. If all n are accepted the leaf is committed; when the leaf's step is deterministic (the
   final DDPM step) it is applied from the leaf's evaluation, so the last round also produces x_0.
4. **Anchor** (delayed): the next anchor is the target's clean prediction at the parent of the new
   root (at the rejected step's input), or at the leaf, both from the verifying call. The first
   round drafts with A = 0 (a constant is a legal draft; at alpha_bar ~ 0 the clean prediction is
   near the data mean anyway), which saves a warm-up call, or with the caller's ``x0_guess`` (in a
   control loop, the previous chunk shifted in time), equally legal as it ignores this call's noise.

By induction over verified steps each committed transition is an exact draw of the target kernel
given the committed past (every draft mean depends only on the noise of earlier steps and on
earlier uniforms), so the output has exactly the law of ``ddpm``; it is not pathwise ``ddpm``
unless the draft equals the target.

``speculative_picard`` (the sliding variant of speculative.md section 6): the window persists across
calls; every call evaluates it, verifies from the window start with the means that built the
states, commits, and rebuilds the remaining window with the fresh clean predictions of the *old*
states at the same slots (a Picard sweep): ``x~_{i+1} = d0_i x0_hat(x~_i^old) + d1_i x~_i^new +
sigma_i z_i``, extended past the old window with the leaf's prediction frozen. Each draft mean still
depends only on the noise of earlier steps, and verification happens at every call from the window
start (a fixed schedule that never looks at the noise being verified), so it is exact too.

**Gaussian-local draft** (option ``prior_precision`` tau, both samplers): instead of holding the
clean prediction fixed, the draft takes it as the posterior mean under a Gaussian prior
N(mu, I/tau) fitted to the source evaluation. In stochastic-localization coordinates (snr
t = a/(1-a), y = h x with h = sqrt(a)/(1-a)) that mean is (tau mu + y)/(tau + t), so from a source
state x_s at step s with prediction X_s, ``x0_draft(x) = (C + h x)/(tau + t)`` with
``C = X_s (tau + t_s) - h_s x_s``. It is exact when the data are that Gaussian and tracks the
noise-driven drift of x0_hat along the drafted path (the frozen draft ignores it: its sqrt(dSNR)
large late steps are where it is rejected); tau -> inf recovers ``frozen``. The draft is still
linear in x, so the window is solved in one shot with lam = d1 + d0 h/(tau + t); the source C is
taken at the same states as the frozen anchor (or the Picard slots), so every draft mean is still
a function of earlier noise only: exact for any tau. tau ~ 1/(per-dimension data variance) suits
it; too small a tau is worse than frozen (tau -> 0 fails badly). No clip is applied to x0_draft.

Rows advance independently with fixed-shape windows [rows, L+1] (padded past the end with copies of
the leaf), finished rows leave the batch, and each round has one host sync.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from policy_sampler.samplers.base import (
    DenoiserCall,
    SampleResult,
    Sampler,
    check_positive,
    register_sampler,
)
from policy_sampler.samplers.coupling import reflection_coupling
from policy_sampler.samplers.recurrence import LinearRecurrence
from policy_sampler.schedule import GaussianChain, NoiseSchedule, device_table

DRAFTS = ("frozen", "independent")


def _optional_positive(name: str, value: Any) -> int | None:
    if value is not None:
        check_positive(name, value, integer=True)
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _prior_precision(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"prior_precision must be a positive finite number or None, got {value!r}")
    return float(value)


class _SpeculativeBase(Sampler):
    """The shared round loop; subclasses choose the window, the draft and whether it is refined."""

    exact = True
    draft_guess = True
    refine: bool = False  # True: Picard-refined sliding window (speculative_picard)
    coupling = staticmethod(reflection_coupling)  # test suites swap in wrong couplings here
    draft: str = "frozen"
    draft_denoiser: Callable | None = None
    prior_precision: float | None = None  # None: frozen x0_hat; else the Gaussian-local draft
    trim_window: bool = False  # True: each round's window shrinks to what the active rows can use

    def _window(self, schedule: NoiseSchedule) -> int:
        raise NotImplementedError

    def _chain(self, schedule: NoiseSchedule) -> GaussianChain:
        return schedule.ddpm_chain()

    def _sample(self, call: DenoiserCall, schedule: NoiseSchedule, x_T: Tensor, noise: Tensor,
                generator: torch.Generator | None, x0_guess: Tensor | None = None) -> SampleResult:
        chain = self._chain(schedule)
        K = chain.num_steps
        if not bool((chain.sigma > 0).any()):
            raise ValueError(
                f"{self.name} needs a schedule with at least one stochastic step; every step of this "
                "one has zero variance (nothing to speculate)"
            )
        device, dtype = x_T.device, x_T.dtype
        tab = chain.tensors(device, dtype)
        sigma_tab = tab["sigma"]
        W = self._window(schedule)
        B = x_T.shape[0]
        ed = x_T.ndim - 1
        ones = (1,) * ed

        def coef(name: str, idx: Tensor) -> Tensor:
            v = tab[name][idx]
            return v.reshape(*v.shape, *ones)

        # next zero-variance step at or after each step (K if none): windows stop there
        det = (chain.sigma == 0).tolist()
        nxt = [K] * (K + 1)
        for s in reversed(range(K)):
            nxt[s] = s if det[s] else nxt[s + 1]
        next_det = device_table(torch.tensor(nxt), device, torch.long)
        d0_64, d1 = chain.draft_coefficients()
        tau = self.prior_precision
        if tau is None or self.draft == "independent":
            recurrence = LinearRecurrence(d1, device, dtype)
        else:
            # Gaussian-local draft: x0_draft(x) = (C + h x) / (tau + snr) with C = x0_hat (tau + snr) - h x
            # taken at a source state (the posterior mean under a N(mu, I / tau) prior matched to it)
            a64, _ = schedule.alpha_bar_pairs()
            snr64, h64 = a64 / (1 - a64), a64.sqrt() / (1 - a64)
            w64 = 1 / (tau + snr64)
            recurrence = LinearRecurrence(d1 + d0_64 * h64 * w64, device, dtype)
            tab = dict(tab, g_w=device_table(w64, device, dtype), g_h=device_table(h64, device, dtype),
                       g_prec=device_table(tau + snr64, device, dtype))
        noise_rows = noise.transpose(0, 1)  # [B, K, *E]

        x = x_T.clone()
        k = torch.zeros(B, dtype=torch.long, device=device)
        # the first draft's clean prediction: 0, or the caller's guess (independent of this noise, so
        # legal); as the Gaussian-local draft's source C = tau * guess (the prior mean is the guess)
        anchor = torch.zeros_like(x_T) if x0_guess is None else x0_guess * (tau or 1.0)
        src = anchor.unsqueeze(1).repeat(1, W, *ones) if self.refine else None
        final = x_T.clone()
        finish = torch.zeros(B, dtype=torch.long)
        offsets = torch.arange(W + 1, device=device)
        row_list = list(range(B))  # active rows, kept on the host: no extra sync per round
        k_host = [0] * B
        accepted_total = 0
        row_rounds = 0
        draft_rounds = 0
        draft_evaluations = 0
        rand_device = generator.device if generator is not None else device

        while row_list:
            # the window this round: W, or (trim_window) the longest any active row can use, from the
            # host copy of the steps (no extra sync); fewer rows per call near the end of the chain
            Wn = min(W, max(1, *(nxt[k_host[r]] - k_host[r] for r in row_list))) if self.trim_window else W
            offs = offsets[: Wn + 1]
            # the active rows in ascending order (as row_list), found on the device: no host copy
            R = len(row_list)
            rows = torch.argsort((k >= K).to(torch.int8), stable=True)[:R]
            ar = torch.arange(R, device=device)
            kr = k[rows]
            n = torch.clamp(next_det[kr] - kr, max=W)  # transitions drafted and verified
            kc = (kr[:, None] + offs).clamp(max=K - 1)  # [R, Wn+1] step of each window state
            steps = kc[:, :Wn]
            z = noise_rows[rows[:, None], steps]  # [R, W, *E]
            sig = coef("sigma", steps)
            x_root = x[rows]

            if self.draft == "independent":
                n_max = max(min(nxt[kk] - kk, W) for kk in (k_host[r] for r in row_list))
                cond = call.cond.index_select(0, rows) if call.cond is not None else None
                states, means = [x_root], []
                for j in range(Wn):
                    xj = states[-1]
                    if j < n_max:
                        out_d = self.draft_denoiser(xj.to(call.model_dtype), tab["timesteps"][steps[:, j]], cond)
                        if not isinstance(out_d, Tensor) or tuple(out_d.shape) != tuple(xj.shape):
                            raise ValueError("draft_denoiser output must have the shape of its input x")
                        pj, _ = chain.mean(out_d.to(dtype), xj, steps[:, j])
                        draft_rounds += 1
                        draft_evaluations += R
                        states.append(pj + sig[:, j] * z[:, j])
                    else:
                        pj = xj
                        states.append(xj)
                    means.append(pj)
                xs = torch.stack(states, 1)
                ps = torch.stack(means, 1)
            else:
                source = src[rows][:, :Wn] if self.refine else anchor[rows].unsqueeze(1)
                if tau is None:
                    shift, lam = coef("d0", steps) * source, coef("d1", steps)
                else:
                    shift = coef("d0", steps) * coef("g_w", steps) * source
                    lam = coef("d1", steps) + coef("d0", steps) * coef("g_h", steps) * coef("g_w", steps)
                u = shift + sig * z
                rolled = torch.cat([x_root.unsqueeze(1), recurrence.solve(x_root, kr, u)], 1)
                ps = shift + lam * rolled[:, :Wn]
                # Each drafted state is exactly its mean plus its step's noise (the coupling's premise);
                # the means come from the one-shot roll-out, a function of earlier noise only.
                xs = torch.cat([x_root.unsqueeze(1), ps + sig * z], 1)

            leaf = xs[ar, n]
            inside = (offs[None, :] <= n[:, None]).reshape(R, Wn + 1, *ones)
            xs = torch.where(inside, xs, leaf.unsqueeze(1))  # pad past the window with the leaf

            out = call(xs.flatten(0, 1), tab["timesteps"][kc].flatten(), rows.repeat_interleave(Wn + 1))
            mean, x0_hat = chain.mean(out.view_as(xs), xs, kc)
            if tau is not None and self.draft != "independent":
                x0_hat = x0_hat * coef("g_prec", kc) - coef("g_h", kc) * xs  # the source C of each state

            uniforms = torch.rand((R, Wn), generator=generator, dtype=torch.float64, device=rand_device)
            res = self.coupling(xs[:, 1:], ps, mean[:, :Wn], sigma_tab[steps], z, uniforms.to(device), ed)
            rejected = (offs[None, :Wn] < n[:, None]) & ~res.accepted
            has_rej = rejected.any(1)
            m = torch.where(has_rej, rejected.int().argmax(1), n)  # accepted drafted transitions

            kl = kr + n
            leaf_det = (kl < K) & (sigma_tab[kl.clamp(max=K - 1)] == 0)
            pick = has_rej.reshape(R, *ones)
            new_x = torch.where(pick, res.sample[ar, m.clamp(max=Wn - 1)],
                                torch.where(leaf_det.reshape(R, *ones), mean[ar, n], leaf))
            new_k = torch.where(has_rej, kr + m + 1, torch.where(leaf_det, kl + 1, kl))
            x[rows] = new_x
            k[rows] = new_k
            anchor[rows] = torch.where(pick, x0_hat[ar, m], x0_hat[ar, n])
            if self.refine:
                # Picard update: slot new_k + i takes the prediction at the old state of that slot
                # (or the leaf's, past the old window), all from this call
                idx = torch.minimum((new_k - kr)[:, None] + offsets[None, :W], n[:, None])
                src[rows] = x0_hat[ar[:, None], idx]
            done = new_k >= K
            final[rows] = torch.where(done.reshape(R, *ones), new_x, final[rows])  # no boolean-mask sync

            host = torch.cat([new_k, m, call.nonfinite.long().view(1)]).tolist()  # the round's one sync
            if host[-1]:
                call.raise_if_nonfinite()
            for r, kk in zip(row_list, host[:R]):
                k_host[r] = kk
            accepted_total += sum(host[R:2 * R])
            row_rounds += R
            finished = [r for r, kk in zip(row_list, host[:R]) if kk >= K]
            if finished:
                finish[finished] = call.rounds
            row_list = [r for r in row_list if k_host[r] < K]

        info = dict(
            mean_accepted_length=accepted_total / max(row_rounds, 1),
            window=W,
            draft=self.draft,
        )
        if self.draft == "independent":
            info.update(draft_rounds=draft_rounds, draft_nfe=-(-draft_evaluations // B))
        return call.result(final, finish.tolist(), **info)


@register_sampler
class SpeculativeSampler(_SpeculativeBase):
    """Speculative sampling for diffusion with the reflection maximal coupling (arXiv 2501.05370).

    Options: ``lookahead`` (drafted transitions per round, int >= 1, or None: to the end),
    ``draft`` ('frozen': the target's last clipped clean prediction frozen, no extra model;
    'independent': ``draft_denoiser``, a callable with the denoiser's signature and prediction type,
    drafts sequentially), ``prior_precision`` (None, or tau > 0: the frozen draft becomes the
    Gaussian-local draft, see the module docstring). Exact for any draft and lookahead.
    """

    name = "speculative"

    def __init__(self, lookahead: int | None = None, draft: str = "frozen",
                 draft_denoiser: Callable | None = None, prior_precision: float | None = None) -> None:
        self.lookahead = _optional_positive("lookahead", lookahead)
        self.prior_precision = _prior_precision(prior_precision)
        if prior_precision is not None and draft != "frozen":
            raise ValueError("prior_precision applies to draft='frozen' only")
        if draft not in DRAFTS:
            raise ValueError(f"draft must be one of {DRAFTS}, got {draft!r}")
        if draft == "independent" and draft_denoiser is None:
            raise ValueError("draft='independent' needs a draft_denoiser (a callable like the denoiser)")
        if draft_denoiser is not None and not callable(draft_denoiser):
            raise ValueError("draft_denoiser must be callable")
        self.draft = draft
        self.draft_denoiser = draft_denoiser

    def _window(self, schedule: NoiseSchedule) -> int:
        K = schedule.num_steps
        return K if self.lookahead is None else min(self.lookahead, K)


@register_sampler
class SpeculativePicardSampler(_SpeculativeBase):
    """Speculative sampling whose frozen-x0 drafts are refined by a Picard sweep at every call
    (speculative.md section 6, sliding variant): each call is both a Picard sweep of the window and
    an exact reflection-coupling verification from the window start. Options ``window`` (transitions
    per window, int >= 1, or None: to the end) and ``prior_precision`` (as for ``speculative``; the
    default 10 suits data normalized to [-1, 1], as a DiffusionPolicy's actions are, and measured
    fewer rounds than the frozen draft (None) on the mixture, a random and a trained U-Net).
    ``trim_window``: each round's window (and so the rows of its call) shrinks to the longest one an
    active row can still use, instead of a fixed shape padded with the leaf: fewer rows per call near
    the end of the chain (a compiled or graphed denoiser then sees several row counts; use buckets).
    Exact, like ``speculative``, for any setting."""

    name = "speculative_picard"
    refine = True

    def __init__(self, window: int | None = None, prior_precision: float | None = 10.0,
                 trim_window: bool = False) -> None:
        self.window = _optional_positive("window", window)
        self.prior_precision = _prior_precision(prior_precision)
        self.trim_window = _flag("trim_window", trim_window)

    def _window(self, schedule: NoiseSchedule) -> int:
        K = schedule.num_steps
        return K if self.window is None else min(self.window, K)
