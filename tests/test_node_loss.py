"""Nodes lost mid-run on a real multi-node Ray: ``ray.cluster_utils.Cluster`` on loopback, one raylet per node.

The head (2 CPUs) holds the driver and the learner (``learner_cpus=2``); rollout workers
(1 CPU each) live on 1-CPU nodes. A test adds the nodes it will remove and removes them with
``Cluster.remove_node``, as a lost spot instance would go. Each disturbed run must end with the
metrics and parameters of an undisturbed run with the same seeds (every episode once), and
every process a test started is checked by PID to be gone. Nothing here runs ``ray stop``.

Before the fix, every disturbed run here hung in ``RolloutGroup.sample``'s ``ray.wait``: Ray
restarted the lost worker in its placement-group bundle, which could not be re-placed while
the cluster was full, and its call waited for that restart forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
from conftest import ray_leftovers, short_ray_tmpdir  # tests/ is on sys.path

from metarl.config import Config
from metarl.runtime.checkpoint import list_checkpoints, load_checkpoint
from metarl.runtime.metrics import read_metrics
from metarl.runtime.pids import node_processes as _node_tree
from metarl.runtime.pids import start_time as _start_time
from metarl.runtime.pids import still_running as _still_running
from metarl.runtime.trainer import LearnerDiedError, Trainer

# Long episodes: one rollout slice takes a few tenths of a second (so a removal lands mid-call) and
# its rollouts (~0.7 MB) live in the worker node's object store, where a node loss takes them along.
RUN = dict(
    meta_batch_size=4,
    episodes_per_task=4,
    horizon=3000,
    hidden_sizes=[8],
    num_workers=2,
    worker_cpus=1.0,
    learner_cpus=2.0,
    learner_threads=1,
    iterations=3,
    checkpoint_every=1,
    seed=11,
)
HANG_S = 120  # a disturbed run that takes longer than this has hung (undisturbed: ~10 s)


@contextlib.contextmanager
def _within(seconds: float, what: str) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block takes longer than ``seconds``.

    SIGALRM raises KeyboardInterrupt: the only exception that Ray's blocking calls (``ray.wait``,
    ``ray.get``) let through from a signal handler; it becomes a ``TimeoutError`` here.
    """
    expired = []

    def expire(signum, frame):
        expired.append(True)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except KeyboardInterrupt:
        if expired:
            raise TimeoutError(f"{what} hung: still running after {seconds:g} s") from None
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Loopback:
    """The module's Cluster, plus the nodes that tests add and remove (their processes checked by PID)."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.seen: dict[int, str] = {}  # every process of every node, ever
        self.permanent = None  # the module's own 1-CPU node; tests remove only the nodes they added

    def add(self, cpus: float) -> Any:
        node = self.cluster.add_node(num_cpus=cpus)
        self.cluster.wait_for_nodes()
        self.seen.update(_node_tree(node))
        return node

    def remove(self, node) -> None:
        """``Cluster.remove_node`` (raylet and friends stopped), then every process of that node must be gone."""
        tree = _node_tree(node)
        self.seen.update(tree)
        self.cluster.remove_node(node)
        assert not _still_running(tree), f"processes of the removed node outlived it: {_still_running(tree, 0)}"

    def remove_added(self) -> None:
        for node in [n for n in self.cluster.worker_nodes if n is not self.permanent]:
            self.remove(node)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Loopback]:  # the name conftest knows: modules with a cluster of their own run last
    """Head (2 CPUs: the driver and the learner) + one permanent 1-CPU node; torn down whatever happens."""
    from ray.cluster_utils import Cluster

    c = loop = None
    with short_ray_tmpdir("mrn"):
        try:
            c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
            loop = Loopback(c)
            loop.permanent = loop.add(1)
            loop.seen.update(_node_tree(c.head_node))
            ray.init(address=c.address, include_dashboard=False, logging_level="ERROR")
            yield loop
        finally:
            ray.shutdown()
            if c is not None:
                for node in [c.head_node, *c.worker_nodes]:
                    loop.seen.update(_node_tree(node))
                c.shutdown()
            if loop is not None:
                assert not _still_running(loop.seen), "cluster processes outlived Cluster.shutdown()"


@pytest.fixture
def clean(cluster) -> Iterator[Loopback]:
    """After each test: no actor or placement group left, every CPU free, only the permanent node left."""
    yield cluster
    assert not ray_leftovers(), "a test left actors or placement groups behind"
    cluster.remove_added()
    deadline = time.monotonic() + 20  # a killed actor's CPU is freed shortly after the GCS calls it dead
    while ray.available_resources().get("CPU", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources().get("CPU", 0) == 3


def _trainer(out: Path, **overrides) -> Trainer:
    return Trainer(Config.from_dict({**RUN, **overrides}), out, address=ray.get_runtime_context().gcs_address)


def _train(trainer: Trainer, callback: Callable | None = None) -> list[dict]:
    """``trainer.train``, failing instead of hanging; the actors' PIDs must be gone after ``close``."""
    pids = [p for p in trainer.rollouts.worker_pids if p]
    pids.append(ray.get(trainer.learner.__ray_call__.remote(lambda self: os.getpid())))
    try:
        with _within(HANG_S, "training"):
            return trainer.train(callback)
    finally:
        pids += [p for p in trainer.rollouts.worker_pids if p]
        trainer.close()
        tree = {p: s for p in pids if (s := _start_time(p)) is not None}
        assert not _still_running(tree), "rollout or learner processes outlived the trainer"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def undisturbed(cluster, tmp_path_factory) -> Path:
    """The run every disturbed one must equal: same config and seeds, no node lost."""
    extra = cluster.add(1)
    out = tmp_path_factory.mktemp("undisturbed")
    try:
        history = _train(_trainer(out))
    finally:
        cluster.remove(extra)
    assert all(m["workers/nodes"] == 2 and m["workers/restarts"] == 0 for m in history)
    return out


