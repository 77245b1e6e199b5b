"""Meta-update of (θ, α) on post-adaptation rollouts: the objective and its two optimizers.

The objective maps the meta-parameters to each task's post-adaptation action distribution
``y`` (``(mean, log_std)``, or ``(logits,)`` for a categorical policy) on the post-adaptation
observations, *through* the inner step.
TRPO's surrogate and KL are functions of ``y`` only, which lets the Fisher-vector product be
computed as Jᵀ H_y J v (exact at the current point, where the KL's gradient is zero) from
one graph built once per update: no third-order derivatives, no graph rebuilt per CG step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

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

    def subset(self, num_tasks: int) -> MetaObjective:
        """The same objective on the first ``num_tasks`` tasks (tasks are drawn i.i.d.)."""
        return MetaObjective(
            self.spec,
            [b.select(num_tasks) for b in self.pre],
            self.post.select(num_tasks),
            self.first_order,
            self.meta_gradient,
        )

    def split(self, rows_per_group: int) -> list[MetaObjective]:
        """The objective as groups of consecutive tasks with about ``rows_per_group`` post rows each.

        The meta-objective is a mean over tasks, so its loss, gradient, KL and Fisher are the
        groups' means weighted by their share of tasks (:func:`group_weights`).
        """
        num_tasks, rows = self.post.num_tasks, self.post.mask[0].numel()
        size = max(1, rows_per_group // max(rows, 1))
        if size >= num_tasks:
            return [self]
        return [
            MetaObjective(
                self.spec,
                [b.tasks(lo, lo + size) for b in self.pre],
                self.post.tasks(lo, lo + size),
                self.first_order,
                self.meta_gradient,
            )
            for lo in range(0, num_tasks, size)
        ]

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

    @classmethod
    def skipped(
        cls,
        reason: str,
        loss: float = float("nan"),
        grad_norm: float = float("nan"),
        kl: float = 0.0,
        line_search_steps: int = 0,
    ) -> UpdateResult:
        """An update that left (θ, α) as they were, and why."""
        return cls(loss, loss, kl, grad_norm, False, line_search_steps, reason)

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


def task_groups(objective: MetaObjective, meta: MetaParameters) -> list[MetaObjective]:
    """The objective split for the learner's device (see ``CPU_GROUP_ROWS``)."""
    on_cpu = next(iter(meta.theta.values())).device.type == "cpu"
    return objective.split(CPU_GROUP_ROWS) if on_cpu else [objective]


def group_weights(groups: list[MetaObjective]) -> list[float]:
    """Each group's share of the tasks: the mean over tasks is the weighted sum of the groups' means."""
    total = sum(g.post.num_tasks for g in groups)
    return [g.post.num_tasks / total for g in groups]


def freeze_old(meta: MetaParameters, groups: list[MetaObjective], create_graph: bool) -> list[Dist]:
    """Every group's current distribution, frozen as its old one; the returned ones keep their graphs
    (for the gradient and the curvature products)."""
    dists = [group.distribution(meta.theta, meta.alpha_values(), create_graph=create_graph) for group in groups]
    for group, dist in zip(groups, dists):
        group.set_old(dist)
    return dists


def loss_and_gradient(meta: MetaParameters, groups: list[MetaObjective], dists: list[Dist]):
    """The surrogate loss at the old distributions and its flat gradient, summed over the groups."""
    loss, grads = 0.0, None
    for group, dist, weight in zip(groups, dists, group_weights(groups)):
        part = group.loss(dist) * weight
        part_grads = torch.autograd.grad(part, meta.leaves, retain_graph=True)
        grads = part_grads if grads is None else [a + b for a, b in zip(grads, part_grads)]
        loss = loss + part.detach()
    return loss, _flat(grads)


def loss_and_kl(meta: MetaParameters, groups: list[MetaObjective]) -> tuple[float, float]:
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
        """θ's entries, then α's (:meth:`set_theta`, then :meth:`Alpha.assign`)."""
        self.set_theta(vec[: self.num_theta])
        self.alpha.assign(vec[self.num_theta :])

    @torch.no_grad()
    def set_theta(self, vec: torch.Tensor) -> None:
        leaves = list(self.theta.values())
        for leaf, value in zip(leaves, _unflat(vec, leaves)):
            leaf.copy_(value)


