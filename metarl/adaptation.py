"""Inner adaptation: θ'ᵢ = θ − α ∘ ∇θ L_train(Tᵢ)(θ), for all tasks of a meta-batch at once.

θ is expanded to a per-task stack ``(T, ...)`` (a view, no copy); the sum of per-task losses
is differentiated with respect to that stack, which yields every task's own gradient in one
backward pass (task i's loss only touches slice i). This is the batched equivalent of
``vmap(grad(loss))`` and composes with ordinary autograd, which the second-order
meta-gradient and TRPO's curvature products need.
"""

from __future__ import annotations

import torch

from metarl.batch import Batch
from metarl.policies import Params, PolicySpec, forward, log_prob


def expand_to_tasks(params: Params, num_tasks: int) -> Params:
    return {k: v.expand(num_tasks, *v.shape) for k, v in params.items()}


def log_probs(spec: PolicySpec, params: Params, batch: Batch) -> torch.Tensor:
    """``(T, E*H)`` log π(a|s) for every task's rows under that task's parameters."""
    return log_prob(spec, forward(spec, params, batch.flat("obs")), batch.flat("actions"))


def inner_losses(spec: PolicySpec, params: Params, batch: Batch) -> torch.Tensor:
    """REINFORCE loss per task, ``(T,)``: −Σ log π · A over valid steps / number of valid steps."""
    mask = batch.flat("mask")
    weighted = log_probs(spec, params, batch) * batch.flat("advantages") * mask
    return -weighted.sum(-1) / mask.sum(-1).clamp_min(1)


def adapt(
    spec: PolicySpec,
    theta: Params,
    alpha: Params,
    batch: Batch,
    steps: int = 1,
    create_graph: bool = True,
) -> Params:
    """Per-task adapted parameters ``(T, ...)`` after ``steps`` inner policy-gradient steps.

    ``alpha`` holds one tensor per parameter name that broadcasts against it (a scalar for
    MAML, a full-size tensor for Meta-SGD). With ``create_graph=False`` the inner gradients
    are treated as constants (first-order), but α still receives the gradient −g·∂L/∂θ'.
    All steps reuse the same pre-adaptation batch.
    """
    params = expand_to_tasks(theta, batch.num_tasks)
    for _ in range(steps):
        loss = inner_losses(spec, params, batch).sum()
        names = list(params)
        grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph)
        params = {k: params[k] - alpha[k] * g for k, g in zip(names, grads)}
    return params
