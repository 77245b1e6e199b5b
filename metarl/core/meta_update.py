"""Meta-update of (θ, α) on post-adaptation rollouts: the objective and its two optimizers.

The objective maps the meta-parameters to each task's post-adaptation action distribution
``y`` (``(mean, log_std)``, or ``(logits,)`` for a categorical policy) on the post-adaptation observations, *through* the inner step.
TRPO's surrogate and KL are functions of ``y`` only, which lets the Fisher-vector product be
computed as Jᵀ H_y J v (exact at the current point, where the KL's gradient is zero) from
one graph built once per update: no third-order derivatives, no graph rebuilt per CG step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from metarl.core.adaptation import adapt
from metarl.core.alpha import Alpha
from metarl.core.batch import Batch
from metarl.core.options import AdamOptions, ReptileOptions, TRPOOptions
from metarl.core.policies import Dist, Params, PolicySpec, forward, kl, log_prob


@dataclass
class MetaObjective:
    """Post-adaptation surrogate loss and KL for one meta-batch.

    ``pre`` holds one batch per inner step: step j adapts on ``pre[j]``, which the rollout
    workers sampled with θ'ⱼ (θ'₀ = θ). The batches are constants of the objective: the
    meta-gradient differentiates through every inner step (second order unless
    ``first_order``). With ``meta_gradient: maml`` it ignores that θ also shaped the
    distributions the pre-adaptation batches were sampled from; ``lvc`` (ProMP) adds the
    low-variance part of that term through the inner surrogate's curvature (docs/architecture.md).
    """

    spec: PolicySpec
    pre: list[Batch]
    post: Batch
    first_order: bool
    meta_gradient: str = "maml"
    old_dist: Dist = field(init=False)
    old_log_prob: torch.Tensor = field(init=False)

    @property
    def inner_steps(self) -> int:
        return len(self.pre)

    def distribution(self, theta: Params, alpha: Params, create_graph: bool) -> Dist:
        """Post-adaptation distribution on the post observations, ``(T, E*H, act_dim)`` each."""
        adapted = adapt(self.spec, theta, alpha, self.pre, create_graph=create_graph, meta_gradient=self.meta_gradient)
        return forward(self.spec, adapted, self.post.flat("obs"))

    def subset(self, num_tasks: int) -> "MetaObjective":
        """The same objective on the first ``num_tasks`` tasks (tasks are drawn i.i.d.)."""
        return MetaObjective(self.spec, [b.select(num_tasks) for b in self.pre], self.post.select(num_tasks),
                             self.first_order, self.meta_gradient)

    def split(self, rows_per_group: int) -> list["MetaObjective"]:
        """The objective as groups of consecutive tasks with about ``rows_per_group`` post rows each.

        The meta-objective is a mean over tasks, so its loss, gradient, KL and Fisher are the
        groups' means weighted by their share of tasks (:func:`group_weights`).
        """
        num_tasks, rows = self.post.num_tasks, self.post.mask[0].numel()
        size = max(1, rows_per_group // max(rows, 1))
        if size >= num_tasks:
            return [self]
        return [MetaObjective(self.spec, [b.tasks(lo, lo + size) for b in self.pre], self.post.tasks(lo, lo + size),
                              self.first_order, self.meta_gradient) for lo in range(0, num_tasks, size)]

    def set_old(self, dist: Dist) -> None:
        """Freeze the sampling distribution (the current one) for ratios and KL."""
        self.old_dist = tuple(d.detach() for d in dist)
        self.old_log_prob = log_prob(self.spec, self.old_dist, self.post.flat("actions"))

    def _masked_task_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.post.task_mean(x).mean()

    def loss(self, dist: Dist) -> torch.Tensor:
        """Negative importance-weighted surrogate, averaged over steps then tasks."""
        ratio = torch.exp(log_prob(self.spec, dist, self.post.flat("actions")) - self.old_log_prob)
        return -self._masked_task_mean(ratio * self.post.flat("advantages"))

    def kl(self, dist: Dist) -> torch.Tensor:
        return self._masked_task_mean(kl(self.spec, self.old_dist, dist))


@dataclass
class UpdateResult:
    loss_before: float
    loss_after: float
    kl: float
    grad_norm: float
    accepted: bool
    line_search_steps: int
    reason: str = ""  # why the update was skipped ("" when accepted)

    @property
    def non_finite(self) -> bool:
        """Skipped because a loss, gradient, curvature or KL was NaN/inf (not a mere failed line search),
        in either block of a natural α update ("α block: non-finite curvature")."""
        return self.reason.removeprefix("α block: ").startswith("non-finite")

    def as_metrics(self) -> dict[str, float]:
        return {
            "outer/loss_before": self.loss_before,
            "outer/loss_after": self.loss_after,
            "outer/kl": self.kl,
            "outer/grad_norm": self.grad_norm,
            "outer/accepted": float(self.accepted),
            "outer/line_search_steps": float(self.line_search_steps),
        }


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(vec: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, i = [], 0
    for t in like:
        out.append(vec[i : i + t.numel()].view_as(t))
        i += t.numel()
    return out


# Rows (episodes × steps) per task group on a CPU learner. Why groups: the Fisher-vector product's
# elementwise passes and per-task matmuls over the whole meta-batch stream ~64 MB tensors through
# memory; on groups of ~8k rows the working set stays in cache and an exact product on the HalfCheetah
# batch took 0.72-0.75 s instead of 1.075 s on the 2-core machine (BENCHMARKS.md, "Locomotion at the
# paper protocol"). A GPU wants one group.
CPU_GROUP_ROWS = 8192


def task_groups(objective: "MetaObjective", meta: "MetaParameters") -> list["MetaObjective"]:
    """The objective split for the learner's device (see ``CPU_GROUP_ROWS``)."""
    on_cpu = next(iter(meta.theta.values())).device.type == "cpu"
    return objective.split(CPU_GROUP_ROWS) if on_cpu else [objective]


