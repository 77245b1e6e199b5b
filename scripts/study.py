r"""Learning studies: a matrix of (variant × seed) training runs, cached held-out evaluation, statistics.

A *variant* is a config file plus ``--set`` overrides; a *protocol* is how a trained run is
evaluated (goals, trajectories per step K, inner steps, step-size schedule). The three stages
each redo only what is missing, so a study survives being stopped and started again:

    train     ``metarl train CONFIG --set seed=N … --out RUNS/<variant>-seed<N> --quiet``
              (``--resume`` when the run has a checkpoint), ``parallel`` runs at a time
    evaluate  :func:`metarl.runtime.evaluation.evaluate` in-process on every complete run, one JSON
              per (run, protocol) under ``RUNS/eval/``
    report    markdown tables: mean ± 95 % t-interval over seeds per inner step, and tests
              between variants (paired over goals, Welch over seeds), α statistics
    archive   what ``report`` needs, without checkpoints: the evaluation JSONs and one
              ``summary.json`` per run (training returns per iteration, α statistics), small enough
              to commit (docs/data/). ``report --runs`` on an archive prints the same tables, so a
              study's numbers outlive its run directories.

This file is both the library (imported by tests) and the command line; it lives outside the installed
package and imports metarl like any user script. docs/results.md quotes its tables with the commands:

    python scripts/study.py train    --study paper --seeds 0-4 --runs runs/study-paper --parallel 2
    python scripts/study.py evaluate --study paper --seeds 0-4 --runs runs/study-paper \
        --protocols maml-paper,metasgd-paper
    python scripts/study.py report   --study paper --seeds 0-4 --runs runs/study-paper \
        --protocols maml-paper,metasgd-paper
    python scripts/study.py report   --study peer --seeds 1-3 --runs runs/study-peer --protocols peer \
        --peer-runs PEER_RUNS
    python scripts/study.py archive  --study paper --seeds 0-4 --runs runs/study-paper --to docs/data/study-paper
    python scripts/study.py report   --study paper --seeds 0-4 --runs docs/data/study-paper   # the same tables
    (archive --peer-runs PEER_RUNS puts the peer's runs under --to/pytorch-maml-rl, for report --peer-runs)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from metarl.config import Config
from metarl.runtime.checkpoint import atomic_write
from metarl.runtime.evaluation import evaluate as evaluate_run
from metarl.runtime.evaluation import load_run
from metarl.runtime.stats import ci95 as half_width

ROOT = Path(__file__).resolve().parents[1]
GOAL_SEED = 20171707  # held-out goals (docs/figures/heldout_goals.json); distinct from every training seed
EVAL_SEED = 1000  # action noise of evaluation rollouts: the same for every run (common random numbers)


@dataclass(frozen=True)
class Variant:
    """A named training setup: a config file and overrides."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()
    eval_init: str = "run"  # "random": evaluate the θ training started from (the random-init baseline)
    eval_alpha: float | None = None  # absolute test-time step size (× the protocol's scales); the pretrained baseline


@dataclass(frozen=True)
class Protocol:
    """How a trained run is evaluated on new goals."""

    name: str
    episodes: int  # trajectories per goal and step (K)
    steps: int  # inner steps after the pre-adaptation sample
    alpha_scales: tuple[float, ...] | None = None  # multiplier on α per step (last repeats)
    num_goals: int = 40  # goals drawn once from GOAL_SEED (the first 40 are heldout_goals.json)
    deterministic: bool = False
    sampled_tasks: bool = False  # any family: num_goals tasks drawn by the run's env from EVAL_SEED, not 2D goals


