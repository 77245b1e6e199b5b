"""``metarl`` command line: ``metarl train CONFIG.yaml [--set key=value ...] [--out DIR] [--address ADDR]``.

Commands: train, benchmark, sweep, config (the resolved config / every key), evaluate, export (a plain
PyTorch policy, or an RLlib RLModule checkpoint), render (MuJoCo videos), plot. ``--set`` takes YAML values and
dotted keys (``env_kwargs.action_mode=scale``); flags and positionals go in any order (see ``_split_repeated``).

Exit status: 0 done; 2 bad input (config, arguments, files, checkpoints: one line on stderr);
1 a run that failed (diverged, learner died or timed out, rollout workers lost, resources; ``render``
without an OpenGL backend); 130 / 143 ``metarl train`` stopped by SIGINT / SIGTERM after checkpointing
(see :mod:`metarl.runtime.signals`). ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import yaml

from metarl import __version__
from metarl.config import Config, ConfigError, apply_overrides, describe_keys, dump_yaml
from metarl.limits import check_dpi, check_evaluation, check_seed

EXPORT_FORMATS = ("pt2", "pt", "rllib")  # torch.export, TorchScript, an RLlib RLModule checkpoint


def _train(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
    from metarl.runtime.signals import StopSignals  # light: no torch, no Ray

    stop = StopSignals()  # SIGINT/SIGTERM: finish the iteration, checkpoint, exit 130/143
    stop.install()
    try:
        return _train_under(args, stop)
    finally:
        if getattr(args, "program", False):
            # The `metarl` program keeps the handlers to its end, so a signal on the way out, after the
            # last checkpoint, only sets the flag. ray.shutdown resets the OS-level SIGTERM action to
            # the default (Python's table still names our handler) and would run at exit, where a
            # SIGTERM would then end the process by the signal: shut Ray down here, then take it again.
            ray = sys.modules.get("ray")
            if ray is not None and ray.is_initialized():
                ray.shutdown()
            stop.ending = True
            stop.install()
        else:
            stop.restore()  # called in-process (tests, notebooks): the caller's handlers back


def _train_under(args: argparse.Namespace, stop) -> int:
    """``metarl train`` with SIGINT/SIGTERM already taken by ``stop`` (from the start: a signal during
    start-up stops before anything is written, with the same exit status as a later one)."""
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN_DIR, the run directory to continue")
    cfg = Config.load(args.config, args.set or [])
    # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
    from metarl.runtime.rundir import default_run_dir
    from metarl.runtime.trainer import Trainer

    out = Path(args.out) if args.out else default_run_dir(Path(args.config).stem)
    if stop():
        print(f"metarl: stopped by {stop.name} during start-up; nothing was started or written", file=sys.stderr)
        return stop.exit_status
    trainer = Trainer(
        cfg, out, address=args.address, resume=args.resume, config_path=args.config, overrides=args.set or []
    )
    stop.install()  # ray.init replaced our SIGTERM handler with its own
    if trainer.resume_changes:
        # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
        from metarl.runtime.rundir import format_changes

        print(f"metarl: resuming with changed {format_changes(trainer.resume_changes)}", file=sys.stderr)
    print(f"metarl: training {cfg.algorithm} on {cfg.env}, run directory {out}", file=sys.stderr)
    bar = Progress(cfg.iterations, trainer.iteration, cfg.algorithm, quiet=args.quiet)
    report = bar.update

    try:
        trainer.train(report, should_stop=stop)
    except Exception as exc:
        if not stop():
            raise
        # e.g. Ctrl-C reached Ray's processes too (same process group): the iteration is lost
        print(
            f"metarl: stopped by {stop.name}; iteration {trainer.iteration + 1} was abandoned "
            f"({type(exc).__name__}); newest checkpoint: {trainer.last_checkpoint}; resume with: "
            f"{trainer.resume_command}",
            file=sys.stderr,
        )
        return stop.exit_status
    finally:
        bar.close()
        trainer.close()
    if stop() and trainer.iteration < cfg.iterations:  # a signal during the last iteration: the run is done
        if trainer.last_checkpoint is None:
            print(
                f"metarl: stopped by {stop.name} before the first iteration; nothing was checkpointed", file=sys.stderr
            )
        else:
            print(
                f"metarl: stopped by {stop.name} after iteration {trainer.iteration}; checkpoint "
                f"{trainer.last_checkpoint}; resume with: {trainer.resume_command}",
                file=sys.stderr,
            )
        return stop.exit_status
    print(f"metarl: done; metrics in {out / 'metrics.jsonl'}, checkpoints in {out / 'checkpoints'}", file=sys.stderr)
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
    from metarl.benchmark import main as benchmark_main

    if args.iterations < 1 or args.warmup < 0:
        raise ValueError("--iterations must be >= 1 and --warmup >= 0")
    if args.learner_only:
        # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
        from metarl.benchmark import learner_benchmark

        try:
            obs_dim, act_dim, horizon = (int(x) for x in args.learner_only.split(","))
        except ValueError:
            raise ValueError(f"--learner-only {args.learner_only!r}: expected OBS,ACT,HORIZON, e.g. 17,6,200") from None
        cfg = Config.load(args.config, args.set or [])
        print(json.dumps(learner_benchmark(cfg, obs_dim, act_dim, horizon, repeats=args.iterations)))
        return 0
    return benchmark_main(args)


class Progress:
    """A tqdm bar on a terminal; elsewhere (a pipe, a log file) one plain line every ``every`` iterations
    or ``seconds``, whichever comes first, and at the last iteration: no carriage-return frames in logs."""

    def __init__(
        self,
        total: int,
        initial: int,
        desc: str,
        quiet: bool = False,
        every: int = 10,
        seconds: float = 30.0,
        stream=None,
    ):
        self.stream = sys.stderr if stream is None else stream
        self.total, self.done, self.desc = total, initial, desc
        self.every, self.seconds, self.quiet = every, seconds, quiet
        self.last = time.monotonic()
        self.bar = None
        if not quiet and self.stream.isatty():
            # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="it", file=self.stream)

    def update(self, m: dict) -> None:
        self.done += 1
        pre, post, secs = f"{m['return_pre']:.2f}", f"{m['return_post']:.2f}", f"{m['seconds']:.2f}"
        if self.bar is not None:
            self.bar.set_postfix(pre=pre, post=post, s=secs)
            self.bar.update(1)
            return
        now = time.monotonic()
        if self.quiet or not (
            self.done % self.every == 0 or self.done >= self.total or now - self.last >= self.seconds
        ):
            return
        self.last = now
        success = (
            f", success pre {m['success_pre']:.2f}, post {m['success_post']:.2f}"
            if "success_pre" in m and "success_post" in m
            else ""
        )
        print(
            f"metarl: {self.desc} iteration {self.done}/{self.total}: return pre {pre}, post {post}{success}, "
            f"{secs} s/it",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tasks(args: argparse.Namespace) -> list | None:
    """``--goal X,Y`` (numbers typed as written: ``2,3`` are ints) and ``--task JSON``, in that order."""
    # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
    from metarl.runtime.evaluation import parse_goal, parse_task

    given = [parse_goal(g) for g in args.goal or []] + [parse_task(t) for t in getattr(args, "task", None) or []]
    return given or None


def _evaluate(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
    import ray

    # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
    from metarl.runtime.evaluation import evaluate, format_report, parse_step_sizes

    check_evaluation(args.tasks, args.steps, args.episodes)
    check_seed(args.seed)
    scales = parse_step_sizes(args.alpha_scales) if args.alpha_scales else None
    sizes = parse_step_sizes(args.step_sizes) if args.step_sizes else None
    started_ray = not ray.is_initialized()
    try:
        result = evaluate(
            args.run,
            goals=_tasks(args),
            num_tasks=args.tasks,
            steps=args.steps,
            episodes=args.episodes,
            seed=args.seed,
            address=args.address,
            alpha_scales=scales,
            step_sizes=sizes,
            deterministic=args.deterministic,
            local=args.local,
            init=args.init,
            split=args.split,
        )
    finally:
        if started_ray:
            ray.shutdown()
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def _plot(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
    from metarl import plots

    check_dpi(args.dpi)
    if args.figure == "trajectories":
        check_evaluation(None, args.steps, args.episodes)
        check_seed(args.seed)
    plots.output_format(args.out)
    if args.figure == "trajectories":
        # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
        from metarl.runtime.evaluation import parse_step_sizes

        fig = plots.trajectories_figure(
            args.runs,
            _tasks(args),
            steps=args.steps,
            episodes=args.episodes,
            seed=args.seed,
            dpi=args.dpi,
            alpha_scales=parse_step_sizes(args.alpha_scales) if args.alpha_scales else None,
        )
    elif args.figure == "curves":
        fig = plots.curves_figure(args.runs, x=args.x, dpi=args.dpi, metric=args.metric, smooth=args.smooth)
    else:
        fig = plots.alpha_figure(args.run, dpi=args.dpi)
    print(f"metarl: wrote {plots.save_figure(fig, args.out)}", file=sys.stderr)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
    import ray

    # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
    from metarl.runtime.rundir import default_run_dir
    from metarl.tune import format_summary, parse_grid, run_sweep, summarize

    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    if args.max_failures < -1:
        raise ValueError(f"--max-failures must be >= -1 (-1 = retry forever), got {args.max_failures}")
    base = Config.load(args.config, args.set or []).to_dict()
    grid = parse_grid(args.grid)
    out = Path(args.out) if args.out else default_run_dir(f"{Path(args.config).stem}-sweep")
    started_ray = not ray.is_initialized()
    try:
        results = run_sweep(
            base,
            grid,
            out,
            iterations=args.iterations,
            max_failures=args.max_failures,
            address=args.address,
            verbose=0 if args.quiet else 1,
        )
    finally:
        if started_ray:
            ray.shutdown()
    rows = summarize(results, list(grid))
    print(json.dumps(rows) if args.json else format_summary(rows, list(grid)))
    print(f"metarl: sweep results in {out}", file=sys.stderr)
    return 1 if any(r["error"] for r in rows) else 0


def _one_task(args: argparse.Namespace) -> object | None:
    tasks = _tasks(args)
    if tasks and len(tasks) > 1:
        raise ValueError(f"{args.command}: give one task (--goal or --task), got {len(tasks)}")
    return tasks[0] if tasks else None


def _export(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
    from metarl.export import export_params, policy_module, save_policy
    from metarl.runtime.evaluation import load_run

    check_seed(args.seed)
    out = Path(args.out)
    fmt = args.format or out.suffix.lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"--out {args.out!r}: use .pt2 (torch.export) or .pt (TorchScript), or --format rllib")
    if fmt != "rllib" and out.suffix != f".{fmt}":
        raise ValueError(f"--format {fmt}: --out must end in .{fmt}, got {args.out!r}")
    if fmt == "rllib":
        from metarl.rllib import check_out  # lazy: Ray RLlib only for --format rllib

        check_out(out)  # before adapting: a taken directory should not cost the rollouts
    task = _one_task(args)
    run = load_run(args.run)
    params, steps = export_params(run, task, args.steps, args.episodes, args.seed)
    if fmt == "rllib":
        from metarl.rllib import export_run  # lazy: Ray RLlib only for --format rllib

        out = export_run(run, params, out)
        load = (
            "ray.rllib.core.rl_module.RLModule.from_checkpoint(path), or PPO from "
            "RLModuleSpec(load_state_path=path) with normalize_actions=False"
        )
        outputs = "an RLlib RLModule checkpoint (pickles: for RLlib, not for untrusted exchange)"
    else:
        out = save_policy(policy_module(run.spec, params), run.spec, out)
        load = f"{'torch.export.load(path).module()' if out.suffix == '.pt2' else 'torch.jit.load(path)'}"
        outputs = f"obs {run.spec.obs_dim} -> {'(mean, log_std)' if run.spec.kind == 'gaussian' else '(logits,)'}"
    what = "θ (before adaptation)" if steps == 0 else f"θ' after {steps} inner step{'s' if steps > 1 else ''}"
    where = "" if task is None else f" on {json.dumps(run.env.unwrapped.get_task())}"
    print(f"metarl: wrote {out}: {run.spec.kind} policy, {what}{where}, {outputs}; load with {load}", file=sys.stderr)
    return 0


def _render(args: argparse.Namespace) -> int:
    # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
    from metarl.render import check_video_path, choose_gl_backend

    check_seed(args.seed)
    check_video_path(args.out)
    task = _one_task(args)
    if args.strip_frames < 1 or args.strip_frames > 32:
        raise ValueError(f"--strip-frames {args.strip_frames}: use 1..32 frames per row")
    if args.width < 16 or args.height < 16 or args.width * args.height > 4096 * 4096:
        raise ValueError(f"--width/--height {args.width}x{args.height}: use 16..4096 pixels each")
    choose_gl_backend()  # before mujoco is imported: it reads MUJOCO_GL once

    # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
    from metarl.render import RenderUnavailable, check_gl, render_adaptation
    from metarl.runtime.evaluation import check_counts, load_run

    check_counts(args.steps, args.episodes)
    try:
        check_gl()
        run = load_run(args.run)
        result = render_adaptation(
            run,
            task,
            args.out,
            steps=args.steps,
            episodes=args.episodes,
            seed=args.seed,
            width=args.width,
            height=args.height,
            strip_frames=args.strip_frames,
        )
    except RenderUnavailable as exc:
        print(f"metarl: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    success = ""
    if result["success_before"] is not None:
        success = f"; success {result['success_before']} before, {result['success_after']} after"
    drawn = " (drawn from the evaluation split)" if task is None else ""
    per_row = " per row" if args.out.lower().endswith(".png") else ""
    print(
        f"metarl: wrote {result['out']}: {result['frames']} frames{per_row}; "
        f"return {result['return_before']:.2f} before, {result['return_after']:.2f} after {args.steps} inner step(s)"
        f"{success} on {json.dumps(result['task'])}{drawn}",
        file=sys.stderr,
    )
    return 0


def _config(args: argparse.Namespace) -> int:
    if args.keys:
        rows = describe_keys()
        if args.json:
            print(json.dumps(rows, default=str))
            return 0
        # a commented YAML of the defaults, one line per key, in its section (lists in flow style): copy it into
        # a config
        sections = set()
        for row in rows:
            section, _, name = row["key"].rpartition(".")
            indent = "  " if section else ""
            if section and section not in sections:
                sections.add(section)
                print(f"# {Config.model_fields[section].description}\n{section}:")
            line = dump_yaml({name: row["default"]}).rstrip()
            allowed = f"; {row['allowed']}" if row["allowed"] else ""
            print(f"{indent}# {row['help']} ({row['type']}{allowed})\n{indent}{line}")
        return 0
    if args.config is None:
        cfg = Config.from_dict(apply_overrides({}, args.set or []), source="defaults")
    else:
        cfg = Config.load(args.config, args.set or [])
    if args.json:
        print(json.dumps(cfg.to_dict()))
    elif args.nested:  # every collection as a block
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip())
    else:
        print(cfg.to_yaml().rstrip())
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``metarl: error: ...``) and exit status 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        return super().parse_known_args(_split_repeated(sys.argv[1:] if args is None else list(args)), namespace)


# Flags that take one value per occurrence but may be followed by more values of the same kind:
# ``--set a=1 b=2 CONFIG`` reads as ``--set a=1 --set b=2 CONFIG``, so a positional after them is kept.
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_REPEATABLE = {
    "--set": re.compile(r"^[^-=][^=]*=.*$", re.S),
    "--goal": re.compile(rf"^{_NUMBER}(?:,{_NUMBER})*$"),
}


def _split_repeated(argv: list[str]) -> list[str]:
    """Give each value after ``--set`` / ``--goal`` its own flag while the values look like theirs.

    The first value is always the flag's (argparse and the parsers check it); following ones
    are taken only while they look like ``key=value`` or ``X,Y``.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        out.append(token)
        i += 1
        if token == "--":
            out += argv[i:]
            break
        flag, attached, _ = token.partition("=")
        looks = _REPEATABLE.get(flag)
        if looks is None:
            continue
        if not attached and i < len(argv):
            out.append(argv[i])
            i += 1
        while i < len(argv) and looks.match(argv[i]):
            out += [flag, argv[i]]
            i += 1
    return out