def group_weights(groups: list["MetaObjective"]) -> list[float]:
    """Each group's share of the tasks: the mean over tasks is the weighted sum of the groups' means."""
    total = sum(g.post.num_tasks for g in groups)
    return [g.post.num_tasks / total for g in groups]


def freeze_old(meta: "MetaParameters", groups: list["MetaObjective"], create_graph: bool) -> list[Dist]:
    """Every group's current distribution, frozen as its old one; the returned ones keep their graphs
    (for the gradient and the curvature products)."""
    dists = [group.distribution(meta.theta, meta.alpha_values(), create_graph=create_graph) for group in groups]
    for group, dist in zip(groups, dists):
        group.set_old(dist)
    return dists


def loss_and_gradient(meta: "MetaParameters", groups: list["MetaObjective"], dists: list[Dist]):
    """The surrogate loss at the old distributions and its flat gradient, summed over the groups."""
    loss, grads = 0.0, None
    for group, dist, weight in zip(groups, dists, group_weights(groups)):
        part = group.loss(dist) * weight
        part_grads = torch.autograd.grad(part, meta.leaves, retain_graph=True)
        grads = part_grads if grads is None else [a + b for a, b in zip(grads, part_grads)]
        loss = loss + part.detach()
    return loss, _flat(grads)


def loss_and_kl(meta: "MetaParameters", groups: list["MetaObjective"]) -> tuple[float, float]:
    """Surrogate loss and KL at the current (θ, α), group by group without keeping graphs (the line search)."""
    alpha, loss, kl = meta.alpha_values(), 0.0, 0.0
    for group, weight in zip(groups, group_weights(groups)):
        with torch.enable_grad():  # the inner step differentiates the inner loss
            dist = group.distribution(meta.theta, alpha, create_graph=False)
        with torch.no_grad():
            loss += weight * group.loss(dist).item()
            kl += weight * group.kl(dist).item()
    return loss, kl


def conjugate_gradient(fvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, tol: float = 1e-10):
    """Solve F x = b for symmetric positive (semi-)definite F given only products F v.

    Returns ``(x, xᵀ F x)``; the quadratic form comes from the residual (F x = b − r), which
    saves the extra Fisher-vector product most TRPO implementations spend on it.
    """
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r.dot(r)
    for _ in range(iters):
        if rr.item() < tol:
            break
        fp = fvp(p)
        step = rr / p.dot(fp)
        x += step * p
        r -= step * fp
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, x.dot(b - r)


