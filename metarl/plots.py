"""Figures from run directories: trajectories on new goals, learning curves, learned α.

Every function builds a ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot, no
window, no global state) and returns it; ``save_figure`` writes PNG, SVG or PDF by the
file's extension. Figures read only the run directories (config.yaml, metrics.jsonl,
checkpoints/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from metarl.evaluation import (
    DEFAULT_STEPS,
    LocalSampler,
    adaptation_sweep,
    check_counts,
    load_run,
    mean_action_paths,
    resolve_tasks,
)
from metarl.metrics import read_metrics

FORMATS = ("png", "svg", "pdf")
TRAJECTORY_GID, CURVE_GID, GOAL_GID = "trajectory", "curve", "goal"
PANEL_INCHES = 4.0


def new_figure(nrows: int, ncols: int, width: float, height: float, dpi: int):
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def output_format(out: str | Path) -> str:
    """``png``, ``svg`` or ``pdf`` from the file name; ``ValueError`` for anything else."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"--out {str(out)!r}: unsupported format {out.suffix or '(no extension)'!r}; use .png, .svg or .pdf")
    return fmt


def save_figure(fig: Figure, out: str | Path) -> Path:
    """Write ``fig`` as PNG, SVG or PDF, chosen by ``out``'s extension (at the figure's own size/dpi)."""
    out = Path(out)
    fmt = output_format(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format=fmt)
    return out


def run_labels(runs: Sequence[str | Path]) -> list[str]:
    """Short names for runs: the directory name, or the path as given where names clash."""
    names = [Path(r).name if Path(r).is_dir() else _checkpoint_run_name(Path(r)) for r in runs]
    return [n if names.count(n) == 1 else str(r) for n, r in zip(names, runs)]


def _checkpoint_run_name(path: Path) -> str:
    parent = path.parent
    return f"{(parent.parent if parent.name == 'checkpoints' else parent).name}/{path.stem}"


# -- trajectories -----------------------------------------------------------------------------------
def trajectories_figure(
    runs: Sequence[str | Path],
    goals: Sequence[Sequence[float]],
    steps: int = DEFAULT_STEPS,
    episodes: int | None = None,
    seed: int = 0,
    dpi: int = 100,
) -> Figure:
    """One panel per goal; per run, the pre-update path and the path after each of 1..K steps.

    Adaptation is exactly ``metarl evaluate``'s (same seeds: E sampled episodes per step,
    in-process); each drawn path is then one deterministic rollout with the policy's *mean*
    action, so the figure is a function of (runs, goals, steps, episodes, seed). Drawn paths
    carry gid ``"trajectory"``: runs × goals × (K+1) of them.
    """
    if not goals:
        raise ValueError("plot trajectories needs at least one --goal X,Y")
    check_counts(steps, episodes)
    loaded = [load_run(r) for r in runs]
    labels = run_labels(runs)
    ncols = min(len(goals), 3)
    nrows = -(-len(goals) // ncols)
    fig, axes = new_figure(nrows, ncols, PANEL_INCHES * ncols, PANEL_INCHES * nrows + 0.6 + 0.25 * len(runs), dpi)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for run, label, color in zip(loaded, labels, colors):
        if run.spec.obs_dim != 2:
            raise ValueError(f"{run.checkpoint}: trajectory plots need a family whose observation is a 2-D position "
                             f"(e.g. Navigation2D); {run.cfg.env} observes {run.spec.obs_dim} numbers")
        tasks = resolve_tasks(run, goals, None, seed)
        sampler = LocalSampler(run)
        sweep = adaptation_sweep(run, tasks, steps, run.cfg.episodes_per_task if episodes is None else episodes,
                                 seed, sampler)
        sampler.close()
        for j, params in enumerate(sweep.params):
            paths = mean_action_paths(run, tasks, params)
            name = "pre-update" if j == 0 else f"after {j} step{'s' if j > 1 else ''}"
            style = dict(linestyle="--", alpha=0.8, linewidth=1.2) if j == 0 else \
                dict(linestyle="-", alpha=0.35 + 0.65 * j / max(steps, 1), linewidth=1.6)
            for ax, path in zip(axes.flat, paths):
                ax.plot(path[:, 0], path[:, 1], color=color, gid=TRAJECTORY_GID,
                        label=f"{label} ({run.cfg.algorithm}): {name}", **style)
    for ax, goal in zip(axes.flat, goals):
        ax.scatter([goal[0]], [goal[1]], marker="*", s=220, color="gold", edgecolors="black", zorder=5,
                   gid=GOAL_GID, label="goal")
        ax.scatter([0.0], [0.0], marker="o", s=25, color="black", zorder=5, label="start")
        ax.set_title(f"goal ({goal[0]:.2f}, {goal[1]:.2f})")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(goals):]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(steps + 1, 4), fontsize="small")
    fig.suptitle(f"Mean-action trajectories before and after adaptation (seed {seed})")
    return fig


