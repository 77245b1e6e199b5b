"""End-to-end training on a local Ray: learning, outputs, α behaviour, checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import ray
import torch
import yaml
from conftest import ray_leftovers  # tests/ is on sys.path (pytest rootdir-less import)
from ray.util.placement_group import placement_group, remove_placement_group

from metarl.config import Config
from metarl.runtime.checkpoint import list_checkpoints, load_checkpoint
from metarl.runtime.metrics import read_metrics
from metarl.runtime.trainer import Trainer

SMALL = dict(meta_batch_size=10, episodes_per_task=10, hidden_sizes=[32, 32], checkpoint_every=5)


def _train(tmp_path, **overrides):
    cfg = Config.from_dict({**SMALL, **overrides})
    trainer = Trainer(cfg, tmp_path)
    try:
        history = trainer.train()
    finally:
        trainer.close()
    return history


def test_the_shared_rays_leftover_check_sees_actors_and_placement_groups(local_ray):
    """What conftest checks after every test on the shared Ray (a trainer's close() included) is not vacuous."""

    class _Idle:  # defined here, so Ray ships it by value (workers cannot import this test module)
        def ping(self) -> bool:
            return True

    group = placement_group([{"CPU": 0.01}], name="leftover-check")
    actor = ray.remote(num_cpus=0)(_Idle).remote()
    try:
        assert ray.get(actor.ping.remote()) and group.wait(60)
        left = ray_leftovers(timeout=0)
        assert any(x.startswith("actor ") and x.endswith("_Idle (ALIVE)") for x in left), left
        assert "placement group leftover-check (CREATED)" in left, left
    finally:
        ray.kill(actor)
        remove_placement_group(group)
    assert ray_leftovers() == []


def test_metasgd_learns_2d_navigation(local_ray, tmp_path):
    """Reduced but honest protocol: 10 tasks × 10 episodes × 100 steps, second-order TRPO.

    A random-init policy scores about −90 to −100 (saturated actions drift away from the
    goal); iteration-to-iteration noise from task sampling is roughly ±10, so we compare
    5-iteration averages. Observed here: last-5 post ≈ −20, pre ≈ −40 after 20 iterations.
    The margins (25 post, 15 pre, 5 post-vs-pre) are a third to a half of what we observe.
    """
    history = _train(tmp_path, iterations=20, seed=0)
    pre = np.array([m["return_pre"] for m in history])
    post = np.array([m["return_post"] for m in history])
    assert post[-5:].mean() > pre[-5:].mean() + 5, (pre[-5:], post[-5:])
    assert post[-5:].mean() > post[0] + 25, post
    assert pre[-5:].mean() > pre[0] + 15, pre
    alpha = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[-1])["alpha"]
    flat = torch.cat([a.reshape(-1) for a in alpha.values()])
    assert (flat - 0.1).abs().max() > 1e-2, "learned α should move away from its initial value"


def test_run_directory_outputs_and_maml_alpha_fixed(local_ray, tmp_path):
    history = _train(
        tmp_path,
        algorithm="maml",
        iterations=2,
        checkpoint_every=1,
        meta_batch_size=4,
        episodes_per_task=4,
        hidden_sizes=[8],
    )
    resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert resolved["algorithm"] == "maml" and resolved["iterations"] == 2
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("iteration", "return_pre", "return_post", "env_steps", "seconds"):
            assert key in r and np.isfinite(r[key])
    assert rows[1]["env_steps"] > rows[0]["env_steps"] > 0
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in ckpts] == ["checkpoint-000001.pt", "checkpoint-000002.pt"]
    state = load_checkpoint(ckpts[-1])
    assert state["iteration"] == 2
    assert json.loads(state["config"])["algorithm"] == "maml"
    assert set(state["theta"]) == {"layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias", "log_std"}
    assert all(torch.equal(a, torch.tensor(0.1, dtype=a.dtype)) for a in state["alpha"].values()), "MAML keeps α fixed"
    assert "rng_state" in state and history[-1]["iteration"] == 2


def test_cli_rejects_bad_key_with_one_line_and_status_2(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "metarl.cli",
            "train",
            "configs/navigation2d-metasgd.yaml",
            "--set",
            "inner_lrr=0.2",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "inner_lrr" in lines[0] and "inner_lr" in lines[0].split("did you mean")[1]
    assert not (tmp_path / "run").exists(), "nothing is created for a rejected config"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("algorithm=reptil", "choose one of"),
        ("meta_batch_size=0", ">= 1"),
        ("inner_lr=.nan", "finite"),
        ("device=tpu", "auto, cpu, cuda"),
        ("env=metarl/Navigation3D-v0", "did you mean"),
        ("hidden_sizes=[0]", "positive"),
    ],
)
def test_cli_bad_values(tmp_path, override, fragment):
    proc = subprocess.run(
        [sys.executable, "-m", "metarl.cli", "train", "configs/navigation2d-maml.yaml", "--set", override],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and fragment in proc.stderr, proc.stderr
