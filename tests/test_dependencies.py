"""What loads when: ``import metarl`` loads neither Ray Tune nor RLlib, ``metarl train`` never loads RLlib, and
only ``metarl export --format rllib`` does (it is RLlib's format). Checked in fresh interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "navigation2d-maml.yaml"
PROBE = """
import json, sys
{body}
print(json.dumps({{m: m in sys.modules for m in ("ray", "ray.tune", "ray.rllib")}}))
"""


def loaded(body: str, cwd, timeout: int = 600) -> dict[str, bool]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_metarl_loads_neither_tune_nor_rllib(tmp_path):
    assert loaded("import metarl, metarl.api, metarl.export, metarl.rllib", tmp_path) == {
        "ray": False,
        "ray.tune": False,
        "ray.rllib": False,
    }


@pytest.mark.parametrize(
    "imports",
    [
        "import metarl\nfrom ray import tune",  # Tune after metarl: the hook
        "from ray import tune\nimport metarl",  # Tune first: at once
        "import metarl.tune",
    ],
)  # Tune's first import is metarl's
def test_tune_names_resolve_without_rllib(tmp_path, imports):
    """Whichever imports Tune first, the names are registered (metarl.tune_names), and no RLlib is loaded."""
    body = (
        imports
        + """
from ray.tune.registry import _global_registry, TRAINABLE_CLASS
assert all(_global_registry.contains(TRAINABLE_CLASS, n) for n in ("metarl/MetaSGD", "metarl/MAML"))
"""
    )
    assert loaded(body, tmp_path) == {"ray": True, "ray.tune": True, "ray.rllib": False}


def test_export_loads_rllib_only_for_the_rllib_format(tmp_path):
    from test_export import fake_run  # tests/ is on sys.path (pytest's rootdir-less import)

    run = fake_run(tmp_path / "run")
    call = "from metarl.cli import main; assert main(['export', {run!r}, '--out', {out!r}{fmt}]) == 0"
    pt2 = loaded(call.format(run=str(run), out=str(tmp_path / "p.pt2"), fmt=""), tmp_path)
    assert pt2["ray.rllib"] is False
    rllib = loaded(call.format(run=str(run), out=str(tmp_path / "p-rllib"), fmt=", '--format', 'rllib'"), tmp_path)
    assert rllib["ray.rllib"] is True


def test_metarl_train_does_not_load_rllib(tmp_path):
    """A whole (tiny) ``metarl train`` in a fresh interpreter: the driver never imports ray.rllib."""
    body = f"""
from metarl.cli import main
rc = main(["train", {str(CONFIG)!r}, "--set", "meta_batch_size=2", "--set", "episodes_per_task=2",
           "--set", "hidden_sizes=[4]", "--set", "iterations=1", "--set", "num_workers=1",
           "--set", "learner_threads=1", "--out", {str(tmp_path / "run")!r}])
assert rc == 0, rc
"""
    assert loaded(body, tmp_path) == {"ray": True, "ray.tune": False, "ray.rllib": False}
