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

**Windows.** With ``adaptive_window`` (the default when no fixed window is given) each row's window
follows its own acceptance (:class:`~policy_sampler.samplers.windows.AdaptiveWindow`: a multiple of
its last accepted run, fixed before the round from committed steps only, which keeps the verification
schedule independent of the noise it verifies), and only the states inside the windows are sent to
the denoiser. ``speculative_picard`` also evaluates every ``probe_every``-th drafted state past the
window ("probes"): the Picard sources of the states between two probes extend the earlier probe's
evaluation (the same Gaussian-local or frozen rule as past a window's end), so later drafts keep most
of a full window's refinement at a fraction of its evaluations. With a fixed window every round
evaluates [rows, L+1] states (padded past the end with copies of the leaf; ``trim_window`` shrinks it
to what the active rows can use), the shapes a compiled or graphed denoiser wants.

Rows advance independently, finished rows leave the batch, and each round has one host sync.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from policy_sampler.samplers.windows import AdaptiveWindow
from policy_sampler.schedule import GaussianChain, NoiseSchedule, device_table

DRAFTS = ("frozen", "independent")
INITIAL_WINDOW = 16  # AdaptiveWindow: the first round's window, and its smallest one
WINDOW_MINIMUM = 4


def _optional_positive(name: str, value: Any) -> int | None:
    if value is not None:
        check_positive(name, value, integer=True)
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _adaptive(value: Any, window: int | None) -> bool:
    """``adaptive_window``: True/False, or None: adaptive exactly when no fixed window was given."""
    return window is None if value is None else _flag("adaptive_window", value)


def _prior_precision(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"prior_precision must be a positive finite number or None, got {value!r}")
    return float(value)


@dataclass
class _Rows:
    """One round's active rows and windows: ``rows`` [R] (device) and, on the host, their committed
    steps ``k``, transitions to verify ``n`` and drafted states evaluated up to offset ``extent``
    (``n``, or past it with Picard probes)."""

    rows: Tensor
    k: list[int]
    n: list[int]
    extent: list[int]


@dataclass
class _Verified:
    """A round's outcome before anything is committed: per row the accepted count ``m`` [R] (= ``n``
    when nothing was rejected), the new state and step, the next anchor and, with Picard refinement,
    the sources of the next window ``sources`` [R, W, *E] (None without)."""

    active: _Rows
    n: Tensor
    m: Tensor
    new_x: Tensor
    new_k: Tensor
    anchor: Tensor
    sources: Tensor | None


class _State:
    """Everything a run keeps between rounds: the chain's tables, each row's committed state, step,
    anchor (or Picard sources) and window rule, on the device, with the steps mirrored on the host."""

    def __init__(self, sampler: "_SpeculativeBase", call: DenoiserCall, schedule: NoiseSchedule, x_T: Tensor,
                 noise: Tensor, generator: torch.Generator | None, x0_guess: Tensor | None) -> None:
        chain = sampler._chain(schedule)
        K = chain.num_steps
        if not bool((chain.sigma > 0).any()):
            raise ValueError(
                f"{sampler.name} needs a schedule with at least one stochastic step; every step of this "
                "one has zero variance (nothing to speculate)"
            )
        self.call, self.chain, self.K, self.generator = call, chain, K, generator
        device, dtype = x_T.device, x_T.dtype
        self.device, self.dtype = device, dtype
        self.tab = chain.tensors(device, dtype)
        self.event_dims = x_T.ndim - 1
        self.W = sampler._window(schedule)
        B = x_T.shape[0]
        # next zero-variance step at or after each step (K if none): windows stop there
        det = (chain.sigma == 0).tolist()
        self.next_det = [K] * (K + 1)
        for s in reversed(range(K)):
            self.next_det[s] = s if det[s] else self.next_det[s + 1]
        d0_64, d1 = chain.draft_coefficients()
        self.tau = None if sampler.draft == "independent" else sampler.prior_precision
        if self.tau is None:
            self.recurrence = LinearRecurrence(d1, device, dtype)
        else:
            # Gaussian-local draft: x0_draft(x) = (C + h x) / (tau + snr) with C = x0_hat (tau + snr) - h x
            # taken at a source state (the posterior mean under a N(mu, I / tau) prior matched to it)
            a64, _ = schedule.alpha_bar_pairs()
            snr64, h64 = a64 / (1 - a64), a64.sqrt() / (1 - a64)
            w64 = 1 / (self.tau + snr64)
            self.recurrence = LinearRecurrence(d1 + d0_64 * h64 * w64, device, dtype)
            self.tab = dict(self.tab, g_w=device_table(w64, device, dtype), g_h=device_table(h64, device, dtype),
                            g_prec=device_table(self.tau + snr64, device, dtype))
        self.noise_rows = noise.transpose(0, 1)  # [B, K, *E]
        self.x = x_T.clone()
        self.k = torch.zeros(B, dtype=torch.long, device=device)
        # the first draft's clean prediction: 0, or the caller's guess (independent of this noise, so
        # legal); as the Gaussian-local draft's source C = tau * guess (the prior mean is the guess)
        self.anchor = torch.zeros_like(x_T) if x0_guess is None else x0_guess * (self.tau or 1.0)
        self.src = self.anchor.unsqueeze(1).repeat(1, self.W, *self.ones) if sampler.refine else None
        self.final = x_T.clone()
        self.finish = torch.zeros(B, dtype=torch.long)
        self.offsets = torch.arange(self.W + 1, device=device)
        self.row_list = list(range(B))  # active rows, kept on the host: no extra sync per round
        self.k_host = [0] * B
        self.rule = sampler._window_rule(B, self.W)
        self.probes = sampler.probe_every if sampler.refine else None
        self.accepted_total = 0
        self.row_rounds = 0
        self.draft_rounds = 0
        self.draft_evaluations = 0

    @property
    def ones(self) -> tuple[int, ...]:
        return (1,) * self.event_dims

    def coef(self, name: str, idx: Tensor) -> Tensor:
        v = self.tab[name][idx]
        return v.reshape(*v.shape, *self.ones)

    def active(self) -> _Rows:
        """The active rows in ascending order (as ``row_list``), found on the device (no host copy),
        with their windows: the rule's, cut at the next deterministic step."""
        R = len(self.row_list)
        rows = torch.argsort((self.k >= self.K).to(torch.int8), stable=True)[:R]
        k = [self.k_host[r] for r in self.row_list]
        ends = [min(self.next_det[kk] - kk, self.W) for kk in k]
        if self.rule is None:
            return _Rows(rows, k, ends, ends)
        n = [min(e, self.rule.windows[r]) for e, r in zip(ends, self.row_list)]
        return _Rows(rows, k, n, ends if self.probes else n)


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
    adaptive_window: bool = False  # True: each row's window follows its acceptance (AdaptiveWindow)
    probe_every: int | None = None  # adaptive Picard windows: evaluate every n-th state past them
    window_growth: float = 3.0  # AdaptiveWindow's growth

    def _window(self, schedule: NoiseSchedule) -> int:
        raise NotImplementedError

    def _chain(self, schedule: NoiseSchedule) -> GaussianChain:
        return schedule.ddpm_chain()

    def _window_rule(self, batch: int, cap: int) -> AdaptiveWindow | None:
        if not self.adaptive_window:
            return None
        return AdaptiveWindow(batch, initial=INITIAL_WINDOW, growth=self.window_growth, minimum=WINDOW_MINIMUM,
                              maximum=cap)

    def _sample(self, call: DenoiserCall, schedule: NoiseSchedule, x_T: Tensor, noise: Tensor,
                generator: torch.Generator | None, x0_guess: Tensor | None = None) -> SampleResult:
        state = _State(self, call, schedule, x_T, noise, generator, x0_guess)
        while state.row_list:
            self._commit(state, self._verify(state, state.active()))
        info = dict(mean_accepted_length=state.accepted_total / max(state.row_rounds, 1), window=state.W,
                    draft=self.draft)
        if self.draft == "independent":
            info.update(draft_rounds=state.draft_rounds, draft_nfe=-(-state.draft_evaluations // x_T.shape[0]))
        return call.result(state.final, state.finish.tolist(), **info)

    def _drafts(self, state: _State, active: _Rows, width: int, steps: Tensor, z: Tensor, sig: Tensor,
                n: Tensor) -> tuple[Tensor, Tensor]:
        """The drafted states [R, width + 1, *E] (root first) and the draft means [R, width, *E]."""
        rows, x_root = active.rows, state.x[active.rows]
        if self.draft == "independent":
            n_max = max(active.n)
            cond = state.call.cond.index_select(0, rows) if state.call.cond is not None else None
            states, means = [x_root], []
            for j in range(width):
                xj = states[-1]
                if j < n_max:
                    out_d = self.draft_denoiser(xj.to(state.call.model_dtype), state.tab["timesteps"][steps[:, j]], cond)
                    if not isinstance(out_d, Tensor) or tuple(out_d.shape) != tuple(xj.shape):
                        raise ValueError("draft_denoiser output must have the shape of its input x")
                    pj, _ = state.chain.mean(out_d.to(state.dtype), xj, steps[:, j])
                    state.draft_rounds += 1
                    state.draft_evaluations += len(active.n)
                    states.append(pj + sig[:, j] * z[:, j])
                else:
                    pj = xj
                    states.append(xj)
                means.append(pj)
            return torch.stack(states, 1), torch.stack(means, 1)
        source = state.src[rows][:, :width] if self.refine else state.anchor[rows].unsqueeze(1)
        if state.tau is None:
            shift, lam = state.coef("d0", steps) * source, state.coef("d1", steps)
        else:
            shift = state.coef("d0", steps) * state.coef("g_w", steps) * source
            lam = state.coef("d1", steps) + state.coef("d0", steps) * state.coef("g_h", steps) * state.coef("g_w", steps)
        u = shift + sig * z
        kr = state.k[rows]
        rolled = torch.cat([x_root.unsqueeze(1), state.recurrence.solve(x_root, kr, u)], 1)
        ps = shift + lam * rolled[:, :width]
        # Each drafted state is exactly its mean plus its step's noise (the coupling's premise); the
        # means come from the one-shot roll-out, a function of earlier noise only.
        return torch.cat([x_root.unsqueeze(1), ps + sig * z], 1), ps

    def _verify(self, state: _State, active: _Rows) -> _Verified:
        """Draft ``active.n`` transitions per row, evaluate the target at the drafted states in ONE call
        and couple each transition with the target kernel in order. Changes nothing in ``state``
        except the draft counters."""
        R, K, device = len(active.n), state.K, state.device
        rows, ones = active.rows, state.ones
        if state.rule is not None or self.trim_window:
            width = max(1, *active.extent)  # adaptive windows are ragged: the padding is never evaluated
        else:
            width = state.W
        offs = state.offsets[: width + 1]
        ar = torch.arange(R, device=device)
        n = torch.tensor(active.n, device=device)
        ext = torch.tensor(active.extent, device=device)
        kr = state.k[rows]
        kc = (kr[:, None] + offs).clamp(max=K - 1)  # [R, width+1] step of each window state
        steps = kc[:, :width]
        z = state.noise_rows[rows[:, None], steps]  # [R, width, *E]
        sig = state.coef("sigma", steps)
        xs, ps = self._drafts(state, active, width, steps, z, sig, n)
        leaf = xs[ar, n]
        inside = (offs[None, :] <= ext[:, None]).reshape(R, width + 1, *ones)
        xs = torch.where(inside, xs, xs[ar, ext].unsqueeze(1))  # pad past the window with its last state
        # evaluated: the verified window 0..n and, with probes, every probe_every-th state past it and
        # the last one; Picard sources of states between probes extend the probe before them
        evaluated = offs[None, :] <= n[:, None]
        if state.probes:
            past = offs[None, :] - n[:, None]
            evaluated = evaluated | ((past > 0) & (offs[None, :] <= ext[:, None])
                                     & ((past % state.probes == 0) | (offs[None, :] == ext[:, None])))

        flat_x, flat_t = xs.flatten(0, 1), state.tab["timesteps"][kc].flatten()
        flat_rows = rows.repeat_interleave(width + 1)
        if state.rule is None:  # fixed shapes [R, width + 1] (compiled or graphed denoisers)
            out = state.call(flat_x, flat_t, flat_rows)
        else:  # only the evaluated states, counted on the host (no sync)
            total = sum(nn + 1 + (-(-(e - nn) // state.probes) if state.probes else 0)
                        for nn, e in zip(active.n, active.extent))
            sel = torch.nonzero_static(evaluated.flatten(), size=total).squeeze(1)
            out = torch.zeros_like(flat_x)
            out[sel] = state.call(flat_x[sel], flat_t[sel], flat_rows[sel])
        mean, x0_hat = state.chain.mean(out.view_as(xs), xs, kc)
        if state.tau is not None:
            x0_hat = x0_hat * state.coef("g_prec", kc) - state.coef("g_h", kc) * xs  # the source C of each state

        rand_device = state.generator.device if state.generator is not None else device
        uniforms = torch.rand((R, width), generator=state.generator, dtype=torch.float64, device=rand_device)
        res = self.coupling(xs[:, 1:], ps, mean[:, :width], state.tab["sigma"][steps], z, uniforms.to(device),
                            state.event_dims)
        rejected = (offs[None, :width] < n[:, None]) & ~res.accepted
        has_rej = rejected.any(1)
        m = torch.where(has_rej, rejected.int().argmax(1), n)  # accepted drafted transitions

        kl = kr + n
        sigma_tab = state.tab["sigma"]
        leaf_det = (kl < K) & (sigma_tab[kl.clamp(max=K - 1)] == 0)
        pick = has_rej.reshape(R, *ones)
        new_x = torch.where(pick, res.sample[ar, m.clamp(max=width - 1)],
                            torch.where(leaf_det.reshape(R, *ones), mean[ar, n], leaf))
        new_k = torch.where(has_rej, kr + m + 1, torch.where(leaf_det, kl + 1, kl))
        anchor = torch.where(pick, x0_hat[ar, m], x0_hat[ar, n])
        sources = None
        if self.refine:
            # Picard update: slot new_k + i takes the prediction at the old state of that slot, or at
            # the last evaluated state before it (a probe, or the window's last state), all from this call
            last = torch.cummax(torch.where(evaluated, offs[None, :], 0), dim=1).values
            idx = torch.minimum((new_k - kr)[:, None] + state.offsets[None, :state.W], ext[:, None])
            sources = x0_hat[ar[:, None], last.gather(1, idx)]
        return _Verified(active, n, m, new_x, new_k, anchor, sources)

    def _commit(self, state: _State, v: _Verified) -> None:
        """Commit a verified round: states, steps, anchors (or Picard sources) and window histories."""
        rows, R, ones = v.active.rows, len(v.active.n), state.ones
        state.x[rows] = v.new_x
        state.k[rows] = v.new_k
        state.anchor[rows] = v.anchor
        if v.sources is not None:
            state.src[rows] = v.sources
        done = v.new_k >= state.K
        state.final[rows] = torch.where(done.reshape(R, *ones), v.new_x, state.final[rows])  # no boolean-mask sync

        host = torch.cat([v.new_k, v.m, state.call.nonfinite.long().view(1)]).tolist()  # the round's one sync
        if host[-1]:
            state.call.raise_if_nonfinite()
        for r, kk, m, n in zip(state.row_list, host[:R], host[R:2 * R], v.active.n):
            state.k_host[r] = kk
            if state.rule is not None:
                state.rule.record(r, m, n)
        state.accepted_total += sum(host[R:2 * R])
        state.row_rounds += R
        finished = [r for r, kk in zip(state.row_list, host[:R]) if kk >= state.K]
        if finished:
            state.finish[finished] = state.call.rounds
        state.row_list = [r for r in state.row_list if state.k_host[r] < state.K]


@register_sampler
class SpeculativeSampler(_SpeculativeBase):
    """Speculative sampling for diffusion with the reflection maximal coupling (arXiv 2501.05370).

    Options: ``lookahead`` (drafted transitions per round, int >= 1, or None: to the end),
    ``draft`` ('frozen': the target's last clipped clean prediction frozen, no extra model;
    'independent': ``draft_denoiser``, a callable with the denoiser's signature and prediction type,
    drafts sequentially), ``prior_precision`` (None, or tau > 0: the frozen draft becomes the
    Gaussian-local draft, see the module docstring), ``adaptive_window`` (True: each row's window is
    3x its last accepted run, at most ``lookahead``, and only its states are evaluated; False:
    ``lookahead`` transitions every round, in fixed shapes; None, the default: adaptive unless a
    ``lookahead`` is given). Exact for any setting.
    """

    name = "speculative"

    def __init__(self, lookahead: int | None = None, draft: str = "frozen",
                 draft_denoiser: Callable | None = None, prior_precision: float | None = None,
                 adaptive_window: bool | None = None) -> None:
        self.lookahead = _optional_positive("lookahead", lookahead)
        self.adaptive_window = _adaptive(adaptive_window, self.lookahead)
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
    an exact reflection-coupling verification from the window start. Exact for any setting.

    Options: ``window`` (the longest window, int >= 1, or None: to the end of the chain);
    ``prior_precision`` (as for ``speculative``; 30 took the fewest rounds on the trained
    ObstacleReach policy, docs/latency.md; None: the frozen draft); ``adaptive_window`` (True: each
    row verifies a window of 8x its last accepted run, :class:`AdaptiveWindow`, at most ``window``,
    and only the evaluated states are sent to the denoiser; False: ``window`` transitions every round
    in fixed shapes, for compiled or graphed denoisers; None, the default: adaptive unless a
    ``window`` is given); ``probe_every`` (adaptive windows: past the verified window, every ``probe_every``-th
    drafted state up to ``window`` and the last one are evaluated too, so later drafts keep their
    Picard refinement at a fraction of a full window's evaluations; None: none); ``trim_window``
    (fixed windows: each round's window shrinks to the longest one an active row can still use,
    fewer rows per call near the end of the chain). docs/exactness.md has the measurements behind
    the defaults."""

    name = "speculative_picard"
    refine = True

    window_growth = 8.0  # the Picard refinement of the states past the accepted run pays for them

    def __init__(self, window: int | None = None, prior_precision: float | None = 30.0,
                 trim_window: bool = False, adaptive_window: bool | None = None, probe_every: int | None = 2) -> None:
        self.window = _optional_positive("window", window)
        self.prior_precision = _prior_precision(prior_precision)
        self.trim_window = _flag("trim_window", trim_window)
        self.adaptive_window = _adaptive(adaptive_window, self.window)
        self.probe_every = _optional_positive("probe_every", probe_every)

    def _window(self, schedule: NoiseSchedule) -> int:
        K = schedule.num_steps
        return K if self.window is None else min(self.window, K)
