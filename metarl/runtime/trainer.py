"""The meta-training loop: :class:`Trainer` (its docstring is the algorithm).

The pieces it drives live elsewhere: the run directory's rules in :mod:`metarl.runtime.rundir`, the
actors' placement and the fault-tolerant rollout group in :mod:`metarl.runtime.rollout_group`, the
inner step, meta-update and α in the learner actor (:mod:`metarl.runtime.learner`), the checkpoint
format in :mod:`metarl.runtime.checkpoint` and the metrics files in :mod:`metarl.runtime.metrics`.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

from metarl.config import Config
from metarl.envs.tasks import env_horizon, make_env, policy_spec, sample_tasks
from metarl.runtime import rundir
from metarl.runtime.checkpoint import load_checkpoint, load_latest, resolve_checkpoint, save_checkpoint
from metarl.runtime.metrics import MetricsWriter
from metarl.runtime.rollout_group import (
    POLL_S,
    ReservedBundles,
    RolloutGroup,
    WorkersUnavailableError,
    check_resources,
    drain,
    init_ray,
    kill_quietly,
    remove_quietly,
    short_of_workers,
    start_learner,
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


class Trainer:
    """Meta-training of (θ, α) on Ray actors: rollout workers and one central learner.

    One meta-iteration (:meth:`train_iteration`; MAML: Finn et al. 2017, Meta-SGD: Li et al. 2017)::

        tasks Tᵢ ~ p(T), i = 1..N                            sample_tasks (seeded; RNG in every checkpoint)
        θ⁰ᵢ = θ
        for j = 0 .. inner_steps−1:
            Dʲᵢ   ← K episodes of π_θʲᵢ on each Tᵢ            rollouts.sample: phase "pre" (j>0: "inner step j+1")
            θʲ⁺¹ᵢ ← θʲᵢ − α ∘ ∇ L(Dʲᵢ; θʲᵢ)  (all i at once)    learner.adapt
        D'ᵢ  ← K episodes of π_θ'ᵢ on each Tᵢ  (θ'ᵢ = θᵏᵢ)    rollouts.sample: phase "post"
        (θ, α) ← TRPO/Adam step on Σᵢ L(D'ᵢ; θ'ᵢ(θ, α))      learner.meta_update (through all k steps) →
                                                              optimizer.step; α moves in TRPO._line_search
                                                              (meta.alpha.assign) or Adam.step
        metrics row: returns, KL, α, timings per phase        metrics.jsonl / .csv / tensorboard/
        checkpoint every checkpoint_every iterations          save (θ, α, optimizer, counters, RNG)

    Rollouts go from the workers to the learner through the object store as contiguous numpy
    arrays; the driver only passes references. θ (pre) and the stack of all θ'ᵢ (post) are put
    in the object store once per phase and shared by every worker. A worker that dies costs
    time, never episodes (:class:`~metarl.runtime.rollout_group.RolloutGroup`), and so does a lost node
    that held workers: they are replaced, and an iteration whose rollouts were lost with the node
    before the learner read them is sampled again with the same tasks and seeds. A dead learner
    ends training with :class:`LearnerDiedError`, a learner call that takes far longer than it
    has been taking with :class:`LearnerTimeoutError` (:class:`~metarl.runtime.watchdog.CallLimits`), the
    loss of every rollout worker with :class:`WorkersLostError`: :class:`RunStoppedError` subclasses,
    whose one-line message names the newest checkpoint and the command that resumes. A run of
    ``max_consecutive_skips`` non-finite meta-updates ends it with :class:`TrainingDivergedError`.

    ``out_dir`` is the run directory (:mod:`metarl.runtime.rundir`); ``placement``: bundles a Ray Tune
    trial reserved for the actors; ``managed``: ``out_dir`` belongs to a caller that restores
    state itself (a Tune trial restarted in its own directory), so a fresh start there is not
    refused.
    """

    def __init__(
        self,
        cfg: Config,
        out_dir: str | Path,
        address: str | None = None,
        resume: bool = False,
        config_path: str | Path | None = None,
        overrides: Sequence[str] = (),
        placement: ReservedBundles | None = None,
        managed: bool = False,
    ):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.resume_command = rundir.resume_command(self.out, config_path, overrides, address)
        rundir.prepare(self.out, resume)
        self._lock: rundir.RunLock | None = None
        self.resume_changes: dict[str, tuple[Any, Any]] = {}  # resumable keys that differ from the checkpoint's
        self.metrics = MetricsWriter(self.out / "metrics.jsonl")

        self.env = make_env(cfg.env, cfg.env_kwargs)
        self.horizon = env_horizon(self.env, cfg.horizon)
        self.spec = policy_spec(cfg, self.env)
        self.rng = np.random.default_rng(cfg.seed)
        self.iteration, self.env_steps = 0, 0
        self.consecutive_non_finite = 0  # meta-updates skipped in a row for NaN/inf (max_consecutive_skips)
        self.checkpointed_iteration: int | None = None  # iteration of the newest checkpoint in ckpt_dir
        self.last_checkpoint: Path | None = None
        self.resumes = 0  # times this run was stopped and continued with --resume, over the whole run
        self.limits = CallLimits(cfg.learner_timeout_factor, cfg.learner_timeout_min)  # the learner watchdog

        # Actors, set before anything can fail so close() can clean up.
        self.learner = self._learner_pg = None
        self.rollouts: RolloutGroup | None = None
        self._iteration_refs: list[ray.ObjectRef] = []  # every call of the current iteration

        try:
            self._lock, self.resume_changes = rundir.claim(self.out, cfg, resume, managed)
            init_ray(address)
            # Bundles reserved by Tune are all there; otherwise start with the workers that fit now and
            # let the others join when nodes with room arrive (cluster.yaml's autoscaler adds them).
            use_gpu, fit = check_resources(cfg, allow_fewer=placement is None)
            if fit < cfg.num_workers:
                log.warning(short_of_workers(cfg, fit))
            # The learner first: it may need the one node with a GPU.
            self.learner, self._learner_pg = start_learner(cfg, self.spec, use_gpu, placement)
            self.rollouts = RolloutGroup(
                cfg.env,
                cfg.env_kwargs,
                self.spec,
                self.horizon,
                cfg.num_workers,
                cfg.worker_cpus,
                placement,
                fatal=self._is_learner_error,
                placeable=fit,
                limits=CallLimits(
                    cfg.worker_timeout_factor, cfg.worker_timeout_min, ("worker_timeout_factor", "worker_timeout_min")
                ),
            )
            self.rollouts.wait_ready([self.learner.__ray_ready__.remote()])
            if resume:
                self._restore()
            cfg.dump(self.out / "config.yaml")  # only once the run is sure to go on: a refused one rewrites nothing
        except BaseException:
            self.close()
            raise

    def _is_learner_error(self, exc: RayActorError) -> bool:
        learner_id = self.learner._actor_id.hex() if self.learner is not None else None
        return getattr(exc, "actor_id", None) == learner_id

    # -- the learner's calls ------------------------------------------------------------
    def _learner_result(self, ref: ray.ObjectRef, call: str, iteration: int | None = None) -> Any:
        """The result of learner call ``call`` (for ``iteration``, default the one in progress), waited for
        within its limit (:class:`CallLimits`).

        While waiting, rollout workers whose node died are replaced: a learner fetching rollouts
        that were on that node would otherwise wait for the dead worker's restart, forever.
        """
        limit, start = self.limits.limit(call), time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            if limit is not None and elapsed > limit:
                raise self._timed_out(call, elapsed, self.iteration + 1 if iteration is None else iteration)
            step = POLL_S if limit is None else min(POLL_S, limit - elapsed + 0.01)
            if ray.wait([ref], timeout=step, fetch_local=False)[0]:
                break
            if self.rollouts is not None:
                self.rollouts.drop_lost_workers()
        self.limits.record(call, time.monotonic() - start)
        try:
            return ray.get(ref)
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, ObjectLostError) or (
                isinstance(cause, RayActorError) and not self._is_learner_error(cause)
            ):
                raise _RolloutsLost(f"{call}: {type(cause).__name__}") from exc
            raise

    def _timed_out(self, call: str, elapsed: float, iteration: int) -> LearnerTimeoutError:
        """Stop the learner that has not answered ``call`` for ``elapsed`` s, and say so."""
        kill_quietly(self.learner)  # it may be stuck holding a GPU; its pending calls fail with it
        return LearnerTimeoutError(
            f"learner call {call} of iteration {iteration} did not return within {elapsed:.3g} s (limit: "
            f"{self.limits.explain(call)}); the learner was stopped",
            iteration,
            self.last_checkpoint,
            self.resume_command,
        )

    # -- one meta-iteration --------------------------------------------------------------
    def train_iteration(self) -> dict[str, Any]:
        """One meta-iteration; re-done (same tasks, same seeds) when its rollouts were lost with a node."""
        for attempt in range(1, MAX_ITERATION_ATTEMPTS + 1):
            rng_state = copy.deepcopy(self.rng.bit_generator.state)
            try:
                return self._attempt_iteration()
            except _RolloutsLost as exc:
                if attempt == MAX_ITERATION_ATTEMPTS:
                    raise RunStoppedError(
                        f"iteration {self.iteration + 1}: its rollouts were lost with their nodes "
                        f"{attempt} times ({exc})",
                        self.iteration + 1,
                        self.last_checkpoint,
                        self.resume_command,
                    ) from exc
                self.rng.bit_generator.state = rng_state
                log.warning(
                    "iteration %d: rollouts were lost with their node before the learner read them (%s); "
                    "sampling the iteration again with the same tasks and seeds (attempt %d of %d)",
                    self.iteration + 1,
                    exc,
                    attempt + 1,
                    MAX_ITERATION_ATTEMPTS,
                )
        raise AssertionError("unreachable")

    def _attempt_iteration(self) -> dict[str, Any]:
        """One try at an iteration; a failure that ends the run becomes a :class:`RunStoppedError`."""
        self._iteration_refs = []
        try:
            return self._train_iteration()
        except RayActorError as exc:
            if self._is_learner_error(exc):
                # Every call of this iteration fails with the learner's error: collect them all,
                # so the one-line message is not followed by Ray's "unhandled error" reports.
                drain(self._iteration_refs)
                raise LearnerDiedError(self.iteration + 1, self.resume_command, self.last_checkpoint) from exc
            raise
        except WorkersUnavailableError as exc:
            raise WorkersLostError(
                f"iteration {self.iteration + 1}: {exc}", self.iteration + 1, self.last_checkpoint, self.resume_command
            ) from exc
        except (LearnerTimeoutError, _RolloutsLost):
            drain(self._iteration_refs)
            raise
        finally:
            self._iteration_refs = []

    def _train_iteration(self) -> dict[str, Any]:
        cfg, timers = self.cfg, {}
        start = t = time.perf_counter()
        # tasks Tᵢ ~ p(T), and every phase's action-noise seeds
        tasks = sample_tasks(self.env, cfg.meta_batch_size, self.rng)
        seeds = self.rng.integers(0, 2**31 - 1, size=(2, cfg.meta_batch_size))
        # inner steps after the first sample with seeds of their own (a stream apart, so one-step runs are unchanged)
        extra_seeds = [
            np.random.default_rng([cfg.seed, self.iteration, j]).integers(0, 2**31 - 1, cfg.meta_batch_size)
            for j in range(1, cfg.inner_steps)
        ]
        self.rollouts.used_nodes.clear()
        self.rollouts.used_workers.clear()
        timers["time/sample_pre"] = timers["time/adapt"] = 0.0

        params_ref, per_task = self.learner.get_theta.remote(), False
        self._iteration_refs.append(params_ref)
        for step in range(cfg.inner_steps):  # sample with θ'ⱼ, adapt to θ'ⱼ₊₁ (θ'₀ = θ)
            step_seeds = seeds[0] if step == 0 else extra_seeds[step - 1]
            pre_refs = self._sample(
                tasks, params_ref, per_task, step_seeds, "pre" if step == 0 else f"inner step {step + 1}"
            )
            timers["time/sample_pre"] += time.perf_counter() - t
            t = time.perf_counter()
            params_ref, per_task = self.learner.adapt.remote(pre_refs, step), True
            self._iteration_refs.append(params_ref)
            self._learner_result(params_ref, "adapt")  # fetched: a failure shows here, not in the next phase
            timers["time/adapt"] += time.perf_counter() - t
            t = time.perf_counter()
        adapted_ref = params_ref  # θ'ᵢ for every task

        post_refs = self._sample(tasks, adapted_ref, True, seeds[1], "post")
        timers["time/sample_post"], t = time.perf_counter() - t, time.perf_counter()

        update_ref = self.learner.meta_update.remote(post_refs)  # (θ, α) ← step on Σᵢ L(D'ᵢ; θ'ᵢ(θ, α))
        self._iteration_refs.append(update_ref)
        stats = self._learner_result(update_ref, "meta_update")
        timers["time/meta_update"] = time.perf_counter() - t

        self.iteration += 1
        self.env_steps += int(stats.pop("env_steps_iteration"))
        metrics = {
            "iteration": self.iteration,
            **stats,
            "env_steps": self.env_steps,
            "workers/restarts": self.rollouts.restarts,
            "workers/nodes": len(self.rollouts.used_nodes),
            "workers/active": len(self.rollouts.used_workers),
            "run/resumes": self.resumes,
            "seconds": time.perf_counter() - start,
            **timers,
        }
        metrics["outer/consecutive_non_finite"] = self._note_skip(metrics)
        self.metrics.write(metrics)
        if self.consecutive_non_finite >= cfg.max_consecutive_skips:
            raise self._diverged(metrics)
        if self.iteration % cfg.checkpoint_every == 0 or self.iteration == cfg.iterations:
            self.save()
        return metrics

    def _sample(self, tasks, params_ref, per_task: bool, seeds: np.ndarray, phase: str) -> list[ray.ObjectRef]:
        """One phase's rollouts of the whole meta-batch (references, for the learner)."""
        return self.rollouts.sample(
            tasks,
            params_ref,
            per_task,
            seeds,
            self.cfg.episodes_per_task,
            phase,
            self.iteration + 1,
            self._iteration_refs,
        )

    def _note_skip(self, metrics: dict[str, Any]) -> int:
        """Log a skipped meta-update; count non-finite skips in a row (a finite iteration resets it).

        Only non-finite skips count toward ``max_consecutive_skips``: a TRPO line search that
        finds no improving step inside the trust region is ordinary and says nothing about
        divergence.
        """
        reason = metrics.get("outer/skip_reason")
        if reason and metrics.get("outer/non_finite"):
            self.consecutive_non_finite += 1
            log.warning(
                "iteration %d: meta-update skipped: %s (%d in a row; training stops at %d)",
                self.iteration,
                reason,
                self.consecutive_non_finite,
                self.cfg.max_consecutive_skips,
            )
        else:
            self.consecutive_non_finite = 0
            if reason:
                log.info("iteration %d: meta-update skipped: %s", self.iteration, reason)
        return self.consecutive_non_finite

    def _diverged(self, metrics: dict[str, Any]) -> TrainingDivergedError:
        n, last = self.consecutive_non_finite, self.iteration
        where = (
            f"the last checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written"
        )
        return TrainingDivergedError(
            f"training diverged: the meta-updates of iterations {last - n + 1}-{last} were all skipped for non-finite "
            f"values (last: {metrics.get('outer/skip_reason')}; "
            f"limit max_consecutive_skips={self.cfg.max_consecutive_skips}). "
            f"θ and α keep their last finite values and {where}. Likely causes: inner_lr, meta_lr or max_kl too large, "
            f"an env returning NaN/inf, float32 overflow (try dtype: float64)"
        )

    def train(
        self,
        callback: Callable[[dict[str, Any]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Run meta-iterations until ``cfg.iterations``, or until ``should_stop()`` turns true.

        ``should_stop`` is checked between iterations (a signal handler's flag: the iteration in
        progress finishes first); a stopped run writes a checkpoint of its last completed
        iteration unless it already has one (or has completed none), and sets ``self.stopped``.
        """
        history = []
        self.stopped = False
        while self.iteration < self.cfg.iterations:
            if should_stop is not None and should_stop():
                self.stopped = True
                if self.iteration > 0 and self.checkpointed_iteration != self.iteration:
                    self.save()
                break
            metrics = self.train_iteration()
            history.append(metrics)
            if callback:
                callback(metrics)
        return history

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, directory: str | Path | None = None) -> Path:
        """Checkpoint the current state into ``directory`` (default: the run's ``checkpoints/``)."""
        state = self._learner_result(self.learner.state_dict.remote(), "state_dict", self.iteration)
        state.update(
            iteration=self.iteration,
            env_steps=self.env_steps,
            worker_restarts=self.rollouts.restarts,
            resumes=self.resumes,
            config=self.cfg.to_dict_json(),
            rng_state=_rng_state_json(self.rng),
        )
        target = self.ckpt_dir if directory is None else Path(directory)
        path = save_checkpoint(target, self.iteration, state, self.cfg.keep_checkpoints)
        if directory is None:
            self.checkpointed_iteration, self.last_checkpoint = self.iteration, path
        return path

    def _restore(self) -> None:
        found = load_latest(self.ckpt_dir, quarantine=True)
        if found is None:
            log.warning("%s: no checkpoint to resume from; starting at iteration 0", self.ckpt_dir)
            self.metrics.truncate_after(0)  # rows of the earlier attempt would otherwise repeat
            return
        path, state = found
        self._load_state(state)
        self.resumes += 1
        self.checkpointed_iteration, self.last_checkpoint = self.iteration, path

    def restore(self, checkpoint: str | Path) -> Path:
        """Continue from ``checkpoint`` (a checkpoint file, or the latest one in a directory or run
        directory): θ, α, optimizer state, counters and the task sampler's RNG. Returns the file."""
        path = resolve_checkpoint(checkpoint)
        self._load_state(load_checkpoint(path))
        return path

    def _load_state(self, state: dict[str, Any]) -> None:
        self._learner_result(self.learner.load_state_dict.remote(state), "load_state_dict", int(state["iteration"]))
        self.iteration, self.env_steps = int(state["iteration"]), int(state["env_steps"])
        self.rollouts.restarts = int(state.get("worker_restarts", 0))
        self.resumes = int(state.get("resumes", 0))
        self.rng.bit_generator.state = _rng_state_from_json(state["rng_state"])
        self.metrics.truncate_after(self.iteration)

    def close(self) -> None:
        """Stop this trainer's actors and release its placement groups (never anything else)."""
        if self.rollouts is not None:
            self.rollouts.close()
        kill_quietly(self.learner)
        remove_quietly(self._learner_pg)
        self.learner = self._learner_pg = None
        self.metrics.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _rng_state_json(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def _rng_state_from_json(text: str) -> dict:
    return json.loads(text)
