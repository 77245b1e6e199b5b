"""Shared test fixtures: tiny float64 problems built from real Navigation2D rollouts."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from collections.abc import Iterator

import numpy as np
import pytest
import ray
import torch

from metarl.envs.navigation_2d import Navigation2DEnv
from metarl.batch import Batch
from metarl.policies import PolicySpec, init_params
from metarl.rollouts import sample_rollouts


def tiny_batches(num_batches=2, num_tasks=3, episodes=3, horizon=6, hidden=(5,), activation="tanh", seed=0):
    """``num_batches`` batches of the same tasks from real rollouts of a tiny tanh policy (smooth, for finite
    differences); batch b uses noise seeds ``100 (b + 1) + i``."""
    spec = PolicySpec(2, 2, hidden, activation, init_std=0.5)
    theta = init_params(spec, torch.Generator().manual_seed(seed), torch.float64)
    tasks = Navigation2DEnv().sample_tasks(num_tasks, np.random.default_rng(seed))

    def batch(seed_offset):
        vec = Navigation2DEnv.make_vector(tasks, episodes)
        params32 = {k: v.float() for k, v in theta.items()}
        r = sample_rollouts(vec, spec, params32, horizon, [seed_offset + i for i in range(num_tasks)])
        return Batch.from_rollouts(r, gamma=0.99, gae_lambda=1.0, normalize=True, dtype=torch.float64, device="cpu")

    return spec, theta, [batch(100 * (b + 1)) for b in range(num_batches)]


def tiny_problem(num_tasks=3, episodes=3, horizon=6, hidden=(5,), activation="tanh", seed=0):
    """Pre/post batches from real rollouts of a tiny tanh policy (smooth, for finite differences)."""
    spec, theta, (pre, post) = tiny_batches(2, num_tasks, episodes, horizon, hidden, activation, seed)
    return spec, theta, pre, post


@pytest.fixture
def tiny():
    return tiny_problem()


def tiny_discrete_problem(num_tasks=3, episodes=3, horizon=6, hidden=(5,), seed=0):
    """As ``tiny_problem`` with a categorical policy on GridNavigation (the Gymnasium vector path)."""
    from metarl.rollouts import VectorEnvs

    spec = PolicySpec(2, 4, hidden, "tanh", kind="categorical")
    theta = init_params(spec, torch.Generator().manual_seed(seed), torch.float64)
    vector_envs = VectorEnvs("metarl/GridNavigation-v0", {})
    tasks = vector_envs.env_cls().sample_tasks(num_tasks, np.random.default_rng(seed))

    def batch(seed_offset):
        seeds = [seed_offset + i for i in range(num_tasks)]
        params32 = {k: v.float() for k, v in theta.items()}
        r = sample_rollouts(vector_envs.make(tasks, episodes, seeds), spec, params32, horizon, seeds)
        return Batch.from_rollouts(r, gamma=0.99, gae_lambda=1.0, normalize=True, dtype=torch.float64, device="cpu")

    return spec, theta, batch(100), batch(200)


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """``(pid, fields)`` of every live process: /proc/PID/stat after the command name (state, ppid, pgrp, ...)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            yield int(entry), stat.rsplit(")", 1)[1].split()


@contextlib.contextmanager
def short_ray_tmpdir(prefix: str) -> Iterator[str]:
    """A private, short RAY_TMPDIR for one test module's Ray (its unix sockets must fit in 107 bytes).

    Restores the previous value and removes the directory afterwards, whatever happens.
    """
    if ray.is_initialized():
        ray.shutdown()
    tmp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    try:
        yield tmp
    finally:
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old
        shutil.rmtree(tmp, ignore_errors=True)