PROTOCOLS = {
    # MAML paper appendix table: 40 goals, 40 trajectories per step, 0..3 steps; the original test script
    # (cbfinn/maml_rl test_maml_point.py) takes the first step at the training step size, later ones at half.
    "maml-paper": Protocol("maml-paper", 40, 3, (1.0, 0.5), deterministic=True),
    # Meta-SGD paper Table 4: 20 trajectories, one step; the paper used 600 test tasks.
    "metasgd-paper": Protocol("metasgd-paper", 20, 1, None, num_goals=600),
    # the same at other test-time step sizes (α × s): how much a different (uniform) step could win at K = 20
    **{
        f"metasgd-paper-x{s:g}": Protocol(f"metasgd-paper-x{s:g}", 20, 1, (s,), num_goals=600)
        for s in (0.5, 0.75, 1.5, 2.0)
    },
    # pytorch-maml-rl's own test protocol as run by the peer harness: 40 goals, 20 trajectories, 3 steps, one α.
    "peer": Protocol("peer", 20, 3, None),
    # two test steps at the training step size (the multi-step study)
    "two-steps": Protocol("two-steps", 20, 2, None),
    # the previous round's report (docs/results-clip.md): the 40 goals, K = 10, 20 or 40 per step, 0..3 steps
    **{f"clip-k{k}": Protocol(f"clip-k{k}", k, 3, None) for k in (10, 20, 40)},
    # locomotion (MAML paper §5.3: K = 20 after one step): 20 new tasks of the run's family, 0..3 steps
    "locomotion": Protocol("locomotion", 20, 3, None, num_goals=20, sampled_tasks=True),
}

# The reduced locomotion protocol that fits a few hours of a 2-core machine (docs/results.md section 6):
# 10 tasks x 10 trajectories x 200 steps per phase instead of the paper's 40 x 20 x 200, 200 iterations
# instead of 500; MAML (the paper's numbers are MAML's), second-order TRPO, α = 0.1.
LOCOMOTION_REDUCED = ("algorithm=maml", "iterations=200", "meta_batch_size=10", "episodes_per_task=10")

STUDIES: dict[str, list[Variant]] = {
    # metarl under pytorch-maml-rl's config, with its loss averaging (episodes) and with metarl's old one (steps)
    "peer": [
        Variant("peer-config", "configs/navigation2d-maml-peer.yaml"),
        Variant("peer-config-steps", "configs/navigation2d-maml-peer.yaml", ("advantages.loss_average=steps",)),
    ],
    # the papers' protocol with the original code's conventions (scaled actions, α = 0.5)
    "paper": [
        Variant("maml", "configs/navigation2d-maml.yaml"),
        Variant("metasgd-joint", "configs/navigation2d-metasgd.yaml", ("trpo.alpha_update=joint",)),
        Variant("metasgd-adam", "configs/navigation2d-metasgd.yaml", ("trpo.alpha_update=adam",)),
        Variant("metasgd-natural", "configs/navigation2d-metasgd.yaml", ("trpo.alpha_update=natural",)),
        Variant(
            "metasgd-adam-log",
            "configs/navigation2d-metasgd.yaml",
            ("trpo.alpha_update=adam", "alpha.parametrization=log", "trpo.alpha_lr=0.02"),
        ),
    ],
    # the MAML paper's baselines beside MAML (issue 34 D6): a policy pretrained on the task distribution
    # (inner_lr 0: θ' = θ, so training is multi-task TRPO) and the random initialisation, both adapted at
    # test time with MAML's step size (0.5, and the protocol's scales)
    "baselines": [
        Variant("maml", "configs/navigation2d-maml.yaml"),
        Variant("pretrained", "configs/navigation2d-maml.yaml", ("inner_lr=0",), eval_alpha=0.5),
        Variant("random-init", "configs/navigation2d-maml.yaml", ("iterations=1",), eval_init="random"),
        # the same pretrained runs (link pretrained-a0.1-seedS to pretrained-seedS) at a fifth of MAML's step,
        # since MAML's 0.5 overshoots from the pretrained policy's small std (docs/results.md section 8)
        Variant("pretrained-a0.1", "configs/navigation2d-maml.yaml", ("inner_lr=0",), eval_alpha=0.1),
    ],
    # ProMP's low-variance curvature estimator against MAML's
    "estimators": [
        Variant("maml", "configs/navigation2d-maml.yaml"),
        Variant("maml-lvc", "configs/navigation2d-maml.yaml", ("meta_gradient=lvc",)),
    ],
    # inner_steps: 2 (fresh rollouts per step) against 1, evaluated after 2 test steps
    "multistep": [
        Variant("maml", "configs/navigation2d-maml.yaml"),
        Variant("maml-2step", "configs/navigation2d-maml.yaml", ("inner_steps=2",)),
    ],
    # the previous round (docs/results-clip.md): the PyTorch-reimplementation convention (clip, α = 0.1)
    "clip": [
        Variant("maml-clip", "configs/navigation2d-maml-clip.yaml"),
        Variant("metasgd-clip", "configs/navigation2d-metasgd-clip.yaml"),
    ],
    # TRPO's curvature on a share of the tasks (docs/results-clip.md, "Subsampled Fisher")
    "fisher": [
        Variant("metasgd-clip", "configs/navigation2d-metasgd-clip.yaml"),
        Variant("metasgd-clip-fs0.25", "configs/navigation2d-metasgd-clip.yaml", ("trpo.fisher_subsample=0.25",)),
        Variant("metasgd-clip-fs0.1", "configs/navigation2d-metasgd-clip.yaml", ("trpo.fisher_subsample=0.1",)),
        Variant("maml-clip", "configs/navigation2d-maml-clip.yaml"),
        Variant("maml-clip-fs0.25", "configs/navigation2d-maml-clip.yaml", ("trpo.fisher_subsample=0.25",)),
    ],
    # HalfCheetah direction and velocity on the reduced protocol; velocity again with GAE bootstrapping where
    # the horizon cuts episodes (100 iterations: compared with the first 100 of the plain runs)
    "locomotion": [
        Variant("hc-dir", "configs/halfcheetah-dir.yaml", LOCOMOTION_REDUCED),
        Variant("hc-vel", "configs/halfcheetah-vel.yaml", LOCOMOTION_REDUCED),
        Variant(
            "hc-vel-boot",
            "configs/halfcheetah-vel.yaml",
            (*LOCOMOTION_REDUCED[:1], "iterations=100", *LOCOMOTION_REDUCED[2:], "advantages.bootstrap_truncated=true"),
        ),
    ],
}


