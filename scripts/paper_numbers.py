#!/usr/bin/env python3
"""The MAML paper's own per-task locomotion results, read from the original code's result files.

cbfinn/maml_rl keeps the numbers behind the paper's HalfCheetah figures in
``icml/icml_cheetah{,direc}_results_{maml,pretrain,random,oracle}.pkl``: ``task_avg_returns``, one
row per inner step (0..3), one column per test goal (40 goals, ``np.random.seed(1)``,
``np.random.uniform(0, 2, 40)``; a direction goal below 1 is backward). This script turns them into
the JSON kept in docs/data/paper/ (so no checkout is needed to compare) and prints the table of
docs/results.md §7. The pickles are NumPy arrays in Python 2 pickles: loaded with
``encoding="latin1"`` from a checkout you fetched yourself, never from an untrusted source.

    python scripts/paper_numbers.py /path/to/maml_rl --json docs/data/paper/maml-icml-halfcheetah.json
    python scripts/paper_numbers.py --from-json docs/data/paper/maml-icml-halfcheetah.json
    metarl evaluate RUN $(python scripts/paper_numbers.py --goals direction) --episodes 20 --alpha-scales 1,0.5 ...
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
from pathlib import Path

import numpy as np

FAMILIES = {"cheetahdirec": "HalfCheetahDir", "cheetah": "HalfCheetahVel"}
METHODS = ("maml", "pretrain", "random", "oracle")


def test_goals() -> list[float]:
    """The 40 test goals of maml_examples/test_maml_cheetah{,_direc}.py."""
    rng = np.random.RandomState(1)
    return [float(g) for g in rng.uniform(0.0, 2.0, size=(40,))]


def read(repo: Path) -> dict:
    out: dict = {"source": "cbfinn/maml_rl icml/*.pkl (task_avg_returns: steps x goals)", "goals": test_goals()}
    for stem, family in FAMILIES.items():
        out[family] = {}
        for method in METHODS:
            with open(repo / "icml" / f"icml_{stem}_results_{method}.pkl", "rb") as f:
                rows = np.asarray(pickle.load(f, encoding="latin1")["task_avg_returns"], dtype=float)
            out[family][method] = rows.tolist()
    return out


def _ci(values: np.ndarray) -> float:
    return 1.96 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


def table(data: dict) -> str:
    goals = np.asarray(data["goals"])
    lines = [
        "| family | method | goals | step 0 | step 1 | step 2 | step 3 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for family in FAMILIES.values():
        for method in METHODS:
            rows = np.asarray(data[family][method])
            groups = [("all 40", np.ones(len(goals), bool))]
            if family == "HalfCheetahDir":
                groups += [("backward (22)", goals < 1.0), ("forward (18)", goals >= 1.0)]
            for name, mask in groups:
                cells = [f"{r[mask].mean():.1f} ± {_ci(r[mask]):.1f}" for r in rows]
                lines.append(f"| {family} | {method} | {name} | " + " | ".join(cells + [""] * (4 - len(cells))) + " |")
            if family == "HalfCheetahDir":
                balanced = [(r[goals < 1].mean() + r[goals >= 1].mean()) / 2 for r in rows]
                lines.append(
                    "| | | balanced | " + " | ".join([f"{b:.1f}" for b in balanced] + [""] * (4 - len(rows))) + " |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo", nargs="?", type=Path, help="a checkout of cbfinn/maml_rl")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--from-json", type=Path, help="read the numbers from this JSON instead of a checkout")
    parser.add_argument(
        "--goals",
        choices=("direction", "velocity"),
        help="print the paper's 40 test goals as `metarl evaluate` --task arguments, and nothing else",
    )
    args = parser.parse_args()
    if args.goals:
        goals = test_goals()
        tasks = [{"direction": -1 if g < 1.0 else 1} if args.goals == "direction" else {"velocity": g} for g in goals]
        print(" ".join(f"--task={json.dumps(t, separators=(',', ':'))}" for t in tasks))
        return
    if (args.repo is None) == (args.from_json is None):
        parser.error("give a maml_rl checkout or --from-json FILE")
    data = json.loads(args.from_json.read_text()) if args.from_json else read(args.repo)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data) + "\n")
    print(table(data))


if __name__ == "__main__":
    main()
