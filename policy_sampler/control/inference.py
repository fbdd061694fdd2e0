"""Sampling the runner's chunks from what the control loop handed over (on a worker thread in real time).

The control loop takes a snapshot without torch work (the envs, their observation histories, the
previous chunk, the lead, a seed); :class:`ChunkSampler` turns it into a :class:`Chunk`: the main
sampler's chunk (initial noise, warm start, the exact samplers' draft guess, RTC guidance, the
anytime deadline, best-of-N) or the few-step DDIM fallback's. A chunk holding NaN or inf raises
``FloatingPointError`` (the sampler raises it first when the denoiser returned any).

Draws: with a simulated delay, every chunk draws from one generator per lane in order, so a run is
reproducible (and at delay 0 equals ``predict_action`` chunk after chunk). In real time each chunk
gets a generator seeded from the snapshot's seed, so no generator is shared between threads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from policy_sampler.control.candidates import BestOfN
from policy_sampler.control.chunk import Chunk, shift_in_time
from policy_sampler.control.config import RunnerConfig
from policy_sampler.control.smoothing import ChunkSmoothing
from policy_sampler.control.timing import Timing
from policy_sampler.control.workers import cancellable
from policy_sampler.policy.observations import stack_observations
from policy_sampler.samplers import Sampler, make_sampler

__all__ = ["ChunkSampler"]


class ChunkSampler:
    """The runner's chunks of ``policy`` under ``sampler`` with the runner's ``config``, ``smoothing``,
    ``best_of_n`` (or None) and ``timing`` (its clock measures each chunk from launch)."""

    def __init__(self, policy: Any, sampler: Sampler, config: RunnerConfig, smoothing: ChunkSmoothing,
                 best_of_n: BestOfN | None, timing: Timing) -> None:
        self.policy = policy
        self.sampler = sampler
        self.config = config
        self.smoothing = smoothing
        self.best_of_n = best_of_n
        self.timing = timing
        self.guess_from_previous = config.guess_from_previous and sampler.draft_guess
        self.ddim = make_sampler("ddim") if config.fallback_steps else None
        self.reset()

    def reset(self) -> None:
        """Fresh generators for an episode, seeded with ``config.seed`` (None: fresh entropy)."""
        device = self.policy.device
        self.generator = torch.Generator(device=device)
        if self.config.seed is not None:
            self.generator.manual_seed(self.config.seed)
        else:
            self.generator.seed()
        self.seed = self.generator.initial_seed()
        self.fallback_generator = torch.Generator(device=device)
        self.fallback_generator.manual_seed(self.seed ^ 0x5EED)
        self._seeds = np.random.default_rng(self.seed)

    def next_seed(self) -> int:
        """A seed for one real-time chunk (drawn without torch work)."""
        return int(self._seeds.integers(2 ** 62))

    def _generator(self, inputs: dict[str, Any], fallback: bool) -> torch.Generator:
        if inputs["seed"] is None:  # simulated: one generator per lane, drawn in order
            return self.fallback_generator if fallback else self.generator
        return torch.Generator(device=self.policy.device).manual_seed(inputs["seed"])

    def main(self, tick: int, inputs: dict[str, Any], launched_at: float, cancelled: Any) -> Chunk:
        """The main sampler's chunk answering tick ``tick``'s observation."""
        c = self.policy.config
        generator = self._generator(inputs, fallback=False)
        envs = inputs["envs"]
        repeats = self.config.num_candidates
        shape = (len(envs) * repeats, c.horizon, c.action_dim)
        device = self.policy.device
        obs = stack_observations(c.input_keys, inputs["histories"])
        kwargs: dict[str, Any] = {}
        prev = inputs["previous"]
        shift = None if prev is None else tick - prev.start
        overlaps = prev is not None and shift < c.horizon
        before = None if prev is None else torch.as_tensor(prev.positions(envs), device=device)
        if self.config.warm_start:
            steps = self.policy.schedule_for(self.config.num_inference_steps).num_steps
            x_T = torch.randn(shape, generator=generator, device=device)
            noise = torch.randn((steps, *shape), generator=generator, device=device)
            if overlaps and prev.noise is not None:
                keep = c.horizon - shift
                x_T[:, :keep] = prev.x_T[before, shift:]
                noise[:, :, :keep] = prev.noise[:, before, shift:]
                if prev.trajectory is not None:
                    kwargs["trajectory_guess"] = shift_in_time(prev.trajectory[:, before], shift, dim=2)
            kwargs.update(x_T=x_T, noise=noise)
        else:
            kwargs["x_T"] = torch.randn(shape, generator=generator, device=device)
        if self.guess_from_previous and overlaps:
            # the exact samplers' first draft assumes the previous chunk, shifted (its tail repeated)
            guess = shift_in_time(prev.normalized[before], shift, dim=1)
            kwargs["x0_guess"] = guess.repeat_interleave(repeats, dim=0)
        if overlaps:
            guidance = self.smoothing.guidance(prev, shift, inputs["lead"], envs, repeats)
            if guidance is not None:
                kwargs["guidance"] = guidance
        if inputs["deadline"] is not None:
            kwargs["deadline"] = self.timing.sampler_deadline(inputs["deadline"])
        out = self.policy.predict_action(obs if self.best_of_n is None else self.best_of_n.expand(obs),
                                         sampler=cancellable(self.sampler, cancelled), generator=generator,
                                         num_inference_steps=self.config.num_inference_steps, **kwargs)
        chunk = out.chunk.detach().float()
        if self.best_of_n is not None:
            chunk = self.best_of_n.choose(chunk, envs, c.n_obs_steps - 1, inputs["executed"])
        accepted = out.info.get("mean_accepted_length")
        return self._chunk(tick, envs, chunk, launched_at, out, x_T=kwargs.get("x_T"), noise=kwargs.get("noise"),
                           trajectory=out.info.get("trajectory") if self.config.warm_start else None,
                           mean_accepted_length=None if accepted is None else float(accepted))

    def fallback(self, tick: int, inputs: dict[str, Any], launched_at: float, cancelled: Any) -> Chunk:
        """A few-step DDIM chunk answering tick ``tick``'s observation."""
        obs = stack_observations(self.policy.config.input_keys, inputs["histories"])
        out = self.policy.predict_action(obs, sampler=cancellable(self.ddim, cancelled),
                                         generator=self._generator(inputs, fallback=True),
                                         num_inference_steps=self.config.fallback_steps)
        return self._chunk(tick, inputs["envs"], out.chunk.detach().float(), launched_at, out)

    def _chunk(self, tick: int, envs: np.ndarray, chunk: torch.Tensor, launched_at: float, out: Any,
               **extra: Any) -> Chunk:
        actions = chunk[:, self.policy.config.n_obs_steps - 1:].cpu().numpy()
        if not np.isfinite(actions).all():
            raise FloatingPointError("the sampled chunk holds NaN or inf")
        return Chunk(start=tick, rows=envs, actions=actions,
                     normalized=self.policy.normalizer.normalize("action", chunk),
                     latency_s=self.timing.now() - launched_at, rounds=int(out.rounds), nfe=int(out.nfe),
                     stopped_early=bool(out.info.get("stopped_early", False)), **extra)
