"""``metarl`` command line: ``metarl train CONFIG.yaml [--set key=value ...] [--out DIR] [--address ADDR]``.

Exit status: 0 done; 2 bad input (config, arguments, files, checkpoints: one line on stderr);
1 a run that failed (diverged, learner died, resources); 130 / 143 ``metarl train`` stopped by
SIGINT / SIGTERM after checkpointing (see :mod:`metarl.signals`). ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

from metarl.config import ConfigError


def _train(args: argparse.Namespace) -> int:
    from metarl.config import Config

    cfg = Config.load(args.config, args.set or [])
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"

    from tqdm import tqdm

    from metarl.signals import StopSignals
    from metarl.trainer import Trainer

    with StopSignals() as stop:  # SIGINT/SIGTERM: finish the iteration, checkpoint, exit 130/143
        trainer = Trainer(cfg, out, address=args.address, resume=args.resume, config_path=args.config,
                          overrides=args.set or [])
        stop.install()  # ray.init replaced our SIGTERM handler with its own
        print(f"metarl: training {cfg.algorithm} on {cfg.env}, run directory {out}", file=sys.stderr)
        bar = tqdm(total=cfg.iterations, initial=trainer.iteration, desc=cfg.algorithm, unit="it", disable=args.quiet)

        def report(m: dict) -> None:
            bar.set_postfix(pre=f"{m['return_pre']:.2f}", post=f"{m['return_post']:.2f}", s=f"{m['seconds']:.2f}")
            bar.update(1)

        try:
            trainer.train(report, should_stop=stop)
        except Exception as exc:
            if not stop():
                raise
            # e.g. Ctrl-C reached Ray's processes too (same process group): the iteration is lost
            print(f"metarl: stopped by {stop.name}; iteration {trainer.iteration + 1} was abandoned "
                  f"({type(exc).__name__}); newest checkpoint: {trainer.last_checkpoint}; resume with: "
                  f"{trainer.resume_command}", file=sys.stderr)
            return stop.exit_status
        finally:
            bar.close()
            trainer.close()
    if stop():
        if trainer.last_checkpoint is None:
            print(f"metarl: stopped by {stop.name} before the first iteration; nothing was checkpointed",
                  file=sys.stderr)
        else:
            print(f"metarl: stopped by {stop.name} after iteration {trainer.iteration}; checkpoint "
                  f"{trainer.last_checkpoint}; resume with: {trainer.resume_command}", file=sys.stderr)
        return stop.exit_status
    print(f"metarl: done; metrics in {out / 'metrics.jsonl'}, checkpoints in {out / 'checkpoints'}", file=sys.stderr)
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from metarl.benchmark import main as benchmark_main

    if args.iterations < 1 or args.warmup < 0:
        raise ValueError("--iterations must be >= 1 and --warmup >= 0")
    if args.learner_only:
        import json

        from metarl.benchmark import learner_benchmark
        from metarl.config import Config

        try:
            obs_dim, act_dim, horizon = (int(x) for x in args.learner_only.split(","))
        except ValueError:
            raise ValueError(f"--learner-only {args.learner_only!r}: expected OBS,ACT,HORIZON, e.g. 17,6,200") from None
        cfg = Config.load(args.config, args.set or [])
        print(json.dumps(learner_benchmark(cfg, obs_dim, act_dim, horizon, repeats=args.iterations)))
        return 0
    return benchmark_main(args)


def _goals(args: argparse.Namespace) -> list[list[float]] | None:
    from metarl.evaluation import parse_goal

    return [parse_goal(g) for g in args.goal] if args.goal else None


def _evaluate(args: argparse.Namespace) -> int:
    import json

    import ray

    from metarl.evaluation import evaluate, format_report

    started_ray = not ray.is_initialized()
    try:
        result = evaluate(args.run, goals=_goals(args), num_tasks=args.tasks, steps=args.steps,
                          episodes=args.episodes, seed=args.seed, address=args.address)
    finally:
        if started_ray:
            ray.shutdown()
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from metarl import plots

    plots.output_format(args.out)
    if args.figure == "trajectories":
        fig = plots.trajectories_figure(args.runs, _goals(args), steps=args.steps, episodes=args.episodes,
                                        seed=args.seed, dpi=args.dpi)
    elif args.figure == "curves":
        fig = plots.curves_figure(args.runs, dpi=args.dpi)
    else:
        fig = plots.alpha_figure(args.run, dpi=args.dpi)
    print(f"metarl: wrote {plots.save_figure(fig, args.out)}", file=sys.stderr)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    import json

    import ray

    from metarl.config import Config
    from metarl.tune import default_sweep_dir, format_summary, parse_grid, run_sweep, summarize

    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    if args.max_failures < -1:
        raise ValueError(f"--max-failures must be >= -1 (-1 = retry forever), got {args.max_failures}")
    base = Config.load(args.config, args.set or []).to_dict()
    grid = parse_grid(args.grid)
    out = Path(args.out) if args.out else default_sweep_dir(args.config)
    started_ray = not ray.is_initialized()
    try:
        results = run_sweep(base, grid, out, iterations=args.iterations, max_failures=args.max_failures,
                            address=args.address, verbose=0 if args.quiet else 1)
    finally:
        if started_ray:
            ray.shutdown()
    rows = summarize(results, list(grid))
    print(json.dumps(rows) if args.json else format_summary(rows, list(grid)))
    print(f"metarl: sweep results in {out}", file=sys.stderr)
    return 1 if any(r["error"] for r in rows) else 0


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``metarl: error: ...``) and exit status 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(message: object) -> str:
    return " ".join(str(message).split())[:1000]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="metarl", description="Distributed gradient-based meta-RL (MAML, Meta-SGD).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="meta-train a policy from a YAML config")
    train.add_argument("config", help="YAML config, e.g. configs/navigation2d-metasgd.yaml")
    train.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE", help="override config keys: --set a=1 b=2 (repeatable)")
    train.add_argument("--out", help="run directory (default: runs/<config>-<time>)")
    train.add_argument("--address", help="Ray cluster to join (e.g. auto); default: start a local Ray")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    bench = sub.add_parser("benchmark", help="time meta-iterations of a protocol and report where time goes")
    bench.add_argument("config", nargs="?", default="configs/navigation2d-metasgd.yaml")
    bench.add_argument("--iterations", type=int, default=5, help="timed iterations (median reported)")
    bench.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    bench.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE", help="override config keys")
    bench.add_argument("--workers", help="comma-separated worker counts to compare, e.g. 1,2")
    bench.add_argument("--threads", choices=("default", "1", "both"), default="both",
                       help="learner torch threads: all cores (default), one, or compare both")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--learner-only", metavar="OBS,ACT,HORIZON",
                       help="time only the learner on synthetic rollouts of this shape (e.g. 17,6,200 for HalfCheetah)")
    bench.set_defaults(func=_benchmark)

    sweep = sub.add_parser("sweep", help="grid search with Ray Tune (one trial = one training run)")
    sweep.add_argument("config", help="YAML config, the base of every trial")
    sweep.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2",
                       help="values of one key to search (repeatable; the grid is their product), e.g. --grid inner_lr=0.05,0.1")
    sweep.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE", help="override config keys of every trial")
    sweep.add_argument("--iterations", type=int, help="meta-iterations per trial (default: the config's)")
    sweep.add_argument("--out", help="experiment directory (default: runs/<config>-sweep-<time>)")
    sweep.add_argument("--max-failures", type=int, default=0, help="restarts of a failed trial from its last checkpoint")
    sweep.add_argument("--address", help="Ray cluster to join (e.g. auto); default: start a local Ray")
    sweep.add_argument("--json", action="store_true", help="print the per-trial summary as JSON")
    sweep.add_argument("--quiet", action="store_true", help="no Tune progress tables")
    sweep.set_defaults(func=_sweep)

    # "-0.3,0.2" is a goal, not an option (argparse < 3.13 only knows plain negative numbers)
    goal_args = re.compile(r"^-\.?\d")
    ev = sub.add_parser("evaluate", help="adapt a trained policy to new goals and report return per inner step")
    ev._negative_number_matcher = goal_args
    ev.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="run directory (its latest checkpoint) or checkpoint file")
    ev.add_argument("--goal", action="extend", nargs="+", metavar="X,Y", help="evaluation goal(s), repeatable")
    ev.add_argument("--tasks", type=int, help="number of freshly sampled tasks when no --goal is given (default 40)")
    ev.add_argument("--steps", type=int, default=3, help="inner steps K; returns are reported after 0..K steps (default 3)")
    ev.add_argument("--episodes", type=int, help="trajectories per task and step (default: the run's episodes_per_task)")
    ev.add_argument("--seed", type=int, default=0, help="seed for sampled tasks and action noise (default 0)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--address", help="Ray cluster to join (e.g. auto); default: start a local Ray")
    ev.set_defaults(func=_evaluate)

    plot = sub.add_parser("plot", help="figures from run directories (PNG, SVG or PDF by --out's extension)")
    figures = plot.add_subparsers(dest="figure", required=True)
    traj = figures.add_parser("trajectories", help="paths before and after each inner step, one panel per goal")
    traj._negative_number_matcher = goal_args
    traj.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or checkpoint files) to compare")
    traj.add_argument("--goal", action="extend", nargs="+", required=True, metavar="X,Y", help="goal(s), repeatable")
    traj.add_argument("--steps", type=int, default=3, help="inner steps K (default 3)")
    traj.add_argument("--episodes", type=int, help="sampled trajectories per adaptation step (default: the run's)")
    traj.add_argument("--seed", type=int, default=0, help="seed for the adaptation rollouts (default 0)")
    curves = figures.add_parser("curves", help="return before/after adaptation per iteration; seeds of one config aggregated")
    curves.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    alpha = figures.add_parser("alpha", help="distribution of the learned α per layer")
    alpha.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    for p in (traj, curves, alpha):
        p.add_argument("--out", required=True, help="output file: .png, .svg or .pdf")
        p.add_argument("--dpi", type=int, default=100, help="resolution (default 100)")
        p.set_defaults(func=_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="metarl: %(levelname)s: %(message)s")
    # A config's env "module:id" may name a module in the working directory (examples/my_task_family.py);
    # Ray actors start there with it on their path. Appended last, so it shadows no installed module.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("metarl: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        if args.debug:
            raise
        print(f"metarl: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug:
            raise
        import yaml

        from metarl.checkpoint import CheckpointError, NonFiniteStateError
        from metarl.trainer import LearnerDiedError, ResourceError, TrainingDivergedError

        if isinstance(exc, (CheckpointError, yaml.YAMLError)):
            print(f"metarl: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        if isinstance(exc, (ResourceError, LearnerDiedError, TrainingDivergedError, NonFiniteStateError)):
            print(f"metarl: error: {_one_line(exc)}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
