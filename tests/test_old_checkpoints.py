"""Checkpoints written before the layers refactor (issue 30) still resume and evaluate.

``docs/data/old-checkpoints/*`` were written by main at a0b462c, the commit before the refactor, with
``docs/data/old-checkpoints/make.sh``: three tiny 2D-navigation runs whose optimizer states are of the
three kinds (TRPO with Adam on α: torch's Adam state under ``alpha_adam``; Adam on (θ, α): torch's state
dict itself; Reptile's update counter), kept at checkpoint 2. ``expected-iteration-3.json`` is the
iteration 3 that code computed from there. ``docs/data/locomotion/halfcheetah-dir-maml-seed0`` is the
archived paper-protocol run (copied, never changed in place).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from metarl.config import Config
from metarl.runtime.checkpoint import load_checkpoint
from metarl.runtime.evaluation import evaluate, load_run
from metarl.runtime.learner import Learner
from metarl.runtime.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
OLD = REPO / "docs" / "data" / "old-checkpoints"
ARCHIVE = REPO / "docs" / "data" / "locomotion" / "halfcheetah-dir-maml-seed0"


@pytest.mark.parametrize("name", ["metasgd-alpha-adam", "maml-adam", "reptile"])
def test_an_old_checkpoint_resumes_into_the_iteration_the_old_code_computed(name, tmp_path, local_ray):
    run = tmp_path / name
    shutil.copytree(OLD / name, run)
    trainer = Trainer(Config.load(run / "config.yaml"), run, resume=True)
    try:
        assert trainer.iteration == 2
        row = trainer.train_iteration()
    finally:
        trainer.close()
    expected = json.loads((OLD / name / "expected-iteration-3.json").read_text())
    assert row["iteration"] == 3
    for key in ("return_pre", "return_post", "env_steps"):  # sampled from the checkpoint's θ, α and task RNG
        assert row[key] == expected[key], key
    # the meta-update continues from the checkpoint's optimizer state (Adam's moments, Reptile's annealing)
    for key in ("outer/loss_before", "outer/loss_after", "outer/kl", "outer/grad_norm", "alpha/mean"):
        assert row[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-8), key
    assert row["outer/accepted"] == expected["outer/accepted"]


def test_the_archived_halfcheetah_run_loads_resumes_and_evaluates(tmp_path, local_ray):
    run = tmp_path / "halfcheetah-dir-maml-seed0"
    shutil.copytree(ARCHIVE, run)
    trained = load_run(run)
    report = evaluate(trained, num_tasks=1, steps=1, episodes=1, local=True)
    assert report["iteration"] == trained.iteration > 0
    assert len(report["returns_by_step"]) == 2 and all(math.isfinite(r) for r in report["returns_by_step"])

    threads = torch.get_num_threads()
    try:
        learner = Learner(trained.cfg, trained.spec)
        learner.load_state_dict(load_checkpoint(trained.checkpoint))
    finally:
        torch.set_num_threads(threads)  # the learner sets its own thread count
    assert all(torch.equal(learner.meta.theta[k].detach(), v.to(learner.dtype)) for k, v in trained.theta.items())

    # a resume on this machine (fewer rollout workers: a key that may change on resume) restores the iteration
    cfg = Config.load(run / "config.yaml", ["num_workers=1", "worker_cpus=1", "learner_cpus=1"])
    trainer = Trainer(cfg, run, resume=True)
    try:
        assert trainer.iteration == trained.iteration
    finally:
        trainer.close()
