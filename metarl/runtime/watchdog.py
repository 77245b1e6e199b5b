"""How long a learner or rollout call may take before it is not waited on any longer: :class:`CallLimits`.

A learner that hangs (a solver that never returns, a device that stopped answering, a fetch of
rollouts that waits on a worker that will never come back) would otherwise hang the run without a
word. The limit scales with the call's own recent durations, so a slow but healthy run (a big
batch, a busy machine, a line search that backtracks more than usual) is never stopped: a call
may take ``factor`` times the slowest of its last :data:`WINDOW` durations, and never less than
``floor_s`` (the whole limit for a call's first time, which includes start-up work).

A rollout worker that hangs without dying (a stopped process, an env stuck in a system call) is
not a lost run: its call is given up on after its limit, the worker is killed and replaced, and
the call is re-sent to another worker (:meth:`metarl.runtime.rollout_group.RolloutGroup.sample`), so it
costs time, never episodes. Its calls are timed per episode and scaled by the episodes queued on
the worker, so a slice that grows when fewer workers share the meta-batch is not taken for a hang.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

WINDOW = 5  # recent durations of each call that its limit scales with


@dataclass
class CallLimits:
    """Per-call time limits: ``max(floor_s, factor x the slowest recent duration)``; ``factor`` 0: no limit.

    ``keys`` name the config keys of ``factor`` and ``floor_s`` in messages (the learner's by
    default; the rollout workers' watchdog uses ``worker_timeout_*``).
    """

    factor: float
    floor_s: float
    keys: tuple[str, str] = ("learner_timeout_factor", "learner_timeout_min")
    _recent: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(lambda: deque(maxlen=WINDOW)))

    def limit(self, call: str, scale: float = 1.0) -> float | None:
        """Seconds ``call`` may take now; ``None`` when limits are off.

        ``scale``: how much more work this call holds than the recorded durations measure (the
        rollout watchdog records seconds per episode and scales by the episodes queued).
        """
        if self.factor <= 0:
            return None
        recent = self._recent.get(call)
        return max(self.floor_s, self.factor * max(recent) * scale) if recent else self.floor_s

    def record(self, call: str, seconds: float) -> None:
        """Note how long a completed ``call`` took."""
        self._recent[call].append(seconds)

    def explain(self, call: str, scale: float = 1.0, unit: str | None = None) -> str:
        """Where ``call``'s limit comes from, for the message that reports it.

        ``unit``: what one recorded duration is of (``episode``), when ``scale`` counts them.
        """
        recent = self._recent.get(call)
        if not recent or self.factor * max(recent) * scale <= self.floor_s:
            return f"the floor {self.keys[1]}={self.floor_s:g} s"
        if unit:
            return (
                f"{self.keys[0]}={self.factor:g} x its slowest recent {max(recent):.3g} s per {unit} x "
                f"{scale:g} {unit}s"
            )
        return f"{self.keys[0]}={self.factor:g} x its slowest recent {max(recent):.3g} s"