class MetaParameters:
    """The learned leaves: θ always, then α's leaves when α is learned; keyed and flattened views."""

    def __init__(self, theta: Params, alpha: Alpha):
        self.theta, self.alpha = theta, alpha

    @property
    def leaves(self) -> list[torch.Tensor]:
        return list(self.theta.values()) + self.alpha.leaves()

    @property
    def num_theta(self) -> int:
        """Entries of θ: the flat vector is θ's entries, then α's."""
        return sum(v.numel() for v in self.theta.values())

    def alpha_values(self) -> Params:
        return self.alpha.values()

    def get_flat(self) -> torch.Tensor:
        return _flat(self.leaves).detach().clone()

    @torch.no_grad()
    def set_flat(self, vec: torch.Tensor) -> None:
        for leaf, value in zip(self.leaves, _unflat(vec, self.leaves)):
            leaf.copy_(value)




@dataclass
class TRPO(TRPOOptions):
    """TRPO on (θ, α): CG on the Fisher of the post-adaptation policies, KL-constrained
    step, backtracking line search that reverts a rejected step.

    How α (when learned) takes part, ``alpha_update``:

    * ``joint``: α is just more coordinates of one natural-gradient step in one trust region
      (``max_kl``), as in the Meta-SGD paper. α's coordinates are nearly collinear with θ's
      (∂θ'/∂α = −∇L_train), and α barely moves.
    * ``natural``: a block-diagonal natural step: θ's block solved by CG in its own trust
      region (``max_kl``), α's block by CG in its own (``alpha_max_kl``); the line search
      checks the KL of the combined step against ``max_kl + alpha_max_kl``. Twice the CG work.
      α's block is damped relative to its own curvature (``alpha_damping``): α acts only through
      α∘∇L_train, so entries with a ~0 inner gradient have ~0 curvature, and undamped CG moved them
      without bound (α from 0.5 to 7.8 in one update on 2D navigation).
    * ``adam``: θ's natural step in ``max_kl``; α's step is Adam's (``alpha_lr``); the line search
      scales both and checks their joint KL against ``max_kl``.

    The constructor's arguments are the config's ``trpo`` section: ``TRPO(**cfg.trpo.model_dump())``.
    """

    _alpha_adam: torch.optim.Adam | None = field(default=None, init=False, repr=False)

    def step(self, meta: MetaParameters, objective: MetaObjective) -> UpdateResult:
        create_graph = not objective.first_order
        groups = task_groups(objective, meta)
        dists = freeze_old(meta, groups, create_graph)
        loss, g = loss_and_gradient(meta, groups, dists)
        leaves = meta.leaves
        if not torch.isfinite(loss):
            return UpdateResult(loss.item(), loss.item(), 0.0, float("nan"), False, 0, "non-finite loss")
        if not torch.isfinite(g).all():
            return UpdateResult(loss.item(), loss.item(), 0.0, float("nan"), False, 0, "non-finite gradient")
        if self.fisher_subsample < 1.0:
            # Fisher = mean of per-task Fishers; a subset of tasks estimates it without bias.
            sub = objective.subset(max(1, round(self.fisher_subsample * objective.post.num_tasks)))
            curvature_groups = task_groups(sub, meta)
            curvature_dists = freeze_old(meta, curvature_groups, create_graph)
        else:
            curvature_groups, curvature_dists = groups, dists
        fvp = self._grouped_fisher_vector_product(curvature_groups, curvature_dists, leaves)
        separate = self.alpha_update != "joint" and meta.alpha.learned
        n = meta.num_theta if separate else g.numel()
        theta_step = self._natural_step(fvp, g, 0, n, self.max_kl)
        if isinstance(theta_step, str):
            return UpdateResult(loss.item(), loss.item(), 0.0, g.norm().item(), False, 0, theta_step)
        if not separate:
            return self._line_search(meta, groups, theta_step, loss.item(), g, self.max_kl)
        if self.alpha_update == "natural":
            alpha_step = self._natural_step(fvp, g, n, g.numel(), self.alpha_max_kl, self.alpha_damping)
            if isinstance(alpha_step, str):
                return UpdateResult(loss.item(), loss.item(), 0.0, g.norm().item(), False, 0, f"α block: {alpha_step}")
            bound = self.max_kl + self.alpha_max_kl
        else:
            alpha_step = self._adam_alpha_step(meta, g[n:])
            bound = self.max_kl
        return self._line_search(meta, groups, torch.cat([theta_step, alpha_step]), loss.item(), g, bound)

    def _natural_step(self, fvp, g: torch.Tensor, lo: int, hi: int, max_kl: float,
                      relative_damping: float = 0.0) -> torch.Tensor | str:
        """The step F_bb⁻¹ g_b · sqrt(2·max_kl / gᵀF⁻¹g) on the block ``[lo, hi)`` of the flat (θ, α),
        or why there is none. The whole vector is the plain TRPO step. ``relative_damping`` λ adds
        λ·(g_bᵀF_bb g_b / g_bᵀg_b)·I to the block (Levenberg–Marquardt style, in the block's own scale)."""
        if (lo, hi) == (0, g.numel()):
            block_fvp = fvp
        else:
            def block_fvp(v: torch.Tensor) -> torch.Tensor:
                full = torch.zeros_like(g)
                full[lo:hi] = v
                return fvp(full)[lo:hi]
        if relative_damping > 0:
            gb, undamped = g[lo:hi], block_fvp
            scale = (gb @ undamped(gb)) / (gb @ gb).clamp_min(torch.finfo(gb.dtype).tiny)
            if not torch.isfinite(scale):
                return "non-finite curvature"
            damping = relative_damping * scale.clamp_min(0)

            def block_fvp(v: torch.Tensor) -> torch.Tensor:  # noqa: F811 (the damped block)
                return undamped(v) + damping * v
        direction, shs = conjugate_gradient(block_fvp, g[lo:hi], self.cg_iters)
        if not torch.isfinite(shs) or not torch.isfinite(direction).all():
            return "non-finite curvature"
        if shs.item() <= 0:
            return "non-positive curvature"
        return direction * torch.sqrt(2 * max_kl / shs)

    def _adam_alpha_step(self, meta: MetaParameters, g_alpha: torch.Tensor) -> torch.Tensor:
        """Adam's proposed decrease of α for gradient ``g_alpha`` (α itself is left unchanged here)."""
        leaves = meta.alpha.leaves()
        bound = self._alpha_adam.param_groups[0]["params"] if self._alpha_adam is not None else []
        if len(bound) != len(leaves) or any(a is not b for a, b in zip(bound, leaves)):
            self._alpha_adam = torch.optim.Adam(leaves, lr=self.alpha_lr)
        before = _flat(leaves).detach().clone()
        for leaf, grad in zip(leaves, _unflat(g_alpha, leaves)):
            leaf.grad = grad.clone()
        self._alpha_adam.step()
        self._alpha_adam.zero_grad(set_to_none=True)
        after = _flat(leaves).detach().clone()
        with torch.no_grad():
            for leaf, value in zip(leaves, _unflat(before, leaves)):
                leaf.copy_(value)
        return before - after  # the line search subtracts its steps

    def state_dict(self) -> dict:
        return {"alpha_adam": self._alpha_adam.state_dict()} if self._alpha_adam is not None else {}

    def load_state_dict(self, state: dict, meta: MetaParameters) -> None:
        if "alpha_adam" in state and meta.alpha.learned:
            self._alpha_adam = torch.optim.Adam(meta.alpha.leaves(), lr=self.alpha_lr)
            self._alpha_adam.load_state_dict(state["alpha_adam"])

    def _fisher_vector_product(self, objective: MetaObjective, dist: Dist, leaves: list[torch.Tensor]):
        """v ↦ (F + damping·I) v for one objective, F = Jᵀ H_y J the KL's Hessian through the inner step."""
        # H_y: the KL's Hessian in distribution space, from a small elementwise graph.
        y_point = tuple(d.detach().requires_grad_() for d in dist)
        kl_grad = torch.autograd.grad(objective.kl(y_point), y_point, create_graph=True)
        # Jᵀu as a function of a dummy u (the double-vjp trick gives J v from it).
        dummies = tuple(torch.zeros_like(d, requires_grad=True) for d in dist)
        jt_u = torch.autograd.grad(dist, leaves, dummies, create_graph=True)

        def fvp(v: torch.Tensor) -> torch.Tensor:
            jv = torch.autograd.grad(jt_u, dummies, _unflat(v, leaves), retain_graph=True)
            hjv = torch.autograd.grad(kl_grad, y_point, jv, retain_graph=True)
            jt_hjv = torch.autograd.grad(dist, leaves, hjv, retain_graph=True)
            return _flat(jt_hjv) + self.cg_damping * v

        return fvp

    def _grouped_fisher_vector_product(self, groups: list[MetaObjective], dists: list[Dist],
                                       leaves: list[torch.Tensor]):
        """The whole meta-batch's product: the groups' products weighted by their share of tasks."""
        products = [self._fisher_vector_product(g, d, leaves) for g, d in zip(groups, dists)]
        weights = group_weights(groups)
        return lambda v: sum(weight * product(v) for weight, product in zip(weights, products))

    def _line_search(self, meta, groups, full_step, loss_before, g, max_kl: float) -> UpdateResult:
        """Backtrack from the full step, judging each candidate on the objective's task ``groups``."""
        start = meta.get_flat()
        any_finite = False
        for j in range(self.ls_max_steps):
            meta.set_flat(start - (self.ls_ratio**j) * full_step)
            new_loss, kl = loss_and_kl(meta, groups)
            finite = all(map(lambda x: x == x and abs(x) != float("inf"), (new_loss, kl)))
            any_finite |= finite
            if finite and new_loss < loss_before and kl <= max_kl:
                return UpdateResult(loss_before, new_loss, kl, g.norm().item(), True, j + 1)
        meta.set_flat(start)
        reason = "line search failed" if any_finite else "non-finite loss or KL at every line-search step"
        return UpdateResult(loss_before, loss_before, 0.0, g.norm().item(), False, self.ls_max_steps, reason)


