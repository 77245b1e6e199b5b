#!/usr/bin/env python3
"""CPU microseconds per env step of one rollout worker, robust to other load on the machine.

In-process ``RolloutWorker.sample`` for the config's meta-batch (θ shared), measured with
``time.process_time`` (this process's CPU, so other processes' load does not count); prints one
JSON line with the median over repeats after one warm-up. For before/after comparisons on a shared
machine (BENCHMARKS.md): run it for the old code by putting a ``git worktree`` of the old commit
first on ``PYTHONPATH``, alternating with the new code.

    python scripts/sampling_cpu_benchmark.py configs/halfcheetah-vel.yaml meta_batch_size=8 episodes_per_task=10
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np


def main() -> None:
    import torch

    from metarl.config import Config
    from metarl.core.policies import init_params
    from metarl.envs.tasks import env_horizon, make_env, sample_tasks
    from metarl.runtime.trainer import policy_spec
    from metarl.runtime.workers import RolloutWorker

    torch.set_num_threads(1)
    cfg = Config.load(sys.argv[1], sys.argv[2:])
    env = make_env(cfg.env, cfg.env_kwargs)
    spec, horizon = policy_spec(cfg, env), env_horizon(env, cfg.horizon)
    worker = RolloutWorker(cfg.env, cfg.env_kwargs, spec, horizon)
    params = {k: v.numpy() for k, v in init_params(spec, torch.Generator().manual_seed(0)).items()}
    tasks = sample_tasks(env, cfg.meta_batch_size, np.random.default_rng(0))
    idx, seeds = np.arange(len(tasks)), list(range(len(tasks)))
    times = []
    for _ in range(4):  # the first is a warm-up (env copies built)
        start = time.process_time()
        out = worker.sample(tasks, idx, params, False, cfg.episodes_per_task, seeds)
        times.append(time.process_time() - start)
    steps = float(out["mask"].sum())
    cpu = statistics.median(times[1:])
    print(
        json.dumps(
            {
                "env": cfg.env,
                "steps": steps,
                "cpu_s": round(cpu, 3),
                "us_per_step": round(1e6 * cpu / steps, 2),
                "steps_per_cpu_s": round(steps / cpu),
            }
        )
    )


if __name__ == "__main__":
    main()
