"""Reptile and the learned step-size family (scalar / per-layer / per-parameter α)."""

from __future__ import annotations

import pytest
import torch

from metarl.config import Config
from metarl.core.adaptation import inner_losses
from metarl.core.alpha import Alpha
from metarl.core.meta_update import MetaObjective, MetaParameters, Reptile, _flat
from metarl.runtime.learner import init_alpha
from tests.conftest import tiny_problem


def test_reptile_update_equals_formula_on_hand_built_case():
    spec, theta, pre, post = tiny_problem(num_tasks=3)
    theta = {k: v.clone().requires_grad_() for k, v in theta.items()}
    alpha = {k: torch.tensor(0.2, dtype=torch.float64) for k in theta}
    start = {k: v.detach().clone() for k, v in theta.items()}
    # by hand: two plain gradient steps per task, one task at a time
    expected = {k: torch.zeros_like(v) for k, v in start.items()}
    for i in range(pre.num_tasks):
        one = pre.tasks(i, i + 1)
        p = {k: v.clone().requires_grad_() for k, v in start.items()}
        for _ in range(2):
            g = torch.autograd.grad(inner_losses(spec, {k: v[None] for k, v in p.items()}, one).sum(), list(p.values()))
            p = {k: (v - 0.2 * gk).detach().requires_grad_() for (k, v), gk in zip(p.items(), g)}
        for k in expected:
            expected[k] += (p[k].detach() - start[k]) / pre.num_tasks
    reptile = Reptile(step_size=0.5, anneal_over=4)
    meta = MetaParameters(theta, Alpha(alpha, learned=False))
    reptile.step(meta, MetaObjective(spec, [pre, pre], post, first_order=True))
    for k in start:
        torch.testing.assert_close(meta.theta[k].detach(), start[k] + 0.5 * expected[k])
    assert reptile.current_step_size() == pytest.approx(0.5 * 0.75), "β anneals linearly"


@pytest.mark.parametrize(
    "granularity, count",
    [
        ("scalar", lambda th: 1),
        ("per_layer", lambda th: len(th)),
        ("per_parameter", lambda th: sum(v.numel() for v in th.values())),
    ],
)
@pytest.mark.parametrize("first_order", [False, True])
def test_alpha_granularity_counts_and_gradients(granularity, count, first_order):
    spec, theta, pre, post = tiny_problem()
    theta = {k: v.clone().requires_grad_() for k, v in theta.items()}
    cfg = Config.from_dict({"algorithm": "metasgd", "alpha_granularity": granularity, "inner_lr": 0.3})
    meta = MetaParameters(theta, init_alpha(theta, cfg))
    alpha_leaves = meta.leaves[len(theta) :]
    assert sum(a.numel() for a in alpha_leaves) == count(theta)
    objective = MetaObjective(spec, [pre], post, first_order)
    dist = objective.distribution(meta.theta, meta.alpha_values(), create_graph=not first_order)
    objective.set_old(tuple(d.detach() for d in dist))
    grads = torch.autograd.grad(objective.loss(dist), alpha_leaves)
    assert all(g.abs().max() > 1e-8 for g in grads), "every learned α receives a gradient"
    # a step of the flat vector moves every key's α consistently (the scalar's keys stay equal)
    flat = meta.get_flat()
    meta.set_flat(flat + 0.01)
    values = {k: a.detach().clone() for k, a in meta.alpha_values().items()}
    if granularity == "scalar":
        assert len({float(v) for v in values.values()}) == 1
    assert all(torch.allclose(v, torch.full_like(v, 0.31)) for v in values.values())


def test_first_order_metasgd_alpha_gradient_is_nonzero():
    spec, theta, pre, post = tiny_problem()
    theta = {k: v.clone().requires_grad_() for k, v in theta.items()}
    meta = MetaParameters(theta, init_alpha(theta, Config.from_dict({"algorithm": "metasgd"})))
    objective = MetaObjective(spec, [pre], post, first_order=True)
    dist = objective.distribution(meta.theta, meta.alpha_values(), create_graph=False)
    objective.set_old(tuple(d.detach() for d in dist))
    g = _flat(torch.autograd.grad(objective.loss(dist), meta.alpha.leaves()))
    assert g.abs().max() > 1e-6
