#!/usr/bin/env python3
"""Copy a run directory's resumable core into the repository, so a long run outlives its machine.

Copies ``config.yaml``, ``metrics.jsonl`` and the newest checkpoint (``checkpoint-N.pt`` and the
``.json`` that holds its hash) from RUN to DEST, each written to a temporary name and renamed, and
removes older archived checkpoints. ``metarl train CONFIG --out DEST --resume`` (or a copy of DEST
as ``--out``) then continues the run on any machine. With ``--every S`` it repeats every S seconds
until the run directory's metrics stop growing for an hour (use it beside a background run; started
at the same time as ``metarl train``, it waits up to 10 minutes for the run's config.yaml).

    python scripts/archive_run.py runs/hc-dir-maml-s0 docs/data/locomotion/halfcheetah-dir-maml-seed0 --every 300
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def archive(run: Path, dest: Path) -> str | None:
    """One archive pass; returns the checkpoint archived (None if the run has none yet)."""
    checkpoints = sorted((run / "checkpoints").glob("checkpoint-*.pt"))
    complete = [c for c in checkpoints if c.with_suffix(".json").exists()]  # the .json is written last
    if not complete:
        return None
    newest = complete[-1]
    (dest / "checkpoints").mkdir(parents=True, exist_ok=True)
    _copy(newest, dest / "checkpoints" / newest.name)  # the .pt first, its .json (the hash) last
    _copy(newest.with_suffix(".json"), dest / "checkpoints" / newest.with_suffix(".json").name)
    for name in ("config.yaml", "metrics.jsonl"):
        _copy(run / name, dest / name)
    for old in (dest / "checkpoints").glob("checkpoint-*"):
        if old.stem != newest.stem:
            old.unlink()
    return newest.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--every", type=float, default=0.0, help="repeat every this many seconds")
    args = parser.parse_args()
    if not args.every and not (args.run / "config.yaml").exists():
        parser.error(f"{args.run} is not a run directory (no config.yaml)")
    started = time.time()
    while args.every and not (args.run / "config.yaml").exists():  # started beside `metarl train`: wait for it
        if time.time() - started > 600:
            parser.error(f"{args.run} is not a run directory (no config.yaml after 600 s)")
        time.sleep(5)
    last_size, last_change = -1, time.time()
    while True:
        name = archive(args.run, args.dest)
        print(f"archived {name or 'nothing yet'} -> {args.dest}", flush=True)
        size = (args.run / "metrics.jsonl").stat().st_size if (args.run / "metrics.jsonl").exists() else 0
        if size != last_size:
            last_size, last_change = size, time.time()
        if not args.every or time.time() - last_change > 3600:
            return
        time.sleep(args.every)


if __name__ == "__main__":
    main()
