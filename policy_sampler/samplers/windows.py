"""How many transitions each batch row of a speculative sampler drafts and verifies per round.

A round's evaluations beyond the transitions it accepts buy nothing but the refinement of later
drafts, so a window sized to what the row can accept saves most of a full window's evaluations.
:class:`AdaptiveWindow` sizes it from the row's own verification history: after a round that
rejected after ``m`` accepted transitions the next window is ``growth * (m + 1)``; after a round
that accepted its whole window of ``n`` it is ``growth * n``; clamped to ``[minimum, maximum]``.

**Why this keeps the samplers exact.** The committed transition of step ``s`` is the reflection
coupling of the draft mean of the round that first reaches ``s``, with ``s``'s own noise ``z_s``
and a fresh uniform. It is an exact draw of the target kernel when the pair (which round, its draft
mean) is a function of the past of ``s`` only (the noise of steps before ``s`` and earlier
uniforms). A window fixed before the round from the committed steps and from how many transitions
earlier rounds accepted is such a function: an earlier round's accepted count is decided by the
noise and uniforms of transitions it committed, all before ``s``. What must never size a window:
the noise of a step the round verifies, this round's coupling outcome (e.g. ending the window just
before the first rejection and re-drafting that step), or the target's evaluations at drafted
states past the committed path (they depend on the noise of uncommitted steps).
``tests/samplers/test_speculative.py`` keeps such a peeking window as a wrong variant and shows the law
tests reject it.
"""

from __future__ import annotations

import math


class AdaptiveWindow:
    """Per-row windows (host integers) from each row's accepted lengths; see the module docstring.

    ``initial``: the first round's window; ``growth`` (> 1): how far past the last accepted run a
    window reaches; ``minimum`` / ``maximum``: bounds (``maximum`` is the sampler's ``window`` or
    ``lookahead`` cap)."""

    def __init__(self, batch: int, initial: int, growth: float, minimum: int, maximum: int) -> None:
        self.growth = float(growth)
        self.minimum = max(1, min(int(minimum), int(maximum)))
        self.maximum = int(maximum)
        self.windows = [self._clamp(initial)] * batch

    def _clamp(self, value: float) -> int:
        return max(self.minimum, min(self.maximum, int(math.ceil(value))))

    def record(self, row: int, accepted: int, verified: int) -> None:
        """Row ``row``'s round accepted ``accepted`` of its ``verified`` drafted transitions (fewer:
        the next one was rejected, and its reflection committed)."""
        if accepted < verified:
            self.windows[row] = self._clamp(self.growth * (accepted + 1))
        else:
            self.windows[row] = self._clamp(self.growth * verified)
