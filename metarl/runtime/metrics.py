"""Per-iteration metrics: one JSON object per line in ``metrics.jsonl``, the same rows in
``metrics.csv`` and as TensorBoard scalars in ``tensorboard/`` (all in the run directory).

``metrics.jsonl`` is the record; the CSV and the event files are views of it. The CSV has one
column per key seen so far (a row without a key leaves its cell empty); when a new key appears,
the CSV is rewritten from ``metrics.jsonl`` with the wider header. TensorBoard gets every
numeric metric at ``global_step = iteration`` through tensorboardX's ``SummaryWriter``
(strings and non-finite values are skipped). On resume, :meth:`MetricsWriter.truncate_after`
cuts the JSONL and the CSV back to the checkpoint, and the next event file starts with
``purge_step`` so TensorBoard hides the abandoned iterations.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None marks a non-finite metric
    return value


class Laps(dict):
    """Seconds per phase of one iteration, in the metrics row's order: ``lap(key)`` adds the time
    since the previous lap (or the start) to ``key``; :meth:`total` is the time since the start."""

    def __init__(self, *keys: str):
        super().__init__(dict.fromkeys(keys, 0.0))
        self.start = self._last = time.perf_counter()

    def lap(self, key: str) -> None:
        now = time.perf_counter()
        self[key] += now - self._last
        self._last = now

    def total(self) -> float:
        return time.perf_counter() - self.start


class MetricsWriter:
    def __init__(self, path: str | Path, csv_path: str | Path | None = None, tensorboard_dir: str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.csv_path = Path(csv_path) if csv_path else self.path.with_suffix(".csv")
        self.tensorboard_dir = Path(tensorboard_dir) if tensorboard_dir else self.path.parent / TENSORBOARD_DIR
        self._tb = None  # tensorboardX SummaryWriter, opened on the first write
        self._purge_step: int | None = None  # set by truncate_after: the first step the next writer replaces
        self._columns: list[str] | None = None  # the CSV's header, read lazily

    def write(self, metrics: dict[str, Any]) -> None:
        row = {k: _clean(v) for k, v in metrics.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._write_csv(row)
        self._write_tensorboard(row)

    def truncate_after(self, iteration: int) -> None:
        """Drop rows past ``iteration`` (used on resume, so no iteration is logged twice)."""
        if self.path.exists():
            kept = [json.dumps(r) for r in read_metrics(self.path) if r.get("iteration", 0) <= iteration]
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(row + "\n" for row in kept))
            tmp.replace(self.path)  # a kill mid-rewrite leaves the old file, not half of it
        if self.path.exists() or self.csv_path.exists():
            self._rewrite_csv()
        self.close()  # the next write opens a new event file that purges steps > iteration
        self._purge_step = iteration + 1

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    # -- CSV ---------------------------------------------------------------------------------
    def _write_csv(self, row: dict[str, Any]) -> None:
        if self._columns is None:
            self._columns = _csv_header(self.csv_path)
        if self._columns is None or not set(row) <= set(self._columns):
            self._rewrite_csv()  # a new key: widen the header, from the JSONL (which holds this row)
            return
        with open(self.csv_path, "a", newline="") as f:
            csv.DictWriter(f, self._columns).writerow(_csv_row(row))

    def _rewrite_csv(self) -> None:
        rows = read_metrics(self.path) if self.path.exists() else []
        columns: dict[str, None] = {}
        for r in rows:
            columns.update(dict.fromkeys(r))
        self._columns = list(columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self._columns)
        writer.writeheader()
        writer.writerows(_csv_row(r) for r in rows)
        tmp = self.csv_path.with_name(f".{self.csv_path.name}.tmp")
        tmp.write_text(buffer.getvalue())
        tmp.replace(self.csv_path)

    # -- TensorBoard ---------------------------------------------------------------------------
    def _write_tensorboard(self, row: dict[str, Any]) -> None:
        step = row.get("iteration")
        if not isinstance(step, int):
            return
        if self._tb is None:
            # lazy: tensorboardX (and protobuf) load only once an event file is written
            from tensorboardX import SummaryWriter

            # Names are "events.out.tfevents.<seconds>.<host>"; a suffix in nanoseconds keeps two files of
            # the same second apart (tensorboardX would overwrite) and in order (TensorBoard reads by name).
            self._tb = SummaryWriter(
                str(self.tensorboard_dir), purge_step=self._purge_step, filename_suffix=f".{time.time_ns()}"
            )
            self._purge_step = None
        for key, value in row.items():
            if key != "iteration" and isinstance(value, (int, float)):  # bool is an int; str/None skipped
                self._tb.add_scalar(key, float(value), global_step=step)
        self._tb.flush()


def _csv_header(path: Path) -> list[str] | None:
    if not path.exists():
        return None
    with open(path, newline="") as f:
        return next(csv.reader(f), None)


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: "" if v is None else v for k, v in row.items()}


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl``; a torn last line (a process killed mid-write) is dropped."""
    lines = [text for text in Path(path).read_text().splitlines() if text.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not valid JSON (corrupt metrics file)") from None
    return rows
