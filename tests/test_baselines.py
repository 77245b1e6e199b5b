"""The MAML paper's two baselines (issue 34 D6), as `metarl evaluate` runs them.

* random initialisation: ``evaluate --init random`` adapts a fresh θ of the run's policy;
* pretrained: ``train --set algorithm=maml inner_lr=0`` is multi-task TRPO (θ' = θ), evaluated
  with absolute step sizes ``evaluate --step-sizes 0.1``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.evaluation import evaluate, load_run, random_init
from metarl.policies import init_params
from test_export import fake_run


def test_random_init_is_the_runs_starting_policy_with_the_initial_alpha(tmp_path):
    run = load_run(fake_run(tmp_path / "run", algorithm="metasgd", inner_lr=0.3, seed=4))
    fresh = random_init(run)
    expected = init_params(run.spec, torch.Generator().manual_seed(4))
    assert fresh.init == "random" and fresh.iteration == 0
    for k, v in expected.items():
        torch.testing.assert_close(fresh.theta[k], v)
        assert not torch.equal(fresh.theta[k], run.theta[k]) or k.endswith("bias")
        torch.testing.assert_close(fresh.alpha[k], torch.full_like(run.alpha[k], 0.3))
    assert not torch.equal(random_init(run, seed=5).theta["layer0.weight"], fresh.theta["layer0.weight"])


def test_random_init_equals_the_learners_initial_theta():
    """The baseline is exactly where meta-training started: the Learner's θ before any update."""
    from metarl.config import Config
    from metarl.learner import Learner
    from metarl.tasks import make_env, policy_spec

    cfg = Config.from_dict({"seed": 3, "hidden_sizes": [8]})
    spec = policy_spec(cfg, make_env(cfg.env, cfg.env_kwargs))
    learner_theta = Learner(cfg, spec).get_theta()
    ours = init_params(spec, torch.Generator().manual_seed(cfg.seed))
    for k, v in ours.items():
        np.testing.assert_array_equal(learner_theta[k], v.numpy())


def test_evaluate_init_random_reports_the_fresh_policy(tmp_path):
    path = fake_run(tmp_path / "run", algorithm="maml")
    kw = dict(num_tasks=3, steps=1, episodes=2, seed=1, local=True)
    trained, fresh = evaluate(path, **kw), evaluate(path, init="random", **kw)
    assert trained["init"] == "run" and fresh["init"] == "random" and fresh["iteration"] == 0
    assert fresh["returns_by_step"] != trained["returns_by_step"]
    assert evaluate(path, init="random", **kw)["returns_by_step"] == fresh["returns_by_step"]  # seeded
    with pytest.raises(ValueError, match="--init"):
        evaluate(path, init="pretrained", **kw)


def test_step_sizes_are_absolute_step_sizes(tmp_path):
    """--step-sizes 0.2 on a run with inner_lr 0.4 equals --alpha-scales 0.5 (same noise, same tasks)."""
    path = fake_run(tmp_path / "run", algorithm="maml", inner_lr=0.4)
    kw = dict(num_tasks=3, steps=2, episodes=2, seed=2, local=True)
    by_size = evaluate(path, step_sizes=[0.2], **kw)
    by_scale = evaluate(path, alpha_scales=[0.5], **kw)
    np.testing.assert_allclose(by_size["returns_by_step"], by_scale["returns_by_step"], rtol=1e-5)
    assert by_size["protocol"]["mean_step_size_by_step"] == pytest.approx([0.2, 0.2])


def test_pretrained_baseline_trains_without_adapting_and_adapts_at_test_time(local_ray, tmp_path):
    """inner_lr 0: θ' = θ, so training is multi-task TRPO on the post phase; the checkpoint then
    adapts with --step-sizes (dividing by inner_lr, as before, would have given inf)."""
    from metarl.config import Config
    from metarl.metrics import read_metrics
    from metarl.trainer import Trainer

    cfg = Config.from_dict(dict(algorithm="maml", inner_lr=0.0, iterations=2, meta_batch_size=4,
                                episodes_per_task=4, hidden_sizes=[8], checkpoint_every=1))
    trainer = Trainer(cfg, tmp_path / "pre")
    try:
        trainer.train()
    finally:
        trainer.close()
    rows = read_metrics(tmp_path / "pre" / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [1, 2] and all(np.isfinite(r["return_post"]) for r in rows)
    run = load_run(tmp_path / "pre")
    assert all(float(a.abs().max()) == 0.0 for a in run.alpha.values())
    kw = dict(num_tasks=3, steps=1, episodes=2, seed=0, local=True)
    adapted = evaluate(tmp_path / "pre", step_sizes=[0.1], **kw)
    assert np.all(np.isfinite(adapted["returns_by_step"]))
    assert adapted["protocol"]["mean_step_size_by_step"] == pytest.approx([0.1])
    unadapted = evaluate(tmp_path / "pre", **kw)  # α = 0: the step leaves θ where it is
    assert unadapted["returns_by_step"][0] == adapted["returns_by_step"][0]
    assert unadapted["returns_by_step"][1] != adapted["returns_by_step"][1]
