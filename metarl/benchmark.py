"""``metarl benchmark``: how long a meta-iteration takes, and where the time goes.

Runs the real trainer (its rollout group, object store, learner actor) for a warm-up plus N
iterations and reports medians. Thread settings: ``default`` lets the learner use every
core (the rollout actors idle while it works); ``1`` pins it to one torch thread.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
import ray
import torch

from metarl.config import Config
from metarl.core.policies import PolicySpec, init_params
from metarl.envs.tasks import env_horizon, make_env, policy_spec, sample_tasks
from metarl.runtime.learner import Learner
from metarl.runtime.rollout_group import cpus_needed, init_ray
from metarl.runtime.trainer import Trainer
from metarl.runtime.workers import RolloutWorker


def _one_worker(cfg: Config):
    """One rollout worker in this process, with θ at its seed-0 initialisation and a meta-batch of tasks."""
    env = make_env(cfg.env, cfg.env_kwargs)
    spec = policy_spec(cfg, env)
    worker = RolloutWorker(cfg.env, cfg.env_kwargs, spec, env_horizon(env, cfg.horizon))
    params = {k: v.numpy() for k, v in init_params(spec, torch.Generator().manual_seed(0)).items()}
    tasks = sample_tasks(env, cfg.meta_batch_size, np.random.default_rng(0))
    return worker, params, tasks


def worker_throughput(cfg: Config, repeats: int = 3) -> float:
    """Env steps/s of one rollout worker alone (in-process, θ for the whole meta-batch)."""
    worker, params, tasks = _one_worker(cfg)
    idx, seeds = np.arange(len(tasks)), list(range(len(tasks)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = worker.sample(tasks, idx, params, False, cfg.episodes_per_task, seeds)
        best = min(best, time.perf_counter() - start)
    steps = out["mask"].sum()
    return float(steps / best)


def transfer_sizes(cfg: Config) -> dict[str, int]:
    """Bytes that cross the object store per meta-iteration, for the scaling cost model.

    Rollouts travel worker -> learner once per phase; θ (and α) are put once, and the
    per-task θ'ᵢ once, for the post-adaptation phase. Measured on a real sample, not estimated.
    """
    worker, params, tasks = _one_worker(cfg)
    out = worker.sample(tasks, np.arange(len(tasks)), params, False, cfg.episodes_per_task, list(range(len(tasks))))
    rollout = int(sum(np.asarray(v).nbytes for v in out.values()))
    theta = int(sum(v.nbytes for v in params.values()))
    return {
        "rollout_bytes_per_phase": rollout,
        "theta_bytes": theta,
        "adapted_params_bytes": theta * cfg.meta_batch_size,
        "bytes_per_iteration": 2 * rollout + theta + theta * cfg.meta_batch_size,
    }


def cluster_estimate(
    cfg: Config,
    horizon: int,
    worker_steps_per_second: float,
    learner_seconds: float,
    cores: tuple[int, ...] = (1, 2, 8, 20, 40),
) -> dict[int, float]:
    """Seconds per iteration with N rollout cores, from one core's measured rate and the learner time.

    Simple cost model: a phase takes ceil(tasks / N) tasks' rollouts on the busiest core (a task's
    E x H steps at one core's rate; early terminations ignored), twice per iteration, plus the
    learner (adapt + meta-update) as measured. Object-store transfers and Ray overhead are left out.
    """
    per_task = cfg.episodes_per_task * horizon / worker_steps_per_second
    return {n: 2 * math.ceil(cfg.meta_batch_size / n) * per_task + learner_seconds for n in cores}


def run_protocol(cfg: Config, iterations: int, warmup: int) -> dict[str, Any]:
    cfg.iterations, cfg.checkpoint_every = warmup + iterations, 10**6
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, out)
        try:
            history = trainer.train()
            learner_rss = ray.get(trainer.learner.peak_rss_mb.remote())
            device = ray.get(trainer.learner.device_name.remote())
        finally:
            trainer.close()
    timed = history[warmup:]
    med = lambda key: statistics.median(m[key] for m in timed)  # noqa: E731
    steps = [m["env_steps"] - p["env_steps"] for p, m in zip(history[warmup - 1 :], timed)] if warmup else None
    steps = steps or [timed[0]["env_steps"]] + [m["env_steps"] - p["env_steps"] for p, m in zip(timed, timed[1:])]
    sample_s = [m["time/sample_pre"] + m["time/sample_post"] for m in timed]
    return {
        "iteration_seconds": med("seconds"),
        "iteration_seconds_all": [round(m["seconds"], 4) for m in timed],
        "sample_env_steps_per_second": statistics.median(s / t for s, t in zip(steps, sample_s)),
        "learner_seconds": statistics.median(m["time/adapt"] + m["time/meta_update"] for m in timed),
        "learner_cpu_seconds": med("time/learner_cpu"),
        "adapt_seconds": med("time/adapt"),
        "meta_update_seconds": med("time/meta_update"),
        "sample_seconds": statistics.median(sample_s),
        "peak_rss_mb": {"driver": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "learner": learner_rss},
        "device": device,
        "return_post_last": timed[-1]["return_post"],
    }


def benchmark(
    config_path: str, overrides: list[str], iterations: int, warmup: int, workers: list[int] | None, threads: list[str]
) -> dict[str, Any]:
    base = Config.load(config_path, overrides)
    results: dict[str, Any] = {
        "config": config_path,
        "overrides": overrides,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "worker_env_steps_per_second": worker_throughput(base),
        "transfer": transfer_sizes(base),
        "runs": [],
    }
    for w in workers or [base.resources.num_workers]:
        for th in threads:
            raw = base.to_dict()
            raw["resources"] |= {"num_workers": w, "learner_threads": 0 if th == "default" else int(th)}
            cfg = Config.from_dict(raw)
            init_ray(None, num_cpus=max(os.cpu_count() or 1, int(np.ceil(cpus_needed(cfg)))), logging_level="ERROR")
            try:
                run = run_protocol(cfg, iterations, warmup)
            finally:
                ray.shutdown()
            results["runs"].append({"num_workers": w, "learner_threads": th, **run})
    best = min(results["runs"], key=lambda r: r["iteration_seconds"])
    for key in ("iteration_seconds", "sample_env_steps_per_second", "learner_seconds", "peak_rss_mb", "device"):
        results[key] = best[key]
    results["best"] = {"num_workers": best["num_workers"], "learner_threads": best["learner_threads"]}

    results["machine"].update(torch=torch.__version__, device=best["device"])
    horizon = env_horizon(make_env(base.env, base.env_kwargs), base.horizon)
    results["cluster_estimate_seconds"] = cluster_estimate(
        base, horizon, results["worker_env_steps_per_second"], best["learner_seconds"]
    )
    return results


def print_table(r: dict[str, Any], file=sys.stdout) -> None:
    print(f"metarl benchmark: {r['config']} {' '.join(r['overrides'])}", file=file)
    print(f"machine: {r['machine']['cores']} cores, {r['machine']['device']}, torch {r['machine']['torch']}", file=file)
    print(f"one rollout worker: {r['worker_env_steps_per_second']:,.0f} env steps/s", file=file)
    t = r["transfer"]
    print(
        f"object store per iteration: {t['bytes_per_iteration'] / 1e6:.2f} MB (rollouts "
        f"{t['rollout_bytes_per_phase'] / 1e6:.2f} MB per phase, θ {t['theta_bytes'] / 1e3:.0f} kB, "
        f"θ'ᵢ {t['adapted_params_bytes'] / 1e6:.2f} MB)",
        file=file,
    )
    head = (
        f"{'workers':>7} {'threads':>8} {'iter s':>8} {'sample s':>9} {'adapt s':>8} {'meta s':>8} {'lrn cpu s':>9} "
        f"{'steps/s':>10} {'RSS drv/lrn MB':>15}"
    )
    print(head, file=file)
    for run in r["runs"]:
        rss = run["peak_rss_mb"]
        print(
            f"{run['num_workers']:>7} {run['learner_threads']:>8} {run['iteration_seconds']:>8.3f} "
            f"{run['sample_seconds']:>9.3f} {run['adapt_seconds']:>8.3f} {run['meta_update_seconds']:>8.3f} "
            f"{run['learner_cpu_seconds']:>9.3f} "
            f"{run['sample_env_steps_per_second']:>10,.0f} {rss['driver']:>7.0f}/{rss['learner']:<7.0f}",
            file=file,
        )
    estimate = ", ".join(f"{n}: {s:.1f} s" for n, s in r["cluster_estimate_seconds"].items())
    print(f"estimated iteration on N rollout cores (one core's rate, this learner): {estimate}", file=file)


def main(args) -> int:
    workers = [int(w) for w in args.workers.split(",")] if args.workers else None
    if workers is not None and any(w < 1 for w in workers):
        raise ValueError(f"--workers {args.workers!r}: each worker count must be >= 1")
    threads = ["default", "1"] if args.threads == "both" else [args.threads]
    result = benchmark(args.config, args.set or [], args.iterations, args.warmup, workers, threads)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


def learner_benchmark(cfg: Config, obs_dim: int, act_dim: int, horizon: int, repeats: int = 3) -> dict[str, Any]:
    """Learner time (adapt + meta-update) alone, in-process, on synthetic rollouts of a given size.

    The learner's cost depends only on array shapes, not on the env, so a batch shaped like
    HalfCheetah's (obs 17, act 6, 40 tasks x 20 episodes x 200 steps) measures CPU vs GPU
    without MuJoCo or Ray on the GPU machine.
    """
    policy = cfg.policy
    spec = PolicySpec(obs_dim, act_dim, tuple(policy.hidden_sizes), policy.activation, policy.init_std)
    learner = Learner(cfg, spec)
    rng = np.random.default_rng(cfg.seed)
    shape = (cfg.meta_batch_size, cfg.episodes_per_task, horizon)

    def rollouts() -> dict[str, np.ndarray]:
        return {
            "obs": rng.standard_normal((*shape, obs_dim), dtype=np.float32),
            "actions": rng.standard_normal((*shape, act_dim), dtype=np.float32),
            "rewards": rng.standard_normal(shape, dtype=np.float32),
            "mask": np.ones(shape, dtype=np.float32),
            "task_index": np.arange(cfg.meta_batch_size),
        }

    def sync() -> None:
        if learner.device.type == "cuda":
            torch.cuda.synchronize()

    adapt_s, update_s = [], []
    for _ in range(repeats + 1):  # the first round warms up (CUDA context, allocator)
        pre, post = rollouts(), rollouts()
        sync()
        t0 = time.perf_counter()
        for step in range(cfg.inner_steps):  # one batch per inner step (the same one here: timing only)
            learner.adapt([pre], step)
        sync()
        t1 = time.perf_counter()
        learner.meta_update([post])
        sync()
        adapt_s.append(t1 - t0)
        update_s.append(time.perf_counter() - t1)
    return {
        "device": learner.device_name(),
        "rows_per_phase": int(np.prod(shape)),
        "adapt_seconds": statistics.median(adapt_s[1:]),
        "meta_update_seconds": statistics.median(update_s[1:]),
        "learner_seconds": statistics.median(a + u for a, u in zip(adapt_s[1:], update_s[1:])),
    }