# -- learning curves --------------------------------------------------------------------------------
def _run_config_key(run: Path) -> tuple[str, dict]:
    path = run / "config.yaml"
    if not path.is_file():
        raise ValueError(f"{run}: not a run directory (no config.yaml)")
    cfg = yaml.safe_load(path.read_text()) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: not a mapping")
    return json.dumps({k: v for k, v in cfg.items() if k != "seed"}, sort_keys=True, default=str), cfg


def _read_curve(run: Path) -> dict[int, tuple[float, float]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{run}: no metrics.jsonl")
    curve = {}
    for row in read_metrics(path):
        if "iteration" in row:
            pre, post = row.get("return_pre"), row.get("return_post")
            curve[int(row["iteration"])] = (np.nan if pre is None else pre, np.nan if post is None else post)
    if not curve:
        raise ValueError(f"{path}: no iterations with return_pre / return_post")
    return curve


def group_runs(runs: Sequence[str | Path]) -> list[list[Path]]:
    """Runs whose config.yaml agree on everything but ``seed``, in order of first appearance."""
    groups: dict[str, list[Path]] = {}
    for r in runs:
        key, _ = _run_config_key(Path(r))
        groups.setdefault(key, []).append(Path(r))
    return list(groups.values())


def curves_figure(runs: Sequence[str | Path], dpi: int = 100) -> Figure:
    """Return before (dashed) and after (solid) adaptation per meta-iteration.

    Runs with the same config apart from ``seed`` are one curve: the mean over seeds with a
    ±1 standard-deviation band, over the iterations all of them have reached. Drawn curves
    carry gid ``"curve"``: 2 per group.
    """
    if not runs:
        raise ValueError("plot curves needs at least one RUN")
    fig, axes = new_figure(1, 1, 7.0, 4.5, dpi)
    ax = axes[0, 0]
    for g, members in enumerate(group_runs(runs)):
        color = f"C{g % 10}"
        curves = [_read_curve(r) for r in members]
        iterations = sorted(set.intersection(*(set(c) for c in curves)))
        if not iterations:
            raise ValueError(f"runs {', '.join(map(str, members))} share no iteration in metrics.jsonl")
        values = np.array([[c[i] for i in iterations] for c in curves], dtype=float)  # (seeds, I, 2)
        _, cfg = _run_config_key(members[0])
        label = f"{cfg.get('algorithm', '?')} · {members[0].name}"
        if len(members) > 1:
            label += f" (+{len(members) - 1} seeds; mean ± std)"
        for k, (phase, style) in enumerate((("before adaptation", "--"), ("after adaptation", "-"))):
            series = values[:, :, k]
            mean = np.nanmean(series, axis=0)
            ax.plot(iterations, mean, linestyle=style, color=color, gid=CURVE_GID, label=f"{label}: {phase}")
            if len(members) > 1:
                std = np.nanstd(series, axis=0)
                ax.fill_between(iterations, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("average return")
    ax.set_title("Return before and after adaptation")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


# -- learned α --------------------------------------------------------------------------------------
def alpha_figure(run_or_checkpoint: str | Path, bins: int = 40, dpi: int = 100) -> Figure:
    """Histogram of the learned α per layer (weights and bias together), with the share of negative entries."""
    from metarl.checkpoint import load_checkpoint, resolve_checkpoint

    path = resolve_checkpoint(run_or_checkpoint)
    state = load_checkpoint(path)
    algorithm = json.loads(state["config"]).get("algorithm", "?") if "config" in state else "?"
    layers: dict[str, list[np.ndarray]] = {}
    for name, a in state["alpha"].items():
        layers.setdefault(name.split(".")[0], []).append(a.detach().double().reshape(-1).numpy())
    ncols = min(len(layers), 3)
    nrows = -(-len(layers) // ncols)
    fig, axes = new_figure(nrows, ncols, PANEL_INCHES * ncols, 3.2 * nrows + 0.5, dpi)
    for ax, (layer, parts) in zip(axes.flat, layers.items()):
        values = np.concatenate(parts)
        negative = float((values < 0).mean())
        ax.hist(values, bins=bins, color="C0", alpha=0.85)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{layer}: {values.size} α, {100 * negative:.1f}% negative", fontsize="medium")
        ax.set_xlabel("α")
        ax.set_ylabel("count")
    for ax in list(axes.flat)[len(layers):]:
        ax.set_visible(False)
    fixed = "" if algorithm == "metasgd" else " (fixed, not learned)"
    fig.suptitle(f"Learned inner step sizes α per layer — {algorithm}{fixed}, iteration {int(state.get('iteration', 0))}")
    return fig
