"""The chaos soak (``scripts/chaos_soak.py``) on a loopback ``ray.cluster_utils.Cluster``, opt-in (slow).

The script is what a user runs against a cluster; here it starts its own loopback cluster (head:
the learner; two 1-CPU rollout nodes), disturbs a run for ``METARL_CHAOS_MINUTES`` (default 3)
with SIGKILLs of rollout workers by PID, node removals and re-adds, and SIGTERM + ``--resume`` of
the driver (each at least once), then trains an undisturbed run of the same length. The final
checkpoint and every metrics row must agree, and every process the soak saw (drivers, every
node's raylet and workers) must be gone, checked here again by PID and start time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metarl.runtime.pids import start_time

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_chaos_soak_on_a_loopback_cluster_equals_the_undisturbed_run(tmp_path):
    minutes = os.environ.get("METARL_CHAOS_MINUTES", "3")
    out = tmp_path / "soak"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/chaos_soak.py"),
            "configs/navigation2d-maml.yaml",
            "--local-cluster",
            "--minutes",
            minutes,
            "--mean-gap",
            "10",
            "--seed",
            os.environ.get("METARL_CHAOS_SEED", "0"),
            "--out",
            str(out),
            "--set",
            "meta_batch_size=4",
            "episodes_per_task=4",
            "hidden_sizes=[16]",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60 * float(minutes) + 1200,
    )
    assert (out / "report.json").exists(), proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert proc.returncode == 0 and report["equal"], (report.get("problems"), proc.stderr[-3000:])
    assert report["worker_sigkill"] >= 1 and report["driver_sigterm"] >= 1, report
    assert report["node_removed"] >= 1 and report["node_added"] == report["node_removed"], report
    assert report["driver_unexpected_exit"] == 0 and report["resumes"] == report["driver_sigterm"], report
    assert report["iterations"] > 0 and report["left_behind"] == []
    left = [pid for pid, started in report["processes_seen"].items() if start_time(int(pid)) == started]
    assert not left, f"processes of the soak outlived it: {left}"