def _one_line(message: object) -> str:
    return " ".join(str(message).split())[:1000]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="metarl", description="Distributed gradient-based meta-RL (MAML, Meta-SGD).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"metarl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    set_help = (
        "override a config key: --set inner_lr=1e-2 --set trpo.max_kl=0.02 --set env_kwargs.action_mode=scale "
        "(values are YAML; dotted keys reach into sections and mappings; repeatable, also --set a=1 b=2)"
    )

    train = sub.add_parser("train", help="meta-train a policy from a YAML config")
    train.add_argument("config", help="YAML config, e.g. configs/navigation2d-metasgd.yaml")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    train.add_argument("--out", help="run directory (default: runs/<config>-<time>)")
    train.add_argument("--address", help="Ray cluster to join (e.g. auto); default: start a local Ray")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    bench = sub.add_parser("benchmark", help="time meta-iterations of a protocol and report where time goes")
    bench.add_argument("config", nargs="?", default="configs/navigation2d-metasgd.yaml")
    bench.add_argument("--iterations", type=int, default=5, help="timed iterations (median reported)")
    bench.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    bench.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    bench.add_argument("--workers", help="comma-separated worker counts to compare, e.g. 1,2")
    bench.add_argument(
        "--threads",
        choices=("default", "1", "both"),
        default="both",
        help="learner torch threads: all cores (default), one, or compare both",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--learner-only",
        metavar="OBS,ACT,HORIZON",
        help="time only the learner on synthetic rollouts of this shape (e.g. 17,6,200 for HalfCheetah)",
    )
    bench.set_defaults(func=_benchmark)

    sweep = sub.add_parser("sweep", help="grid search with Ray Tune (one trial = one training run)")
    sweep.add_argument("config", help="YAML config, the base of every trial")
    sweep.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2",
        help="values of one key to search (repeatable; the grid is their product), e.g. --grid inner_lr=0.05,0.1",
    )
    sweep.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help + "; for every trial")
    sweep.add_argument("--iterations", type=int, help="meta-iterations per trial (default: the config's)")
    sweep.add_argument("--out", help="experiment directory (default: runs/<config>-sweep-<time>)")
    sweep.add_argument(
        "--max-failures", type=int, default=0, help="restarts of a failed trial from its last checkpoint"
    )
    sweep.add_argument("--address", help="Ray cluster to join (e.g. auto); default: start a local Ray")
    sweep.add_argument("--json", action="store_true", help="print the per-trial summary as JSON")
    sweep.add_argument("--quiet", action="store_true", help="no Tune progress tables")
    sweep.set_defaults(func=_sweep)

    conf = sub.add_parser("config", help="print the resolved config (YAML), or every key with its default and help")
    conf.add_argument("config", nargs="?", help="YAML config (default: the built-in defaults)")
    conf.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    conf.add_argument(
        "--keys", action="store_true", help="list every key with its type, default, allowed values and help"
    )
    conf.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    conf.add_argument(
        "--nested",
        action="store_true",
        help="print every list as a YAML block too (the keys are in their sections either way, as runs write them)",
    )
    conf.set_defaults(func=_config)

    # "-0.3,0.2" is a goal, not an option (argparse < 3.13 only knows plain negative numbers)
    goal_args = re.compile(r"^-\.?\d")
    goal_help = (
        "a goal as comma-separated numbers, typed as written (GridNavigation: --goal 2,3); "
        "repeatable, also --goal 0.3,-0.2 -0.4,0.1"
    )
    task_help = """a task of any family as JSON, e.g. --task '{"velocity": 1.5}' (repeatable)"""
    trust_help = (
        "allow a checkpoint whose config names its env as module:id to import that module "
        "(never done on a checkpoint's word alone)"
    )
    ev = sub.add_parser("evaluate", help="adapt a trained policy to new goals and report return per inner step")
    ev._negative_number_matcher = goal_args
    ev.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="run directory (its latest checkpoint) or checkpoint file")
    ev.add_argument("--goal", action="append", metavar="X,Y", help=goal_help)
    ev.add_argument("--task", action="append", metavar="JSON", help=task_help)
    ev.add_argument("--tasks", type=int, help="number of freshly sampled tasks when no --goal is given (default 40)")
    ev.add_argument(
        "--steps", type=int, default=3, help="inner steps K; returns are reported after 0..K steps (default 3)"
    )
    ev.add_argument(
        "--episodes", type=int, help="trajectories per task and step (default: the run's episodes_per_task)"
    )
    ev.add_argument("--seed", type=int, default=0, help="seed for sampled tasks and action noise (default 0)")
    ev.add_argument(
        "--alpha-scales",
        metavar="S1,S2,...",
        help="multiplier on the run's α for inner steps 1, 2, ... "
        "(the last repeats); the MAML paper's test protocol is 1,0.5 (default 1)",
    )
    ev.add_argument(
        "--step-sizes",
        metavar="A1,A2,...",
        help="absolute inner step sizes for steps 1, 2, ... (fixed-α runs only: maml, reptile); e.g. 0.5,0.25",
    )
    ev.add_argument(
        "--init",
        choices=["run", "random"],
        default="run",
        help="run: the checkpoint's θ (default); random: the θ this run's training started from (a fresh "
        "initialisation from its seed), adapted the same way: the MAML paper's random-init baseline",
    )
    ev.add_argument(
        "--split",
        choices=["train", "test"],
        help="where sampled tasks come from: test (the held-out tasks; the default for Meta-World) or train",
    )
    ev.add_argument(
        "--deterministic", action="store_true", help="also report the mean-action (noiseless) return per step"
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--address", help="Ray cluster to join (e.g. auto); default: start a local Ray")
    ev.add_argument(
        "--local",
        action="store_true",
        help="sample in this process, without Ray (same numbers; skips Ray's start-up for small evaluations)",
    )
    ev.add_argument("--trust-env-module", action="store_true", help=trust_help)
    ev.set_defaults(func=_evaluate)

    export = sub.add_parser("export", help="save the policy (or its adaptation to one task) as a plain PyTorch module")
    export._negative_number_matcher = goal_args
    export.add_argument(
        "run", metavar="RUN_OR_CHECKPOINT", help="run directory (its latest checkpoint) or checkpoint file"
    )
    export.add_argument(
        "--out",
        required=True,
        help="policy.pt2 (torch.export, recommended) or policy.pt (TorchScript); with --format rllib, a new directory",
    )
    export.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        help="pt2, pt (default: --out's extension) or rllib: an "
        "RLlib RLModule checkpoint (PPO's default module) that RLlib keeps training",
    )
    export.add_argument(
        "--task", action="append", metavar="JSON", help="adapt to this task first, e.g. '{\"goal\": [0.3, -0.2]}'"
    )
    export.add_argument("--goal", action="append", metavar="X,Y", help="adapt to this goal first (as --task)")
    export.add_argument("--steps", type=int, help="inner steps of adaptation (default 1 with a task, else 0: θ itself)")
    export.add_argument("--episodes", type=int, help="trajectories per adaptation step (default: the run's)")
    export.add_argument(
        "--seed", type=int, default=0, help="seed of the adaptation rollouts, as metarl evaluate's (default 0)"
    )
    export.set_defaults(func=_export)

    render = sub.add_parser("render", help="video of a MuJoCo policy before and after adapting to a task, side by side")
    render._negative_number_matcher = goal_args
    render.add_argument(
        "run", metavar="RUN_OR_CHECKPOINT", help="run directory (its latest checkpoint) or checkpoint file"
    )
    render.add_argument(
        "--task",
        action="append",
        metavar="JSON",
        help="the task, e.g. '{\"velocity\": 1.5}' (default: one draw from the evaluation split, by --seed)",
    )
    render.add_argument("--goal", action="append", metavar="X,Y", help="the task as a goal (families with goals)")
    render.add_argument(
        "--out", required=True, help="video file: .gif, or .mp4 (needs imageio-ffmpeg); .png: a frame strip"
    )
    render.add_argument(
        "--strip-frames", type=int, default=6, help="frames per row of a .png strip, evenly spaced (default 6)"
    )
    render.add_argument("--steps", type=int, default=1, help="inner steps before the right-hand episode (default 1)")
    render.add_argument("--episodes", type=int, help="trajectories per adaptation step (default: the run's)")
    render.add_argument(
        "--seed", type=int, default=0, help="seed of adaptation and episode resets, as evaluate's (default 0)"
    )
    render.add_argument("--width", type=int, default=320, help="pixels per panel (default 320)")
    render.add_argument("--height", type=int, default=240, help="pixels (default 240)")
    render.set_defaults(func=_render)

    plot = sub.add_parser("plot", help="figures from run directories (PNG, SVG or PDF by --out's extension)")
    figures = plot.add_subparsers(dest="figure", required=True)
    traj = figures.add_parser("trajectories", help="paths before and after each inner step, one panel per goal")
    traj._negative_number_matcher = goal_args
    traj.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or checkpoint files) to compare")
    traj.add_argument("--goal", action="append", metavar="X,Y", help=goal_help)
    traj.add_argument("--task", action="append", metavar="JSON", help=task_help)
    traj.add_argument("--steps", type=int, default=3, help="inner steps K (default 3)")
    traj.add_argument("--episodes", type=int, help="sampled trajectories per adaptation step (default: the run's)")
    traj.add_argument("--seed", type=int, default=0, help="seed for the adaptation rollouts (default 0)")
    traj.add_argument(
        "--alpha-scales",
        metavar="S1,S2,...",
        help="multiplier on each run's α for steps 1, 2, ... (as metarl evaluate; the MAML paper's protocol is 1,0.5)",
    )
    curves = figures.add_parser(
        "curves", help="return before/after adaptation per iteration; seeds of one config aggregated"
    )
    curves.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directories, or folders holding them (sweeps, Tune trials)"
    )
    curves.add_argument(
        "--x", choices=("iteration", "env_steps"), default="iteration", help="x-axis (default iteration)"
    )
    curves.add_argument(
        "--metric",
        choices=("return", "success"),
        default="return",
        help="y-axis: return, or success rate (families that report success: Meta-World)",
    )
    curves.add_argument(
        "--smooth",
        type=int,
        default=1,
        metavar="N",
        help="trailing mean over N iterations per seed before aggregating (default 1: none)",
    )
    alpha = figures.add_parser("alpha", help="distribution of the learned α per layer")
    alpha.add_argument("run", metavar="RUN_OR_CHECKPOINT")
    for p in (traj, curves, alpha):
        p.add_argument("--out", required=True, help="output file: .png, .svg or .pdf")
        p.add_argument("--dpi", type=int, default=100, help="resolution (default 100)")
        p.add_argument("--trust-env-module", action="store_true", help=trust_help)
        p.set_defaults(func=_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.program = argv is None  # the `metarl` program itself, not an in-process call
    logging.basicConfig(level=logging.WARNING, format="metarl: %(levelname)s: %(message)s")
    # A config's env "module:id" may name a module in the working directory (examples/my_task_family.py);
    # Ray actors start there with it on their path. Appended last, so it shadows no installed module.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    if getattr(args, "trust_env_module", False):
        # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
        import metarl.runtime.checkpoint

        metarl.runtime.checkpoint.TRUST_ENV_MODULES = True
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

        # lazy: each command loads only what it uses (torch, Ray), so --help, metarl config and bad input stay fast
        from metarl.runtime.checkpoint import CheckpointError, NonFiniteStateError
        from metarl.runtime.rollout_group import ResourceError
        from metarl.runtime.trainer import RunStoppedError, TrainingDivergedError

        if isinstance(exc, (CheckpointError, yaml.YAMLError)):
            print(f"metarl: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # not the user's input: exit 1, one line
            where = f" writing {exc.filename}" if exc.filename else ""
            print(
                f"metarl: error: no space left on the device{where}; checkpoints are written atomically, so the "
                "last one is whole: free some space and continue with --resume",
                file=sys.stderr,
            )
            return 1
        if isinstance(exc, OSError) and exc.filename is not None:  # a path the user named: exists, read-only, ...
            print(f"metarl: error: {exc.filename}: {_one_line(exc.strerror or exc)}", file=sys.stderr)
            return 2
        if isinstance(exc, (ResourceError, RunStoppedError, TrainingDivergedError, NonFiniteStateError)):
            print(f"metarl: error: {_one_line(exc)}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
