#!/usr/bin/env python3
"""Thin entry point for `ray submit` / `ray job submit`: ``python scripts/sweep.py ARGS`` = ``metarl sweep ARGS``.

    python scripts/sweep.py configs/navigation2d-metasgd.yaml --grid inner_lr=0.05,0.1 --grid seed=0,1 --iterations 50
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python scripts/sweep.py configs/navigation2d-metasgd.yaml --grid inner_lr=0.05,0.1 --address auto
"""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
