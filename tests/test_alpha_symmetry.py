"""Why a learned per-parameter α buys MAML little on a ReLU MLP (docs/results.md section 3): rescaling a
hidden unit (incoming weights and bias × c, outgoing weights × 1/c) leaves the policy unchanged, and one
inner step of MAML with a scalar α from the rescaled θ adapts to exactly the policy of Meta-SGD from θ with
α/c² on the unit's incoming entries and α·c² on its outgoing ones. So MAML's θ can already hold per-unit
step sizes; the log-std and the output bias have no such partner."""

from __future__ import annotations

import torch
from conftest import tiny_batches

from metarl.core.adaptation import adapt
from metarl.core.policies import forward


def _unit_scaling(theta, c):
    """Per-entry factors S of the rescaling θ̃ = S θ for hidden-unit scales ``c`` (one hidden layer)."""
    s = {k: torch.ones_like(v) for k, v in theta.items()}
    s["layer0.weight"] = c.expand_as(theta["layer0.weight"]).clone()
    s["layer0.bias"] = c.clone()
    s["layer1.weight"] = (1 / c).unsqueeze(1).expand_as(theta["layer1.weight"]).clone()
    return s


def test_maml_from_rescaled_units_is_metasgd_with_per_unit_alpha():
    spec, theta, (batch, _) = tiny_batches(2, num_tasks=3, episodes=3, horizon=6, hidden=(5,), activation="relu")
    c = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.7], dtype=torch.float64)
    s = _unit_scaling(theta, c)
    theta = {k: v.requires_grad_() for k, v in theta.items()}
    rescaled = {k: (v * s[k]).detach().requires_grad_() for k, v in theta.items()}
    obs = batch.flat("obs")
    for a, b in zip(forward(spec, theta, obs), forward(spec, rescaled, obs)):
        torch.testing.assert_close(a, b)  # the same policy

    alpha = 0.5
    maml_rescaled = adapt(
        spec, rescaled, {k: torch.tensor(alpha, dtype=torch.float64) for k in theta}, batch, create_graph=False
    )
    metasgd = adapt(spec, theta, {k: alpha / s[k] ** 2 for k in theta}, batch, create_graph=False)
    maml = adapt(spec, theta, {k: torch.tensor(alpha, dtype=torch.float64) for k in theta}, batch, create_graph=False)
    for k in theta:  # θ̃' = S θ'_metasgd entry by entry ...
        torch.testing.assert_close(maml_rescaled[k], metasgd[k] * s[k])
    for a, b in zip(forward(spec, maml_rescaled, obs), forward(spec, metasgd, obs)):
        torch.testing.assert_close(a, b)  # ... so the adapted policies are the same
    # and it is not the plain MAML step from θ: the rescaling really changed the step sizes
    assert (forward(spec, maml, obs)[0] - forward(spec, metasgd, obs)[0]).abs().max() > 1e-3