def _assert_same_run(a: Path, b: Path, iterations: int = 3) -> None:
    """Every iteration's metrics and the final θ, α of run ``b`` equal run ``a``'s: nothing lost, nothing twice."""
    rows_a, rows_b = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    assert [r["iteration"] for r in rows_a] == [r["iteration"] for r in rows_b] == list(range(1, iterations + 1))
    keys = [k for k in rows_a[0] if k.startswith(("return_", "outer/", "alpha/", "episodes_", "env_steps"))]
    assert {"return_pre", "return_post", "episodes_pre", "episodes_post", "env_steps", "outer/kl"} <= set(keys)
    for ra, rb in zip(rows_a, rows_b):
        assert rb["episodes_pre"] == rb["episodes_post"] == 16
        for k in keys:
            assert rb[k] == pytest.approx(ra[k], rel=1e-5, abs=1e-7), (ra["iteration"], k)
    sa, sb = (load_checkpoint(list_checkpoints(run / "checkpoints")[-1]) for run in (a, b))
    assert sa["iteration"] == sb["iteration"] == iterations and sa["env_steps"] == sb["env_steps"]
    for group in ("theta", "alpha"):
        for name in sa[group]:
            torch.testing.assert_close(sb[group][name], sa[group][name], rtol=1e-5, atol=1e-7)


# -- a node with rollout workers lost ----------------------------------------------------------------
def _wait_until_joined(trainer: Trainer, w: int, timeout: float = 60) -> None:
    """Until worker ``w``'s replacement has started (it then takes calls from the next phase on)."""
    deadline = time.monotonic() + timeout
    while w in trainer.rollouts._starting and time.monotonic() < deadline:
        trainer.rollouts.active_workers()
        time.sleep(0.2)
    assert w not in trainer.rollouts._starting, f"rollout worker {w}'s replacement did not start"


