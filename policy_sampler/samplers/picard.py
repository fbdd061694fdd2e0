"""Picard iteration over the whole trajectory, and its sliding-window form ParaDiGMS (arXiv 2305.16317).

Every step of the chain, x_{k+1} = mean_k(x_k) + sigma_k z_k, is solved as a fixed point of the
whole (windowed) trajectory with the noise z drawn up front in step order (ParaDiGMS, Alg. 1): one
batched denoiser call evaluates every step of the window at the current guesses, the guesses are
refreshed all at once, and the window slides past the last step whose refresh moved less than the
tolerance (the first step that fails is accepted too: its inputs had converged).

One choice beyond the paper, an option with the paper's behaviour one setting away:
``init='frozen_x0'`` fills the steps the window newly reaches by rolling the chain forward with the
last clean prediction frozen (the draft of speculative sampling, arXiv 2501.05370, solved in one shot
by :class:`LinearRecurrence`), instead of the paper's copies of the last state (``init='copy'``).
The guesses start closer to the fixed point, so fewer sweeps pass before the window slides.

Anytime and warm-started (for control loops): given ``deadline``, the iteration stops before a round
it predicts would end past it; rows that reached the end return their converged x_0, the others
their latest clean prediction at the window's last step (``info['stopped_early']``). Given
``trajectory_guess`` (e.g. the previous chunk's path shifted in time, sampled with its noise shifted
the same way), every slot starts at that guess instead of a draft: the fixed point is unchanged,
only the number of sweeps to reach it. ``info['trajectory']`` ([K + 1, B, *event]) returns the path
for the next warm start.

Rows of a batch slide independently (each row has its own window start) and a row that has reached
the end leaves the batch, so a converged row costs no more compute. The window has a fixed number of
steps (padded past the end) so a compiled or CUDA-graph denoiser is reused; one host sync per round.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policy_sampler.samplers.base import (
    DenoiserCall,
    RoundClock,
    SampleResult,
    Sampler,
    check_positive,
    register_sampler,
)
from policy_sampler.samplers.recurrence import LinearRecurrence
from policy_sampler.schedule import GaussianChain, NoiseSchedule

CHAINS = ("ddpm", "ddim")
INITS = ("frozen_x0", "copy")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def chain_for(schedule: NoiseSchedule, chain: str) -> GaussianChain:
    """The DDPM chain, or deterministic DDIM (eta = 0)."""
    return schedule.ddpm_chain() if chain == "ddpm" else schedule.ddim_chain(0.0)


@register_sampler
class ParadigmsSampler(Sampler):
    """Sliding-window Picard iteration (ParaDiGMS, arXiv 2305.16317, Alg. 1).

    Options: ``window`` (steps per denoiser call), ``tolerance`` (per-step RMS change over the step's
    noise std below which a step counts as converged; the paper's default 0.1), ``chain``
    ('ddpm' or 'ddim' with eta = 0) and ``init`` (see the module docstring).
    """

    name = "paradigms"
    exact = False
    warm_start = True
    anytime = True

    def __init__(
        self,
        window: int = 64,
        tolerance: float = 0.1,
        chain: str = "ddpm",
        init: str = "frozen_x0",
    ) -> None:
        check_positive("window", window, integer=True)
        check_positive("tolerance", tolerance)
        self.window = window
        self.tolerance = float(tolerance)
        self.chain = _choice("chain", chain, CHAINS)
        self.init = _choice("init", init, INITS)

    def _window_length(self, schedule: NoiseSchedule) -> int:
        return min(self.window, schedule.num_steps)

    def _sample(self, call: DenoiserCall, schedule: NoiseSchedule, x_T: Tensor, noise: Tensor,
                generator, trajectory_guess: Tensor | None = None, deadline: float | None = None) -> SampleResult:
        chain = chain_for(schedule, self.chain)
        p = self._window_length(schedule)
        solver = _WindowSolver(chain, x_T, noise, p, self.init, trajectory_guess)
        tol2 = self.tolerance**2
        batch, steps = x_T.shape[0], schedule.num_steps
        begin = torch.zeros(batch, dtype=torch.long, device=x_T.device)  # each row's window start
        rounds_per_row = [0] * batch
        n_active = batch
        clock = RoundClock(deadline)
        while n_active:
            if call.rounds and clock.out_of_time():
                break
            # Unfinished rows first, found on the device (no host round trip); n_active is known.
            rows = torch.argsort((begin >= steps).to(torch.int8), stable=True)[:n_active]
            begin[rows] = solver.sweep(call, rows, begin[rows], tol2)
            host = torch.cat([begin, call.nonfinite.long().view(1)]).tolist()  # the round's one sync
            if host[-1]:
                call.raise_if_nonfinite()
            for r in range(batch):
                if host[r] >= steps and rounds_per_row[r] == 0:
                    rounds_per_row[r] = call.rounds
            n_active = sum(b < steps for b in host[:-1])
            clock.tick()
        done = begin >= steps
        rounds_per_row = [r or call.rounds for r in rounds_per_row]
        return call.result(solver.final(done), rounds_per_row, window=p, stopped_early=bool(n_active),
                           unfinished_rows=n_active, trajectory=solver.trajectory())


@register_sampler
class PicardSampler(ParadigmsSampler):
    """Picard iteration over the whole trajectory: ParaDiGMS with the window set to every step."""

    name = "picard"
    exact = False

    def __init__(self, tolerance: float = 0.1, chain: str = "ddpm", init: str = "frozen_x0") -> None:
        super().__init__(window=1, tolerance=tolerance, chain=chain, init=init)

    def _window_length(self, schedule: NoiseSchedule) -> int:
        return schedule.num_steps


class _WindowSolver:
    """The trajectory buffer and one Picard sweep over each active row's window."""

    def __init__(self, chain: GaussianChain, x_T: Tensor, noise: Tensor, p: int, init: str,
                 trajectory_guess: Tensor | None = None):
        device, dtype = x_T.device, x_T.dtype
        self.chain, self.p, self.init = chain, p, init
        self.tab = chain.tensors(device, dtype)
        self.steps = chain.num_steps
        self.event_dims = x_T.ndim - 1
        self.dim = x_T[0].numel()
        d0, d1 = chain.draft_coefficients()
        self.draft = LinearRecurrence(d1, device, dtype)
        self.noise = noise.transpose(0, 1)  # [B, K, *E]: noise[k] drives step k
        # Slots 0..K hold the trajectory (slot k enters step k, slot K is x_0); slot K+1 takes
        # writes that fall past the end, so every window writes with one fixed-shape index_put.
        self.buf = x_T.unsqueeze(1).repeat(1, self.steps + 2, *([1] * self.event_dims))
        self.offsets = torch.arange(p, device=device)
        self.x0_latest = torch.zeros_like(x_T)
        self.guessed = trajectory_guess is not None
        if self.guessed:
            self.buf[:, 1:self.steps + 1] = trajectory_guess[1:].transpose(0, 1)
            self.x0_latest = trajectory_guess[-1].clone()
        elif init == "frozen_x0":
            rows = torch.arange(x_T.shape[0], device=device)
            self._fill_draft(rows, torch.zeros_like(rows), self.x0_latest, limit=torch.full_like(rows, p))

    def _steps_of(self, start: Tensor) -> tuple[Tensor, Tensor]:
        idx = start[:, None] + self.offsets
        return idx, idx < self.steps

    def _coef(self, name: str, k: Tensor) -> Tensor:
        value = self.tab[name][k]
        return value.reshape(*value.shape, *([1] * self.event_dims))

    def _write(self, rows: Tensor, slots: Tensor, keep: Tensor, values: Tensor) -> None:
        target = torch.where(keep, slots, torch.full_like(slots, self.steps + 1))
        self.buf.index_put_((rows[:, None].expand_as(slots), target), values)

    def _fill_draft(self, rows: Tensor, start: Tensor, anchor: Tensor, limit: Tensor) -> None:
        """Roll slots start+1 .. up to (excluding) ``limit`` forward from slot ``start`` with the clean
        prediction frozen at ``anchor`` (or copy the start state, for ``init='copy'``); slots that
        started at a trajectory guess keep it."""
        if self.guessed:
            return
        k, _ = self._steps_of(start)
        kc = k.clamp(max=self.steps - 1)
        x_start = self.buf[rows, start]
        if self.init == "copy":
            values = x_start.unsqueeze(1).expand(-1, self.p, *x_start.shape[1:])
        else:
            u = self._coef("d0", kc) * anchor.unsqueeze(1) + self._coef("sigma", kc) * self.noise[rows[:, None], kc]
            values = self.draft.solve(x_start, start, u)
        slots = k + 1
        self._write(rows, slots, (slots < limit[:, None]) & (slots < self.steps), values)

    def sweep(self, call: DenoiserCall, rows: Tensor, begin: Tensor, tol2: float) -> Tensor:
        """One denoiser call over each row's window, the Picard refresh, and the new window starts."""
        k, valid = self._steps_of(begin)
        kc = k.clamp(max=self.steps - 1)
        x = self.buf[rows[:, None], kc]  # [R, p, *E]
        out = call(x.flatten(0, 1), self.tab["timesteps"][kc].flatten(), rows.repeat_interleave(self.p))
        mean, x0 = self.chain.mean(out.view_as(x), x, kc)
        drift = mean - x + self._coef("sigma", kc) * self.noise[rows[:, None], kc]
        new = self.buf[rows, begin].unsqueeze(1) + torch.cumsum(drift, dim=1)  # slots begin+1 .. begin+p

        old = self.buf[rows[:, None], (k + 1).clamp(max=self.steps)]
        change = (new - old).pow(2).flatten(2).sum(-1)  # [R, p]
        scale2 = self.tab["noise_scale"][kc].pow(2) * self.dim
        err = torch.where(scale2 > 0, change / scale2, torch.where(change > 0, torch.inf, 0.0))
        fail = (err > tol2) | ~valid
        first_fail = torch.where(fail.any(1), fail.int().argmax(1), torch.full_like(begin, self.p))
        new_begin = (begin + (first_fail + 1).clamp(max=self.p)).clamp(max=self.steps)

        self._write(rows, k + 1, valid, new)
        self.x0_latest[rows] = x0[:, -1]
        window_end = (begin + self.p).clamp(max=self.steps - 1)
        self._fill_draft(rows, window_end, x0[:, -1], limit=new_begin + self.p)
        return new_begin

    def trajectory(self) -> Tensor:
        """[K + 1, B, *event]: slot k enters step k; slot K is x_0."""
        return self.buf[:, : self.steps + 1].transpose(0, 1).clone()

    def final(self, done: Tensor) -> Tensor:
        """x_0 of the rows that reached the end; the latest clean prediction of the others."""
        return torch.where(done.reshape(-1, *([1] * self.event_dims)), self.buf[:, self.steps], self.x0_latest)
