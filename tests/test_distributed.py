"""Training across nodes of a real (local) multi-node Ray cluster: placement, failures, resume.

The cluster is ``ray.cluster_utils.Cluster``: a head and two worker nodes, each its own raylet
with its own resources, on this machine. It lives in a private ``RAY_TMPDIR`` (so its
"current cluster" file and sockets never touch another program's Ray), tests connect to its
address only, and the fixtures stop exactly the processes they started, also when a test
fails. Nothing here runs ``ray stop``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import ray
import torch
from conftest import short_ray_tmpdir  # tests/ is on sys.path (pytest rootdir-less import)

import metarl.runtime.rollout_group as rollout_group_mod
from metarl.config import Config
from metarl.runtime.checkpoint import list_checkpoints, load_checkpoint
from metarl.runtime.metrics import read_metrics
from metarl.runtime.rollout_group import ResourceError, check_placement, split_by_share
from metarl.runtime.trainer import LearnerDiedError, Trainer

TINY = dict(
    meta_batch_size=4,
    episodes_per_task=4,
    hidden_sizes=[8],
    num_workers=2,
    worker_cpus=1.0,
    learner_cpus=1.0,
    learner_threads=1,
    iterations=2,
    checkpoint_every=1,
)
NODE_CPUS = (1, 1, 1)  # head, node a, node b


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster():
    """Head (1 CPU) + two worker nodes (1 CPU and a custom resource each), torn down whatever happens."""
    from ray.cluster_utils import Cluster

    c = None
    pids: list[int] = []
    with short_ray_tmpdir("mrl"):
        try:
            c = Cluster(initialize_head=True, head_node_args={"num_cpus": NODE_CPUS[0], "include_dashboard": False})
            c.add_node(num_cpus=NODE_CPUS[1], resources={"node_a": 1})
            c.add_node(num_cpus=NODE_CPUS[2], resources={"node_b": 1})
            c.wait_for_nodes()
            for node in c.list_all_nodes():
                pids += [p.process.pid for procs in node.all_processes.values() for p in procs]
            ray.init(address=c.address, include_dashboard=False, logging_level="ERROR")
            yield c
        finally:
            ray.shutdown()
            if c is not None:
                c.shutdown()
            deadline = time.monotonic() + 10
            while any(_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not [p for p in pids if _alive(p)], "cluster processes outlived Cluster.shutdown()"


@pytest.fixture
def clean(cluster):
    """After each test: every actor and placement group it made is gone (all CPUs free again)."""
    yield cluster
    total = ray.cluster_resources().get("CPU", 0)
    deadline = time.monotonic() + 20
    while ray.available_resources().get("CPU", 0) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == total, "a test left actors or placement groups behind"


def _trainer(out, **overrides) -> Trainer:
    return Trainer(Config.from_dict({**TINY, **overrides}), out, address=ray.get_runtime_context().gcs_address)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pid_of(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


# -- pure placement logic (no cluster) -----------------------------------------------------------
def test_split_by_share():
    assert [len(s) for s in split_by_share(5, [1, 1])] == [3, 2]
    assert [len(s) for s in split_by_share(6, [2, 1])] == [4, 2]
    assert np.concatenate(split_by_share(7, [1, 1, 1])).tolist() == list(range(7))
    assert [len(s) for s in split_by_share(10, [1.0] * 3)] == [len(s) for s in np.array_split(np.arange(10), 3)]


@pytest.mark.parametrize(
    "nodes, learner, gpu, workers, wcpus, fragment",
    [
        ([{"CPU": 1}] * 3, 1, False, 1, 1.5, "worker_cpus=1.5 CPUs on one node; the largest node has 1"),
        ([{"CPU": 1}] * 3, 0.5, False, 4, 0.6, "hold at most 2 such workers"),
        ([{"CPU": 4}, {"CPU": 1, "GPU": 1}], 2, True, 1, 1, "GPU: the learner asks for 1 GPU and 2 CPUs on one node"),
        ([{"CPU": 1}, {"CPU": 1}], 2, False, 0, 1, "learner_cpus=2 CPUs on one node"),
    ],
)
def test_check_placement_rejects(nodes, learner, gpu, workers, wcpus, fragment):
    with pytest.raises(ResourceError, match="CPU|GPU") as err:
        check_placement(nodes, learner, gpu, workers, wcpus)
    assert fragment in str(err.value)


def test_check_placement_counts_the_workers_that_fit():
    assert check_placement([{"CPU": 1}] * 3, 0.5, False, 4, 0.6, allow_fewer=True) == 2  # 2 of 4 fit now
    assert check_placement([{"CPU": 2}, {"CPU": 1}], 2, False, 3, 1, allow_fewer=True) == 1
    with pytest.raises(ResourceError, match="hold at most 0 such workers"):  # not even one: refused
        check_placement([{"CPU": 2}], 2, False, 3, 1, allow_fewer=True)


def test_check_placement_accepts():
    assert check_placement([{"CPU": 1}] * 3, 1, False, 2, 1) == 2
    check_placement([{"CPU": 2}, {"CPU": 1, "GPU": 1}], 1, True, 2, 1)  # learner on the GPU node
    check_placement([{"CPU": 1}], 1, False, 8, 0)  # zero-CPU workers always fit


# -- on the cluster --------------------------------------------------------------------------------
def test_rollouts_spread_over_nodes(clean, tmp_path):
    trainer = _trainer(tmp_path)
    try:
        rollouts = trainer.rollouts
        assert len(set(rollouts.worker_nodes)) == 2, rollouts.worker_nodes  # SPREAD: one worker per node
        cluster_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert set(rollouts.worker_nodes) <= cluster_nodes
        history = trainer.train()
        assert [m["iteration"] for m in history] == [1, 2]
        for m in history:
            assert m["workers/nodes"] == 2 and m["workers/restarts"] == 0
            assert m["episodes_pre"] == m["episodes_post"] == 4 * 4
        assert len(rollouts.used_nodes) >= 2 and rollouts.used_nodes <= cluster_nodes
        # The placement groups are the Ray-visible reservation: one group of one {CPU: 1} bundle per worker
        # (a worker lost with its node loses only its own group), on the nodes the workers run on.
        tables = [ray.util.placement_group_table(pg) for pg in rollouts.placement_groups]
        assert [(t["strategy"], list(t["bundles"].values())) for t in tables] == [("SPREAD", [{"CPU": 1.0}])] * 2
        assert [t["bundles_to_node_id"][0] for t in tables] == rollouts.worker_nodes
    finally:
        trainer.close()


@pytest.mark.parametrize("retries", [3, 0], ids=["ray-restarts", "resubmit"])
def test_killed_worker_mid_sample(clean, tmp_path, monkeypatch, caplog, retries):
    """SIGKILL a rollout process while it samples: the iteration still has every episode.

    ``retries=3`` (the default): Ray restarts the process and re-runs the call; ``0``: the call
    fails with ActorDiedError and the trainer re-sends the slice to the surviving worker.
    """
    monkeypatch.setattr(rollout_group_mod, "WORKER_MAX_RESTARTS", retries)
    monkeypatch.setattr(rollout_group_mod, "WORKER_MAX_TASK_RETRIES", retries)
    # Long episodes so that one slice takes a few tenths of a second of the victim's CPU: the kill, after
    # 50 ms of it, lands mid-call. (At horizon 1500 a slice took about 50 ms, and the kill sometimes
    # landed in the post phase instead.)
    trainer = _trainer(tmp_path, horizon=6000, iterations=3, checkpoint_every=10)
    try:
        first = trainer.train_iteration()
        rollouts = trainer.rollouts
        victim, pid, node = 0, rollouts.worker_pids[0], rollouts.worker_nodes[0]
        original = trainer._sample
        killed = threading.Event()

        cpu_used = []

        def kill_once_busy(cpu_at_submit: float) -> None:
            deadline = time.monotonic() + 10
            while _cpu_seconds(pid) - cpu_at_submit < 0.05 and time.monotonic() < deadline:
                time.sleep(0.005)
            cpu_used.append(_cpu_seconds(pid) - cpu_at_submit)
            os.kill(pid, signal.SIGKILL)
            killed.set()

        def sample_then_kill(*args):
            if not killed.is_set() and not cpu_used:  # the first phase of iteration 2
                threading.Thread(target=kill_once_busy, args=(_cpu_seconds(pid),), daemon=True).start()
            return original(*args)

        trainer._sample = sample_then_kill
        with caplog.at_level(logging.WARNING, logger="metarl.runtime.rollout_group"):
            second = trainer.train_iteration()
        assert killed.is_set() and not _alive(pid)
        for m in (first, second):
            assert m["episodes_pre"] == m["episodes_post"] == 4 * 4
        assert second["env_steps"] - first["env_steps"] == pytest.approx(first["env_steps"], rel=0.5)
        assert second["workers/restarts"] == 1 and first["workers/restarts"] == 0
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        # Mid-sample: the victim had computed for 50 ms of the "pre" call (which takes several
        # times that) when it was killed, and the warning is about that same call.
        assert cpu_used[0] >= 0.05, "the worker had not started sampling when it was killed"
        assert any(f"rollout worker {victim}" in w and node in w and "pre sampling" in w for w in warnings), warnings
        third = trainer.train_iteration()  # training goes on, on the restarted/replacement worker
        assert third["iteration"] == 3 and third["episodes_pre"] == 16 and third["workers/restarts"] == 1
        if victim in rollouts._starting:  # a replacement actor (retries=0) joins once it has started
            ray.get(rollouts._starting[victim], timeout=60)
        assert victim in rollouts.active_workers()
        assert rollouts.worker_pids[victim] not in (None, pid) and _alive(rollouts.worker_pids[victim])
    finally:
        trainer.close()


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (
            dict(device="cuda"),
            "GPU: resources.device: cuda asks for 1 GPU for the learner; the Ray cluster has 0 GPUs",
        ),
        (
            dict(num_workers=1, worker_cpus=1.5, learner_cpus=0.5),
            "worker_cpus=1.5 CPUs on one node; the largest node has 1",
        ),
        (dict(learner_cpus=1.5), "learner_cpus=1.5 CPUs on one node; the largest node has 1"),
    ],
    ids=["gpu", "cpu-per-node", "learner-per-node"],
)
def test_impossible_request_fails_fast(clean, tmp_path, overrides, fragment):
    """Requests no node can ever meet. (More workers than fit, with at least one fitting, start with
    fewer and grow as nodes arrive: test_node_loss.py.)"""
    start = time.monotonic()
    with pytest.raises(ResourceError) as err:
        _trainer(tmp_path, **overrides)
    assert time.monotonic() - start < 60
    assert fragment in str(err.value)


def test_unplaceable_group_times_out(clean, tmp_path, monkeypatch):
    """Resources held by someone else: the rollout group stays pending, then fails with what is free."""
    monkeypatch.setattr(rollout_group_mod, "PLACEMENT_TIMEOUT_S", 2.0)
    from ray.util.placement_group import placement_group, remove_placement_group

    other = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD")  # another job's reservation
    assert other.wait(20)
    try:
        start = time.monotonic()
        with pytest.raises(
            ResourceError, match=r"rollout placement group .* not placed within 2 s; the cluster has 0 CPUs"
        ):
            _trainer(tmp_path, num_workers=1)
        assert time.monotonic() - start < 30
    finally:
        remove_placement_group(other)


def test_cli_impossible_request_one_line(clean, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "metarl.cli",
            "train",
            "configs/navigation2d-maml.yaml",
            "--set",
            "device=cuda",
            "--out",
            str(tmp_path / "run"),
            "--address",
            ray.get_runtime_context().gcs_address,
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "metarl: error: GPU: resources.device: cuda asks for 1 GPU for the learner; the Ray cluster has 0 GPUs"
    ), proc.stderr


def _final_state(out):
    return load_checkpoint(list_checkpoints(out / "checkpoints")[-1])


def _assert_same_run(a, b):
    rows_a, rows_b = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    assert [r["iteration"] for r in rows_a] == [r["iteration"] for r in rows_b] == [1, 2, 3, 4]
    keys = [k for k in rows_a[0] if k.startswith(("return_", "outer/", "alpha/", "episodes_", "env_steps"))]
    assert {"return_pre", "return_post", "outer/kl", "outer/loss_after", "env_steps"} <= set(keys)
    for ra, rb in zip(rows_a, rows_b):
        for k in keys:
            if isinstance(ra[k], str):
                assert ra[k] == rb[k], (ra["iteration"], k)
            else:
                assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), (ra["iteration"], k)
    sa, sb = _final_state(a), _final_state(b)
    assert sa["iteration"] == sb["iteration"] == 4
    for group in ("theta", "alpha"):
        for name in sa[group]:
            assert torch.equal(sa[group][name], sb[group][name]), (group, name)


def test_learner_death_then_resume_matches_uninterrupted(clean, tmp_path):
    """Kill the learner after iteration 2: a one-line error, then --resume reproduces the 4-iteration run."""
    cfg = dict(iterations=4, checkpoint_every=2, seed=3)
    straight = _trainer(tmp_path / "straight", **cfg)
    try:
        straight.train()
    finally:
        straight.close()

    out = tmp_path / "interrupted"
    first = _trainer(out, **cfg)
    try:

        def kill_learner_after_2(m):
            if m["iteration"] == 2:
                os.kill(_pid_of(first.learner), signal.SIGKILL)

        start = time.monotonic()
        with pytest.raises(LearnerDiedError) as err:
            first.train(kill_learner_after_2)
        assert time.monotonic() - start < 60
    finally:
        first.close()
    message = str(err.value)
    assert "\n" not in message and message.startswith(
        f"learner died at iteration 3; newest checkpoint: {out / 'checkpoints' / 'checkpoint-000002.pt'}; "
        "resume with: metarl train "
    )
    assert message.endswith(f"--out {out} --address {ray.get_runtime_context().gcs_address} --resume")
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]

    resumed = Trainer(
        Config.from_dict({**TINY, **cfg}), out, address=ray.get_runtime_context().gcs_address, resume=True
    )
    try:
        assert resumed.iteration == 2
        history = resumed.train()
    finally:
        resumed.close()
    assert [m["iteration"] for m in history] == [3, 4]
    assert [m["run/resumes"] for m in history] == [1, 1]  # counted, and kept in the checkpoint
    assert {r["run/resumes"] for r in read_metrics(tmp_path / "straight" / "metrics.jsonl")} == {0}
    assert _final_state(out)["resumes"] == 1
    _assert_same_run(tmp_path / "straight", out)


@pytest.mark.slow
def test_cli_resume_matches_uninterrupted(clean, tmp_path):
    """The command line: stop after 2 of 4 iterations, `metarl train ... --resume` to 4, same result."""
    address = ray.get_runtime_context().gcs_address
    sets = [f"{k}={v}" for k, v in {**TINY, "iterations": 4, "checkpoint_every": 2, "seed": 5}.items()]
    sets = [s.replace(" ", "") for s in sets]

    def cli(out, *extra, iterations=4):
        args = [
            sys.executable,
            "-m",
            "metarl.cli",
            "train",
            "configs/navigation2d-maml.yaml",
            "--quiet",
            "--set",
            *sets,
            f"iterations={iterations}",
            "--out",
            str(out),
            "--address",
            address,
            *extra,
        ]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr

    cli(tmp_path / "straight")
    cli(tmp_path / "stopped", iterations=2)
    cli(tmp_path / "stopped", "--resume")
    _assert_same_run(tmp_path / "straight", tmp_path / "stopped")
