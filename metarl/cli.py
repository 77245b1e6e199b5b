"""``metarl`` command line: ``metarl train CONFIG.yaml [--set key=value ...] [--out DIR] [--address ADDR]``.

Bad input ends with one line on stderr and exit status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from metarl.config import ConfigError


def _train(args: argparse.Namespace) -> int:
    from metarl.config import Config

    cfg = Config.load(args.config, args.set or [])
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"

    from tqdm import tqdm

    from metarl.trainer import Trainer

    trainer = Trainer(cfg, out, address=args.address, resume=args.resume)
    print(f"metarl: training {cfg.algorithm} on {cfg.env}, run directory {out}", file=sys.stderr)
    bar = tqdm(total=cfg.iterations, initial=trainer.iteration, desc=cfg.algorithm, unit="it", disable=args.quiet)

    def report(m: dict) -> None:
        bar.set_postfix(pre=f"{m['return_pre']:.2f}", post=f"{m['return_post']:.2f}", s=f"{m['seconds']:.2f}")
        bar.update(1)

    try:
        trainer.train(report)
    finally:
        bar.close()
    trainer.close()
    print(f"metarl: done; metrics in {out / 'metrics.jsonl'}, checkpoints in {out / 'checkpoints'}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarl", description="Distributed gradient-based meta-RL (MAML, Meta-SGD).")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError) as exc:
        if args.debug:
            raise
        print(f"metarl: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug:
            raise
        from metarl.checkpoint import CheckpointError
        from metarl.trainer import ResourceError

        if isinstance(exc, (ResourceError, CheckpointError)):
            print(f"metarl: error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, CheckpointError) else 1
        raise


if __name__ == "__main__":
    sys.exit(main())