def heldout_goals(n: int = 40) -> list[list[float]]:
    """``n`` goals from ``GOAL_SEED``; the first 40 are docs/figures/heldout_goals.json."""
    return np.random.default_rng(GOAL_SEED).uniform(-0.5, 0.5, size=(n, 2)).tolist()


# -- train ----------------------------------------------------------------------------------------
def run_dir(runs: Path, variant: Variant, seed: int) -> Path:
    return runs / f"{variant.name}-seed{seed}"


def final_iteration(variant: Variant, overrides: Iterable[str] = ()) -> int:
    return Config.load(ROOT / variant.config, [*variant.overrides, *overrides]).iterations


def learns_alpha(variant: Variant) -> bool:
    return Config.load(ROOT / variant.config, list(variant.overrides)).learns_alpha


SUMMARY = "summary.json"  # an archived run (see :func:`archive`): no checkpoints, no metrics.jsonl


def archived(run: Path) -> dict[str, Any] | None:
    """The archived summary of a run, or None for a live run directory."""
    path = run / SUMMARY
    return json.loads(path.read_text()) if path.exists() and not (run / "checkpoints").is_dir() else None


def complete(run: Path, iterations: int) -> bool:
    summary = archived(run)
    if summary is not None:
        return int(summary["iteration"]) >= iterations
    return (run / "checkpoints" / f"checkpoint-{iterations:06d}.pt").exists()


