"""Figures from run directories: trajectories on new goals, learning curves, learned α.

Every function builds a ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot, no
window, no global state) and returns it; ``save_figure`` writes PNG, SVG or PDF by the
file's extension. Figures read only the run directories (config.yaml, metrics.jsonl,
checkpoints/).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from metarl.config import canonical_key
from metarl.config_text import load_yaml_file
from metarl.runtime.checkpoint import load_checkpoint, resolve_checkpoint
from metarl.runtime.evaluation import (
    DEFAULT_STEPS,
    LocalSampler,
    adaptation_sweep,
    check_counts,
    load_run,
    mean_action_paths,
    resolve_tasks,
    step_scales,
)
from metarl.runtime.metrics import read_metrics
from metarl.runtime.stats import mean_ci95

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
        raise ValueError(
            f"--out {str(out)!r}: unsupported format {out.suffix or '(no extension)'!r}; use .png, .svg or .pdf"
        )
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
    goals: Sequence[Sequence[float] | dict],
    steps: int = DEFAULT_STEPS,
    episodes: int | None = None,
    seed: int = 0,
    dpi: int = 100,
    alpha_scales: Sequence[float] | None = None,
) -> Figure:
    """One panel per goal; per run, the pre-update path and the path after each of 1..K steps.

    Adaptation is exactly ``metarl evaluate``'s (same seeds: E sampled episodes per step,
    in-process); each drawn path is then one deterministic rollout with the policy's *mean*
    action, so the figure is a function of (runs, goals, steps, episodes, seed). Drawn paths
    carry gid ``"trajectory"``: runs × goals × (K+1) of them. A goal is given as coordinates
    or as a task dict (``{"goal": [x, y]}``).
    """
    if not goals:
        raise ValueError("plot trajectories needs at least one --goal X,Y or --task JSON")
    check_counts(steps, episodes)
    loaded = [load_run(r) for r in runs]
    labels = run_labels(runs)
    ncols = min(len(goals), 3)
    nrows = -(-len(goals) // ncols)
    fig, axes = new_figure(nrows, ncols, PANEL_INCHES * ncols, PANEL_INCHES * nrows + 0.6 + 0.25 * len(runs), dpi)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for run, label, color in zip(loaded, labels, colors):
        if run.spec.obs_dim != 2:
            raise ValueError(
                f"{run.checkpoint}: trajectory plots need a family whose observation is a 2-D position "
                f"(e.g. Navigation2D); {run.cfg.env} observes {run.spec.obs_dim} numbers"
            )
        tasks = resolve_tasks(run, goals, None, seed)
        sampler = LocalSampler(run)
        sweep = adaptation_sweep(
            run,
            tasks,
            steps,
            run.cfg.episodes_per_task if episodes is None else episodes,
            seed,
            sampler,
            step_scales(run, steps, alpha_scales),
        )
        sampler.close()
        for j, params in enumerate(sweep.params):
            paths = mean_action_paths(run, tasks, params)
            name = "pre-update" if j == 0 else f"after {j} step{'s' if j > 1 else ''}"
            style = (
                dict(linestyle="--", alpha=0.8, linewidth=1.2)
                if j == 0
                else dict(linestyle="-", alpha=0.35 + 0.65 * j / max(steps, 1), linewidth=1.6)
            )
            for ax, path in zip(axes.flat, paths):
                ax.plot(
                    path[:, 0],
                    path[:, 1],
                    color=color,
                    gid=TRAJECTORY_GID,
                    label=f"{label} ({run.cfg.algorithm}): {name}",
                    **style,
                )
    for ax, task in zip(axes.flat, tasks):
        goal = task["goal"]
        ax.scatter(
            [goal[0]],
            [goal[1]],
            marker="*",
            s=220,
            color="gold",
            edgecolors="black",
            zorder=5,
            gid=GOAL_GID,
            label="goal",
        )
        ax.scatter([0.0], [0.0], marker="o", s=25, color="black", zorder=5, label="start")
        ax.set_title(f"goal ({goal[0]:.2f}, {goal[1]:.2f})")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(goals) :]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(steps + 1, 4), fontsize="small")
    fig.suptitle(f"Mean-action trajectories before and after adaptation (seed {seed})")
    return fig


# -- learning curves --------------------------------------------------------------------------------
# Keys that change how a run was executed, not what it learned: runs differing only in these
# (and ``seed``) are seeds of one configuration.
EXECUTION_KEYS = frozenset(
    {
        "seed",
        "resources.num_workers",
        "resources.worker_cpus",
        "resources.learner_cpus",
        "resources.learner_threads",
        "resources.device",
        "checkpoint_every",
        "keep_checkpoints",
    }
)
X_AXES = {"iteration": "meta-iteration", "env_steps": "environment steps"}
METRICS = {"return": "average return", "success": "success rate"}  # curves of <metric>_pre / <metric>_post


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories (those holding ``metrics.jsonl``) given or found below the given folders.

    A sweep folder or a Tune experiment gives all of its trials, sorted by path; a run's own
    subfolders are not searched.
    """
    found: list[Path] = []
    for given in map(Path, paths):
        if (given / "metrics.jsonl").is_file():
            found.append(given)
            continue
        if not given.is_dir():
            raise ValueError(f"{given}: not a run directory or a folder of runs")
        runs = sorted({m.parent for m in given.rglob("metrics.jsonl")})
        runs = [r for r in runs if not any(other in r.parents for other in runs)]
        if not runs:
            raise ValueError(f"{given}: no run directory (metrics.jsonl) in it or below it")
        found += runs
    return list(dict.fromkeys(found))


