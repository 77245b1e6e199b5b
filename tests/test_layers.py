"""The layers import one way: the picture at the top of docs/architecture.md is the rule, checked here
against every import in the package (module-level and function-local), plus a fresh interpreter that
imports the core and must load nothing above it."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = {"metarl": REPO / "metarl", "metarl.envs": REPO / "envs"}  # pyproject's package-dir
CORE_THIRD_PARTY = {"torch", "numpy"}
NOT_IN_CORE = ("ray", "pydantic", "yaml", "scipy", "matplotlib", "tensorboardX", "mujoco", "gymnasium.envs.mujoco")


def modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name (the envs subpackage from envs/)."""
    out: dict[str, Path] = {}
    for package, root in SOURCES.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("").parts
            if package == "metarl" and rel[0] == "envs":
                continue
            parts = [package, *rel]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def layers() -> list[tuple[str, list[str]]]:
    """The picture: ``(layer, [module patterns])`` from the top layer down."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers -->\n(.*?)<!-- /layers -->", text, re.S)
    assert block, "docs/architecture.md has no <!-- layers --> picture"
    out = []
    for line in block.group(1).splitlines():
        m = re.fullmatch(r"    ([a-z]+) +((?:metarl\S*\s*)+)", line)  # "    layer   module module ..."
        if m:
            out.append((m.group(1), m.group(2).split()))
    return out


def layer_of(name: str, picture: list[tuple[str, list[str]]]) -> int | None:
    """Index from the bottom (core = 0); an explicit module name wins over a ``package.*`` pattern."""
    depth = len(picture)
    for exact in (True, False):
        for i, (_, patterns) in enumerate(picture):
            for p in patterns:
                if (exact and p == name) or (not exact and p.endswith(".*") and (name + ".").startswith(p[:-1])):
                    return depth - 1 - i
    return None


def imports(path: Path, name: str, known: set[str]) -> list[tuple[int, str, bool]]:
    """``(line, imported metarl module, inside a function)`` for every import of a metarl module that runs
    (``if TYPE_CHECKING:`` imports are left out)."""
    tree = ast.parse(path.read_text())
    local = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    typing_only = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.If) and "TYPE_CHECKING" in ast.unparse(f.test)
        for n in ast.walk(f)
    }  # annotations only: never executed
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            if t == "metarl" or t.startswith("metarl."):
                while t not in known:  # `import metarl.envs.tasks.x` style attribute paths
                    t = t.rpartition(".")[0]
                out.append((node.lineno, t, id(node) in local))
    return out


def test_the_picture_covers_every_module_once():
    picture, names = layers(), modules()
    assert [layer for layer, _ in picture] == ["surfaces", "runtime", "config", "envs", "core"]
    unplaced = [n for n in names if layer_of(n, picture) is None]
    assert not unplaced, f"modules missing from the picture in docs/architecture.md: {unplaced}"
    for _, patterns in picture:
        for p in patterns:
            assert p in names or (p.endswith(".*") and p[:-2] in names), f"the picture names {p}, which does not exist"


def test_imports_point_down_only():
    picture, names = layers(), modules()
    upward = []
    for name, path in names.items():
        for line, target, _ in imports(path, name, set(names)):
            if layer_of(target, picture) > layer_of(name, picture):
                upward.append(f"{path.relative_to(REPO)}:{line} ({name}) imports {target}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_circles():
    names = modules()
    graph = {n: {t for _, t, _ in imports(p, n, set(names)) if t != n} for n, p in names.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(m) :] + [m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_function_local_imports_say_why():
    """An import inside a function is allowed only to put off a heavy or optional dependency, and says so
    (``# lazy: why`` on the import's line or the comment line above its block)."""
    silent = []
    for _name, path in modules().items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for f in ast.walk(tree):
            if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(f):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    j = node.lineno - 1
                    while j > 0 and re.match(r"\s*(import |from \S+ import |$)", lines[j - 1]):
                        j -= 1  # the top of this block of imports
                    if "lazy:" not in lines[node.lineno - 1] and "lazy:" not in lines[j - 1]:
                        silent.append(f"{path.relative_to(REPO)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not silent, "function-local imports without a `# lazy:` reason:\n" + "\n".join(sorted(set(silent)))


def test_core_imports_only_torch_numpy_and_itself():
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for name, path in modules().items():
        if not (name == "metarl.core" or name.startswith("metarl.core.")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            roots = []
            if isinstance(node, ast.Import):
                roots = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = [node.module or ""]
            for r in roots:
                top = r.split(".")[0]
                if top not in stdlib and top not in CORE_THIRD_PARTY and not r.startswith("metarl.core"):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno} imports {r}")
    assert not bad, "the core is torch + numpy only:\n" + "\n".join(bad)


def _loaded(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=120,
    )
    return json.loads(out.stdout.splitlines()[-1])


def test_the_core_imports_alone():
    """A fresh interpreter imports every core module; nothing of metarl above the core may load, beyond
    what ``import metarl`` itself does (register the task families), and no config, Ray or plotting library."""
    core = sorted(n for n in modules() if n.startswith("metarl.core."))
    loaded = _loaded("import importlib\n" + "\n".join(f"importlib.import_module({n!r})" for n in core))
    baseline = set(_loaded("import metarl"))
    picture = layers()
    assert all(layer_of(n, picture) <= 1 for n in baseline if n.startswith("metarl")), (
        "import metarl loads more than envs"
    )
    above = [n for n in loaded if n.startswith("metarl") and n not in baseline and not n.startswith("metarl.core")]
    assert not above, f"importing the core loaded {above}"
    heavy = [n for n in loaded if n.split(".")[0] in NOT_IN_CORE or n in NOT_IN_CORE]
    assert not heavy, f"importing the core loaded {heavy}"
    assert set(core) <= set(loaded)


def test_the_trainer_reads_as_the_algorithm():
    """Issue 30: the Trainer is at most 150 lines and its docstring is the pseudocode of one iteration,
    naming where each line happens; the failure rules live in runtime/supervision.py."""
    import ast
    import inspect

    from metarl.runtime import trainer

    tree = ast.parse(inspect.getsource(trainer))
    (cls,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Trainer"]
    assert cls.end_lineno - cls.lineno + 1 <= 150
    doc = ast.get_docstring(cls)
    for step in ("sample_tasks", "learner.adapt", 'phase "post"', "learner.meta_update", "meta.alpha.assign"):
        assert step in doc
    assert "except" not in ast.unparse(cls).split("def _train_iteration", 1)[1]  # no failure handling in the loop
