#!/usr/bin/env python3
"""Learner CPU seconds per meta-iteration, robust to other load on the machine.

One torch thread, in-process ``Learner.adapt`` + ``Learner.meta_update`` on synthetic rollouts of the
config's shape (its tasks, episodes, horizon and its env's observation and action sizes: 20 × 20 × 100
with 2-D observations for navigation, 40 × 20 × 200 with 17 / 6 for HalfCheetah), measured with
``time.process_time``; prints one JSON line (median after one warm-up). Used for before/after
comparisons when the machine is shared (BENCHMARKS.md): run it for the old code by putting a
``git worktree`` of the old commit first on ``PYTHONPATH``, alternating with the new code.

    python scripts/learner_cpu_benchmark.py configs/navigation2d-metasgd.yaml [KEY=VALUE ...]
    python scripts/learner_cpu_benchmark.py configs/halfcheetah-dir.yaml algorithm=maml
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
import torch


def main() -> None:
    from metarl.config import Config
    from metarl.envs.tasks import env_horizon, make_env, policy_spec
    from metarl.runtime.learner import Learner

    torch.set_num_threads(1)
    cfg = Config.load(sys.argv[1], ["resources.learner_threads=1", *sys.argv[2:]])
    env = make_env(cfg.env, cfg.env_kwargs)
    spec = policy_spec(cfg, env)
    learner = Learner(cfg, spec)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    shape = (cfg.meta_batch_size, cfg.episodes_per_task, env_horizon(env, cfg.horizon))

    def actions() -> np.ndarray:
        if spec.kind == "gaussian":
            return rng.standard_normal((*shape, spec.act_dim), dtype=np.float32)
        return rng.integers(0, spec.act_dim, (*shape, spec.action_width)).astype(np.float32)  # as rollouts store them

    def rollouts() -> dict[str, np.ndarray]:
        return {
            "obs": rng.uniform(-0.5, 0.5, (*shape, spec.obs_dim)).astype(np.float32),
            "actions": actions(),
            "rewards": -rng.uniform(0, 1, shape).astype(np.float32),
            "mask": np.ones(shape, np.float32),
            "task_index": np.arange(shape[0]),
        }

    cpu = []
    for _ in range(4):
        pre, post = rollouts(), rollouts()
        start = time.process_time()
        try:
            learner.adapt([pre], 0)
        except TypeError:  # code before inner steps took their own batches
            learner.adapt([pre])
        learner.meta_update([post])
        cpu.append(time.process_time() - start)
    print(
        json.dumps(
            {
                "config": sys.argv[1],
                "shape": [*shape, spec.obs_dim, spec.act_dim],
                "cpu_seconds": [round(c, 3) for c in cpu],
                "median_after_warmup": round(statistics.median(cpu[1:]), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
