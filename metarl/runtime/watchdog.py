"""How long a learner call may take before the run reports it instead of waiting on: :class:`CallLimits`.

A learner that hangs (a solver that never returns, a device that stopped answering, a fetch of
rollouts that waits on a worker that will never come back) would otherwise hang the run without a
word. The limit scales with the call's own recent durations, so a slow but healthy run (a big
batch, a busy machine, a line search that backtracks more than usual) is never stopped: a call
may take ``factor`` times the slowest of its last :data:`WINDOW` durations, and never less than
``floor_s`` (the whole limit for a call's first time, which includes start-up work).
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

WINDOW = 5  # recent durations of each call that its limit scales with


@dataclass
class CallLimits:
    """Per-call time limits: ``max(floor_s, factor x the slowest recent duration)``; ``factor`` 0: no limit."""

    factor: float
    floor_s: float
    _recent: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(lambda: deque(maxlen=WINDOW)))

    def limit(self, call: str) -> float | None:
        """Seconds ``call`` may take now; ``None`` when limits are off."""
        if self.factor <= 0:
            return None
        recent = self._recent.get(call)
        return max(self.floor_s, self.factor * max(recent)) if recent else self.floor_s

    def record(self, call: str, seconds: float) -> None:
        """Note how long a completed ``call`` took."""
        self._recent[call].append(seconds)

    def explain(self, call: str) -> str:
        """Where ``call``'s limit comes from, for the message that reports it."""
        recent = self._recent.get(call)
        if not recent or self.factor * max(recent) <= self.floor_s:
            return f"the floor learner_timeout_min={self.floor_s:g} s"
        return f"learner_timeout_factor={self.factor:g} x its slowest recent {max(recent):.3g} s"
