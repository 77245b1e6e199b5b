#!/usr/bin/env python3
"""Learning studies (metarl.study): train a (variant × seed) matrix, evaluate it, print the tables.

    python scripts/study.py train    --study paper --seeds 0-4 --runs runs/study-paper --parallel 2
    python scripts/study.py evaluate --study paper --seeds 0-4 --runs runs/study-paper --protocols maml-paper,metasgd-paper
    python scripts/study.py report   --study paper --seeds 0-4 --runs runs/study-paper --protocols maml-paper,metasgd-paper
    python scripts/study.py report   --study peer --seeds 1-3 --runs runs/study-peer --protocols peer --peer-runs PEER_RUNS
    python scripts/study.py archive  --study paper --seeds 0-4 --runs runs/study-paper --to docs/data/study-paper
    python scripts/study.py report   --study paper --seeds 0-4 --runs docs/data/study-paper   # the same tables
    (archive --peer-runs PEER_RUNS puts the peer's runs under --to/pytorch-maml-rl, for report --peer-runs)

Each stage skips what is done, so a stopped study continues where it stopped (runs resume from
their newest checkpoint). ``--variants a,b`` restricts a study to some of its variants.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metarl import study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("train", "evaluate", "report", "archive"))
    parser.add_argument("--study", required=True, choices=sorted(study.STUDIES))
    parser.add_argument("--variants", help="comma-separated subset of the study's variants")
    parser.add_argument("--seeds", type=study.parse_seeds, default=[0, 1, 2, 3, 4], help="e.g. 0-4 or 1,2,3")
    parser.add_argument("--runs", type=Path, required=True, help="directory of the study's runs")
    parser.add_argument("--parallel", type=int, default=1, help="training runs at a time (each with one learner thread)")
    parser.add_argument("--protocols", default="maml-paper,metasgd-paper", help=f"of {', '.join(study.PROTOCOLS)}")
    parser.add_argument("--to", type=Path, help="archive: where the summaries and evaluations go (e.g. docs/data/study-paper)")
    parser.add_argument("--peer-runs", type=Path, help="report, archive: pytorch-maml-rl runs of the peer harness, seed<N>/ each")
    args = parser.parse_args()
    variants = study.STUDIES[args.study]
    if args.variants:
        wanted = args.variants.split(",")
        unknown = set(wanted) - {v.name for v in variants}
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}; the study has {[v.name for v in variants]}")
        variants = [v for v in variants if v.name in wanted]
    protocols = [study.PROTOCOLS[p] for p in args.protocols.split(",")]
    if args.stage == "train":
        study.train(args.runs, variants, args.seeds, args.parallel)
    elif args.stage == "evaluate":
        study.evaluate(args.runs, variants, args.seeds, protocols)
    elif args.stage == "archive":
        if args.to is None:
            parser.error("archive needs --to DIR (where the summaries and evaluations go)")
        written = study.archive(args.runs, variants, args.seeds, args.to)
        if args.peer_runs:
            written += study.archive_peer(args.peer_runs, args.seeds, args.to / "pytorch-maml-rl")
        print(f"{len(written)} files written under {args.to}")
    else:
        print(study.report(args.runs, variants, args.seeds, protocols, args.peer_runs))


if __name__ == "__main__":
    main()