class MetaOptimizer(Protocol):
    """What every meta-optimizer offers (TRPO, Adam, Reptile): the learner calls only these."""

    def step(self, meta: MetaParameters, objective: MetaObjective) -> UpdateResult: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class AlphaAdam:
    """Adam's step for Meta-SGD's α beside TRPO on θ (``alpha_update: adam``), *proposed*, not taken:
    TRPO's line search scales it with θ's step and applies both. The arithmetic is ``torch.optim.Adam``'s
    (default betas and eps) on the flat vector of α's leaves; its moments are this object's state."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.steps = 0
        self.exp_avg: torch.Tensor | None = None
        self.exp_avg_sq: torch.Tensor | None = None

    @torch.no_grad()
    def propose(self, grad: torch.Tensor) -> torch.Tensor:
        """The decrease of α Adam takes for ``grad`` (flat); advances the moments."""
        if self.exp_avg is None or self.exp_avg.shape != grad.shape:
            self.steps, self.exp_avg, self.exp_avg_sq = 0, torch.zeros_like(grad), torch.zeros_like(grad)
        self.exp_avg, self.exp_avg_sq = self.exp_avg.to(grad), self.exp_avg_sq.to(grad)  # loaded on the CPU
        (b1, b2), self.steps = self.betas, self.steps + 1
        self.exp_avg.lerp_(grad, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.exp_avg_sq.sqrt() / (1 - b2**self.steps) ** 0.5).add_(self.eps)
        return self.exp_avg / denom * (self.lr / (1 - b1**self.steps))

    def state_dict(self) -> dict:
        if self.exp_avg is None:
            return {}
        return {"steps": self.steps, "exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_state_dict(self, state: dict) -> None:
        if "state" in state:  # checkpoints before the named keys held torch.optim.Adam's own state dict
            order = state["param_groups"][0]["params"]
            per_leaf = [state["state"][i] for i in order if i in state["state"]]
            if not per_leaf:
                return
            state = {
                "steps": int(per_leaf[0]["step"]),
                "exp_avg": torch.cat([s["exp_avg"].reshape(-1) for s in per_leaf]),
                "exp_avg_sq": torch.cat([s["exp_avg_sq"].reshape(-1) for s in per_leaf]),
            }
        if state:
            self.steps = int(state["steps"])
            self.exp_avg, self.exp_avg_sq = state["exp_avg"].clone(), state["exp_avg_sq"].clone()


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
      α∘∇L_train, so entries with a ~0 inner gradient have ~0 curvature, and undamped CG moves them
      without bound (measured in docs/results.md, the α study).
    * ``adam``: θ's natural step in ``max_kl``; α's step is Adam's (``alpha_lr``); the line search
      scales both and checks their joint KL against ``max_kl``.

    The constructor's arguments are the config's ``trpo`` section: ``TRPO(**cfg.trpo.model_dump())``.
    """

    alpha_adam: AlphaAdam = field(init=False, repr=False)  # alpha_update adam: α's moments

    def __post_init__(self) -> None:
        self.alpha_adam = AlphaAdam(self.alpha_lr)

    def step(self, meta: MetaParameters, objective: MetaObjective) -> UpdateResult:
        create_graph = not objective.first_order
        groups = task_groups(objective, meta)
        dists = freeze_old(meta, groups, create_graph)
        loss, g = loss_and_gradient(meta, groups, dists)
        leaves = meta.leaves
        if not torch.isfinite(loss):
            return UpdateResult.skipped("non-finite loss", loss.item())
        if not torch.isfinite(g).all():
            return UpdateResult.skipped("non-finite gradient", loss.item())
        if self.fisher_subsample < 1.0:
            # Fisher = mean of per-task Fishers; a subset of tasks estimates it without bias.
            sub = objective.subset(max(1, round(self.fisher_subsample * objective.post.num_tasks)))
            curvature_groups = task_groups(sub, meta)
            curvature_dists = freeze_old(meta, curvature_groups, create_graph)
        else:
            curvature_groups, curvature_dists = groups, dists
        fvp = self._grouped_fisher_vector_product(curvature_groups, curvature_dists, leaves)
        n = meta.num_theta
        separate = self.alpha_update != "joint" and meta.alpha.learned
        direction = self._natural_step(fvp, g, 0, n if separate else g.numel(), self.max_kl)
        if isinstance(direction, str):
            return UpdateResult.skipped(direction, loss.item(), g.norm().item())
        if not separate:  # one natural step on (θ, α) together
            return self._line_search(meta, groups, direction, loss.item(), g, self.max_kl)
        if self.alpha_update == "natural":  # α's own natural step in its own trust region
            theta_step = direction
            alpha_step = self._natural_step(fvp, g, n, g.numel(), self.alpha_max_kl, self.alpha_damping)
            if isinstance(alpha_step, str):
                return UpdateResult.skipped(f"α block: {alpha_step}", loss.item(), g.norm().item())
            bound = self.max_kl + self.alpha_max_kl
        else:  # adam: Adam's step for α beside θ's natural step
            theta_step, alpha_step, bound = direction, self.alpha_adam.propose(g[n:]), self.max_kl
        return self._line_search(meta, groups, torch.cat([theta_step, alpha_step]), loss.item(), g, bound)

    def _natural_step(
        self, fvp, g: torch.Tensor, lo: int, hi: int, max_kl: float, relative_damping: float = 0.0
    ) -> torch.Tensor | str:
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

    def state_dict(self) -> dict:
        alpha_adam = self.alpha_adam.state_dict()
        return {"alpha_adam": alpha_adam} if alpha_adam else {}

    def load_state_dict(self, state: dict) -> None:
        if "alpha_adam" in state:
            self.alpha_adam.load_state_dict(state["alpha_adam"])

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

    def _grouped_fisher_vector_product(
        self, groups: list[MetaObjective], dists: list[Dist], leaves: list[torch.Tensor]
    ):
        """The whole meta-batch's product: the groups' products weighted by their share of tasks."""
        products = [self._fisher_vector_product(g, d, leaves) for g, d in zip(groups, dists)]
        weights = group_weights(groups)
        return lambda v: sum(weight * product(v) for weight, product in zip(weights, products))

    def _line_search(
        self,
        meta: MetaParameters,
        groups: list[MetaObjective],
        full_step: torch.Tensor,
        loss_before: float,
        g: torch.Tensor,
        max_kl: float,
    ) -> UpdateResult:
        """Backtrack from the full step of (θ, α) (θ's entries, then α's), judging each candidate on the
        objective's task ``groups``; a rejected step is reverted. These are the lines where TRPO changes θ and α."""
        n = meta.num_theta
        theta0, alpha0, theta_step, alpha_step = meta.get_flat()[:n], meta.alpha.flat(), full_step[:n], full_step[n:]
        any_finite = False
        for j in range(self.ls_max_steps):
            scale = self.ls_ratio**j
            meta.set_theta(theta0 - scale * theta_step)
            meta.alpha.assign(alpha0 - scale * alpha_step)  # Meta-SGD's α moves here (a fixed α has no leaves)
            new_loss, kl = loss_and_kl(meta, groups)
            finite = all(map(lambda x: x == x and abs(x) != float("inf"), (new_loss, kl)))
            any_finite |= finite
            if finite and new_loss < loss_before and kl <= max_kl:
                return UpdateResult(loss_before, new_loss, kl, g.norm().item(), True, j + 1)
        meta.set_theta(theta0)
        meta.alpha.assign(alpha0)
        reason = "line search failed" if any_finite else "non-finite loss or KL at every line-search step"
        return UpdateResult.skipped(reason, loss_before, g.norm().item(), line_search_steps=self.ls_max_steps)


