"""scripts/archive_run.py: the newest complete checkpoint, its config and metrics, nothing older."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "archive_run.py"
_spec = importlib.util.spec_from_file_location("archive_run", SCRIPT)  # a script outside the package
archive_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(archive_run)


def _fake_run(run: Path, iterations: list[int], complete: list[int]) -> None:
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text("algorithm: maml\n")
    (run / "metrics.jsonl").write_text("".join(f'{{"iteration": {i}}}\n' for i in iterations))
    for i in iterations:
        (run / "checkpoints" / f"checkpoint-{i:06d}.pt").write_bytes(bytes([i]) * 10)
        if i in complete:  # the .json (its hash) is written last: a .pt without it is still being written
            (run / "checkpoints" / f"checkpoint-{i:06d}.json").write_text(f'{{"iteration": {i}}}')


def test_the_newest_complete_checkpoint_replaces_older_archives(tmp_path):
    run, dest = tmp_path / "run", tmp_path / "dest"
    _fake_run(run, [5, 10], complete=[5, 10])
    assert archive_run.archive(run, dest) == "checkpoint-000010.pt"
    _fake_run(run, [5, 10, 15], complete=[5, 10])  # 15 is still being written
    assert archive_run.archive(run, dest) == "checkpoint-000010.pt"
    _fake_run(run, [5, 10, 15], complete=[5, 10, 15])
    assert archive_run.archive(run, dest) == "checkpoint-000015.pt"
    assert sorted(p.name for p in (dest / "checkpoints").iterdir()) == [
        "checkpoint-000015.json",
        "checkpoint-000015.pt",
    ]
    assert (dest / "checkpoints" / "checkpoint-000015.pt").read_bytes() == bytes([15]) * 10
    assert (dest / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    assert (dest / "config.yaml").exists() and not list(dest.rglob("*.tmp"))


def test_started_beside_the_run_it_waits_for_the_run_directory(tmp_path):
    run, dest = tmp_path / "run", tmp_path / "dest"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(run), str(dest), "--every", "1"], stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(2)
        assert proc.poll() is None, "it gave up before the run wrote its config.yaml"
        _fake_run(run, [5], complete=[5])
        deadline = time.monotonic() + 60
        while not (dest / "checkpoints" / "checkpoint-000005.json").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.5)
    finally:
        proc.kill()
        proc.wait()


def test_without_every_a_missing_run_is_one_line_and_status_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "none"), str(tmp_path / "dest")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "is not a run directory (no config.yaml)" in proc.stderr
    assert not (tmp_path / "dest").exists()
