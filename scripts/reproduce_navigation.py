#!/usr/bin/env python3
"""Reproduce the papers' 2D-navigation comparison of Meta-SGD and MAML, with error bars.

One command, three stages (each can be redone alone)::

    python scripts/reproduce_navigation.py --seeds 0,1,2          # train + evaluate + report
    python scripts/reproduce_navigation.py --train-only --seeds 1,2
    python scripts/reproduce_navigation.py --evaluate-only        # redo evaluation + report
    python scripts/reproduce_navigation.py --report-only          # redo docs/results-clip.md + figures

1. **train** — ``metarl train configs/navigation2d-{metasgd,maml}-clip.yaml --set seed=N --out
   RUNS/{algo}-seedN --quiet`` as subprocesses, one after the other (seed-major, Meta-SGD first).
   A run whose ``metrics.jsonl`` already has every iteration and whose final checkpoint exists
   is skipped; a partial run is continued with ``--resume``.
2. **evaluate** — every complete run on the same 40 held-out goals (drawn once from
   ``GOAL_SEED``, distinct from every training seed, saved to docs/figures/heldout_goals.json)
   with K = 10, 20, 40 trajectories per task and 0..3 inner steps (the checkpoint's own α),
   action noise seeded by ``EVAL_SEED``: exactly ``metarl evaluate RUN --goal ... --steps 3
   --episodes K --seed EVAL_SEED --json``, run in-process through ``metarl.evaluation.evaluate``
   (``local=True``: same numbers, no Ray start per call). Raw JSON per run and K in RUNS/eval/.
3. **report** — docs/results-clip.md (tables with 95 % t-intervals over seeds, Welch t-test and a
   paired test over goals, α statistics, wall-clock) and docs/figures/{curves,trajectories,alpha}.png.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALGOS = ("metasgd", "maml")  # training order within a seed
CONFIGS = {a: f"configs/navigation2d-{a}-clip.yaml" for a in ALGOS}  # the PyTorch-convention configs this report measured
LABEL = {"metasgd": "Meta-SGD", "maml": "MAML"}
GOAL_SEED = 20171707  # held-out goals (Meta-SGD arXiv id 1707.09835); training seeds are 0, 1, 2
KEEP_MARKER = "<!-- end of the generated reproduction report; sections below are kept when it is regenerated -->"
TRAJ_GOAL_SEED = 20171703  # 4 further goals for the trajectory figure (MAML arXiv id 1703.03400)
EVAL_SEED = 1000  # action noise of evaluation rollouts (same for every run: common random numbers)
NUM_GOALS = 40
EPISODES = (10, 20, 40)
STEPS = 3


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def metarl_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("metarl")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "metarl.cli"]


def clean_env() -> dict:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # always a private local Ray, never someone else's cluster
    return env


# -- runs ---------------------------------------------------------------------------------------
def target_iterations(algo: str) -> int:
    import yaml

    return int(yaml.safe_load((ROOT / CONFIGS[algo]).read_text())["iterations"])


def read_rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[int(r.get("iteration", len(rows) + 1))] = r  # a resumed run may repeat iterations
    return [rows[k] for k in sorted(rows)]


def run_complete(run: Path, algo: str) -> bool:
    n = target_iterations(algo)
    iters = {int(r.get("iteration", 0)) for r in read_rows(run)}
    final_ckpt = run / "checkpoints" / f"checkpoint-{n:06d}.pt"
    return all(i in iters for i in range(1, n + 1)) and final_ckpt.exists()


def run_dir(runs_dir: Path, algo: str, seed: int) -> Path:
    return runs_dir / f"{algo}-seed{seed}"


def train_command(algo: str, seed: int, out: Path, resume: bool, extra_set: tuple[str, ...] = ()) -> list[str]:
    cmd = ["metarl", "train", CONFIGS[algo], "--set", f"seed={seed}", *extra_set, "--out", str(out), "--quiet"]
    return cmd + (["--resume"] if resume else [])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def train(runs_dir: Path, seeds: list[int], algos: tuple[str, ...] = ALGOS, extra_set: tuple[str, ...] = ()) -> None:
    for seed in seeds:
        for algo in algos:
            out = run_dir(runs_dir, algo, seed)
            if run_complete(out, algo):
                log(f"{out}: complete ({target_iterations(algo)} iterations), skipped")
                continue
            lock = runs_dir / f"{algo}-seed{seed}.pid"
            if lock.exists() and lock.read_text().strip().isdigit() and pid_alive(int(lock.read_text())):
                log(f"{out}: being trained by process {lock.read_text().strip()} ({lock}), skipped")
                continue
            resume = out.exists() and (out / "checkpoints").exists()
            cmd = train_command(algo, seed, out, resume, extra_set)
            logfile = runs_dir / f"{algo}-seed{seed}.log"
            log(f"{'resuming' if resume else 'training'} {out}: {shlex.join(cmd)} (log {logfile})")
            runs_dir.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            with open(logfile, "a") as fh:
                fh.write(f"\n# {_dt.datetime.now().isoformat(timespec='seconds')} {shlex.join(cmd)}\n")
                fh.flush()
                proc = subprocess.Popen(metarl_cmd() + cmd[1:], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=clean_env())
                lock.write_text(str(proc.pid))
                try:
                    rc = proc.wait()
                finally:
                    lock.unlink(missing_ok=True)
            log(f"{out}: exit status {rc} after {time.time() - t0:.0f} s")
            if rc != 0:
                raise SystemExit(f"training {out} failed (exit {rc}); see {logfile}; rerun this script to resume")


# -- goals ----------------------------------------------------------------------------------------
def goals_file(figures: Path) -> Path:
    return figures / "heldout_goals.json"


def heldout_goals(figures: Path) -> dict:
    """The 40 evaluation goals and 4 trajectory-figure goals; drawn once, then read back."""
    path = goals_file(figures)
    if path.exists():
        return json.loads(path.read_text())
    import numpy as np

    draw = lambda seed, n: np.random.default_rng(seed).uniform(-0.5, 0.5, size=(n, 2)).round(4).tolist()  # noqa: E731
    data = {
        "description": "held-out 2D-navigation goals, uniform on [-0.5, 0.5]^2 (the training task distribution), "
                       "numpy.random.default_rng(seed).uniform(-0.5, 0.5, (n, 2)) rounded to 4 decimals",
        "seed": GOAL_SEED,
        "goals": draw(GOAL_SEED, NUM_GOALS),
        "trajectory_seed": TRAJ_GOAL_SEED,
        "trajectory_goals": draw(TRAJ_GOAL_SEED, 4),
        "eval_seed": EVAL_SEED,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return data


def goal_args(goals: list[list[float]]) -> list[str]:
    return [f"--goal={g[0]:g},{g[1]:g}" for g in goals]


# -- evaluation -------------------------------------------------------------------------------------
def eval_path(runs_dir: Path, algo: str, seed: int, K: int) -> Path:
    return runs_dir / "eval" / f"{algo}-seed{seed}-K{K}.json"


def evaluate_cached(run: Path, out: Path, goals: list, episodes: int, steps: int = STEPS, force: bool = False) -> dict:
    """``metarl evaluate RUN --goal ... --steps S --episodes K --seed EVAL_SEED``, in-process, saved to ``out``.

    A saved result is reused while it belongs to the run's latest checkpoint and the same goals.
    """
    from metarl.evaluation import evaluate, load_run

    trained = load_run(run)
    if out.exists() and not force:
        old = json.loads(out.read_text())
        if old.get("checkpoint") == str(trained.checkpoint) and old.get("goals") == goals and len(old["returns_by_step"]) > steps:
            log(f"{out}: exists, kept")
            return old
    t0 = time.time()
    result = evaluate(trained, goals=goals, steps=steps, episodes=episodes, seed=EVAL_SEED, local=True)
    result["goals"] = goals
    result["seconds"] = time.time() - t0
    result["command"] = shlex.join(["metarl", "evaluate", str(run), *goal_args(goals), "--steps", str(steps),
                                    "--episodes", str(episodes), "--seed", str(EVAL_SEED), "--json"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result) + "\n")
    log(f"{out}: {[round(x, 2) for x in result['returns_by_step']]} ({result['seconds']:.0f} s)")
    return result


def evaluate_runs(runs_dir: Path, seeds: list[int], figures: Path, force: bool) -> None:
    import torch

    torch.set_num_threads(1)
    goals = heldout_goals(figures)["goals"]
    for seed in seeds:
        for algo in ALGOS:
            run = run_dir(runs_dir, algo, seed)
            if not run_complete(run, algo):
                log(f"{run}: not complete, not evaluated")
                continue
            for K in EPISODES:
                evaluate_cached(run, eval_path(runs_dir, algo, seed, K), goals, K, force=force)


# -- statistics ----------------------------------------------------------------------------------------
def t_ci(values) -> tuple[float, float | None]:
    import numpy as np
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), None
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def fmt(mean: float, ci: float | None) -> str:
    return f"{mean:.2f}" if ci is None else f"{mean:.2f} ± {ci:.2f}"


def fmt_p(p: float) -> str:
    return "n/a" if p is None or not math.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def load_evals(runs_dir: Path, seeds: list[int]) -> dict:
    """{(algo, K): {seed: report}} for every evaluation file present."""
    out: dict = {}
    for algo in ALGOS:
        for K in EPISODES:
            for seed in seeds:
                p = eval_path(runs_dir, algo, seed, K)
                if p.exists():
                    out.setdefault((algo, K), {})[seed] = json.loads(p.read_text())
    return out


def per_task(report: dict):
    import numpy as np

    return np.array([t["returns_by_step"] for t in report["per_task"]])  # (goals, steps+1)


def alpha_stats(run: Path) -> dict:
    import numpy as np

    from metarl.evaluation import load_run

    trained = load_run(run)
    alpha = {k: v.detach().double().numpy().ravel() for k, v in trained.alpha.items()}
    theta = {k: v.detach().double().numpy().ravel() for k, v in trained.theta.items()}
    allv = np.concatenate(list(alpha.values()))
    layers = {k: {"n": int(v.size), "mean": float(v.mean()), "abs_mean": float(np.abs(v).mean()), "std": float(v.std()),
                  "min": float(v.min()), "max": float(v.max()), "frac_negative": float((v < 0).mean()),
                  "theta_abs_mean": float(np.abs(theta[k]).mean()) if k in theta else float("nan")}
              for k, v in alpha.items()}
    return {"iteration": trained.iteration, "n": int(allv.size), "mean": float(allv.mean()), "median": float(np.median(allv)),
            "min": float(allv.min()), "max": float(allv.max()), "frac_negative": float((allv < 0).mean()),
            "abs_mean": float(np.abs(allv).mean()), "layers": layers}


def threads_of(run: Path) -> str:
    import yaml

    try:
        n = int(yaml.safe_load((run / "config.yaml").read_text()).get("learner_threads", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return "?"
    return "all cores (default)" if n == 0 else str(n)


# -- figures -------------------------------------------------------------------------------------------
def plot(args: list[str], log_to: Path | None = None) -> bool:
    cmd = metarl_cmd() + ["plot", *args]
    rc = subprocess.call(cmd, cwd=ROOT, env=clean_env())
    if rc != 0:
        log(f"plot failed ({rc}): {shlex.join(['metarl', 'plot', *args])}")
    return rc == 0


def make_figures(runs_dir: Path, seeds: list[int], figures: Path, goals: dict) -> dict[str, str]:
    """Returns {figure: the exact command} for the figures written."""
    done = {}
    complete = [run_dir(runs_dir, a, s) for s in seeds for a in ALGOS if run_complete(run_dir(runs_dir, a, s), a)]
    curve_runs = [run_dir(runs_dir, a, s) for a in ALGOS for s in seeds if read_rows(run_dir(runs_dir, a, s))]
    rel = lambda p: os.path.relpath(p, ROOT)  # noqa: E731
    if curve_runs:
        args = ["curves", *map(rel, curve_runs), "--out", rel(figures / "curves.png"), "--dpi", "80"]
        if plot(args):
            done["curves"] = shlex.join(["metarl", "plot", *args])
    pair = [run_dir(runs_dir, a, 0) for a in ALGOS]
    if all(p in complete for p in pair):
        args = ["trajectories", *map(rel, pair), *goal_args(goals["trajectory_goals"]), "--steps", str(STEPS),
                "--episodes", "20", "--seed", str(EVAL_SEED), "--out", rel(figures / "trajectories.png"), "--dpi", "60"]
        if plot(args):
            done["trajectories"] = shlex.join(["metarl", "plot", *args])
    ms0 = run_dir(runs_dir, "metasgd", 0)
    if ms0 in complete:
        args = ["alpha", rel(ms0), "--out", rel(figures / "alpha.png"), "--dpi", "70"]
        if plot(args):
            done["alpha"] = shlex.join(["metarl", "plot", *args])
    for name in done:
        size = (figures / f"{name}.png").stat().st_size
        log(f"{figures / f'{name}.png'}: {size / 1024:.0f} KB{'  (over 200 KB!)' if size > 200 * 1024 else ''}")
    return done


# -- report --------------------------------------------------------------------------------------------
def report(runs_dir: Path, seeds: list[int], figures: Path, docs: Path, skip_figures: bool = False) -> Path:
    import numpy as np
    from scipy import stats

    goals = heldout_goals(figures)
    evals = load_evals(runs_dir, seeds)
    rel = lambda p: os.path.relpath(p, ROOT)  # noqa: E731
    status = {}
    for s in seeds:
        for a in ALGOS:
            run = run_dir(runs_dir, a, s)
            rows = read_rows(run)
            status[(a, s)] = {"complete": run_complete(run, a), "iterations": len(rows), "rows": rows}
    figs = {} if skip_figures else make_figures(runs_dir, seeds, figures, goals)

    L: list[str] = []
    w = L.append
    w("# Reproduction: Meta-SGD vs MAML on 2D navigation")
    w("")
    w(f"_Generated by `scripts/reproduce_navigation.py` on {_dt.date.today().isoformat()}; "
      f"regenerate with the commands at the end. Do not edit by hand above the closing marker; the sections after it (other experiments) are kept._")
    w("")
    # -- what ran
    w("## Protocol")
    w("")
    w("- Training: `configs/navigation2d-metasgd-clip.yaml` and `configs/navigation2d-maml-clip.yaml` unchanged except `seed` — "
      "the papers' protocol: 20 tasks × 20 trajectories × 100 steps per meta-iteration (pre- and post-adaptation), one "
      "inner policy-gradient step with α = 0.1 (MAML fixed; Meta-SGD's per-parameter α initialised at 0.1 and learned), "
      "second-order TRPO (max KL 0.01, 10 CG iterations), 100 meta-iterations, 2×100 ReLU Gaussian policy, "
      "`action_mode: clip` (raw actions clipped to ±0.1, initial std 1.0 — the PyTorch-reimplementation convention, not "
      "the original MAML code's rescaling).")
    w(f"- Evaluation: the same {len(goals['goals'])} held-out goals for every run (uniform on [−0.5, 0.5]², drawn once with "
      f"`numpy.random.default_rng({goals['seed']})`, saved in [`figures/heldout_goals.json`](figures/heldout_goals.json)); "
      f"K = {', '.join(map(str, EPISODES))} trajectories per goal and per step; returns (mean undiscounted episode return "
      f"over the K trajectories, then over goals) before adaptation and after 1, 2, 3 inner steps, each step adapting on "
      f"fresh trajectories from the previous step's policy with the checkpoint's own α; action-noise seed {EVAL_SEED} for "
      f"every run. Final (iteration-100) checkpoints.")
    w("- Statistics: a run's score is its mean over the 40 goals; the tables give the mean over seeds ± the half-width of "
      "the 95 % Student-t interval over those per-seed means (n = number of seeds, n − 1 degrees of freedom). "
      "Meta-SGD vs MAML: Welch's t-test over the per-seed means (`scipy.stats.ttest_ind(equal_var=False)`) and a paired "
      "t-test over the 40 goals (`scipy.stats.ttest_rel`, each goal's return averaged over the seeds both algorithms "
      "completed; Wilcoxon signed-rank as a check).")
    w("")
    w("## Runs")
    w("")
    w("| run | iterations | status | learner torch threads | wall-clock (sum of `seconds`) | s / iteration (median) | final `return_post` (mean of last 10 iterations) |")
    w("| --- | --- | --- | --- | --- | --- | --- |")
    for s in seeds:
        for a in ALGOS:
            st = status[(a, s)]
            rows = st["rows"]
            if not rows:
                w(f"| `{a}-seed{s}` | 0 | not run | | | | |")
                continue
            secs = [float(r.get("seconds", 0.0)) for r in rows]
            last = np.mean([r["return_post"] for r in rows[-10:]])
            w(f"| `{a}-seed{s}` | {len(rows)} | {'complete' if st['complete'] else 'incomplete'} | {threads_of(run_dir(runs_dir, a, s))} | "
              f"{sum(secs) / 60:.1f} min | {np.median(secs):.1f} s | {last:.2f} |")
    w("")
    w("`learner_threads` is a resource setting, not part of the protocol (the algorithm, batch sizes and optimiser "
      "are the configs' own, and results do not depend on it beyond float rounding). When the machine's load average "
      "was above 20, some runs were trained for a while with `--set learner_threads=1` and later resumed with the "
      "default; the column shows what each run's `config.yaml` records, i.e. the setting of its last segment, and "
      "each run's log (`runs/reproduce/A-seedN.log`) lists every command that trained it.")
    w("")
    w("Wall-clock is inflated and noisy: the machine has 2 cores and was shared with other engineers' jobs (tests, "
      "other training runs) throughout, so per-iteration times varied several-fold; compare algorithms' costs with "
      "`metarl benchmark` on a quiet machine, not with this column.")
    w("")
    complete_seeds = {a: [s for s in seeds if status[(a, s)]["complete"]] for a in ALGOS}
    both = [s for s in seeds if all(status[(a, s)]["complete"] for a in ALGOS)]
    w(f"**Seeds completed:** Meta-SGD {complete_seeds['metasgd'] or 'none'}, MAML {complete_seeds['maml'] or 'none'} "
      f"(n = {len(both)} seeds with both algorithms).")
    w("")

    # -- tables
    w("## Average return on the 40 held-out goals (mean over seeds ± 95 % CI, n seeds)")
    w("")
    w("| K | algorithm | n | before adaptation | 1 step | 2 steps | 3 steps |")
    w("| --- | --- | --- | --- | --- | --- | --- |")
    summary: dict = {}
    for K in EPISODES:
        for a in ALGOS:
            reps = {s: r for s, r in evals.get((a, K), {}).items() if s in complete_seeds[a]}
            if not reps:
                continue
            per_seed = np.array([per_task(r).mean(0) for r in reps.values()])  # (seeds, steps+1)
            cells = [t_ci(per_seed[:, j]) for j in range(per_seed.shape[1])]
            summary[(a, K)] = {"seeds": list(reps), "per_seed": per_seed, "cells": cells}
            w(f"| {K} | {LABEL[a]} | {len(reps)} | " + " | ".join(fmt(*c) for c in cells) + " |")
    w("")
    if summary:
        w("Per-seed means (goal average), for reference:")
        w("")
        w("| K | algorithm | seed | before | 1 step | 2 steps | 3 steps |")
        w("| --- | --- | --- | --- | --- | --- | --- |")
        for (a, K), d in sorted(summary.items(), key=lambda x: (x[0][1], ALGOS.index(x[0][0]))):
            for s, row in zip(d["seeds"], d["per_seed"]):
                w(f"| {K} | {LABEL[a]} | {s} | " + " | ".join(f"{x:.2f}" for x in row) + " |")
        w("")

    # -- significance
    w("## Meta-SGD vs MAML after one inner step")
    w("")
    sig_rows = []
    if any((a, K) in summary for a in ALGOS for K in EPISODES):
        w("| K | Meta-SGD (1 step) | MAML (1 step) | difference (Meta-SGD − MAML) | Welch t-test over seeds | "
          "paired over 40 goals: mean diff ± 95 % CI | paired t-test p | Wilcoxon p | goals where Meta-SGD better |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for K in EPISODES:
            if ("metasgd", K) not in summary or ("maml", K) not in summary:
                continue
            ms, mm = summary[("metasgd", K)], summary[("maml", K)]
            x, y = ms["per_seed"][:, 1], mm["per_seed"][:, 1]
            if len(x) >= 2 and len(y) >= 2:
                welch = stats.ttest_ind(x, y, equal_var=False)
                welch_s = f"t = {welch.statistic:.2f}, p = {fmt_p(welch.pvalue)} (n = {len(x)}, {len(y)})"
            else:
                welch, welch_s = None, "n/a (needs ≥ 2 seeds each)"
            common = [s for s in both if s in ms["seeds"] and s in mm["seeds"]]
            gx = np.mean([per_task(evals[("metasgd", K)][s])[:, 1] for s in common], axis=0)
            gy = np.mean([per_task(evals[("maml", K)][s])[:, 1] for s in common], axis=0)
            d = gx - gy
            paired = stats.ttest_rel(gx, gy)
            wil = stats.wilcoxon(gx, gy)
            dm, dci = t_ci(d)
            sig_rows.append({"K": K, "diff": float(x.mean() - y.mean()), "welch_p": None if welch is None else float(welch.pvalue),
                             "paired_p": float(paired.pvalue), "paired_diff": dm, "paired_ci": dci, "wins": int((d > 0).sum())})
            w(f"| {K} | {fmt(*ms['cells'][1])} | {fmt(*mm['cells'][1])} | {x.mean() - y.mean():+.2f} | {welch_s} | "
              f"{fmt(dm, dci)} (seeds {','.join(map(str, common))}) | {fmt_p(paired.pvalue)} | {fmt_p(wil.pvalue)} | "
              f"{int((d > 0).sum())}/{len(d)} |")
        w("")
        w("Difference Meta-SGD − MAML at every step (mean over seeds; Welch p over seeds / paired-over-goals p):")
        w("")
        w("| K | before | 1 step | 2 steps | 3 steps |")
        w("| --- | --- | --- | --- | --- |")
        for K in EPISODES:
            if ("metasgd", K) not in summary or ("maml", K) not in summary:
                continue
            ms, mm = summary[("metasgd", K)], summary[("maml", K)]
            common = [s for s in both if s in ms["seeds"] and s in mm["seeds"]]
            cells = []
            for j in range(STEPS + 1):
                x, y = ms["per_seed"][:, j], mm["per_seed"][:, j]
                pw = stats.ttest_ind(x, y, equal_var=False).pvalue if len(x) >= 2 and len(y) >= 2 else None
                gx = np.mean([per_task(evals[("metasgd", K)][s])[:, j] for s in common], axis=0)
                gy = np.mean([per_task(evals[("maml", K)][s])[:, j] for s in common], axis=0)
                cells.append(f"{x.mean() - y.mean():+.2f} ({fmt_p(pw)} / {fmt_p(stats.ttest_rel(gx, gy).pvalue)})")
            w(f"| {K} | " + " | ".join(cells) + " |")
        w("")
        w("The paired test treats the 40 goals as the sampling units and so answers a narrower question (are these "
          "trained policies different on this goal distribution?) than the Welch test over seeds (would retraining "
          "with new seeds give a different ordering?); with few seeds the Welch test has very little power, and the "
          "paired test ignores seed-to-seed variation of training.")
        w("")

    # -- improvement pre -> post
    w("## Improvement from adaptation (before → after 1 step)")
    w("")
    imp_rows = []
    if summary:
        w("| K | algorithm | before | after 1 step | gain (mean ± 95 % CI over seeds) | paired t-test over goals (seed-averaged) p |")
        w("| --- | --- | --- | --- | --- | --- |")
        for K in EPISODES:
            for a in ALGOS:
                if (a, K) not in summary:
                    continue
                d = summary[(a, K)]
                gain = d["per_seed"][:, 1] - d["per_seed"][:, 0]
                g = np.mean([per_task(evals[(a, K)][s]) for s in d["seeds"]], axis=0)
                p = stats.ttest_rel(g[:, 1], g[:, 0]).pvalue
                imp_rows.append({"K": K, "algo": a, "pre": d["cells"][0][0], "post": d["cells"][1][0], "gain": float(gain.mean())})
                w(f"| {K} | {LABEL[a]} | {d['cells'][0][0]:.2f} | {d['cells'][1][0]:.2f} | {fmt(*t_ci(gain))} | {fmt_p(p)} |")
        w("")

    # -- α
    alpha_rows = {}
    for s in complete_seeds["metasgd"]:
        try:
            alpha_rows[s] = alpha_stats(run_dir(runs_dir, "metasgd", s))
        except Exception as exc:  # noqa: BLE001 - a report must not die on one unreadable checkpoint
            log(f"alpha stats of metasgd-seed{s}: {exc}")
    w("## Learned α of Meta-SGD (final checkpoints)")
    w("")
    if alpha_rows:
        w("| seed | mean α | median | min | max | share negative | mean \\|α\\| |")
        w("| --- | --- | --- | --- | --- | --- | --- |")
        for s, st in alpha_rows.items():
            w(f"| {s} | {st['mean']:.4f} | {st['median']:.4f} | {st['min']:.3f} | {st['max']:.3f} | "
              f"{100 * st['frac_negative']:.1f} % | {st['abs_mean']:.4f} |")
        w("")
        s0 = next(iter(alpha_rows))
        w(f"Per layer (seed {s0}):")
        w("")
        w("| parameter | count | mean α | std | min | max | share negative | mean \\|θ\\| |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for k, st in alpha_rows[s0]["layers"].items():
            w(f"| `{k}` | {st['n']} | {st['mean']:.4f} | {st['std']:.4f} | {st['min']:.3f} | {st['max']:.3f} | "
              f"{100 * st['frac_negative']:.1f} % | {st['theta_abs_mean']:.3f} |")
        w("")

    # -- training curves summary
    w("## Learning curves")
    w("")
    if "curves" in figs:
        w("![learning curves](figures/curves.png)")
        w("")
    curve_tab = []
    for a in ALGOS:
        for s in seeds:
            rows = status[(a, s)]["rows"]
            if len(rows) >= 20:
                f10 = lambda key, lo, hi: float(np.mean([r[key] for r in rows[lo:hi]]))  # noqa: E731
                curve_tab.append((a, s, f10("return_pre", 0, 10), f10("return_post", 0, 10), f10("return_pre", -10, None),
                                  f10("return_post", -10, None)))
    if curve_tab:
        w("Training-batch returns (20 tasks × 20 trajectories, the iteration's own tasks), mean of the first and last 10 iterations:")
        w("")
        w("| run | pre, it. 1–10 | post, it. 1–10 | pre, last 10 | post, last 10 |")
        w("| --- | --- | --- | --- | --- |")
        for a, s, p0, q0, p1, q1 in curve_tab:
            w(f"| `{a}-seed{s}` | {p0:.2f} | {q0:.2f} | {p1:.2f} | {q1:.2f} |")
        w("")

    # -- findings
    w("## Findings")
    w("")
    w(findings(summary, sig_rows, imp_rows, alpha_rows, both, complete_seeds))
    w("")
    if "trajectories" in figs:
        w("## Trajectories on 4 new goals (seed-0 runs)")
        w("")
        w("Mean-action paths before adaptation and after each inner step (adapting on 20 sampled trajectories per step); "
          "goals drawn from `numpy.random.default_rng(%d)`, not among the 40 evaluation goals." % goals["trajectory_seed"])
        w("")
        w("![trajectories](figures/trajectories.png)")
        w("")
    if "alpha" in figs:
        w("## α distribution (Meta-SGD, seed 0)")
        w("")
        w("![alpha](figures/alpha.png)")
        w("")

    # -- comparison with the papers
    w("## Comparison with the published numbers")
    w("")
    w("Each published number belongs to its own protocol (tasks.md): the Meta-SGD paper (Table 4: one step, 20 rollouts, "
      "100 iterations, 600 test tasks) reports MAML −9.12 ± 0.66 and Meta-SGD −8.64 ± 0.68 — the closest row here is "
      "K = 20, 1 step (but 40 goals, and the ± there is over test tasks, not seeds); the MAML paper's table (40 rollouts "
      "per step, MAML −40.41 / −11.68 / −3.33 / −3.23 after 0–3 steps) used the original code's action rescaling "
      "(effective inner step 0.5 in physical units, initial noise 0.1) and longer training, so it is only loosely "
      "comparable to the K = 40 row.")
    w("")

    # -- commands
    w("## Regenerate")
    w("")
    w("```bash")
    w(". .venv/bin/activate")
    w("# everything (skips complete runs, resumes partial ones, then evaluates and writes this file):")
    w(f"python scripts/reproduce_navigation.py --seeds {','.join(map(str, seeds))} --runs-dir {rel(runs_dir)} "
      f"--train-set learner_threads=1")
    w("# (what was run here: seed 0 by a colleague with the default threads, then seeds 1 and 2 with")
    w("#  --train-only --seeds N --algos A --train-set learner_threads=1, the two algorithms side by side)")
    w("python scripts/reproduce_navigation.py --evaluate-only   # redo evaluation (+ report) of finished runs")
    w("python scripts/reproduce_navigation.py --report-only     # redo this file and the figures")
    w("```")
    w("")
    w("What the script runs, per seed N and algorithm A (Meta-SGD first, then MAML; sequentially):")
    w("")
    w("```bash")
    w("metarl train configs/navigation2d-A-clip.yaml --set seed=N learner_threads=1 --out runs/reproduce/A-seedN --quiet   # + --resume if partial")
    g = goals["goals"]
    w(f"metarl evaluate runs/reproduce/A-seedN {' '.join(goal_args(g[:2]))} ... (all 40 goals of heldout_goals.json) "
      f"--steps {STEPS} --episodes K --seed {EVAL_SEED} --json   # K = {', '.join(map(str, EPISODES))}")
    for name, cmd in figs.items():
        w(cmd)
    w("```")
    w("")
    w("The seed-0 runs were trained by the same commands (`--set seed=0` is the configs' default) by a colleague in "
      "/tmp/paper/ and copied into runs/reproduce/. Raw evaluation JSON: `runs/reproduce/eval/A-seedN-KK.json` "
      "(runs/ is not committed). Evaluation runs `metarl.evaluation.evaluate(..., local=True)` in-process, which gives "
      "the same numbers as the `metarl evaluate` command above (each file records its command).")
    w("")
    out = docs / "results-clip.md"  # the clip-convention report; docs/results.md is the current study (metarl.study)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Sections below the marker come from other experiments (scripts/compare_meta_learners.py); keep them.
    kept = ""
    if out.exists() and KEEP_MARKER in out.read_text():
        kept = out.read_text()[out.read_text().index(KEEP_MARKER):]
    out.write_text("\n".join(L) + ("\n" + kept if kept else ""))
    log(f"wrote {out}")
    return out


def findings(summary, sig_rows, imp_rows, alpha_rows, both, complete_seeds) -> str:
    if not summary:
        return "No evaluation results yet."
    out = []
    n = len(both)
    out.append(f"- **Seeds:** n = {n} seed{'s' if n != 1 else ''} with both algorithms completed "
               f"({', '.join(map(str, both)) or 'none'}); intervals over seeds with n = 2 have 1 degree of freedom "
               f"(t₀.₉₇₅ = 12.7) and are correspondingly wide." if n == 2 else
               f"- **Seeds:** n = {n} seed{'s' if n != 1 else ''} with both algorithms completed ({', '.join(map(str, both)) or 'none'}).")
    head = next((r for r in sig_rows if r["K"] == 20), sig_rows[0] if sig_rows else None)
    if head is not None:
        ms, mm = summary[("metasgd", head["K"])], summary[("maml", head["K"])]
        if head["diff"] > 0 and head["welch_p"] is not None and head["welch_p"] < 0.05:
            verdict = "Meta-SGD beats MAML after one step, significantly over seeds"
        elif head["diff"] > 0:
            verdict = ("Meta-SGD's one-step return is higher than MAML's, but the difference is **not significant over "
                       f"seeds** (n = {n})")
        else:
            verdict = "**Meta-SGD does not beat MAML** after one step here"
        out.append(f"- **Headline (K = {head['K']}, the training K and the Meta-SGD paper's protocol):** Meta-SGD "
                   f"{fmt(*ms['cells'][1])} vs MAML {fmt(*mm['cells'][1])} after one step; {verdict} "
                   f"(Welch p = {fmt_p(head['welch_p'])}; paired over the 40 goals p = {fmt_p(head['paired_p'])}, "
                   f"mean difference {fmt(head['paired_diff'], head['paired_ci'])}). For scale, the Meta-SGD paper's own "
                   f"gap (−8.64 ± 0.68 vs −9.12 ± 0.66) is smaller than either of its intervals.")
    for r in sig_rows:
        better = "higher (better)" if r["diff"] > 0 else "lower (worse)"
        sig_w = "n/a" if r["welch_p"] is None else ("significant" if r["welch_p"] < 0.05 else "not significant")
        sig_p = "significant" if r["paired_p"] < 0.05 else "not significant"
        out.append(f"- **K = {r['K']}, one step:** Meta-SGD's return is {abs(r['diff']):.2f} {better} than MAML's; over seeds "
                   f"(Welch) {sig_w} at 5 % (p = {fmt_p(r['welch_p'])}); paired over goals {sig_p} "
                   f"(p = {fmt_p(r['paired_p'])}, Meta-SGD better on {r['wins']}/40 goals).")
    for r in imp_rows:
        out.append(f"- **Adaptation gain, {LABEL[r['algo']]}, K = {r['K']}:** {r['pre']:.2f} → {r['post']:.2f} "
                   f"({r['gain']:+.2f}).")
    for s, st in alpha_rows.items():
        lay = ", ".join(f"`{k}` {v['mean']:+.3f}" for k, v in st["layers"].items())
        out.append(f"- **α (Meta-SGD seed {s}):** mean {st['mean']:.4f}, {100 * st['frac_negative']:.1f} % negative, "
                   f"range [{st['min']:.3f}, {st['max']:.3f}]; per-layer means {lay}.")
    return "\n".join(out)


# -- main --------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    p.add_argument("--runs-dir", default="runs/reproduce", help="run directories RUNS/{algo}-seed{N} (default runs/reproduce)")
    p.add_argument("--algos", default=",".join(ALGOS), help="algorithms to train, in order (default metasgd,maml)")
    p.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra `--set` for metarl train, resources only (e.g. learner_threads=1 on a busy machine)")
    p.add_argument("--docs", default="docs", help="where results.md goes (default docs)")
    stage = p.add_mutually_exclusive_group()
    stage.add_argument("--train-only", action="store_true", help="only train (skip evaluation and report)")
    stage.add_argument("--evaluate-only", action="store_true", help="skip training: evaluate finished runs, then report")
    stage.add_argument("--report-only", action="store_true", help="only write docs/results.md and the figures")
    p.add_argument("--force-eval", action="store_true", help="re-evaluate even where an evaluation file exists")
    p.add_argument("--no-figures", action="store_true", help="report without (re)drawing figures")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs_dir, docs = Path(args.runs_dir), Path(args.docs)
    figures = docs / "figures"
    if not (args.evaluate_only or args.report_only):
        algos = tuple(a for a in args.algos.split(",") if a)
        if not set(algos) <= set(ALGOS):
            p.error(f"--algos: choose from {','.join(ALGOS)}")
        train(runs_dir, seeds, algos, tuple(args.train_set))
    if args.train_only:
        return 0
    if not args.report_only:
        evaluate_runs(runs_dir, seeds, figures, args.force_eval)
    report(runs_dir, seeds, figures, docs, skip_figures=args.no_figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