def _lose_mid_call(cluster: Loopback, trainer: Trainer, victim, w: int, done: threading.Event) -> Callable:
    """A ``_sample`` that removes ``victim`` while worker ``w`` computes its slice of iteration 2's pre phase."""
    original, pid = trainer._sample, trainer.rollouts.worker_pids[w]

    def remove_once_busy(cpu_at_submit: float) -> None:
        deadline = time.monotonic() + 10
        while _cpu_seconds(pid) - cpu_at_submit < 0.05 and time.monotonic() < deadline:
            time.sleep(0.005)
        done.busy = _cpu_seconds(pid) - cpu_at_submit
        cluster.remove(victim)
        done.set()

    def sample(tasks, params_ref, per_task, seeds, phase):
        if trainer.iteration + 1 == 2 and phase == "pre" and not hasattr(done, "busy"):
            threading.Thread(target=remove_once_busy, args=(_cpu_seconds(pid),), daemon=True).start()
        return original(tasks, params_ref, per_task, seeds, phase)

    return sample


def _lose_before_the_learner_reads(cluster: Loopback, trainer: Trainer, victim, done: threading.Event) -> Callable:
    """A ``_sample`` that removes ``victim`` once iteration 2's pre rollouts are in, before the learner reads them."""
    original = trainer._sample

    def sample(tasks, params_ref, per_task, seeds, phase):
        refs = original(tasks, params_ref, per_task, seeds, phase)
        if trainer.iteration + 1 == 2 and phase == "pre" and not done.is_set():
            cluster.remove(victim)
            done.set()
        return refs

    return sample


@pytest.mark.parametrize(
    "moment",
    [
        "mid-call",
        pytest.param("before-the-learner-reads", marks=pytest.mark.slow),
        pytest.param("between-iterations", marks=pytest.mark.slow),
    ],
)
def test_a_lost_rollout_node_costs_no_episode(clean, undisturbed, tmp_path, caplog, moment):
    """Remove the node of rollout worker ``w``; the run completes and equals the undisturbed one.

    ``mid-call``: while ``w`` samples (its call is killed with the node and re-sent); the cluster
    then has no room, so the run goes on with one worker, and a node added after iteration 2
    gets the replacement (2 nodes again in iteration 3). ``between-iterations`` (the issue's
    report): after iteration 1, no room: the run ends with one worker, the replacement still
    waiting. Both hung before the fix. ``before-the-learner-reads``: its rollouts are lost with
    the node; the iteration is sampled again with the same seeds, and the replacement goes to a
    spare node that has room.
    """
    cluster = clean
    victim = cluster.add(1)
    trainer = _trainer(tmp_path)
    w = trainer.rollouts.worker_nodes.index(victim.node_id)
    victim_pid, done = trainer.rollouts.worker_pids[w], threading.Event()
    callback = None
    if moment == "mid-call":
        trainer._sample = _lose_mid_call(cluster, trainer, victim, w, done)

        def callback(m):  # a node arrives (as the autoscaler's would): the pending replacement starts there
            if m["iteration"] == 2:
                assert w in trainer.rollouts._starting  # no room: still waiting for a node
                cluster.add(1)
                _wait_until_joined(trainer, w)
    elif moment == "before-the-learner-reads":
        trainer._sample = _lose_before_the_learner_reads(cluster, trainer, victim, done)
        spare = cluster.add(1)  # a surviving node with room: the replacement goes there

        def callback(m):
            if m["iteration"] == 2:
                _wait_until_joined(trainer, w)
                assert trainer.rollouts.worker_nodes[w] == spare.node_id
    else:

        def callback(m):
            if m["iteration"] == 1:
                cluster.remove(victim)
                done.set()
            else:
                assert w in trainer.rollouts._starting  # its replacement waits for a node with room

    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="metarl"):
        history = _train(trainer, callback)
    assert done.is_set() and _start_time(victim_pid) is None  # the node, and the worker on it, are gone
    assert time.monotonic() - start < 60
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(f"rollout worker {w}" in m and f"lost with its node {victim.node_id}" in m for m in warnings), warnings
    assert [m["workers/restarts"] for m in history][-1] >= 1
    if moment == "mid-call":
        assert done.busy >= 0.05, "the worker had not started its slice when its node was removed"
        assert any(f"rollout worker {w}" in m and "failed during pre sampling" in m for m in warnings), warnings
        assert [m["workers/nodes"] for m in history] == [2, 1, 2]  # fewer, then the arriving node's
    if moment == "before-the-learner-reads":
        assert any("iteration 2: rollouts were lost with their node" in m for m in warnings), warnings
        assert history[0]["workers/nodes"] == history[2]["workers/nodes"] == 2  # re-placed on the spare node
    if moment == "between-iterations":
        assert [m["workers/nodes"] for m in history] == [2, 1, 1]  # fewer: no node has room
    _assert_same_run(undisturbed, tmp_path)