@dataclass
class Adam(AdamOptions):
    """Adam on (θ, α); a step with a non-finite loss or gradient is skipped. Arguments: the config's ``adam`` section."""

    _opt: torch.optim.Adam | None = field(default=None, init=False, repr=False)

    def bind(self, meta: MetaParameters) -> "Adam":
        self._opt = torch.optim.Adam(meta.leaves, lr=self.lr)
        return self

    def step(self, meta: MetaParameters, objective: MetaObjective) -> UpdateResult:
        create_graph = not objective.first_order
        dist = objective.distribution(meta.theta, meta.alpha_values(), create_graph=create_graph)
        objective.set_old(dist)
        loss = objective.loss(dist)
        if not torch.isfinite(loss):
            return UpdateResult(loss.item(), loss.item(), 0.0, float("nan"), False, 0, "non-finite loss")
        grads = torch.autograd.grad(loss, meta.leaves)
        g = _flat(grads)
        if not torch.isfinite(g).all():
            return UpdateResult(loss.item(), loss.item(), 0.0, float("nan"), False, 0, "non-finite gradient")
        for leaf, grad in zip(meta.leaves, grads):
            leaf.grad = grad
        self._opt.step()
        self._opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            new_dist = objective.distribution(meta.theta, meta.alpha_values(), create_graph=False)
        with torch.no_grad():
            loss_after, kl = objective.loss(new_dist).item(), objective.kl(new_dist).item()
        return UpdateResult(loss.item(), loss_after, kl, g.norm().item(), True, 0)

    def state_dict(self) -> dict:
        return self._opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._opt.load_state_dict(state)


