#!/usr/bin/env python3
"""The MAML paper's own per-task locomotion results, read from the original code's result files.

cbfinn/maml_rl keeps the numbers behind the paper's HalfCheetah figures in
``icml/icml_cheetah{,direc}_results_{maml,pretrain,random,oracle}.pkl`` and the Ant's in
``icml_ant{,direc}_results_*.pkl``: ``task_avg_returns``, one row per inner step (0..3), one column per
test goal (40 goals, :data:`FAMILIES`: HalfCheetah ``np.random.seed(1)``, ``uniform(0, 2)``, backward
below 1; AntVel seed 1, ``uniform(0, 3)``; AntDir seed 2, ``uniform(0, 3)``, backward below 1.5).
This script turns them into the JSON kept in docs/data/paper/ (so no checkout is needed to compare)
and prints the table of docs/results.md §7. The pickles are NumPy arrays in Python 2 pickles: loaded with
``encoding="latin1"`` from a checkout you fetched yourself, never from an untrusted source.

    python scripts/paper_numbers.py /path/to/maml_rl --json docs/data/paper/maml-icml-halfcheetah.json
    python scripts/paper_numbers.py /path/to/maml_rl --group ant --json docs/data/paper/maml-icml-ant.json
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

# family -> the result files' stem and the test goals of its maml_examples/test_maml_*.py script:
# np.random.seed(SEED); np.random.uniform(0, HIGH, 40); a direction goal below SPLIT is backward.
FAMILIES = {
    "HalfCheetahDir": {"stem": "cheetahdirec", "seed": 1, "high": 2.0, "split": 1.0},
    "HalfCheetahVel": {"stem": "cheetah", "seed": 1, "high": 2.0},
    "AntDir": {"stem": "antdirec", "seed": 2, "high": 3.0, "split": 1.5},
    "AntVel": {"stem": "ant", "seed": 1, "high": 3.0},
}
GROUPS = {"halfcheetah": ("HalfCheetahDir", "HalfCheetahVel"), "ant": ("AntDir", "AntVel")}
METHODS = ("maml", "pretrain", "random", "oracle")


def test_goals(family: str = "HalfCheetahVel") -> list[float]:
    """The 40 test goals of the family's maml_examples/test_maml_*.py."""
    spec = FAMILIES[family]
    rng = np.random.RandomState(spec["seed"])
    return [float(g) for g in rng.uniform(0.0, spec["high"], size=(40,))]


def test_tasks(family: str) -> list[dict]:
    """The test goals as metarl tasks: a direction (−1 below the split, else +1) or a velocity."""
    split = FAMILIES[family].get("split")
    return [{"direction": -1 if g < split else 1} if split else {"velocity": g} for g in test_goals(family)]


def read(repo: Path, group: str = "halfcheetah") -> dict:
    out: dict = {"source": "cbfinn/maml_rl icml/*.pkl (task_avg_returns: steps x goals)"}
    if group == "halfcheetah":
        out["goals"] = test_goals()  # the layout of docs/data/paper/maml-icml-halfcheetah.json: one goal list
    for family in GROUPS[group]:
        out[family] = {} if group == "halfcheetah" else {"goals": test_goals(family)}
        for method in METHODS:
            with open(repo / "icml" / f"icml_{FAMILIES[family]['stem']}_results_{method}.pkl", "rb") as f:
                rows = np.asarray(pickle.load(f, encoding="latin1")["task_avg_returns"], dtype=float)
            out[family][method] = rows.tolist()
    return out


def _ci(values: np.ndarray) -> float:
    return 1.96 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


def table(data: dict) -> str:
    lines = [
        "| family | method | goals | step 0 | step 1 | step 2 | step 3 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for family in (f for f in FAMILIES if f in data):
        goals = np.asarray(data[family].get("goals", data.get("goals")))
        split = FAMILIES[family].get("split")
        for method in METHODS:
            rows = np.asarray(data[family][method])
            groups = [("all 40", np.ones(len(goals), bool))]
            if split:
                back, fwd = goals < split, goals >= split
                groups += [(f"backward ({back.sum()})", back), (f"forward ({fwd.sum()})", fwd)]
            for name, mask in groups:
                cells = [f"{r[mask].mean():.1f} ± {_ci(r[mask]):.1f}" for r in rows]
                lines.append(f"| {family} | {method} | {name} | " + " | ".join(cells + [""] * (4 - len(cells))) + " |")
            if split:
                balanced = [(r[goals < split].mean() + r[goals >= split].mean()) / 2 for r in rows]
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
        choices=("direction", "velocity", *FAMILIES),
        help="print a family's 40 test goals as `metarl evaluate` --task arguments, and nothing else "
        "(direction / velocity: HalfCheetah's)",
    )
    parser.add_argument("--group", choices=tuple(GROUPS), default="halfcheetah", help="which result files to read")
    args = parser.parse_args()
    if args.goals:
        family = {"direction": "HalfCheetahDir", "velocity": "HalfCheetahVel"}.get(args.goals, args.goals)
        print(" ".join(f"--task={json.dumps(t, separators=(',', ':'))}" for t in test_tasks(family)))
        return
    if (args.repo is None) == (args.from_json is None):
        parser.error("give a maml_rl checkout or --from-json FILE")
    data = json.loads(args.from_json.read_text()) if args.from_json else read(args.repo, args.group)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data) + "\n")
    print(table(data))


if __name__ == "__main__":
    main()
