"""The run's failure rules, in one home, so that :class:`~metarl.runtime.trainer.Trainer` reads as the algorithm.

What a cluster can do to a run, and what the run does about it:

- a learner call that takes far longer than it has been taking: the learner is stopped
  (it may hold a GPU) and the run ends with :class:`LearnerTimeoutError`
  (limits: :class:`~metarl.runtime.watchdog.CallLimits`);
- the learner dies: :class:`LearnerDiedError`;
- rollouts lost with their node before the learner read them: the iteration is sampled again with
  the same tasks and seeds (at most ``MAX_ITERATION_ATTEMPTS`` times);
- no rollout worker left and none can start: :class:`WorkersLostError`;
- ``max_consecutive_skips`` non-finite meta-updates in a row: :class:`TrainingDivergedError`.

Every stop is one line naming the newest checkpoint and the command that resumes. Rollout workers
that die or hang are the rollout group's business (:mod:`metarl.runtime.rollout_group`): they cost
time, never episodes.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

from metarl.runtime.rollout_group import (
    POLL_S,
    ReservedBundles,
    RolloutGroup,
    WorkersUnavailableError,
    drain,
    kill_quietly,
    remove_quietly,
    start_actors,
)
from metarl.runtime.watchdog import CallLimits

log = logging.getLogger(__name__)

MAX_ITERATION_ATTEMPTS = 3  # an iteration whose rollouts were lost with their node before the learner read them


class TrainingDivergedError(RuntimeError):
    """``max_consecutive_skips`` meta-updates in a row were skipped for non-finite values.

    θ and α are still the last finite values (a skipped update never touches them) and no NaN
    was checkpointed; the message names the iterations, the last reason and likely causes.
    """


class RunStoppedError(RuntimeError):
    """The run cannot go on in this process; it can from its newest checkpoint with ``--resume``.

    Its message is one line: ``what`` happened, the newest checkpoint and the command that resumes.
    """

    def __init__(self, what: str, iteration: int, checkpoint: Path | None, resume_command: str):
        self.iteration, self.checkpoint, self.resume_command = iteration, checkpoint, resume_command
        kept = (
            f"newest checkpoint: {checkpoint}" if checkpoint else "no checkpoint yet (it starts again at iteration 1)"
        )
        super().__init__(f"{what}; {kept}; resume with: {resume_command}")


class LearnerDiedError(RunStoppedError):
    """The learner actor died (its process, or its node)."""

    def __init__(self, iteration: int, resume_command: str, checkpoint: Path | None = None):
        super().__init__(f"learner died at iteration {iteration}", iteration, checkpoint, resume_command)


class LearnerTimeoutError(RunStoppedError):
    """A learner call took far longer than it has been taking (``learner_timeout_factor``, ``learner_timeout_min``).

    The learner is stopped (it may hold a GPU); the message names the call, its limit and why.
    """


class WorkersLostError(RunStoppedError):
    """No rollout worker is left and none can be started (every node that held them is gone)."""


class _RolloutsLost(Exception):
    """A learner call failed because rollouts it was given were lost with their node: re-do the iteration."""


class Supervisor:
    """The trainer's actors and the rules above around them.

    ``refs`` collects every call of the iteration in progress, so that a failure can collect them all
    (no "unhandled error" reports after the one-line message); ``last_checkpoint`` is set by the
    trainer when it saves, and named by every stop.
    """

    def __init__(self, cfg: Any, resume_command: str):
        self.cfg, self.resume_command = cfg, resume_command
        self.limits = CallLimits(cfg.learner_timeout_factor, cfg.learner_timeout_min)  # the learner watchdog
        self.learner: Any = None
        self.rollouts: RolloutGroup | None = None
        self._learner_pg: Any = None
        self.last_checkpoint: Path | None = None
        self.consecutive_non_finite = 0  # meta-updates skipped in a row for NaN/inf (max_consecutive_skips)
        self.refs: list[ray.ObjectRef] = []

    def start(self, spec: Any, horizon: int, placement: ReservedBundles | None) -> None:
        """Start the learner and the rollout workers (:func:`~metarl.runtime.rollout_group.start_actors`)."""
        self.learner, self._learner_pg, self.rollouts = start_actors(
            self.cfg, spec, horizon, placement, fatal=self.is_learner_error
        )

    def close(self) -> None:
        """Stop the actors and release their placement groups (never anything else)."""
        if self.rollouts is not None:
            self.rollouts.close()
        kill_quietly(self.learner)
        remove_quietly(self._learner_pg)
        self.learner = self._learner_pg = None

    def is_learner_error(self, exc: RayActorError) -> bool:
        learner_id = self.learner._actor_id.hex() if self.learner is not None else None
        return getattr(exc, "actor_id", None) == learner_id

    def submit(self, call: str, *args: Any) -> ray.ObjectRef:
        """``learner.<call>.remote(*args)``, counted among the iteration's calls."""
        ref = getattr(self.learner, call).remote(*args)
        self.refs.append(ref)
        return ref

    def call(self, call: str, *args: Any, iteration: int) -> Any:
        """:meth:`submit` then :meth:`result`: for calls whose answer, not its reference, is wanted."""
        return self.result(self.submit(call, *args), call, iteration)

    def result(self, ref: ray.ObjectRef, call: str, iteration: int) -> Any:
        """The learner's answer to ``call`` (of ``iteration``), waited for within its limit.

        While waiting, rollout workers whose node died are replaced: a learner fetching rollouts
        that were on that node would otherwise wait for the dead worker's restart, forever.
        """
        limit, start = self.limits.limit(call), time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            if limit is not None and elapsed > limit:
                raise self._timed_out(call, elapsed, iteration)
            if ray.wait(
                [ref], timeout=POLL_S if limit is None else min(POLL_S, limit - elapsed + 0.01), fetch_local=False
            )[0]:
                break
            if self.rollouts is not None:
                self.rollouts.drop_lost_workers()
        self.limits.record(call, time.monotonic() - start)
        try:
            return ray.get(ref)
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, ObjectLostError) or (
                isinstance(cause, RayActorError) and not self.is_learner_error(cause)
            ):
                raise _RolloutsLost(f"{call}: {type(cause).__name__}") from exc
            raise

    def _timed_out(self, call: str, elapsed: float, iteration: int) -> LearnerTimeoutError:
        kill_quietly(self.learner)  # it may be stuck holding a GPU; its pending calls fail with it
        return LearnerTimeoutError(
            f"learner call {call} of iteration {iteration} did not return within {elapsed:.3g} s (limit: "
            f"{self.limits.explain(call)}); the learner was stopped",
            iteration,
            self.last_checkpoint,
            self.resume_command,
        )

    def iteration(self, attempt: Callable[[], dict[str, Any]], rng: np.random.Generator, number: int) -> dict:
        """Run ``attempt`` (iteration ``number``); again, from the same RNG state, if its rollouts were lost."""
        for tries in range(1, MAX_ITERATION_ATTEMPTS + 1):
            rng_state = copy.deepcopy(rng.bit_generator.state)
            try:
                return self._stopping_on_failure(attempt, number)
            except _RolloutsLost as exc:
                if tries == MAX_ITERATION_ATTEMPTS:
                    raise self.stopped(
                        f"iteration {number}: its rollouts were lost with their nodes {tries} times ({exc})", number
                    ) from exc
                rng.bit_generator.state = rng_state
                log.warning(
                    "iteration %d: rollouts were lost with their node before the learner read them (%s); "
                    "sampling the iteration again with the same tasks and seeds (attempt %d of %d)",
                    number,
                    exc,
                    tries + 1,
                    MAX_ITERATION_ATTEMPTS,
                )
        raise AssertionError("unreachable")

    def _stopping_on_failure(self, attempt: Callable[[], dict[str, Any]], number: int) -> dict[str, Any]:
        """One try; a failure that ends the run becomes a :class:`RunStoppedError`."""
        self.refs = []
        try:
            return attempt()
        except RayActorError as exc:
            if self.is_learner_error(exc):
                drain(self.refs)  # every call of this iteration fails with the learner's error
                raise LearnerDiedError(number, self.resume_command, self.last_checkpoint) from exc
            raise
        except WorkersUnavailableError as exc:
            raise self.stopped(f"iteration {number}: {exc}", number, WorkersLostError) from exc
        except (LearnerTimeoutError, _RolloutsLost):
            drain(self.refs)
            raise
        finally:
            self.refs = []

    def stopped(self, what: str, number: int, kind: type[RunStoppedError] = RunStoppedError) -> RunStoppedError:
        return kind(what, number, self.last_checkpoint, self.resume_command)

    def check_finite(self, metrics: dict[str, Any]) -> None:
        """Count non-finite skips in a row into ``metrics``; stop a run that has diverged.

        Only non-finite skips count toward ``max_consecutive_skips``: a TRPO line search that
        finds no improving step inside the trust region is ordinary and says nothing about divergence.
        """
        reason, number, limit = metrics.get("outer/skip_reason"), metrics["iteration"], self.cfg.max_consecutive_skips
        if reason and metrics.get("outer/non_finite"):
            self.consecutive_non_finite += 1
            log.warning(
                "iteration %d: meta-update skipped: %s (%d in a row; training stops at %d)",
                number,
                reason,
                self.consecutive_non_finite,
                limit,
            )
        else:
            self.consecutive_non_finite = 0
            if reason:
                log.info("iteration %d: meta-update skipped: %s", number, reason)
        metrics["outer/consecutive_non_finite"] = self.consecutive_non_finite

    def check_diverged(self, metrics: dict[str, Any]) -> None:
        n, last, limit = self.consecutive_non_finite, metrics["iteration"], self.cfg.max_consecutive_skips
        if n < limit:
            return
        where = (
            f"the last checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written"
        )
        raise TrainingDivergedError(
            f"training diverged: the meta-updates of iterations {last - n + 1}-{last} were all skipped for non-finite "
            f"values (last: {metrics.get('outer/skip_reason')}; limit max_consecutive_skips={limit}). "
            f"θ and α keep their last finite values and {where}. Likely causes: inner_lr, adam.lr or trpo.max_kl too "
            f"large, an env returning NaN/inf, float32 overflow (try resources.dtype: float64)"
        )