@dataclass
class Reptile(ReptileOptions):
    """Reptile for RL (Nichol et al. 2018): θ ← θ + β · mean_i(θ'ᵢ − θ), first order by construction.

    θ'ᵢ are the same k inner policy-gradient steps as MAML's, on the pre-adaptation batches;
    the post-adaptation rollouts only feed the metrics. With ``anneal_over`` set, β decays
    linearly to 0 over that many updates.
    """

    anneal_over: int | None = None
    updates: int = 0

    def current_step_size(self) -> float:
        if self.anneal_over is None:
            return self.step_size
        return self.step_size * max(0.0, 1.0 - self.updates / self.anneal_over)

    def step(self, meta: MetaParameters, objective: MetaObjective) -> UpdateResult:
        adapted = adapt(objective.spec, meta.theta, meta.alpha_values(), objective.pre, create_graph=False)
        beta = self.current_step_size()
        with torch.no_grad():
            deltas = {k: (adapted[k] - meta.theta[k]).mean(0) for k in meta.theta}
            norm = torch.sqrt(sum(d.square().sum() for d in deltas.values()))
            if not torch.isfinite(norm):
                return UpdateResult(float("nan"), float("nan"), float("nan"), float("nan"), False, 0, "non-finite Reptile step")
            for k, d in deltas.items():
                meta.theta[k].add_(beta * d)
        self.updates += 1
        return UpdateResult(0.0, 0.0, 0.0, norm.item(), True, 0)

    def state_dict(self) -> dict:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
