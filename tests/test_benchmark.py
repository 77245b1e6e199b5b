"""`metarl benchmark` reports sane numbers (speed itself is measured in BENCHMARKS.md, not here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from metarl.benchmark import learner_benchmark
from metarl.config import Config

TINY = ["meta_batch_size=2", "episodes_per_task=2", "hidden_sizes=[8]"]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_benchmark_json_fields():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "metarl.cli",
            "benchmark",
            "--json",
            "--iterations",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--set",
            *TINY,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("iteration_seconds", "sample_env_steps_per_second", "learner_seconds", "worker_env_steps_per_second"):
        assert _positive(result[key]), (key, result[key])
    assert _positive(result["peak_rss_mb"]["driver"]) and _positive(result["peak_rss_mb"]["learner"])
    assert result["machine"]["cores"] >= 1 and result["machine"]["device"] == "cpu"
    # the learner's share can never exceed the whole iteration
    run = result["runs"][0]
    assert run["learner_seconds"] <= run["iteration_seconds"]
    assert len(run["iteration_seconds_all"]) == 2
    # object-store traffic: 2 tasks x 2 episodes x 100 steps of 2-d obs/actions are at least 3.2 kB per phase,
    # and the θ'ᵢ broadcast is one θ per task
    t = result["transfer"]
    assert t["rollout_bytes_per_phase"] >= 2 * 2 * 100 * 2 * 4
    assert t["adapted_params_bytes"] == 2 * t["theta_bytes"] > 0
    assert t["bytes_per_iteration"] == 2 * t["rollout_bytes_per_phase"] + t["theta_bytes"] + t["adapted_params_bytes"]


def test_learner_only_benchmark_on_synthetic_batch():
    cfg = Config.from_dict({"meta_batch_size": 2, "episodes_per_task": 2, "hidden_sizes": [8], "device": "cpu"})
    result = learner_benchmark(cfg, obs_dim=17, act_dim=6, horizon=10, repeats=1)
    assert result["rows_per_phase"] == 2 * 2 * 10 and result["device"] == "cpu"
    assert _positive(result["adapt_seconds"]) and _positive(result["meta_update_seconds"])
