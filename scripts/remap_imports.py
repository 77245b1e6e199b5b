#!/usr/bin/env python3
"""Rewrite the module paths of before the layers (issue 30) to the layered ones, in place.

    python scripts/remap_imports.py $(git ls-files '*.py' '*.md')

For merging a branch that was started before the refactor: ``metarl.trainer`` becomes
``metarl.runtime.trainer``, ``metarl.policies`` ``metarl.core.policies``, ``metarl.tasks``
``metarl.envs.tasks``, ``metarl/study.py`` ``scripts/study.py`` (and the same for file paths in docs).
Files under docs/data are archives: leave them out. Code already in the layers is left as it is (running it twice
changes nothing).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

CORE = ("policies", "alpha", "adaptation", "advantages", "batch", "meta_update")
RUNTIME = ("workers", "rollouts", "rollout_group", "learner", "trainer", "checkpoint", "rundir", "metrics", "signals",
           "watchdog", "evaluation", "pids")  # fmt: skip
RUNTIME_PACKAGE = {*RUNTIME, "actor_env", "stats"}  # the modules of today's metarl/runtime/


def _old_runtime(match: re.Match) -> str:
    """``metarl.runtime`` that names the old module metarl/runtime.py, not today's package: an import of
    names that are not the package's modules (``from metarl.runtime import rundir`` stays)."""
    names = match.group("names")
    if names is not None and all(n.split(" as ")[0].strip() in RUNTIME_PACKAGE for n in names.strip("()").split(",")):
        return match.group(0)
    return match.group(0).replace("metarl.runtime", "metarl.runtime.actor_env", 1)


def remap(text: str) -> str:
    # the old metarl/runtime.py; idempotent: the package's own imports and its name in quotes are left alone
    text = re.sub(r"\bmetarl\.runtime\b(?![.\w\"])(?: import (?P<names>\([^)]*\)|[^\n]*))?", _old_runtime, text)
    text = text.replace("metarl/runtime.py", "metarl/runtime/actor_env.py")
    for layer, names in (("core", CORE), ("runtime", RUNTIME)):
        for m in names:
            text = re.sub(rf"\bmetarl\.{m}\b", f"metarl.{layer}.{m}", text)
            text = re.sub(rf"\bmetarl/{m}\.py\b", f"metarl/{layer}/{m}.py", text)
    text = re.sub(r"\bmetarl\.tasks\b", "metarl.envs.tasks", text)
    text = re.sub(r"\bmetarl/tasks\.py\b", "envs/tasks.py", text)
    text = re.sub(r"\bmetarl/study\.py\b", "scripts/study.py", text)
    text = re.sub(r"from metarl import (checkpoint|rundir|pids)\b", r"from metarl.runtime import \1", text)
    return re.sub(r"from metarl import meta_update\b", "from metarl.core import meta_update", text)


def main() -> None:
    for name in sys.argv[1:]:
        path = Path(name)
        if path.resolve() == Path(__file__).resolve():
            continue  # its own patterns name the old paths
        old = path.read_text()
        new = remap(old)
        if new != old:
            path.write_text(new)
            print(f"rewrote {path}")


if __name__ == "__main__":
    main()
