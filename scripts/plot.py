#!/usr/bin/env python3
"""Thin entry point for `ray submit` / `ray job submit`: ``python scripts/plot.py ARGS`` = ``metarl plot ARGS``.

Forwards its arguments unchanged; `metarl plot --help` lists them.
"""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["plot", *sys.argv[1:]]))