def _read_config(run: Path) -> dict:
    path = run / "config.yaml"
    if not path.is_file():
        raise ValueError(f"{run}: not a run directory (no config.yaml)")

    cfg = load_yaml_file(path) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: not a mapping")
    return cfg


def _flat(cfg: dict, prefix: str = "") -> dict[str, object]:
    """``{"env_kwargs": {"action_mode": "clip"}}`` → ``{"env_kwargs.action_mode": "clip"}`` (legend keys)."""
    out: dict[str, object] = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _identity(cfg: dict) -> dict[str, object]:
    """The keys that say what a run learned, dotted; an old run's flat keys (``max_kl``) named as a new run's
    (``trpo.max_kl``), so that both group together."""
    keys = {canonical_key(k): v for k, v in _flat(cfg).items()}
    return {k: v for k, v in keys.items() if k not in EXECUTION_KEYS}


def _read_curve(run: Path, metric: str = "return") -> dict[int, tuple[float, float, float]]:
    """iteration → (<metric>_pre, <metric>_post, env_steps)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{run}: no metrics.jsonl")
    curve = {}
    for row in read_metrics(path):
        if "iteration" in row:
            values = [row.get(k) for k in (f"{metric}_pre", f"{metric}_post", "env_steps")]
            if metric != "return" and values[0] is None and values[1] is None:
                continue  # success is logged only by families that report it
            curve[int(row["iteration"])] = tuple(np.nan if v is None else float(v) for v in values)
    if not curve:
        hint = " (its family reports no success)" if metric == "success" else ""
        raise ValueError(f"{path}: no iterations with {metric}_pre / {metric}_post{hint}")
    return curve


def group_runs(runs: Sequence[str | Path]) -> list[list[Path]]:
    """Run directories (or folders of them) grouped as seeds of one configuration.

    Runs whose ``config.yaml`` agree on everything except ``seed`` and the execution keys
    (:data:`EXECUTION_KEYS`: workers, CPUs, threads, device, checkpointing) form a group, in
    order of first appearance.
    """
    groups: dict[str, list[Path]] = {}
    for run in find_runs(runs):
        key = json.dumps(_identity(_read_config(run)), sort_keys=True, default=str)
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def group_labels(groups: Sequence[Sequence[Path]]) -> list[str]:
    """Short legend names: only the keys whose values differ between groups, plus the seed count."""
    identities = [_identity(_read_config(g[0])) for g in groups]
    keys = sorted({k for ident in identities for k in ident}, key=lambda k: (k != "algorithm", k))
    differing = [k for k in keys if len({json.dumps(i.get(k), default=str) for i in identities}) > 1]
    labels = []
    for ident, members in zip(identities, groups):
        parts = [f"{k}={_short(ident.get(k))}" if k != "algorithm" else str(ident.get(k)) for k in differing]
        name = ", ".join(parts) or str(ident.get("algorithm", "run"))
        labels.append(f"{name} ({len(members)} seed{'s' if len(members) != 1 else ''})")
    return labels


def _short(value: object, width: int = 24) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.removeprefix("metarl/")
    return text if len(text) <= width else text[: width - 1] + "…"


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of each row's last ``window`` values up to each column (fewer at the start; NaNs skipped).

    Why trailing: a point never averages iterations that come after it, so a curve's last point
    is what the run had reached, not a look-ahead."""
    if window < 1:
        raise ValueError(f"--smooth {window}: give a window of at least 1 iteration (1: no smoothing)")
    if window == 1:
        return values
    out = np.full(values.shape, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN window stays NaN
        for i in range(values.shape[-1]):
            out[..., i] = np.nanmean(values[..., max(0, i - window + 1) : i + 1], axis=-1)
    return out


def curves_figure(
    runs: Sequence[str | Path], x: str = "iteration", dpi: int = 100, metric: str = "return", smooth: int = 1
) -> Figure:
    """Return (or success rate: ``metric``) before (dashed) and after (solid) adaptation, one colour per configuration.

    ``runs`` are run directories or folders holding them (a sweep, Tune trials). Seeds of one
    configuration (:func:`group_runs`) are drawn as their mean with a 95 % Student-t confidence
    band over seeds, over the iterations all of them have reached. ``x`` is ``iteration`` or
    ``env_steps`` (the seeds' mean cumulative environment steps at each iteration). ``smooth`` > 1
    replaces each seed's curve by its trailing mean over that many iterations before the seeds are
    aggregated (:func:`trailing_mean`), so a 500-iteration trend reads through iteration noise.
    Drawn curves carry gid ``"curve"``: 2 per group.
    """
    trailing_mean(np.zeros((1, 1)), smooth)  # a bad window is refused before any run is read
    if not runs:
        raise ValueError("plot curves needs at least one RUN")
    if x not in X_AXES:
        raise ValueError(f"--x {x!r}: choose one of {', '.join(X_AXES)}")
    if metric not in METRICS:
        raise ValueError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    groups = group_runs(runs)
    labels = group_labels(groups)
    legend_rows = -(-(len(groups) + 2) // 2)
    fig, axes = new_figure(1, 1, 7.5, 4.5 + 0.22 * legend_rows, dpi)
    ax = axes[0, 0]
    handles = []
    for g, (members, label) in enumerate(zip(groups, labels)):
        color = f"C{g % 10}"
        curves = [_read_curve(r, metric) for r in members]
        iterations = sorted(set.intersection(*(set(c) for c in curves)))
        if not iterations:
            raise ValueError(f"runs {', '.join(map(str, members))} share no iteration in metrics.jsonl")
        values = np.array([[c[i] for i in iterations] for c in curves], dtype=float)  # (seeds, I, 3)
        xs = np.asarray(iterations, dtype=float) if x == "iteration" else np.nanmean(values[:, :, 2], axis=0)
        if x == "env_steps" and not np.all(np.isfinite(xs)):
            raise ValueError(f"{members[0]}: metrics.jsonl lacks env_steps; use --x iteration")
        for k, style in enumerate(("--", "-")):
            mean, half = mean_ci95(trailing_mean(values[:, :, k], smooth))
            (line,) = ax.plot(xs, mean, linestyle=style, color=color, gid=CURVE_GID, label=label)
            if len(members) > 1:
                ax.fill_between(xs, mean - half, mean + half, color=color, alpha=0.15, linewidth=0)
        handles.append(line)

    handles += [
        Line2D([], [], color="gray", linestyle="--", label="before adaptation"),
        Line2D([], [], color="gray", linestyle="-", label="after adaptation"),
    ]
    if x == "iteration":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel(METRICS[metric])
    bands = " (mean and 95% CI over seeds)" if any(len(g) > 1 for g in groups) else ""
    if smooth > 1:
        bands += f", trailing mean of {smooth} iterations"
    ax.set_title(
        f"{METRICS[metric].capitalize().replace('Average r', 'R')} before and after adaptation{bands}",
        fontsize="medium",
    )
    ax.grid(True, alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small", frameon=False)
    return fig


# -- learned α --------------------------------------------------------------------------------------
def alpha_figure(run_or_checkpoint: str | Path, bins: int = 40, dpi: int = 100) -> Figure:
    """Per-layer distribution of a Meta-SGD run's learned α (weights and bias together).

    Refuses runs that learn no α (MAML's is the fixed ``inner_lr``): a histogram of a constant
    says nothing. See :func:`alpha_layers_figure` for the scale.
    """
    path = resolve_checkpoint(run_or_checkpoint)
    state = load_checkpoint(path)
    cfg = json.loads(state["config"]) if "config" in state else {}
    algorithm = cfg.get("algorithm", "?")
    if algorithm != "metasgd":
        raise ValueError(
            f"plot alpha: {path} is a {algorithm} run, which learns no α (its inner step size is "
            f"the fixed inner_lr {cfg.get('inner_lr')}); plot a metasgd run"
        )
    layers: dict[str, list[np.ndarray]] = {}
    for name, a in state["alpha"].items():
        layers.setdefault(name.split(".")[0], []).append(a.detach().double().reshape(-1).numpy())
    title = f"Learned inner step sizes α per layer — iteration {int(state.get('iteration', 0))}"
    return alpha_layers_figure(
        {k: np.concatenate(v) for k, v in layers.items()}, title, cfg.get("inner_lr"), bins=bins, dpi=dpi
    )


def alpha_layers_figure(
    layers: dict[str, np.ndarray],
    title: str,
    initial: float | None = None,
    bins: int = 40,
    dpi: int = 100,
    coverage: float = 0.99,
) -> Figure:
    """One histogram per layer, each on its own robust range.

    A layer's axis spans the central ``coverage`` of its α (quantiles) plus half that width on
    each side, so a few far outliers cannot squeeze a 10,000-entry layer into one bar; entries
    beyond are counted into the edge bins and reported in the panel title. 0 and ``initial``
    (``inner_lr``, where every α started) are marked where they fall in range.
    """
    tail = (1.0 - coverage) / 2
    ncols = min(len(layers), 3)
    nrows = -(-len(layers) // ncols)
    fig, axes = new_figure(nrows, ncols, PANEL_INCHES * ncols, 3.2 * nrows + 0.5, dpi)
    for ax, (layer, v) in zip(axes.flat, layers.items()):
        q_lo, q_hi = np.quantile(v, [tail, 1.0 - tail])
        lo, hi = max(v.min(), q_lo - (q_hi - q_lo) / 2), min(v.max(), q_hi + (q_hi - q_lo) / 2)
        if hi - lo <= 1e-12 * max(1.0, abs(hi)):
            lo, hi = lo - max(abs(lo), 1e-6) * 0.05, hi + max(abs(hi), 1e-6) * 0.05
        outside = int(np.sum((v < lo) | (v > hi)))
        ax.hist(np.clip(v, lo, hi), bins=np.linspace(lo, hi, bins + 1), color="C0", alpha=0.85)
        for mark, style in (
            (0.0, dict(color="black", linewidth=0.8)),
            (initial, dict(color="C3", linestyle="--", linewidth=1.0, label=f"initial α = {initial}")),
        ):
            if mark is not None and lo <= mark <= hi:
                ax.axvline(mark, **style)
        note = f"; {outside} outside, in the edge bins" if outside else ""
        ax.set_title(f"{layer}: {v.size} α, {100 * float((v < 0).mean()):.1f}% negative{note}", fontsize="small")
        ax.set_xlabel(f"α (all: {v.min():.3g} … {v.max():.3g})" if outside else "α", fontsize="small")
        ax.set_ylabel("count")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    for ax in list(axes.flat)[len(layers) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig
