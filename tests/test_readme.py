"""The README's Python API block and its `metarl config` lines run as written (the API block with a smaller
meta-batch), on the 2-core machine the README describes."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()

SHRINK = {
    "meta_batch_size=20, episodes_per_task=20": "meta_batch_size=2, episodes_per_task=2",
    "num_tasks=40": "num_tasks=2",
}
CHECKS = """
import json
from pathlib import Path
assert set(result) >= {"iteration", "return_pre", "return_post"} and result["iteration"] == 2
assert len(report["returns_by_step"]) == 4 and report["num_tasks"] == 2
assert algo.run_dir != Path("runs/nav-api") and algo.run_dir.parent == Path("runs")
rows = [json.loads(line) for line in (algo.run_dir / "metrics.jsonl").read_text().splitlines()]
assert [r["iteration"] for r in rows] == [2], rows  # the new directory holds only the new iteration
assert [json.loads(line)["iteration"] for line in Path("runs/nav-api/metrics.jsonl").read_text().splitlines()] == [1]
print("README-OK")
"""


def _block(section: str, language: str) -> str:
    body = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", body, re.S).group(1)


def test_python_api_block_runs_on_two_cores(tmp_path):
    code = _block("Python API", "python")
    for full, small in SHRINK.items():
        assert full in code, f"README's API block changed: update SHRINK ({full!r})"
        code = code.replace(full, small)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-c", code + CHECKS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0 and "README-OK" in proc.stdout, proc.stderr[-3000:]


def test_config_lines_of_the_train_block():
    lines = [line.split("#")[0].strip() for line in _block("Train", "bash").splitlines()]
    commands = [line for line in lines if line.startswith("metarl config")]
    assert len(commands) == 2
    for command in commands:
        proc = subprocess.run(
            [sys.executable, "-m", "metarl.cli", *shlex.split(command)[1:]],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert isinstance(yaml.safe_load(proc.stdout), dict)
    resolved = yaml.safe_load(
        subprocess.run(
            [sys.executable, "-m", "metarl.cli", *shlex.split(commands[0])[1:]],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )
    assert resolved["env_kwargs"]["action_mode"] == "scale"
