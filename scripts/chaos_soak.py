#!/usr/bin/env python3
"""Chaos soak: train for a while under random disturbances, then check that nothing was lost or counted twice.

    python scripts/chaos_soak.py configs/navigation2d-maml.yaml --local-cluster --minutes 30 --out runs/soak
    python scripts/chaos_soak.py configs/navigation2d-maml.yaml --address HEAD:6379 --minutes 30 --out /shared/soak \\
        --set resources.num_workers=8 resources.worker_cpus=1

The soak runs ``metarl train CONFIG --out OUT/soak --address ...`` (``checkpoint_every=1``, no end)
and, at random moments (exponential gaps, mean ``--mean-gap`` s, seeded by ``--seed``), does one of:

* **worker-sigkill**: SIGKILL a rollout worker of that run, by PID, on its own node (a 0-CPU Ray task
  pinned there checks the PID is a ``ray::RolloutWorker`` before signalling it);
* **node-cycle** (``--local-cluster`` only): ``Cluster.remove_node`` a node that holds a rollout
  worker, and add a 1-CPU node back a little later, as an autoscaler replaces a lost spot instance
  (on a real cluster, terminate an instance with your provider's tools while the soak runs);
* **driver-sigterm**: SIGTERM the driver (it finishes the iteration, checkpoints, exits 143), then
  continue with ``--resume``, as a job runner would.

A driver that exits otherwise is resumed too (and counted). After ``--minutes`` (and once each
kind has happened) the driver is stopped with SIGTERM at iteration N; then an undisturbed run of the same config with
``iterations=N`` (``OUT/reference``) is trained on the same cluster, and every metrics row and the
final θ and α of the two must agree to float tolerance. The report (``OUT/report.json``, printed)
has the counts, the comparison, and every process the soak saw; on ``--local-cluster`` each of
them is checked by PID (and start time) to be gone at the end. Exit status 0 when the runs agree
and nothing was left behind, 1 otherwise. The script never runs ``ray stop``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from metarl.runtime.checkpoint import load_checkpoint, resolve_checkpoint
from metarl.runtime.metrics import read_metrics
from metarl.runtime.pids import node_processes as node_tree
from metarl.runtime.pids import process_tree, start_time, still_running

KINDS = {"worker-sigkill": 2, "node-cycle": 1, "driver-sigterm": 1}  # relative weights
COMPARED = ("return_", "outer/", "alpha/", "episodes_", "env_steps")  # metrics that must agree
STOP_TIMEOUT_S = 300  # a SIGTERMed driver finishes its iteration within this


# -- the run's actors, through the GCS ----------------------------------------------------------------
def run_workers(driver_pid: int) -> list[dict[str, Any]]:
    """Alive ``RolloutWorker`` actors of the job whose driver is ``driver_pid``: ``[{pid, node}]``."""
    from ray._private import state  # the GCS's tables; Ray's state API needs the dashboard

    jobs = {j["JobID"] for j in state.jobs() if j.get("DriverPid") == driver_pid and not j.get("IsDead")}
    return [
        {"pid": a["Pid"], "node": a["Address"]["NodeID"]}
        for a in state.actors().values()
        if a["State"] == "ALIVE" and a["ActorClassName"] == "RolloutWorker" and a["JobID"] in jobs and a["Pid"]
    ]


def _signal_if_rollout_worker(pid: int, signum: int) -> bool:
    """Runs on the worker's node: signal ``pid`` only if it is a rollout worker's process."""
    try:
        if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::RolloutWorker"):
            return False
        os.kill(pid, signum)
        return True
    except OSError:
        return False


def kill_worker(worker: dict[str, Any]) -> bool:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0)(_signal_if_rollout_worker).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(worker["node"], soft=False)
    )
    try:
        return bool(ray.get(task.remote(worker["pid"], signal.SIGKILL), timeout=60))
    except Exception:  # the node went away meanwhile
        return False


# -- the soak ----------------------------------------------------------------------------------------
class Soak:
    """One soak: the driver process, the disturbances, the counts and the processes seen."""

    def __init__(self, args: argparse.Namespace, address: str, cluster=None, env: dict[str, str] | None = None):
        self.args, self.address, self.cluster, self.env = args, address, cluster, env or dict(os.environ)
        self.rng = random.Random(args.seed)
        self.out = Path(args.out)
        self.counts = {
            "worker_sigkill": 0,
            "node_removed": 0,
            "node_added": 0,
            "driver_sigterm": 0,
            "driver_unexpected_exit": 0,
            "launches": 0,
        }
        self.events: list[dict[str, Any]] = []
        self.seen: dict[int, str] = {}  # every process of the soak (drivers, nodes) with its start time
        self.removed_at: float | None = None  # a node is out; one is added back after a while
        self.driver: subprocess.Popen | None = None
        self.launched_rows = 0
        self.plan = [k for k in KINDS if k != "node-cycle" or cluster is not None]  # every kind at least once
        self.rng.shuffle(self.plan)

    def train_command(self, out: Path, iterations: int, resume: bool) -> list[str]:
        script = Path(sys.executable).with_name("metarl")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "metarl.cli"]
        sets = [*self.args.set, f"iterations={iterations}", "checkpoint_every=1"]
        return [
            *command,
            "train",
            self.args.config,
            "--quiet",
            "--out",
            str(out),
            "--address",
            self.address,
            "--set",
            *sets,
            *(["--resume"] if resume else []),
        ]

    def rows(self) -> int:
        path = self.out / "soak" / "metrics.jsonl"
        return len(read_metrics(path)) if path.exists() else 0

    def note(self, kind: str, **detail: Any) -> None:
        event = {"t": round(time.monotonic() - self.started, 1), "iteration": self.rows(), "event": kind, **detail}
        self.events.append(event)
        print(f"chaos_soak: {json.dumps(event)}", file=sys.stderr, flush=True)

    def launch(self) -> None:
        resume = (self.out / "soak").exists()
        log = open(self.out / "soak-driver.log", "ab")
        self.driver = subprocess.Popen(
            self.train_command(self.out / "soak", 10**6, resume), env=self.env, stdout=subprocess.DEVNULL, stderr=log
        )
        log.close()
        self.seen[self.driver.pid] = start_time(self.driver.pid) or ""
        self.counts["launches"] += 1
        self.launched_rows = self.rows()
        self.note("driver-start", pid=self.driver.pid, resume=resume)

    def ensure_driver(self) -> None:
        """A driver that ended by itself (not by our SIGTERM) is counted and resumed."""
        if self.driver is not None and self.driver.poll() is not None:
            self.counts["driver_unexpected_exit"] += 1
            self.note("driver-exited", rc=self.driver.returncode)
            self.launch()

    def progressed(self) -> bool:
        """The current driver has trained at least one iteration since it started (its actors are up)."""
        return self.rows() > self.launched_rows

    def stop_driver(self) -> int:
        self.driver.send_signal(signal.SIGTERM)
        try:
            return self.driver.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.driver.kill()
            return self.driver.wait()

    def disturb(self) -> None:
        """One disturbance: each kind once first (in random order), then by :data:`KINDS`' weights."""
        kinds = [k for k in KINDS if k != "node-cycle" or (self.cluster is not None and self.removed_at is None)]
        first = [k for k in self.plan if k in kinds]
        kind = first[0] if first else self.rng.choices(kinds, weights=[KINDS[k] for k in kinds])[0]
        done = False
        if kind == "worker-sigkill":
            workers = run_workers(self.driver.pid)
            victim = self.rng.choice(workers) if workers else None
            if victim is not None and kill_worker(victim):
                self.counts["worker_sigkill"] += 1
                self.note(kind, pid=victim["pid"], node=victim["node"])
                done = True
        elif kind == "node-cycle":
            nodes = {w["node"] for w in run_workers(self.driver.pid)}
            candidates = [n for n in self.cluster.worker_nodes if n.node_id in nodes]
            if candidates:
                node = self.rng.choice(candidates)
                self.seen.update(node_tree(node))
                self.cluster.remove_node(node)
                self.counts["node_removed"] += 1
                self.removed_at = time.monotonic()
                self.note("node-removed", node=node.node_id)
                done = True
        else:
            rc = self.stop_driver()
            self.counts["driver_sigterm"] += 1
            self.note(kind, rc=rc)
            if rc != 143:
                self.counts["driver_unexpected_exit"] += 1
            self.launch()
            done = True
        if done and kind in self.plan:
            self.plan.remove(kind)

    def add_back(self, force: bool = False) -> None:
        """Add a 1-CPU node back some time after a removal (an autoscaler's replacement)."""
        if self.removed_at is not None and (force or time.monotonic() - self.removed_at > self.args.mean_gap):
            node = self.cluster.add_node(num_cpus=1)
            self.cluster.wait_for_nodes()
            self.seen.update(node_tree(node))
            self.counts["node_added"] += 1
            self.removed_at = None
            self.note("node-added", node=node.node_id)

    def run(self) -> int:
        """Soak for ``--minutes`` (longer until each kind of disturbance has happened); returns the last
        iteration (checkpointed)."""
        self.started = time.monotonic()
        deadline = self.started + 60 * self.args.minutes
        self.launch()
        next_at = time.monotonic() + self.rng.expovariate(1 / self.args.mean_gap)
        while time.monotonic() < deadline or self.plan:
            time.sleep(0.2)
            self.ensure_driver()
            if self.cluster is not None:
                self.add_back()
            if time.monotonic() >= next_at and self.progressed():
                self.disturb()
                next_at = time.monotonic() + self.rng.expovariate(1 / self.args.mean_gap)
        if self.cluster is not None:
            self.add_back(force=True)
        while not self.progressed():  # stop it at an iteration boundary it has reached, with its actors up
            self.ensure_driver()
            time.sleep(0.2)
        rc = self.stop_driver()
        self.note("final-sigterm", rc=rc)
        if rc != 143:
            self.counts["driver_unexpected_exit"] += 1
        return self.rows()

    def reference(self, iterations: int) -> subprocess.CompletedProcess:
        out = self.out / "reference"
        if out.exists():
            shutil.rmtree(out)  # our own earlier reference run, under our own --out
        proc = subprocess.Popen(
            self.train_command(out, iterations, False),
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.seen[proc.pid] = start_time(proc.pid) or ""
        err = proc.communicate()[1]
        return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


def compare(soak: Path, reference: Path, iterations: int) -> dict[str, Any]:
    """Every metrics row and the final θ, α of ``soak`` against ``reference``, to float tolerance."""
    rows_s, rows_r = read_metrics(soak / "metrics.jsonl"), read_metrics(reference / "metrics.jsonl")
    problems: list[str] = []
    if [r["iteration"] for r in rows_s] != list(range(1, iterations + 1)):
        problems.append(f"soak iterations are not 1..{iterations} once each")
    if [r["iteration"] for r in rows_r] != list(range(1, iterations + 1)):
        problems.append(f"reference iterations are not 1..{iterations}")
    worst = 0.0
    for a, b in zip(rows_s, rows_r):
        for key in (k for k in b if k.startswith(COMPARED)):
            x, y = a.get(key), b[key]
            if not isinstance(y, (int, float)) or isinstance(y, bool):
                if x != y:
                    problems.append(f"iteration {b['iteration']}: {key} {x!r} != {y!r}")
                continue
            if x is None or not np.isclose(x, y, rtol=1e-5, atol=1e-7):
                problems.append(f"iteration {b['iteration']}: {key} {x!r} != {y!r}")
            else:
                worst = max(worst, abs(x - y))
    ckpt_s, ckpt_r = resolve_checkpoint(soak), resolve_checkpoint(reference)
    state_s, state_r = load_checkpoint(ckpt_s), load_checkpoint(ckpt_r)
    if state_s["iteration"] != state_r["iteration"] or state_s["iteration"] != iterations:
        problems.append(f"final checkpoints at iterations {state_s['iteration']} and {state_r['iteration']}")
    for group in ("theta", "alpha"):
        for name, tensor in state_r[group].items():
            if not torch.allclose(state_s[group][name], tensor, rtol=1e-5, atol=1e-7):
                problems.append(f"final {group}[{name}] differs")
            else:
                worst = max(worst, float((state_s[group][name] - tensor).abs().max()))
    return {
        "equal": not problems,
        "problems": problems[:20],
        "max_abs_diff": worst,
        "checkpoints": [str(ckpt_s), str(ckpt_r)],
    }


def local_cluster(learner_cpus: float, workers: int, attempts: int = 3):
    """A loopback ``ray.cluster_utils.Cluster``: a head with the learner's CPUs only, and 1-CPU rollout nodes.

    Ray gives a starting raylet 30 s to register (fixed in Ray 2.60), which an overloaded machine can
    miss; the processes of a failed try (our own children, found by PID) are stopped and it is tried again.
    """
    from ray.cluster_utils import Cluster

    for attempt in range(1, attempts + 1):
        before = set(process_tree([os.getpid()]))
        try:
            cluster = Cluster(
                initialize_head=True, head_node_args={"num_cpus": learner_cpus, "include_dashboard": False}
            )
            for _ in range(workers):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            return cluster
        except Exception as exc:
            if attempt == attempts:
                raise
            started = {pid: t for pid, t in process_tree([os.getpid()]).items() if pid not in before}
            for pid in started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            still_running(started)
            print(f"chaos_soak: starting the loopback cluster failed ({exc}); trying again", file=sys.stderr)
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config (the run's; iterations and checkpoint_every are set by the soak)")
    parser.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, as metarl's (put them after CONFIG)",
    )
    parser.add_argument("--out", required=True, help="soak directory: soak/, reference/, report.json, driver log")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--address", help="a running Ray cluster's GCS address (HOST:PORT)")
    where.add_argument(
        "--local-cluster",
        action="store_true",
        help="start a loopback ray.cluster_utils.Cluster (head: the learner; 1-CPU rollout nodes)",
    )
    parser.add_argument("--workers", type=int, default=2, help="--local-cluster: rollout nodes and num_workers (2)")
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to disturb the run (default 30)")
    parser.add_argument("--mean-gap", type=float, default=20.0, help="mean seconds between disturbances (20)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the disturbances' moments and kinds (0)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.mean_gap <= 0 or args.workers < 2:
        parser.error("--minutes and --mean-gap must be > 0 and --workers >= 2")
    out = Path(args.out)
    if (out / "soak").exists():
        parser.error(f"--out {out}: holds an earlier soak (soak/); choose another --out")
    out.mkdir(parents=True, exist_ok=True)

    cluster, tmp, env, soak = None, None, dict(os.environ), None
    try:
        if args.local_cluster:
            tmp = tempfile.mkdtemp(prefix="soak", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
            os.environ["RAY_TMPDIR"] = env["RAY_TMPDIR"] = tmp
            args.set = [
                f"resources.num_workers={args.workers}",
                "resources.worker_cpus=1",
                "resources.learner_cpus=1",
                "resources.learner_threads=1",
                *args.set,
            ]
            cluster = local_cluster(1.0, args.workers)
            address = cluster.address
        else:
            address = args.address
        ray.init(address=address, include_dashboard=False, logging_level="ERROR")
        soak = Soak(args, address, cluster, env)
        if cluster is not None:
            for node in [cluster.head_node, *cluster.worker_nodes]:
                soak.seen.update(node_tree(node))
        started = time.monotonic()
        iterations = soak.run()
        soak_minutes = (time.monotonic() - started) / 60
        last = read_metrics(out / "soak" / "metrics.jsonl")[-1]
        report: dict[str, Any] = {
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "minutes": round(soak_minutes, 1),
            "iterations": iterations,
            **soak.counts,
            "worker_restarts": last.get("workers/restarts"),
            "resumes": last.get("run/resumes"),
        }
        ref = soak.reference(iterations)
        if ref.returncode != 0:
            report.update(equal=False, problems=[f"reference run failed ({ref.returncode}): {ref.stderr[-500:]}"])
        else:
            report.update(compare(out / "soak", out / "reference", iterations))
        report["events"] = soak.events
    finally:
        if soak is not None and soak.driver is not None and soak.driver.poll() is None:
            soak.driver.kill()  # only when the soak itself failed
            soak.driver.wait()
        ray.shutdown()
        if cluster is not None:
            for node in [cluster.head_node, *cluster.worker_nodes]:
                if soak is not None:
                    soak.seen.update(node_tree(node))
            cluster.shutdown()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    report["processes_seen"] = {str(pid): started for pid, started in soak.seen.items()}
    report["left_behind"] = still_running(soak.seen, 20.0)  # --address: the drivers (other nodes' processes are theirs)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "events"}))
    return 0 if report["equal"] and not report["left_behind"] else 1


if __name__ == "__main__":
    sys.exit(main())
