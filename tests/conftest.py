"""Shared test fixtures: tiny float64 problems built from real Navigation2D rollouts, and one local Ray for
the whole run (``local_ray``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator

import numpy as np
import pytest
import ray
import torch

from metarl.core.batch import Batch
from metarl.core.policies import PolicySpec, init_params
from metarl.envs.navigation_2d import Navigation2DEnv
from metarl.runtime.pids import proc_stats  # noqa: F401  (the tests' name for it)
from metarl.runtime.rollouts import sample_rollouts


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
    from metarl.runtime.rollouts import VectorEnvs

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


# -- one local Ray for the whole run ------------------------------------------------------------------
# address="local": always a new instance of our own, never a cluster someone started with `ray start`.
SHARED_RAY = dict(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
# Fixtures of modules that need a cluster of their own: test_distributed's multi-node cluster and
# test_reliability's, whose tests SIGKILL processes. Connecting to it ends the shared Ray.
OWN_CLUSTER_FIXTURES = {"cluster", "ray_address"}
_shared: dict[str, str] = {}  # {"address": the shared Ray's GCS address} once it has started


@pytest.hookimpl(trylast=True)  # after pytest's own reordering
def pytest_collection_modifyitems(items):
    """Modules that start their own cluster run after the rest, so the shared Ray starts once per run."""

    def module(item):
        return getattr(item, "module", None)

    own = {module(item) for item in items if OWN_CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ()))} - {None}
    items.sort(key=lambda item: module(item) in own)  # stable: the order within each group stays


def shared_ray_connected() -> bool:
    return ray.is_initialized() and ray.get_runtime_context().gcs_address == _shared.get("address")


def ray_leftovers(timeout: float = 30.0) -> list[str]:
    """Live actors and placement groups of the connected Ray, after up to ``timeout`` s for ones being killed
    (``ray.kill`` and ``remove_placement_group`` return before the GCS says so)."""
    from ray._private.state import actors  # the GCS's table: Ray's state API needs the dashboard

    deadline = time.monotonic() + timeout
    while True:
        left = [f"actor {a['ActorClassName']} ({a['State']})" for a in actors().values() if a["State"] != "DEAD"]
        left += [
            f"placement group {pg['name'] or pg_id} ({pg['state']})"
            for pg_id, pg in ray.util.placement_group_table().items()
            if pg["state"] != "REMOVED"
        ]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.fixture(scope="session")
def _shared_ray_session() -> Iterator[None]:
    yield
    if shared_ray_connected():
        ray.shutdown()


@pytest.fixture(scope="module")
def local_ray(_shared_ray_session) -> Iterator[None]:
    """A plain local Ray (2 CPUs), one for every module that needs one: started on first use and again only
    if a module with its own cluster ended it. Each test that uses it must leave no actor or placement
    group behind (checked after every such test)."""
    if not shared_ray_connected():
        if ray.is_initialized():
            ray.shutdown()
        ray.init(**SHARED_RAY)
        _shared["address"] = ray.get_runtime_context().gcs_address
    yield


@pytest.fixture(autouse=True)
def _shared_ray_left_clean(request) -> Iterator[None]:
    yield
    if "local_ray" in request.fixturenames and shared_ray_connected():
        left = ray_leftovers()
        assert not left, f"left on the shared Ray: {left}"