def train_command(variant: Variant, seed: int, out: Path, extra: Iterable[str] = ()) -> list[str]:
    sets = [f"seed={seed}", *variant.overrides, *extra]
    cmd = [sys.executable, "-m", "metarl.cli", "train", variant.config, "--out", str(out), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    return cmd + (["--resume"] if (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("*.pt")) else [])


def train(runs: Path, variants: list[Variant], seeds: list[int], parallel: int = 1, extra: Iterable[str] = ()) -> None:
    """Train every (variant, seed) that is not complete; a run with a checkpoint is resumed."""
    extra = list(extra) + (["resources.learner_threads=1"] if parallel > 1 else [])
    jobs = []
    for seed in seeds:
        for v in variants:
            out = run_dir(runs, v, seed)
            if complete(out, final_iteration(v, extra)):
                continue
            if out.exists() and not any((out / "checkpoints").glob("*.pt")):
                shutil.rmtree(out)  # started but never checkpointed: nothing to keep
            jobs.append((v, seed, out))
    runs.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a private local Ray

    def one(job) -> int:
        v, seed, out = job
        cmd = train_command(v, seed, out, extra)
        print("$", " ".join(cmd[2:]), file=sys.stderr, flush=True)
        with open(runs / f"{v.name}-seed{seed}.log", "a") as log:
            return subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for (_, _, out), rc in zip(jobs, pool.map(one, jobs)):
            print(f"{out}: exit {rc}", file=sys.stderr, flush=True)


# -- evaluate -------------------------------------------------------------------------------------
def eval_path(runs: Path, variant: Variant, seed: int, protocol: Protocol) -> Path:
    return runs / "eval" / f"{variant.name}-seed{seed}-{protocol.name}.json"


def evaluate(runs: Path, variants: list[Variant], seeds: list[int], protocols: list[Protocol]) -> None:
    """Evaluate every complete run under every protocol (cached: an existing JSON is kept)."""
    for v in variants:
        for seed in seeds:
            out = run_dir(runs, v, seed)
            if not complete(out, final_iteration(v)):
                continue
            for p in protocols:
                path = eval_path(runs, v, seed, p)
                if path.exists():
                    continue
                where = {"num_tasks": p.num_goals} if p.sampled_tasks else {"goals": heldout_goals(p.num_goals)}
                sizes = None if v.eval_alpha is None else [v.eval_alpha * x for x in (p.alpha_scales or (1.0,))]
                result = evaluate_run(
                    out,
                    **where,
                    steps=p.steps,
                    episodes=p.episodes,
                    seed=EVAL_SEED,
                    local=True,
                    alpha_scales=None if sizes else p.alpha_scales,
                    step_sizes=sizes,
                    deterministic=p.deterministic,
                    init=v.eval_init,
                )
                _write_json(path, result)
                print(f"{path}: {[round(x, 2) for x in result['returns_by_step']]}", file=sys.stderr, flush=True)


# -- archive --------------------------------------------------------------------------------------
def archive(runs: Path, variants: list[Variant], seeds: list[int], dest: Path) -> list[Path]:
    """Copy what :func:`report` reads for every complete (variant, seed) into ``dest``: a summary per
    run (final iteration, training returns per iteration, α statistics when α is learned) and the
    run's evaluation JSONs, per goal. Returns the files written."""
    written: list[Path] = []
    for v in variants:
        for seed in seeds:
            run = run_dir(runs, v, seed)
            last = final_iteration(v)
            if run.resolve() == run_dir(dest, v, seed).resolve() or not complete(run, last):
                continue
            rows = training_rows(run)
            summary = {
                "variant": v.name,
                "config": v.config,
                "overrides": list(v.overrides),
                "seed": seed,
                "iteration": last,
                "training": [rows[i] for i in sorted(rows)],
                "alpha": alpha_summary(run) if learns_alpha(v) else None,
            }
            out = run_dir(dest, v, seed) / SUMMARY
            written.append(_write_json(out, summary))
            for path in sorted((runs / "eval").glob(f"{v.name}-seed{seed}-*.json")):
                if path.stem[len(f"{v.name}-seed{seed}-") :] in PROTOCOLS:
                    written.append(_write_json(dest / "eval" / path.name, json.loads(path.read_text())))
    return written


def archive_peer(peer_runs: Path, seeds: list[int], dest: Path, eval_seed: int = 1) -> list[Path]:
    """The same for pytorch-maml-rl runs of the peer harness: each seed's ``progress.csv`` and its
    evaluation's per-goal ``step_returns`` (re-saved as a plain array: loading runs no pickled code)."""
    written: list[Path] = []
    for seed in seeds:
        src = peer_runs / f"seed{seed}"
        npz = src / f"eval_seed{eval_seed}" / "results.npz"
        if not (npz.exists() and (src / "progress.csv").exists()):
            continue
        out = dest / f"seed{seed}"
        (out / f"eval_seed{eval_seed}").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "progress.csv", out / "progress.csv")
        step_returns = np.asarray(np.load(npz, allow_pickle=False)["step_returns"], dtype=np.float64)
        np.savez_compressed(out / f"eval_seed{eval_seed}" / "results.npz", step_returns=step_returns)
        written += [out / "progress.csv", out / f"eval_seed{eval_seed}" / "results.npz"]
    return written


