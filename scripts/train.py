#!/usr/bin/env python3
r"""Thin entry point for `ray submit` / `ray job submit`: ``python scripts/train.py ARGS`` = ``metarl train ARGS``.

ray submit cluster.yaml scripts/train.py ~/metarl/configs/navigation2d-metasgd.yaml \
    --address auto --out /home/ubuntu/runs/nav
ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
    python scripts/train.py configs/navigation2d-metasgd.yaml --address auto
"""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
