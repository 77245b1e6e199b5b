"""Inner adaptation: θ'ᵢ = θ − α ∘ ∇θ L_train(Tᵢ)(θ), for all tasks of a meta-batch at once.

θ is expanded to a per-task stack ``(T, ...)`` (a view, no copy); the sum of per-task losses
is differentiated with respect to that stack, which yields every task's own gradient in one
backward pass (task i's loss only touches slice i). This is the batched equivalent of
``vmap(grad(loss))`` and composes with ordinary autograd, which the second-order
meta-gradient and TRPO's curvature products need.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metarl.core.batch import Batch
from metarl.core.policies import Params, PolicySpec, forward, log_prob


def expand_to_tasks(params: Params, num_tasks: int) -> Params:
    return {k: v.expand(num_tasks, *v.shape) for k, v in params.items()}


def log_probs(spec: PolicySpec, params: Params, batch: Batch) -> torch.Tensor:
    """``(T, E*H)`` log π(a|s) for every task's rows under that task's parameters."""
    return log_prob(spec, forward(spec, params, batch.flat("obs")), batch.flat("actions"))


def inner_losses(spec: PolicySpec, params: Params, batch: Batch, meta_gradient: str = "maml") -> torch.Tensor:
    """Inner policy-gradient loss per task, ``(T,)``, averaged over valid steps with the batch's weights.

    ``maml``: −log π · A (REINFORCE). ``lvc``: −(π / ⊥π) · A, ProMP's low-variance curvature
    surrogate (Rothfuss et al. 2018), where ⊥ stops gradients. Both have the same value and
    gradient at the parameters that sampled the batch, so θ' is the same; they differ in the
    second derivative, which the meta-gradient differentiates: LVC's adds Σ ∇log π ∇log πᵀ · A,
    the part of the sampling distribution's effect on the inner step that MAML's estimator drops.
    """
    lp = log_probs(spec, params, batch)
    if meta_gradient == "lvc":
        return -batch.task_mean(torch.exp(lp - lp.detach()) * batch.flat("advantages"))
    return -batch.task_mean(lp * batch.flat("advantages"))


def inner_step(
    spec: PolicySpec,
    params: Params,
    alpha: Params,
    batch: Batch,
    scale: float = 1.0,
    create_graph: bool = True,
    meta_gradient: str = "maml",
) -> Params:
    """One inner step for every task at once, φ − scale · α ∘ ∇φ L(D; φ), on a per-task stack ``(T, …)``.

    The one inner step of metarl: :func:`adapt` chains it for training, evaluation calls it per step
    (``scale``: its step-size schedule). ``create_graph=False`` treats the inner gradient as a constant
    (first order). Parameters that need no gradient (evaluation's φ) are differentiated as fresh leaves,
    and the result then carries no graph.
    """
    if not any(v.requires_grad for v in params.values()):
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
            stepped = inner_step(spec, leaves, alpha, batch, scale, False, meta_gradient)
        return {k: v.detach() for k, v in stepped.items()}
    loss = inner_losses(spec, params, batch, meta_gradient).sum()
    names = list(params)
    grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph)
    if scale == 1.0:  # training's step: no extra op in the second-order graph
        return {k: params[k] - alpha[k] * g for k, g in zip(names, grads)}
    return {k: params[k] - scale * alpha[k] * g for k, g in zip(names, grads)}


def adapt(
    spec: PolicySpec,
    theta: Params,
    alpha: Params,
    batches: Batch | Sequence[Batch],
    steps: int | None = None,
    create_graph: bool = True,
    meta_gradient: str = "maml",
) -> Params:
    """Per-task adapted parameters ``(T, ...)`` after one inner policy-gradient step per batch.

    Step j adapts on ``batches[j]``, sampled with the parameters after j steps (the trainer
    samples each with the rollout workers). A single batch with ``steps=k`` reuses that batch
    for k steps. ``alpha`` holds one tensor per parameter name that broadcasts against it (a
    scalar for MAML, a full-size tensor for Meta-SGD). With ``create_graph=False`` the inner
    gradients are treated as constants (first-order), but α still receives the gradient
    −g·∂L/∂θ'. ``meta_gradient`` picks the inner surrogate (:func:`inner_losses`).
    """
    if isinstance(batches, Batch):
        batches = [batches] * (1 if steps is None else steps)
    params = expand_to_tasks(theta, batches[0].num_tasks)
    for batch in batches:
        params = inner_step(spec, params, alpha, batch, create_graph=create_graph, meta_gradient=meta_gradient)
    return params