def _write_json(path: Path, data: Any) -> Path:
    """Atomically, like checkpoints: a study stopped mid-write keeps the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, separators=(",", ":")).encode())
    return path


# -- statistics -----------------------------------------------------------------------------------
def ci95(values: np.ndarray) -> float:
    """Half-width of the 95 % Student-t interval of the mean (nan for fewer than 2 values)."""
    half = half_width(np.asarray(values, dtype=float))
    return float("nan") if half is None else half


@dataclass
class Results:
    """Evaluations of one variant under one protocol: ``per_goal[seed] = (K+1, goals)``."""

    variant: str
    protocol: str
    per_goal: dict[int, np.ndarray] = field(default_factory=dict)
    mean_action: dict[int, np.ndarray] = field(default_factory=dict)
    tasks: list | None = None  # the evaluation's tasks, when its files say (comparisons need the same ones)

    @property
    def seeds(self) -> list[int]:
        return sorted(self.per_goal)

    def seed_means(self, step: int) -> np.ndarray:
        return np.array([self.per_goal[s][step].mean() for s in self.seeds])

    def goal_means(self, step: int) -> np.ndarray:
        return np.mean([self.per_goal[s][step] for s in self.seeds], axis=0)


def load_results(runs: Path, variant: Variant, seeds: list[int], protocol: Protocol) -> Results:
    res = Results(variant.name, protocol.name)
    for seed in seeds:
        path = eval_path(runs, variant, seed, protocol)
        if path.exists():
            data = json.loads(path.read_text())
            res.per_goal[seed] = np.array([t["returns_by_step"] for t in data["per_task"]]).T
            if all("task" in t for t in data["per_task"]):
                res.tasks = [t["task"] for t in data["per_task"]]
            if "mean_action_returns_by_step" in data:
                res.mean_action[seed] = np.array([t["mean_action_returns_by_step"] for t in data["per_task"]]).T
    return res


def load_peer(peer_runs: Path, seeds: list[int], eval_seed: int = 1) -> tuple[Results, dict[int, tuple[float, float]]]:
    """pytorch-maml-rl runs of the peer harness (shared/peers/pytorch-maml-rl: run_learning.sh, eval.sh):
    ``peer_runs/seed<N>/eval_seed<E>/results.npz`` (step_returns: steps × goals × trajectories) and
    ``progress.csv`` (its training window of iterations 91–100)."""
    res, windows = Results("pytorch-maml-rl", "peer"), {}
    for seed in seeds:
        npz = peer_runs / f"seed{seed}" / f"eval_seed{eval_seed}" / "results.npz"
        if npz.exists():
            res.per_goal[seed] = np.load(npz, allow_pickle=False)["step_returns"].mean(axis=-1)
        progress = peer_runs / f"seed{seed}" / "progress.csv"
        if progress.exists():
            rows = [r for r in csv.DictReader(progress.open()) if 91 <= int(r["iteration"]) <= 100]
            if len(rows) == 10:
                windows[seed] = (
                    float(np.mean([float(r["return_pre"]) for r in rows])),
                    float(np.mean([float(r["return_post"]) for r in rows])),
                )
    return res, windows


def compare(a: Results, b: Results, step: int) -> dict[str, float]:
    """a − b after ``step`` steps: difference, paired t-test over goals (seed-averaged), Welch over seeds."""
    diff = float(a.seed_means(step).mean() - b.seed_means(step).mean())
    paired = stats.ttest_rel(a.goal_means(step), b.goal_means(step))
    welch = stats.ttest_ind(a.seed_means(step), b.seed_means(step), equal_var=False)
    return {"diff": diff, "p_goals": float(paired.pvalue), "p_seeds": float(welch.pvalue)}


def alpha_summary(run: Path) -> dict[str, Any]:
    """α of a run's newest checkpoint: overall and per-layer mean/std/min/max, how many entries are negative."""
    summary = archived(run)
    if summary is not None:
        return summary["alpha"]
    trained = load_run(run)
    out: dict[str, Any] = {}
    flat = []
    for name, a in trained.alpha.items():
        v = a.detach().double().numpy().ravel()
        flat.append(v)
        out[name] = {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}
    allv = np.concatenate(flat)
    out["all"] = {
        "mean": float(allv.mean()),
        "std": float(allv.std()),
        "min": float(allv.min()),
        "max": float(allv.max()),
        "negative": int((allv < 0).sum()),
        "entries": int(allv.size),
    }
    return out


