"""The meta-training loop: :class:`Trainer` (its docstring is the algorithm).

The pieces it drives live elsewhere: the run directory's rules in :mod:`metarl.runtime.rundir`, the
actors and the fault-tolerant rollout group in :mod:`metarl.runtime.rollout_group`, what happens when
something fails in :mod:`metarl.runtime.supervision`, the inner step, meta-update and α in the learner
actor (:mod:`metarl.runtime.learner`), checkpoints in :mod:`metarl.runtime.checkpoint`, metrics files
in :mod:`metarl.runtime.metrics`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metarl.config import Config
from metarl.envs.tasks import env_horizon, make_env, policy_spec, sample_tasks
from metarl.runtime import rundir
from metarl.runtime.checkpoint import load_checkpoint, load_latest, resolve_checkpoint, save_checkpoint
from metarl.runtime.metrics import Laps, MetricsWriter
from metarl.runtime.rollout_group import ReservedBundles, init_ray
from metarl.runtime.supervision import (  # noqa: F401 (the run's stops, importable from here as before)
    LearnerDiedError,
    LearnerTimeoutError,
    RunStoppedError,
    Supervisor,
    TrainingDivergedError,
    WorkersLostError,
)

log = logging.getLogger(__name__)


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

    Rollouts reach the learner through the object store; the driver passes only references. What a
    failure costs (a worker, a node, the learner, a diverged update) is :mod:`metarl.runtime.supervision`'s
    business: every stop is one line that names the newest checkpoint and the command that resumes.

    ``out_dir``: the run directory (:mod:`metarl.runtime.rundir`); ``placement``: bundles a Tune trial reserved;
    ``managed``: a caller restores state itself (a restarted Tune trial), so a fresh start there is not refused.
    """

    learner = property(lambda self: self.guard.learner)
    rollouts = property(lambda self: self.guard.rollouts)
    last_checkpoint = property(lambda self: self.guard.last_checkpoint)

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
        self.cfg, self.out, self.ckpt_dir = cfg, Path(out_dir), Path(out_dir) / "checkpoints"
        self.resume_command = rundir.resume_command(self.out, config_path, overrides, address)
        rundir.prepare(self.out, resume)
        self.guard, self._lock = Supervisor(cfg, self.resume_command), None
        self.resume_changes: dict[str, tuple[Any, Any]] = {}  # resumable keys that differ from the checkpoint's
        self.metrics = MetricsWriter(self.out / "metrics.jsonl")
        self.env = make_env(cfg.env, cfg.env_kwargs)
        self.horizon, self.spec = env_horizon(self.env, cfg.horizon), policy_spec(cfg, self.env)
        self.rng = np.random.default_rng(cfg.seed)
        self.iteration = self.env_steps = self.resumes = 0  # resumes: --resume's over the whole run
        self.checkpointed_iteration: int | None = None  # iteration of the newest checkpoint in ckpt_dir
        try:
            self._lock, self.resume_changes = rundir.claim(self.out, cfg, resume, managed)
            init_ray(address)
            self.guard.start(self.spec, self.horizon, placement)
            if resume:
                self._restore()
            cfg.dump(self.out / "config.yaml")  # only once the run is sure to go on: a refused one rewrites nothing
        except BaseException:
            self.close()
            raise

    def train(self, callback: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None):
        """Iterate to ``cfg.iterations`` or until ``should_stop()`` (between iterations); a stop checkpoints."""
        history, self.stopped = [], False
        while self.iteration < self.cfg.iterations and not (should_stop and should_stop()):
            history.append(self.train_iteration())
            if callback:
                callback(history[-1])
        self.stopped = self.iteration < self.cfg.iterations  # should_stop() ended it
        if self.stopped and self.iteration > 0 and self.checkpointed_iteration != self.iteration:
            self.save()
        return history

    def train_iteration(self) -> dict[str, Any]:
        """One meta-iteration; re-done (same tasks, same seeds) when its rollouts were lost with a node."""
        return self.guard.iteration(self._train_iteration, self.rng, self.iteration + 1)

    def _train_iteration(self) -> dict[str, Any]:
        cfg, n, guard = self.cfg, self.iteration + 1, self.guard
        timers = Laps("time/sample_pre", "time/adapt", "time/sample_post", "time/meta_update")
        tasks = sample_tasks(self.env, cfg.meta_batch_size, self.rng)  # Tᵢ ~ p(T), and the phases' action seeds
        seeds = phase_seeds(self.rng, cfg, self.iteration)
        self.rollouts.new_iteration()
        params, per_task = guard.submit("get_theta"), False
        for step in range(cfg.inner_steps):  # sample with θʲ, adapt to θʲ⁺¹ (θ⁰ = θ)
            batch = self._sample(tasks, params, per_task, seeds[step], "pre" if step == 0 else f"inner step {step + 1}")
            timers.lap("time/sample_pre")
            params, per_task = guard.submit("adapt", batch, step), True
            guard.result(params, "adapt", n)  # fetched: a failure shows here, not in the next phase
            timers.lap("time/adapt")
        batch = self._sample(tasks, params, True, seeds[-1], "post")  # D'ᵢ with θ'ᵢ
        timers.lap("time/sample_post")
        stats = guard.call("meta_update", batch, iteration=n)  # (θ, α) ← step on Σᵢ L(D'ᵢ; θ'ᵢ(θ, α))
        timers.lap("time/meta_update")
        self.iteration, self.env_steps = n, self.env_steps + int(stats.pop("env_steps_iteration"))
        metrics = {"iteration": n, **stats, "env_steps": self.env_steps, **self.rollouts.counts()}
        metrics.update({"run/resumes": self.resumes, "seconds": timers.total(), **timers})
        guard.check_finite(metrics)
        self.metrics.write(metrics)
        guard.check_diverged(metrics)
        if n % cfg.checkpoint_every == 0 or n == cfg.iterations:
            self.save()
        return metrics

    def _sample(self, tasks, params, per_task: bool, seeds: np.ndarray, phase: str) -> list:
        """One phase's rollouts of the whole meta-batch (references, for the learner)."""
        return self.rollouts.sample(
            tasks, params, per_task, seeds, self.cfg.episodes_per_task, phase, self.iteration + 1, self.guard.refs
        )

    def save(self, directory: str | Path | None = None) -> Path:
        """Checkpoint the current state into ``directory`` (default: the run's ``checkpoints/``)."""
        state = self.guard.call("state_dict", iteration=self.iteration)
        state.update(
            iteration=self.iteration, env_steps=self.env_steps, resumes=self.resumes, config=self.cfg.to_dict_json()
        )
        state.update(worker_restarts=self.rollouts.restarts, rng_state=json.dumps(self.rng.bit_generator.state))
        path = save_checkpoint(directory or self.ckpt_dir, self.iteration, state, self.cfg.keep_checkpoints)
        if directory is None:
            self.checkpointed_iteration, self.guard.last_checkpoint = self.iteration, path
        return path

    def restore(self, checkpoint: str | Path) -> Path:
        """Continue from ``checkpoint`` (a file, or a directory's latest): θ, α, optimizer, counters, RNG."""
        state = load_checkpoint(path := resolve_checkpoint(checkpoint))
        self.guard.call("load_state_dict", state, iteration=int(state["iteration"]))
        self.iteration, self.env_steps = int(state["iteration"]), int(state["env_steps"])
        self.rollouts.restarts, self.resumes = int(state.get("worker_restarts", 0)), int(state.get("resumes", 0))
        self.rng.bit_generator.state = json.loads(state["rng_state"])
        self.metrics.truncate_after(self.iteration)
        return path

    def _restore(self) -> None:
        """``--resume``: the newest readable checkpoint of the run (unreadable ones are quarantined)."""
        found = load_latest(self.ckpt_dir, quarantine=True)
        if found is None:
            log.warning("%s: no checkpoint to resume from; starting at iteration 0", self.ckpt_dir)
            self.metrics.truncate_after(0)  # rows of the earlier attempt would otherwise repeat
            return
        self.guard.last_checkpoint = self.restore(found[0])
        self.resumes += 1
        self.checkpointed_iteration = self.iteration

    def close(self) -> None:
        """Stop this trainer's actors and release its placement groups (never anything else)."""
        self.guard.close()
        self.metrics.close()
        if self._lock is not None:
            self._lock.release()  # idempotent: close() may run twice


def phase_seeds(rng: np.random.Generator, cfg: Config, iteration: int) -> list[np.ndarray]:
    """Action-noise seeds of each sampling phase of ``iteration`` (0-based): pre, inner steps 2..k, post.

    Pre and post come from the run's RNG; inner steps after the first have seeds of their own, a
    stream apart, so a one-step run's numbers do not depend on whether multi-step code exists.
    """
    pre, post = rng.integers(0, 2**31 - 1, size=(2, cfg.meta_batch_size))
    inner = [
        np.random.default_rng([cfg.seed, iteration, j]).integers(0, 2**31 - 1, cfg.meta_batch_size)
        for j in range(1, cfg.inner_steps)
    ]
    return [pre, *inner, post]
