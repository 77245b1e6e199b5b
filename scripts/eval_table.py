#!/usr/bin/env python3
"""Markdown rows from ``metarl evaluate --json`` reports: mean return after 0..K steps ± 95 % CI.

For a family with two tasks (HalfCheetahDir, AntDir: direction ±1) a sample of 40 tasks is rarely
20/20, and the two directions score very differently before adaptation, so the plain mean over
tasks mostly measures the draw. This script also prints each direction's mean and their average
(``balanced``), the number to compare across reports.

    python scripts/eval_table.py docs/data/locomotion/eval/*.json
    python scripts/eval_table.py --training docs/data/locomotion/halfcheetah-dir-maml-seed0/metrics.jsonl

``--training`` prints a run's training returns instead: pre → post adaptation, mean of every 10 iterations.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats


def mean_ci(values: np.ndarray) -> str:
    if len(values) < 2:
        return f"{values.mean():.1f}"
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return f"{values.mean():.1f} ± {half:.1f}"


def rows(path: Path) -> list[str]:
    report = json.loads(path.read_text())
    returns = np.array([t["returns_by_step"] for t in report["per_task"]])  # (tasks, K+1)
    label = (
        f"{path.stem} (it. {report['iteration']}, {report.get('init', 'run')}, {report['num_tasks']} tasks, "
        f"K={report['episodes']})"
    )
    out = [f"| {label} | all | " + " | ".join(mean_ci(returns[:, j]) for j in range(returns.shape[1])) + " |"]
    directions = [t["task"].get("direction") for t in report["per_task"]]
    if all(d is not None for d in directions):
        directions = np.array(directions)
        means = []
        for d in sorted(set(directions.tolist())):
            part = returns[directions == d]
            means.append(part.mean(axis=0))
            out.append(
                f"| | direction {d:+g} ({len(part)}) | "
                + " | ".join(mean_ci(part[:, j]) for j in range(returns.shape[1]))
                + " |"
            )
        out.append("| | balanced | " + " | ".join(f"{x:.1f}" for x in np.mean(means, axis=0)) + " |")
    return out


def training_rows(path: Path, every: int = 10) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = ["| iterations | pre-adaptation | post-adaptation |", "| --- | --- | --- |"]
    for start in range(0, len(rows), every):
        chunk = rows[start : start + every]
        pre, post = (np.mean([r[k] for r in chunk]) for k in ("return_pre", "return_post"))
        out.append(f"| {chunk[0]['iteration']}–{chunk[-1]['iteration']} | {pre:.1f} | {post:.1f} |")
    return out


def main(paths: list[str]) -> None:
    if paths and paths[0] == "--training":
        for p in paths[1:]:
            print("\n".join(training_rows(Path(p))))
        return
    steps = max(len(json.loads(Path(p).read_text())["returns_by_step"]) for p in paths)
    print("| report | tasks | " + " | ".join(f"step {j}" for j in range(steps)) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in range(steps)) + " |")
    for p in paths:
        print("\n".join(rows(Path(p))))


if __name__ == "__main__":
    main(sys.argv[1:])