def training_rows(run: Path) -> dict[int, dict[str, float]]:
    """Iteration → training ``return_pre`` / ``return_post`` of a run (live or archived)."""
    summary = archived(run)
    if summary is not None:
        return {int(r["iteration"]): r for r in summary["training"]}
    rows: dict[int, dict[str, float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)  # a resumed run may repeat iterations: keep the last
            rows[int(r["iteration"])] = {k: float(r[k]) for k in ("iteration", "return_pre", "return_post")}
    return rows


def training_window(run: Path, first: int = 91, last: int = 100) -> tuple[float, float]:
    """Mean training ``return_pre`` and ``return_post`` over iterations ``first..last`` (a run's last ten by
    default for the 100-iteration navigation runs; :func:`report` passes each variant's own last ten)."""
    rows = training_rows(run)
    sel = [rows[i] for i in range(first, last + 1) if i in rows]
    return float(np.mean([r["return_pre"] for r in sel])), float(np.mean([r["return_post"] for r in sel]))


def fmt(mean: float, half: float) -> str:
    return f"{mean:.2f} ± {half:.2f}" if math.isfinite(half) else f"{mean:.2f}"


def report(
    runs: Path, variants: list[Variant], seeds: list[int], protocols: list[Protocol], peer_runs: Path | None = None
) -> str:
    """Markdown tables: returns by step (mean ± 95 % CI over seeds), training window, tests vs the first
    variant (the peer's runs first, when ``peer_runs`` is given, under the ``peer`` protocol)."""
    lines: list[str] = []
    peer, peer_windows = load_peer(peer_runs, seeds) if peer_runs else (None, {})
    for p in protocols:
        results = [load_results(runs, v, seeds, p) for v in variants]
        if peer is not None and p.name == "peer" and peer.seeds:
            results = [peer, *results]
        results = [r for r in results if r.seeds]
        if not results:
            continue
        scales = ", ".join(f"{x:g}" for x in (p.alpha_scales or (1.0,)))
        lines += [
            f"#### Protocol `{p.name}`: {p.num_goals} {'new tasks' if p.sampled_tasks else 'goals'}, "
            f"K = {p.episodes}, {p.steps} step(s), α scale per step {scales}",
            "",
            "| variant | seeds | " + " | ".join(f"step {j}" for j in range(p.steps + 1)) + " |",
            "| --- | --- |" + " --- |" * (p.steps + 1),
        ]
        for r in results:
            cells = [fmt(r.seed_means(j).mean(), ci95(r.seed_means(j))) for j in range(p.steps + 1)]
            lines.append(f"| {r.variant} | {len(r.seeds)} | " + " | ".join(cells) + " |")
            if r.mean_action:
                ma = [np.array([r.mean_action[s][j].mean() for s in r.seeds]) for j in range(p.steps + 1)]
                lines.append(
                    f"| {r.variant} (mean action) | {len(r.seeds)} | "
                    + " | ".join(fmt(m.mean(), ci95(m)) for m in ma)
                    + " |"
                )
        base = results[0]
        tests = []
        for r in results[1:]:
            if r.tasks is not None and base.tasks is not None and r.tasks != base.tasks:
                continue  # another family's tasks: no paired comparison
            for j in range(1, p.steps + 1):
                c = compare(r, base, j)
                tests.append(
                    f"| {r.variant} − {base.variant} | {j} | {c['diff']:+.2f} | {c['p_goals']:.2g} | "
                    f"{c['p_seeds']:.2g} |"
                )
        if tests:
            lines += [
                "",
                "| comparison | step | difference | p (paired over goals) | p (Welch over seeds) |",
                "| --- | --- | --- | --- | --- |",
                *tests,
            ]
        lines.append("")
    lines += [
        "#### Training: mean return of each run's last 10 iterations (training batches)",
        "",
        "| variant | seeds | pre-adaptation | post-adaptation | per seed (post) |",
        "| --- | --- | --- | --- | --- |",
    ]
    if peer_windows:
        w = np.array([peer_windows[s] for s in sorted(peer_windows)])
        lines.append(
            f"| pytorch-maml-rl | {len(w)} | {fmt(w[:, 0].mean(), ci95(w[:, 0]))} | "
            f"{fmt(w[:, 1].mean(), ci95(w[:, 1]))} | " + ", ".join(f"{x:.1f}" for x in w[:, 1]) + " |"
        )
    for v in variants:
        done = [s for s in seeds if complete(run_dir(runs, v, s), final_iteration(v))]
        if not done:
            continue
        last = final_iteration(v)
        windows = np.array([training_window(run_dir(runs, v, s), last - 9, last) for s in done])
        lines.append(
            f"| {v.name} (iterations {last - 9}–{last}) | {len(done)} | "
            f"{fmt(windows[:, 0].mean(), ci95(windows[:, 0]))} | "
            f"{fmt(windows[:, 1].mean(), ci95(windows[:, 1]))} | " + ", ".join(f"{x:.1f}" for x in windows[:, 1]) + " |"
        )
    alpha_rows = []
    alpha_variants = [v for v in variants if learns_alpha(v)]
    for v in alpha_variants:
        for s in seeds:
            run = run_dir(runs, v, s)
            if complete(run, final_iteration(v)):
                a = alpha_summary(run)["all"]
                if a["std"] > 0:
                    alpha_rows.append(
                        f"| {v.name} | {s} | {a['mean']:.4f} | {a['std']:.4f} | {a['min']:.3f} | "
                        f"{a['max']:.3f} | {a['negative']} of {a['entries']} |"
                    )
    if alpha_rows:
        lines += [
            "",
            "#### Learned α after training (all entries)",
            "",
            "| variant | seed | mean | std | min | max | negative entries |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *alpha_rows,
        ]
        lines += ["", "#### Learned α per layer (mean over seeds of each layer's mean / std)", ""]
        for v in alpha_variants:
            done = [s for s in seeds if complete(run_dir(runs, v, s), final_iteration(v))]
            summaries = [alpha_summary(run_dir(runs, v, s)) for s in done]
            if not summaries or summaries[0]["all"]["std"] == 0:
                continue
            layers = [k for k in summaries[0] if k != "all"]
            lines += [
                f"| {v.name} ({len(done)} seeds) | " + " | ".join(layers) + " |",
                "| --- |" + " --- |" * len(layers),
                "| mean | " + " | ".join(f"{np.mean([x[k]['mean'] for x in summaries]):.4f}" for k in layers) + " |",
                "| std | " + " | ".join(f"{np.mean([x[k]['std'] for x in summaries]):.4f}" for k in layers) + " |",
                "",
            ]
    return "\n".join(lines) + "\n"


# -- command line ------------------------------------------------------------------------------------
def parse_seeds(text: str) -> list[int]:
    """``"0-2"`` → ``[0, 1, 2]``, ``"1,3"`` → ``[1, 3]`` (the scripts' ``--seeds``)."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("train", "evaluate", "report", "archive"))
    parser.add_argument("--study", required=True, choices=sorted(STUDIES))
    parser.add_argument("--variants", help="comma-separated subset of the study's variants")
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2, 3, 4], help="e.g. 0-4 or 1,2,3")
    parser.add_argument("--runs", type=Path, required=True, help="directory of the study's runs")
    parser.add_argument(
        "--parallel", type=int, default=1, help="training runs at a time (each with one learner thread)"
    )
    parser.add_argument("--protocols", default="maml-paper,metasgd-paper", help=f"of {', '.join(PROTOCOLS)}")
    parser.add_argument(
        "--to", type=Path, help="archive: where the summaries and evaluations go (e.g. docs/data/study-paper)"
    )
    parser.add_argument(
        "--peer-runs", type=Path, help="report, archive: pytorch-maml-rl runs of the peer harness, seed<N>/ each"
    )
    args = parser.parse_args()
    variants = STUDIES[args.study]
    if args.variants:
        wanted = args.variants.split(",")
        unknown = set(wanted) - {v.name for v in variants}
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}; the study has {[v.name for v in variants]}")
        variants = [v for v in variants if v.name in wanted]
    protocols = [PROTOCOLS[p] for p in args.protocols.split(",")]
    if args.stage == "train":
        train(args.runs, variants, args.seeds, args.parallel)
    elif args.stage == "evaluate":
        evaluate(args.runs, variants, args.seeds, protocols)
    elif args.stage == "archive":
        if args.to is None:
            parser.error("archive needs --to DIR (where the summaries and evaluations go)")
        written = archive(args.runs, variants, args.seeds, args.to)
        if args.peer_runs:
            written += archive_peer(args.peer_runs, args.seeds, args.to / "pytorch-maml-rl")
        print(f"{len(written)} files written under {args.to}")
    else:
        print(report(args.runs, variants, args.seeds, protocols, args.peer_runs))


if __name__ == "__main__":
    main()
