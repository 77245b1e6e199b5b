"""Evaluation of a trained run on new goals: report shape, determinism, step-by-step adaptation, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import ray
import torch

from metarl.cli import main
from metarl.config import Config
from metarl.core.adaptation import adapt, expand_to_tasks
from metarl.runtime.evaluation import (
    evaluate,
    format_report,
    inner_step,
    load_run,
    noise_seed,
    parse_goal,
    resolve_tasks,
)
from metarl.runtime.trainer import Trainer

GOALS = [[0.3, -0.2], [-0.4, 0.1], [0.0, 0.45]]
TINY = dict(iterations=2, meta_batch_size=4, episodes_per_task=4, hidden_sizes=[8], checkpoint_every=1)


@pytest.fixture(scope="module")
def run_dir(local_ray, tmp_path_factory):
    """A tiny Meta-SGD run, trained once for the module on the shared local Ray."""
    out = tmp_path_factory.mktemp("run")
    trainer = Trainer(Config.from_dict(TINY), out)
    try:
        trainer.train()
    finally:
        trainer.close()
    return out


def _check_report(result: dict, goals: list, steps: int) -> None:
    assert len(result["returns_by_step"]) == steps + 1
    assert len(result["ci95_by_step"]) == steps + 1
    assert all(math.isfinite(x) for x in result["returns_by_step"])
    assert all(ci is not None and math.isfinite(ci) and ci >= 0 for ci in result["ci95_by_step"])
    assert len(result["per_task"]) == len(goals)
    for row, goal in zip(result["per_task"], goals):
        assert row["task"] == {"goal": goal}
        assert len(row["returns_by_step"]) == steps + 1 and all(math.isfinite(x) for x in row["returns_by_step"])
    per_task = np.array([row["returns_by_step"] for row in result["per_task"]])
    np.testing.assert_allclose(per_task.mean(axis=0), result["returns_by_step"], rtol=1e-9)
    # Navigation2D: reward is −distance ≥ −(√2·0.5 + 100·0.1·√2) per step over 100 steps
    assert all(-1500 < x <= 0 for x in result["returns_by_step"])


def test_evaluate_on_ray_reports_every_step(run_dir):
    result = evaluate(run_dir, goals=GOALS, steps=2, episodes=3, seed=1)
    _check_report(result, GOALS, steps=2)
    assert result["iteration"] == 2 and result["algorithm"] == "metasgd" and result["episodes"] == 3
    assert result["checkpoint"].endswith("checkpoint-000002.pt")


def test_same_numbers_in_process_and_independent_of_k(run_dir):
    """Per-(step, task) noise seeds: Ray actors vs in-process, and K=1 vs K=2, agree exactly."""
    on_ray = evaluate(run_dir, goals=GOALS, steps=2, episodes=3, seed=1, num_workers=2)
    local = evaluate(run_dir, goals=GOALS, steps=1, episodes=3, seed=1, local=True)
    np.testing.assert_allclose(local["returns_by_step"], on_ray["returns_by_step"][:2], rtol=1e-6)
    other_seed = evaluate(run_dir, goals=GOALS, steps=1, episodes=3, seed=2, local=True)
    assert other_seed["returns_by_step"] != local["returns_by_step"]


def test_sampled_tasks_are_new_and_reproducible(run_dir):
    run = load_run(run_dir)
    a, b = resolve_tasks(run, None, 5, seed=0), resolve_tasks(run, None, 5, seed=0)
    assert a == b and len(a) == 5
    training_first = run.env.unwrapped.sample_tasks(5, np.random.default_rng(0))  # training's stream, seed 0
    assert a != training_first
    assert noise_seed(0, 1, 2) == noise_seed(0, 1, 2) != noise_seed(0, 2, 1)


@pytest.mark.parametrize("metasgd", [False, True])
def test_inner_step_matches_adapt_then_continues_per_task(tiny, metasgd):
    spec, theta, pre, post = tiny
    theta = {k: v.detach() for k, v in theta.items()}
    gen = torch.Generator().manual_seed(3)
    alpha = {
        k: (0.05 + 0.1 * torch.rand(v.shape, generator=gen, dtype=v.dtype))
        if metasgd
        else torch.tensor(0.1, dtype=v.dtype)
        for k, v in theta.items()
    }
    one = inner_step(spec, expand_to_tasks(theta, pre.num_tasks), alpha, pre)
    reference = adapt(
        spec, {k: v.clone().requires_grad_() for k, v in theta.items()}, alpha, pre, steps=1, create_graph=False
    )
    for k in theta:
        torch.testing.assert_close(one[k], reference[k].detach())
    # a second step starts from each task's own φ¹ (a (T, …) stack), on the new batch
    two = inner_step(spec, one, alpha, post)
    assert all(two[k].shape == one[k].shape for k in theta)
    assert any(not torch.equal(two[k], one[k]) for k in theta)


def test_cli_json_on_explicit_goals(run_dir, capsys):
    """`metarl evaluate RUN --goal … --json` prints one JSON object (here on this module's Ray)."""
    argv = [
        "evaluate",
        str(run_dir),
        "--goal",
        "0.3,-0.2",
        "-0.4,0.1",
        "--goal",
        "0.0,0.45",
        "--steps",
        "2",
        "--episodes",
        "3",
        "--seed",
        "1",
        "--json",
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    _check_report(result, GOALS, steps=2)
    assert ray.is_initialized(), "the CLI must not shut down a Ray it did not start"


def test_table_and_checkpoint_file(run_dir):
    ckpt = run_dir / "checkpoints" / "checkpoint-000001.pt"
    result = evaluate(ckpt, goals=[[-0.3, 0.2]], steps=1, episodes=2, local=True)
    assert result["iteration"] == 1 and result["ci95_by_step"] == [None, None], "no interval from one task"
    lines = format_report(result).splitlines()
    assert "iteration 1" in lines[0] and "α scale per step: 1" in lines[1]
    assert len(lines) == 3 + 2 and lines[-1].strip().endswith("n/a")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["evaluate", "{missing}", "--goal", "0.1,0.1"], "no checkpoint found"),
        (["evaluate", "{run}", "--goal", "0.1;0.2"], "comma-separated numbers"),
        (["evaluate", "{run}", "--goal", "0.1,0.2,0.3"], "shape (2,)"),
        (["evaluate", "{run}", "--goal", "0.9,0.1"], "[-0.5, 0.5]"),
        (["evaluate", "{run}", "--goal", "0.1,0.1", "--tasks", "3"], "not both"),
        (["evaluate", "{run}", "--steps", "-1"], "--steps"),
    ],
)
def test_cli_bad_input_is_one_line_and_status_2(run_dir, tmp_path, capsys, argv, fragment):
    argv = [a.format(missing=tmp_path / "no-such-run", run=run_dir) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_parse_goal():
    assert parse_goal("-0.3,0.25") == [-0.3, 0.25]
    for bad in ("", "a,b", "1,,2", "inf,0"):
        with pytest.raises(ValueError):
            parse_goal(bad)
