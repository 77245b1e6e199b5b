"""The meta-training loop, on Ray actors: rollout workers + one central learner.

Per meta-iteration (MAML: Finn et al. 2017; Meta-SGD: Li et al. 2017)::

    tasks Tᵢ ~ p(T)                                   sample_tasks
    Dᵢ   ← K episodes of π_θ on each Tᵢ                 workers, phase "pre"
    θ'ᵢ  ← θ − α ∘ ∇θ L(Dᵢ; θ)   (all i at once)        learner.adapt
    D'ᵢ  ← K episodes of π_θ'ᵢ on each Tᵢ               workers, phase "post"
    (θ, α) ← TRPO/Adam step on Σᵢ L(D'ᵢ; θ'ᵢ(θ, α))    learner.meta_update
    checkpoint every N iterations

Rollouts go from the workers to the learner through the object store as contiguous numpy
arrays; the driver only passes references. θ (pre) and the stack of all θ'ᵢ (post) are put
in the object store once per phase and shared by every worker.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import ray

from metarl.checkpoint import list_checkpoints, load_latest, save_checkpoint
from metarl.config import Config, ConfigError
from metarl.learner import Learner
from metarl.metrics import MetricsWriter
from metarl.policies import PolicySpec
from metarl.runtime import ACTOR_RUNTIME_ENV
from metarl.tasks import env_horizon, make_env, sample_tasks, space_dims
from metarl.workers import RolloutWorker


class ResourceError(RuntimeError):
    """The cluster can never satisfy what the config asks for."""


def policy_spec(cfg: Config, env) -> PolicySpec:
    obs_dim, act_dim = space_dims(env)
    return PolicySpec(obs_dim, act_dim, tuple(cfg.hidden_sizes), cfg.activation, cfg.init_std)


def init_ray(address: str | None) -> None:
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=True)


class Trainer:
    def __init__(self, cfg: Config, out_dir: str | Path, address: str | None = None, resume: bool = False):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        if list_checkpoints(self.ckpt_dir) and not resume:
            raise ConfigError(f"--out {self.out}: already holds a run's checkpoints; pass --resume to continue it or choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        cfg.dump(self.out / "config.yaml")
        self.metrics = MetricsWriter(self.out / "metrics.jsonl")

        self.env = make_env(cfg.env, cfg.env_kwargs)
        self.horizon = env_horizon(self.env, cfg.horizon)
        self.spec = policy_spec(cfg, self.env)
        self.rng = np.random.default_rng(cfg.seed)
        self.iteration, self.env_steps = 0, 0

        init_ray(address)
        use_gpu = self._check_resources()
        self.learner = ray.remote(Learner).options(
            num_cpus=cfg.learner_cpus, num_gpus=1 if use_gpu else 0, max_restarts=0, runtime_env=ACTOR_RUNTIME_ENV
        ).remote(cfg, self.spec)
        # Rollout calls are pure functions of their arguments, so Ray may re-run them on a
        # restarted actor: a killed worker costs time, never episodes.
        worker_cls = ray.remote(RolloutWorker).options(
            num_cpus=cfg.worker_cpus, max_restarts=3, max_task_retries=3, runtime_env=ACTOR_RUNTIME_ENV
        )
        self.workers = [
            worker_cls.remote(cfg.env, cfg.env_kwargs, self.spec, self.horizon, i) for i in range(cfg.num_workers)
        ]
        if resume:
            self._restore()

    # -- resources ---------------------------------------------------------------------
    def _check_resources(self) -> bool:
        """Fail fast on requests the cluster can never meet; return whether the learner gets a GPU."""
        total = ray.cluster_resources()
        gpus = total.get("GPU", 0)
        use_gpu = self.cfg.device == "cuda" or (self.cfg.device == "auto" and gpus >= 1)
        if use_gpu and gpus < 1:
            raise ResourceError(f"device: cuda asks for 1 GPU for the learner; the Ray cluster has {gpus:g} GPUs")
        cpus_needed = self.cfg.learner_cpus + self.cfg.num_workers * self.cfg.worker_cpus
        if cpus_needed > total.get("CPU", 0) + 1e-9:
            raise ResourceError(
                f"CPU: the learner ({self.cfg.learner_cpus:g}) and {self.cfg.num_workers} rollout workers "
                f"({self.cfg.worker_cpus:g} each) ask for {cpus_needed:g} CPUs; the Ray cluster has "
                f"{total.get('CPU', 0):g}. Lower num_workers or worker_cpus."
            )
        return use_gpu

    # -- one meta-iteration --------------------------------------------------------------
    def _sample(self, tasks, params_ref, per_task: bool, seeds: np.ndarray) -> list[ray.ObjectRef]:
        """One sampling call per worker for the whole meta-batch; returns rollout references."""
        slices = np.array_split(np.arange(len(tasks)), len(self.workers))
        return [
            w.sample.remote([tasks[i] for i in idx], idx, params_ref, per_task, self.cfg.episodes_per_task,
                            [int(seeds[i]) for i in idx])
            for w, idx in zip(self.workers, slices)
            if len(idx)
        ]

    def train_iteration(self) -> dict[str, Any]:
        cfg, timers = self.cfg, {}
        start = t = time.perf_counter()
        tasks = sample_tasks(self.env, cfg.meta_batch_size, self.rng)
        seeds = self.rng.integers(0, 2**31 - 1, size=(2, cfg.meta_batch_size))

        theta_ref = self.learner.get_theta.remote()
        pre_refs = self._sample(tasks, theta_ref, False, seeds[0])
        ray.wait(pre_refs, num_returns=len(pre_refs), fetch_local=False)
        timers["time/sample_pre"], t = time.perf_counter() - t, time.perf_counter()

        adapted_ref = self.learner.adapt.remote(pre_refs)
        ray.wait([adapted_ref], fetch_local=False)
        timers["time/adapt"], t = time.perf_counter() - t, time.perf_counter()

        post_refs = self._sample(tasks, adapted_ref, True, seeds[1])
        ray.wait(post_refs, num_returns=len(post_refs), fetch_local=False)
        timers["time/sample_post"], t = time.perf_counter() - t, time.perf_counter()

        stats = ray.get(self.learner.meta_update.remote(post_refs))
        timers["time/meta_update"] = time.perf_counter() - t

        self.iteration += 1
        self.env_steps += int(stats.pop("env_steps_iteration"))
        metrics = {"iteration": self.iteration, **stats, "env_steps": self.env_steps,
                   "seconds": time.perf_counter() - start, **timers}
        self.metrics.write(metrics)
        if self.iteration % cfg.checkpoint_every == 0 or self.iteration == cfg.iterations:
            self.save()
        return metrics

    def train(self, callback: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        history = []
        while self.iteration < self.cfg.iterations:
            metrics = self.train_iteration()
            history.append(metrics)
            if callback:
                callback(metrics)
        return history

    # -- checkpoints -----------------------------------------------------------------------
    def save(self) -> Path:
        state = ray.get(self.learner.state_dict.remote())
        state.update(
            iteration=self.iteration,
            env_steps=self.env_steps,
            config=self.cfg.to_dict_json(),
            rng_state=_rng_state_json(self.rng),
        )
        return save_checkpoint(self.ckpt_dir, self.iteration, state, self.cfg.keep_checkpoints)

    def _restore(self) -> None:
        found = load_latest(self.ckpt_dir)
        if found is None:
            return
        _, state = found
        ray.get(self.learner.load_state_dict.remote(state))
        self.iteration, self.env_steps = int(state["iteration"]), int(state["env_steps"])
        self.rng.bit_generator.state = _rng_state_from_json(state["rng_state"])
        self.metrics.truncate_after(self.iteration)

    def close(self) -> None:
        for actor in [*self.workers, self.learner]:
            ray.kill(actor)


def _rng_state_json(rng: np.random.Generator) -> str:
    import json

    return json.dumps(rng.bit_generator.state)


def _rng_state_from_json(text: str) -> dict:
    import json

    return json.loads(text)
