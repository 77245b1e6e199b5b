"""Does a subsampled Fisher (`fisher_subsample`) cost learning on the paper's 2D-navigation protocol?

    python scripts/fisher_subsample_study.py --seeds 0,1,2,3,4 --fractions 0.25,0.1 --out runs/fisher
    python scripts/fisher_subsample_study.py --algos maml --seeds 0,1,2,3,4 --fractions 0.25 --out runs/fisher

TRPO's Fisher-vector products are ≈ 80 % of an iteration on 2 cores (BENCHMARKS.md). Computing the
curvature on a share of the meta-batch's tasks makes them cheaper; the gradient and the line search
(loss and KL) still use every task, so the trust region is enforced exactly. This script trains
`configs/navigation2d-{algo}-clip.yaml` with `--set fisher_subsample=F` for each seed (complete runs are
skipped), evaluates every run like `scripts/reproduce_navigation.py` does (the same 40 held-out goals,
K = 20 trajectories, one inner step, action-noise seed 1000), and prints a markdown table next to the
exact-Fisher runs of that reproduction (`--reference runs/reproduce`, evaluated with K = 20 there).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import reproduce_navigation as repro  # noqa: E402  (held-out goals, run bookkeeping, evaluation seed)

K = 20


def run_path(out: Path, algo: str, fraction: float, seed: int) -> Path:
    return out / f"{algo}-fs{fraction:g}-seed{seed}"


def train(run: Path, algo: str, fraction: float, seed: int) -> None:
    if repro.run_complete(run, algo):
        return
    cmd = [*repro.metarl_cmd(), "train", repro.CONFIGS[algo], "--set", f"seed={seed}",
           f"fisher_subsample={fraction:g}", "--out", str(run), "--quiet"]
    if (run / "checkpoints").exists():
        cmd.append("--resume")
    repro.log(" ".join(cmd))
    subprocess.run(cmd, check=True, cwd=ROOT, env=repro.clean_env())


def one_step_return(run: Path, goals: list) -> float:
    """Goal-averaged return after one inner step (saved next to the run, reused while current)."""
    return repro.evaluate_cached(run, run / f"eval-K{K}.json", goals, K, steps=1)["returns_by_step"][1]


def summary(run: Path) -> dict:
    rows = repro.read_rows(run)
    return {
        "post": statistics.fmean(r["return_post"] for r in rows[-10:]),
        "s_it": statistics.median(r["seconds"] for r in rows),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--fractions", default="0.25,0.1")
    p.add_argument("--algos", default="metasgd", help="comma-separated: metasgd, maml")
    p.add_argument("--out", default="runs/fisher")
    p.add_argument("--reference", default="runs/reproduce", help="exact-Fisher runs RUNS/{algo}-seedN with eval/ (K=20)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    out, ref = ROOT / args.out, ROOT / args.reference
    goals = repro.heldout_goals(ROOT / "docs" / "figures")["goals"]
    algos = [a for a in args.algos.split(",") if a]
    for algo in algos:
        for seed in seeds:
            for f in fractions:
                train(run_path(out, algo, f, seed), algo, f, seed)

    print("| algorithm | Fisher | seed | training return_post (mean of last 10 its) | held-out return after 1 step (K = 20) | s / iteration (median) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for algo in algos:
        for seed in seeds:
            ref_eval = repro.eval_path(ref, algo, seed, K)
            if ref_eval.exists():
                s = summary(repro.run_dir(ref, algo, seed))
                held = json.loads(ref_eval.read_text())["returns_by_step"][1]
                print(f"| {algo} | exact | {seed} | {s['post']:.2f} | {held:.2f} | {s['s_it']:.2f} |")
            for f in fractions:
                run = run_path(out, algo, f, seed)
                s = summary(run)
                print(f"| {algo} | {f:g} of the tasks | {seed} | {s['post']:.2f} | {one_step_return(run, goals):.2f} | {s['s_it']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
