"""TensorBoard event files and metrics.csv: the same rows as metrics.jsonl, consistent across resume."""

from __future__ import annotations

import csv
import struct
from collections import defaultdict
from pathlib import Path

import pytest

from metarl.runtime.metrics import MetricsWriter, read_metrics


def read_events(directory: Path) -> list:
    """Every Event in the TFRecord event files under ``directory``, in file order (tensorboardX's protos)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(Path(directory).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i : i + 8])
            i += 12  # length + its masked CRC
            events.append(Event.FromString(data[i : i + length]))
            i += length + 4  # payload + its masked CRC
    return events


def read_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` as TensorBoard shows it: a SessionLog START at step s
    (tensorboardX's ``purge_step``) hides the earlier events at steps >= s."""
    try:  # the real thing, when tensorboard is installed
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        EventAccumulator = None
    if EventAccumulator is not None:
        acc = EventAccumulator(str(directory))
        acc.Reload()
        return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    from tensorboardX.proto.event_pb2 import SessionLog

    scalars: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for event in read_events(directory):
        if event.HasField("session_log") and event.session_log.status == SessionLog.START:
            for tag in scalars:
                scalars[tag] = [(s, v) for s, v in scalars[tag] if s < event.step]
        for value in event.summary.value:
            scalars[value.tag].append((event.step, value.simple_value))
    return dict(scalars)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- MetricsWriter alone (no Ray) -------------------------------------------------------------------
def test_csv_and_tensorboard_mirror_jsonl_and_skip_strings(tmp_path):
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    writer.write({"iteration": 1, "return_pre": -10.0, "outer/kl": 0.01, "outer/accepted": True})
    writer.write({"iteration": 2, "return_pre": -8.0, "outer/kl": float("nan"), "outer/skip_reason": "kl too large"})
    writer.write({"iteration": 3, "return_pre": -6.0, "outer/kl": 0.02})
    writer.close()

    rows = read_csv(tmp_path / "metrics.csv")
    assert list(rows[0]) == ["iteration", "return_pre", "outer/kl", "outer/accepted", "outer/skip_reason"]
    assert [r["iteration"] for r in rows] == ["1", "2", "3"]
    assert [r["outer/skip_reason"] for r in rows] == ["", "kl too large", ""]
    assert rows[1]["outer/kl"] == ""  # non-finite: null in JSONL, empty in CSV, absent from TensorBoard

    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars["return_pre"] == [(1, -10.0), (2, -8.0), (3, -6.0)]
    assert scalars["outer/kl"] == [(1, pytest.approx(0.01)), (3, pytest.approx(0.02))]
    assert scalars["outer/accepted"] == [(1, 1.0)]
    assert "outer/skip_reason" not in scalars and "iteration" not in scalars


def test_truncate_after_keeps_jsonl_csv_and_tensorboard_consistent(tmp_path):
    """Resume: rows past the checkpoint go from JSONL and CSV; TensorBoard purges them (purge_step)."""
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    for it in (1, 2, 3):
        writer.write({"iteration": it, "return_post": float(it)})
    writer.close()

    resumed = MetricsWriter(tmp_path / "metrics.jsonl")  # a new process resuming from checkpoint 1
    resumed.truncate_after(1)
    assert [r["iteration"] for r in read_csv(tmp_path / "metrics.csv")] == ["1"]
    for it in (2, 3):
        resumed.write({"iteration": it, "return_post": 10.0 * it, "alpha/mean": 0.1})
    resumed.close()

    jsonl = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["iteration"], r["return_post"]) for r in jsonl] == [(1, 1.0), (2, 20.0), (3, 30.0)]
    rows = read_csv(tmp_path / "metrics.csv")
    assert [(r["iteration"], r["return_post"], r["alpha/mean"]) for r in rows] == [
        ("1", "1.0", ""),
        ("2", "20.0", "0.1"),
        ("3", "30.0", "0.1"),
    ]
    assert read_scalars(tmp_path / "tensorboard")["return_post"] == [(1, 1.0), (2, 20.0), (3, 30.0)]


# -- a real run ------------------------------------------------------------------------------------------
# The event files of a real training run (Ray actors, the trainer's MetricsWriter) are read back in
# tests/test_api.py::test_train_save_restore_and_continue: the same Trainer, one Ray start fewer.