@dataclass
class Adam(AdamOptions):
    """Adam on (θ, α); a step with a non-finite loss or gradient is skipped.

    Arguments: the config's ``adam`` section."""

    _opt: torch.optim.Adam | None = field(default=None, init=False, repr=False)
    _pending: dict | None = field(default=None, init=False, repr=False)  # state loaded before the first step

    def _bound(self, meta: MetaParameters) -> torch.optim.Adam:
        """torch's Adam on ``meta``'s leaves (made at the first step, with any state loaded before it)."""
        bound = self._opt.param_groups[0]["params"] if self._opt is not None else []
        if len(bound) != len(meta.leaves) or any(a is not b for a, b in zip(bound, meta.leaves)):
            self._opt = torch.optim.Adam(meta.leaves, lr=self.lr)
            if self._pending is not None:
                self._opt.load_state_dict(self._pending)
                self._pending = None
        return self._opt

    def step(self, meta: MetaParameters, objective: MetaObjective) -> UpdateResult:
        opt = self._bound(meta)
        create_graph = not objective.first_order
        dist = objective.distribution(meta.theta, meta.alpha_values(), create_graph=create_graph)
        objective.set_old(dist)
        loss = objective.loss(dist)
        if not torch.isfinite(loss):
            return UpdateResult.skipped("non-finite loss", loss.item())
        grads = torch.autograd.grad(loss, meta.leaves)
        g = _flat(grads)
        if not torch.isfinite(g).all():
            return UpdateResult.skipped("non-finite gradient", loss.item())
        for leaf, grad in zip(meta.leaves, grads):
            leaf.grad = grad
        opt.step()  # θ and (Meta-SGD) α move here
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            new_dist = objective.distribution(meta.theta, meta.alpha_values(), create_graph=False)
        with torch.no_grad():
            loss_after, kl = objective.loss(new_dist).item(), objective.kl(new_dist).item()
        return UpdateResult(loss.item(), loss_after, kl, g.norm().item(), True, 0)

    def state_dict(self) -> dict:
        state = self._opt.state_dict() if self._opt is not None else self._pending
        return {"adam": state} if state is not None else {}

    def load_state_dict(self, state: dict) -> None:
        state = state.get("adam", state)  # checkpoints before the named keys held torch's state dict itself
        if not state:
            return
        if self._opt is not None:
            self._opt.load_state_dict(state)
        else:
            self._pending = state


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
                return UpdateResult.skipped("non-finite Reptile step", kl=float("nan"))
            for k, d in deltas.items():
                meta.theta[k].add_(beta * d)
        self.updates += 1
        return UpdateResult(0.0, 0.0, 0.0, norm.item(), True, 0)

    def state_dict(self) -> dict:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if "updates" in state:
            self.updates = int(state["updates"])
