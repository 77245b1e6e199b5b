"""Refusals a new user met that did not say what to fix (issue 33): each is one stderr line, exit 2.

Every case runs the installed ``metarl`` command in a process of its own (warnings that Python
or Gymnasium print, which an in-process run would not show, count as lines too) and checks the
exit status, that stderr is exactly one line, and that the line names the key or flag, what was
wrong and what is allowed. None of them starts Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_reliability_cases import TINY, _real_state  # tests/ is on sys.path

import metarl.runtime.checkpoint as ckpt
from metarl.config import Config

REPO = Path(__file__).resolve().parents[1]
NAV = str(REPO / "configs/navigation2d-maml.yaml")


def _metarl(*argv: str, cwd: Path = REPO) -> tuple[int, list[str]]:
    """The ``metarl`` console script (as a user runs it): exit status and stderr lines."""
    script = Path(sys.executable).with_name("metarl")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "metarl.cli"]
    proc = subprocess.run(
        [*command, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )
    return proc.returncode, proc.stderr.strip().splitlines()


def _one_line(rc: int, err: list[str], *words: str) -> str:
    assert rc == 2 and len(err) == 1, (rc, err)
    line = err[0]
    assert line.startswith("metarl: error: "), line
    for word in words:
        assert word in line, (word, line)
    return line


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run directory with one genuine checkpoint (written in-process, no Ray)."""
    cfg = Config.from_dict({**TINY, "iterations": 3})
    out = tmp_path_factory.mktemp("refusals") / "run"
    ckpt.save_checkpoint(out / "checkpoints", 1, _real_state(cfg))
    cfg.dump(out / "config.yaml")
    (out / "metrics.jsonl").write_text(json.dumps({"iteration": 1}) + "\n")
    return out


def test_a_recursive_alias_inside_env_kwargs_names_its_key_path(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("algorithm: maml\nenv_kwargs:\n  action_mode: scale\n  deep: &loop [1, *loop]\n")
    line = _one_line(
        *_metarl("train", str(config), "--out", str(tmp_path / "o")),
        str(config),
        "env_kwargs.deep:",
        "anchor &loop",
        "line 4",
        "not allowed",
        "write the value out",
    )
    assert not (tmp_path / "o").exists(), line


def test_an_env_keyword_the_env_lacks_is_one_line_naming_it_and_what_it_takes(tmp_path):
    """Gymnasium's own warning about ``render_mode`` used to come first: three lines."""
    _one_line(
        *_metarl("config", NAV, "--set", "env_kwargs={action_mode: clip, render_mode: human}"),
        "env_kwargs.render_mode:",
        "takes no keyword 'render_mode'",
        "it takes task, action_mode",
    )


@pytest.mark.parametrize("key", ["resources.worker_cpus", "resources.learner_cpus"])
def test_cpus_below_rays_granularity_name_the_key_and_the_allowed_range(tmp_path, key):
    """Ray 2.60 counts resources in units of 0.0001 and refused 0.00001 in its own words, at actor creation."""
    out = tmp_path / "o"
    _one_line(
        *_metarl("train", NAV, "--out", str(out), "--set", f"{key}=0.00001"),
        f"{key}: 1e-05 CPUs",
        "use 0",
        "at least 0.0001",
    )
    assert not out.exists()


def test_a_negative_evaluation_seed_names_the_flag(run):
    _one_line(*_metarl("evaluate", str(run), "--seed", "-1", "--local"), "--seed -1:", "integer >= 0")


@pytest.mark.parametrize("target", ["run directory", "checkpoint file"])
def test_a_truncated_checkpoint_says_its_size_does_not_match_its_json(run, tmp_path, target):
    """The ``.json`` is there: the message used to say it was missing."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    path = ckpt.list_checkpoints(copy / "checkpoints")[-1]
    size = path.stat().st_size
    os.truncate(path, size // 2)
    line = _one_line(
        *_metarl("evaluate", str(copy if target == "run directory" else path), "--local"),
        path.name,
        f"is {size // 2:,} bytes but {path.with_suffix('.json').name} beside it records {size:,}",
        "truncated",
        "use an older checkpoint",
    )
    assert "lacks" not in line and "no checkpoint-" not in line


def test_a_fresh_run_into_a_run_killed_before_its_first_checkpoint_says_how_to_go_on(tmp_path):
    out = tmp_path / "killed"
    out.mkdir()
    rows = "".join(json.dumps({"iteration": i}) + "\n" for i in (1, 2))
    (out / "metrics.jsonl").write_text(rows)
    _one_line(
        *_metarl("train", NAV, "--out", str(out)),
        f"--out {out}:",
        "stopped before its first checkpoint",
        "choose another --out",
        f"remove {out}",
    )
    assert (out / "metrics.jsonl").read_text() == rows  # nothing removed or rewritten
