#!/usr/bin/env python3
"""Thin entry point for `ray submit` / `ray job submit`: ``python scripts/evaluate.py ARGS`` = ``metarl evaluate ARGS``.

Forwards its arguments unchanged; `metarl evaluate --help` lists them.
"""

import sys

from metarl.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