# -- a node arriving ----------------------------------------------------------------------------------
def test_a_run_short_of_room_starts_with_fewer_workers_and_grows_when_a_node_arrives(
    clean, undisturbed, tmp_path, caplog
):
    """``num_workers=2`` with room for one (the permanent node): one line says so and the run starts with
    one worker; a node added after iteration 1 (as an autoscaler adds one for the pending group) gets
    the second from iteration 2 on. Same numbers as the undisturbed two-worker run; nothing restarted."""
    cluster = clean
    with caplog.at_level(logging.WARNING, logger="metarl"):
        trainer = _trainer(tmp_path)
    short = [r.getMessage() for r in caplog.records if "the cluster has room for" in r.getMessage()]
    assert (
        len(short) == 1
        and "\n" not in short[0]
        and short[0].startswith(
            "resources.num_workers=2: the cluster has room for 1 rollout worker now (resources.worker_cpus=1 each, "
            "on one node;"
        )
    ), short
    assert "starting with 1, the other 1 join as nodes with room arrive" in short[0]
    w = 1 - trainer.rollouts.worker_nodes.index(cluster.permanent.node_id)  # the one without room
    assert list(trainer.rollouts._starting) == [w]
    arrived = []

    def arrive(m):
        if m["iteration"] == 1:
            assert w in trainer.rollouts._starting  # still waiting for room
            arrived.append(cluster.add(1))
            _wait_until_joined(trainer, w)
            assert trainer.rollouts.worker_nodes[w] == arrived[0].node_id

    history = _train(trainer, arrive)
    assert [m["workers/active"] for m in history] == [1, 2, 2]
    assert [m["workers/nodes"] for m in history] == [1, 2, 2]
    assert all(m["workers/restarts"] == 0 for m in history)  # an arrival is no restart
    _assert_same_run(undisturbed, tmp_path)


# -- a hung rollout worker ----------------------------------------------------------------------------
def test_a_hung_rollout_worker_is_killed_replaced_and_its_tasks_resampled(clean, undisturbed, tmp_path, caplog):
    """SIGSTOP (alive, never answering) worker ``w`` as iteration 2's pre phase starts: past its limit
    (the floor ``worker_timeout_min``, or 3 x its slowest per-episode time x its episodes) it is killed
    and replaced, its slice re-sampled by the other worker; the run equals the undisturbed one."""
    cluster = clean
    cluster.add(1)  # room for both workers, as in the undisturbed run
    trainer = _trainer(tmp_path, worker_timeout_min=6.0, worker_timeout_factor=3.0)
    w, original = 0, trainer._sample
    pid = trainer.rollouts.worker_pids[w]

    def sample(tasks, params_ref, per_task, seeds, phase):
        if trainer.iteration + 1 == 2 and phase == "pre" and trainer.rollouts.worker_pids[w] == pid:
            os.kill(pid, signal.SIGSTOP)
        return original(tasks, params_ref, per_task, seeds, phase)

    trainer._sample = sample
    start = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="metarl"):
            history = _train(trainer)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # only if the watchdog failed to kill it
    assert _start_time(pid) is None  # the hung process is gone
    assert time.monotonic() - start < 60
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    hung = [m for m in warnings if f"rollout worker {w} (pid {pid}," in m and "did not return its pre sampling" in m]
    limits = ("(limit: the floor worker_timeout_min=6 s)", "(limit: worker_timeout_factor=3 x its slowest recent ")
    assert len(hung) == 1 and any(limit in hung[0] for limit in limits), warnings
    assert history[-1]["workers/restarts"] == 1 and trainer.rollouts.worker_pids[w] != pid
    _assert_same_run(undisturbed, tmp_path)


