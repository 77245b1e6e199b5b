"""scripts/rllib_finetune.py end to end on the smallest budget (opt-in: it builds five PPO algorithms)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "rllib_finetune.py"


@pytest.mark.slow
@pytest.mark.parametrize(
    "family, overrides, adapt_steps",
    [
        ("nav", {}, 3 * 100),  # the fake run's episodes_per_task x horizon
        ("cheetah", {"env": "metarl/HalfCheetahVel-v0", "episodes_per_task": 1, "horizon": 50}, 50),
    ],
)
def test_smoke_run_writes_one_row_per_start_and_reports(tmp_path, family, overrides, adapt_steps):
    from test_export import fake_run  # tests/ is on sys.path (pytest's rootdir-less import)

    run = fake_run(tmp_path / "run", **overrides)
    out = tmp_path / "study"
    env = {**os.environ, "RAY_ADDRESS": ""}
    common = ["--out", str(out)]
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "run",
            "--run",
            str(run),
            *common,
            "--tasks",
            "1",
            "--seeds",
            "0",
            "--iterations",
            "1",
            "--batch",
            "200",
            "--pretrain-iterations",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["start"] for r in rows) == ["adapted", "pretrained", "scratch", "theta"]
    adapted = next(r for r in rows if r["start"] == "adapted")
    assert adapted["env_steps"] == 200 + adapt_steps  # its adaptation's steps: episodes_per_task x horizon first
    if family == "cheetah":  # the MAML paper's first test goal (scripts/paper_numbers.py)
        assert adapted["task"] == {"velocity": pytest.approx(0.834044009405148)}
    report = subprocess.run(
        [sys.executable, str(SCRIPT), "report", *common],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert report.returncode == 0 and "| theta | 1 × 1 |" in report.stdout, report.stderr[-2000:]


def test_a_study_still_running_reports_only_its_complete_seeds(tmp_path):
    """A part-done seed (some starts on some goals) is left out of the table and figure, not averaged in."""
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"run": "r", "iteration": 1, "tasks": 2, "seeds": [0, 1]}))
    starts = ("theta", "adapted", "pretrained", "scratch")
    rows = [
        {"start": s, "seed": 0, "task_index": t, "iteration": 1, "env_steps": 100, "return": -10.0 - t}
        for s in starts
        for t in range(2)
    ]
    rows.append({"start": "theta", "seed": 1, "task_index": 0, "iteration": 1, "env_steps": 100, "return": 99.0})
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "report", "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "complete seeds [0] of [0, 1]" in proc.stdout
    assert "| theta | 2 × 1 | -10.50" in proc.stdout and "99" not in proc.stdout.split("\n", 2)[2]