# -- the learner's node lost -------------------------------------------------------------------------
@pytest.mark.slow  # the default suite's test_distributed kills the learner's process: the same path, 15 s less
def test_a_lost_learner_node_stops_in_one_line_and_resume_equals_the_undisturbed_run(clean, undisturbed, tmp_path):
    """The learner on a node of its own (the only one with 3 CPUs), removed mid-iteration 2.

    The run stops at once with one line naming the newest checkpoint and the resume command;
    resumed (the learner back on the head: ``learner_cpus`` may change on resume), it equals the
    undisturbed run.
    """
    cluster = clean
    home = cluster.add(3)
    trainer = _trainer(tmp_path, learner_cpus=3.0)
    learner_node = ray.get(trainer.learner.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))
    assert learner_node == home.node_id
    original = trainer._sample

    def sample(tasks, params_ref, per_task, seeds, phase):
        if trainer.iteration + 1 == 2 and phase == "post":
            cluster.remove(home)
        return original(tasks, params_ref, per_task, seeds, phase)

    trainer._sample = sample
    start = time.monotonic()
    with pytest.raises(LearnerDiedError) as err:
        _train(trainer)
    assert time.monotonic() - start < 30
    address = ray.get_runtime_context().gcs_address
    assert str(err.value) == (
        f"learner died at iteration 2; newest checkpoint: {tmp_path / 'checkpoints' / 'checkpoint-000001.pt'}; "
        f"resume with: metarl train {tmp_path / 'config.yaml'} --out {tmp_path} --address {address} --resume"
    )
    assert [r["iteration"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]

    cluster.add(1)  # a node for the second rollout worker (the learner goes back to the head)
    resumed = Trainer(Config.from_dict(RUN), tmp_path, address=address, resume=True)
    assert resumed.resume_changes == {"resources.learner_cpus": (3.0, 2.0)} and resumed.iteration == 1
    assert [m["iteration"] for m in _train(resumed)] == [2, 3]
    _assert_same_run(undisturbed, tmp_path)


@pytest.mark.slow
def test_losing_every_rollout_worker_stops_in_one_line_with_the_resume_command(clean, tmp_path, monkeypatch):
    """The only worker's node is lost and no node has room: after READY_TIMEOUT_S, one line, never a hang."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import metarl.runtime.rollout_group as rollout_group_mod
    from metarl.runtime.trainer import WorkersLostError

    class Idle:  # defined here, so that it travels by value (tests/ is not importable in actors)
        """An actor that only holds its CPU: another job's."""

    cluster = clean
    blocker = (
        ray.remote(num_cpus=1)(Idle)
        .options(  # holds the permanent node's CPU
            scheduling_strategy=NodeAffinitySchedulingStrategy(cluster.permanent.node_id, soft=False)
        )
        .remote()
    )
    ray.get(blocker.__ray_ready__.remote(), timeout=60)
    victim = cluster.add(1)
    try:
        trainer = _trainer(tmp_path, num_workers=1)
        assert trainer.rollouts.worker_nodes == [victim.node_id]
        monkeypatch.setattr(rollout_group_mod, "READY_TIMEOUT_S", 3.0)

        def lose(m):
            if m["iteration"] == 1:
                cluster.remove(victim)

        with pytest.raises(WorkersLostError) as err:
            _train(trainer, lose)
    finally:
        ray.kill(blocker)
    message = str(err.value)
    assert "\n" not in message and message.startswith(
        "iteration 2: no rollout worker is left and none could be started within 3 s (each needs "
        "resources.worker_cpus=1 CPUs"
    )
    assert message.endswith(
        f"newest checkpoint: {tmp_path / 'checkpoints' / 'checkpoint-000001.pt'}; resume with: "
        f"metarl train {tmp_path / 'config.yaml'} --out {tmp_path} --address "
        f"{ray.get_runtime_context().gcs_address} --resume"
    )
