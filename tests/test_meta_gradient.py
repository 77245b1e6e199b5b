"""The meta-gradient through the inner step, checked against finite differences (float64)."""

from __future__ import annotations

import pytest
import torch

from metarl.core.adaptation import adapt, inner_losses
from metarl.core.alpha import Alpha
from metarl.core.meta_update import TRPO, MetaObjective, MetaParameters, _flat
from metarl.core.policies import forward
from tests.conftest import tiny_batches, tiny_discrete_problem, tiny_problem

PROBLEMS = {"gaussian": tiny_problem, "categorical": tiny_discrete_problem}


def _leaves(theta, alpha_value=0.3, learn_alpha=True, perturb=True):
    theta = {k: v.clone().requires_grad_() for k, v in theta.items()}
    gen = torch.Generator().manual_seed(1)
    alpha = {}
    for k, v in theta.items():
        a = torch.full_like(v, alpha_value)
        if perturb:  # distinct per-element step sizes, some negative, as Meta-SGD may learn
            a = a + 0.2 * torch.randn(v.shape, generator=gen, dtype=v.dtype)
        alpha[k] = a.requires_grad_(learn_alpha)
    return MetaParameters(theta, Alpha(alpha, learned=learn_alpha))


def _objective_value(objective, meta, flat):
    """The post-adaptation surrogate as a plain function of the flattened (θ, α)."""
    saved = meta.get_flat()
    meta.set_flat(flat)
    with torch.enable_grad():
        dist = objective.distribution(meta.theta, meta.alpha_values(), create_graph=False)
    value = objective.loss(dist).item()
    meta.set_flat(saved)
    return value


def _coarse_leaves(theta, granularity, parametrization):
    """θ as leaves beside a learned α of one value (``scalar``) or one per tensor (``per_layer``), the per-layer
    values distinct so that a mix-up between layers shows."""
    theta = {k: v.clone().requires_grad_() for k, v in theta.items()}
    alpha = Alpha.create(theta, 0.3, learned=True, granularity=granularity, parametrization=parametrization)
    if granularity == "per_layer":
        alpha.load_state_dict({k: torch.tensor(0.3 + 0.05 * i, dtype=torch.float64) for i, k in enumerate(theta)})
    return MetaParameters(theta, alpha)


def _analytic_and_fd(inner_steps, first_order=False, eps=1e-6, kind="gaussian", fresh=False, make_meta=_leaves):
    if fresh:  # step j adapts on its own batch, as training samples one per inner step
        spec, theta, batches = tiny_batches(inner_steps + 1)
        pre, post = batches[:-1], batches[-1]
    else:
        spec, theta, pre, post = PROBLEMS[kind]()
        pre = [pre] * inner_steps
    meta = make_meta(theta)
    objective = MetaObjective(spec, pre, post, first_order)
    dist = objective.distribution(meta.theta, meta.alpha_values(), create_graph=not first_order)
    objective.set_old(tuple(d.detach() for d in dist))
    loss = objective.loss(dist)
    analytic = _flat(torch.autograd.grad(loss, meta.leaves))
    x0 = meta.get_flat()
    fd = torch.zeros_like(x0)
    for i in range(x0.numel()):
        e = torch.zeros_like(x0)
        e[i] = eps
        fd[i] = (_objective_value(objective, meta, x0 + e) - _objective_value(objective, meta, x0 - e)) / (2 * eps)
    return analytic, fd, meta


@pytest.mark.parametrize(
    "inner_steps, kind, fresh",
    [(1, "gaussian", False), (2, "gaussian", False), (2, "gaussian", True), (1, "categorical", False)],
)
def test_second_order_meta_gradient_matches_finite_differences(inner_steps, kind, fresh):
    analytic, fd, meta = _analytic_and_fd(inner_steps, kind=kind, fresh=fresh)
    rel = (analytic - fd).norm() / fd.norm()
    assert fd.norm() > 1e-4, "degenerate problem: the objective does not depend on (θ, α)"
    assert rel < 1e-3, f"relative error {rel:.2e}"
    n_theta = sum(v.numel() for v in meta.theta.values())
    # α's part is a real, non-zero gradient (learn2learn once shipped a Meta-SGD whose α never learned).
    assert analytic[n_theta:].abs().max() > 1e-6


@pytest.mark.parametrize(
    "granularity, parametrization, inner_steps",
    [
        ("scalar", "direct", 1),
        ("per_layer", "direct", 1),
        ("scalar", "log", 1),
        ("per_layer", "log", 1),
        ("per_layer", "direct", 2),
    ],
)
def test_meta_gradient_for_coarse_alpha_matches_finite_differences(granularity, parametrization, inner_steps):
    """One α shared by every tensor (its gradient sums over all of them) or one α per tensor."""
    analytic, fd, meta = _analytic_and_fd(
        inner_steps, make_meta=lambda theta: _coarse_leaves(theta, granularity, parametrization)
    )
    n_alpha = len(meta.theta) if granularity == "per_layer" else 1
    assert analytic.numel() - meta.num_theta == n_alpha
    torch.testing.assert_close(analytic, fd, rtol=1e-4, atol=1e-7)
    assert analytic[meta.num_theta :].abs().min() > 1e-6, "every α leaf gets a gradient"


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_first_order_meta_gradient_by_hand(inner_steps):
    """First order: each inner gradient gⱼ (at θ'ⱼ) is a constant, so θ'ᵢ = θ − α ∘ Σⱼ gᵢⱼ and
    ∂L/∂θ = Σᵢ Gᵢ, ∂L/∂α = −Σᵢ Gᵢ ∘ Σⱼ gᵢⱼ, with Gᵢ = ∂L/∂θ'ᵢ the post-adaptation gradient of task i."""
    spec, theta, batches = tiny_batches(inner_steps + 1)
    pre, post = batches[:-1], batches[-1]
    meta = _leaves(theta)
    objective = MetaObjective(spec, pre, post, first_order=True)
    objective.set_old(objective.distribution(meta.theta, meta.alpha_values(), create_graph=False))
    dist = objective.distribution(meta.theta, meta.alpha_values(), create_graph=False)
    got = torch.autograd.grad(objective.loss(dist), meta.leaves)

    alpha = {k: v.detach() for k, v in meta.alpha_values().items()}
    adapted, inner_sum = [], []
    for i in range(post.num_tasks):  # one task at a time, plain gradient steps
        p = {k: v.detach().clone() for k, v in theta.items()}
        total = {k: torch.zeros_like(v) for k, v in p.items()}
        for batch in pre:
            leaves = {k: v.clone().requires_grad_() for k, v in p.items()}
            loss = inner_losses(spec, {k: v[None] for k, v in leaves.items()}, batch.tasks(i, i + 1)).sum()
            g = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
            p = {k: p[k] - alpha[k] * g[k] for k in p}
            total = {k: total[k] + g[k] for k in p}
        adapted.append(p)
        inner_sum.append(total)
    stack = {k: torch.stack([a[k] for a in adapted]).requires_grad_() for k in theta}
    post_loss = objective.loss(forward(spec, stack, post.flat("obs")))
    big_g = dict(zip(stack, torch.autograd.grad(post_loss, list(stack.values()))))
    expected_theta = [big_g[k].sum(0) for k in theta]
    expected_alpha = [-(big_g[k] * torch.stack([s[k] for s in inner_sum])).sum(0) for k in theta]
    torch.testing.assert_close(_flat(got), _flat(expected_theta + expected_alpha), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_first_order_differs_from_true_gradient_but_still_trains_alpha(inner_steps):
    first, fd, meta = _analytic_and_fd(inner_steps, first_order=True)
    rel = (first - fd).norm() / fd.norm()
    assert rel > 1e-2, "first-order gradient should differ from the true meta-gradient"
    n_theta = sum(v.numel() for v in meta.theta.values())
    assert first[n_theta:].abs().max() > 1e-6, "first-order Meta-SGD must still give α a gradient"


def test_batched_adaptation_equals_per_task_loop(tiny):
    spec, theta, pre, _ = tiny
    meta = _leaves(theta)
    batched = adapt(spec, meta.theta, meta.alpha_values(), pre, steps=2, create_graph=False)
    for i in range(pre.num_tasks):
        params = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
        one = pre.tasks(i, i + 1)
        for _ in range(2):
            loss = inner_losses(spec, {k: v.unsqueeze(0) for k, v in params.items()}, one).sum()
            grads = torch.autograd.grad(loss, list(params.values()))
            params = {
                k: (v - meta.alpha_values()[k].detach() * g).detach().requires_grad_()
                for (k, v), g in zip(params.items(), grads)
            }
        for k in params:
            torch.testing.assert_close(batched[k][i].detach(), params[k].detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_fisher_vector_product_equals_kl_hessian(kind):
    """TRPO's Jᵀ H J v equals the full Hessian of the post-adaptation KL at the current point."""
    spec, theta, pre, post = PROBLEMS[kind]()
    meta = _leaves(theta)
    objective = MetaObjective(spec, [pre], post, False)
    dist = objective.distribution(meta.theta, meta.alpha_values(), create_graph=True)
    objective.set_old(dist)
    fvp = TRPO(cg_damping=0.0)._fisher_vector_product(objective, dist, meta.leaves)
    v = torch.randn(meta.get_flat().numel(), generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    dist2 = objective.distribution(meta.theta, meta.alpha_values(), create_graph=True)
    kl_grad = _flat(torch.autograd.grad(objective.kl(dist2), meta.leaves, create_graph=True))
    hv = _flat(torch.autograd.grad(kl_grad @ v, meta.leaves))
    torch.testing.assert_close(fvp(v), hv, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_trpo_step_improves_surrogate_within_trust_region(kind):
    spec, theta, pre, post = PROBLEMS[kind]()
    meta = _leaves(theta)
    before = meta.get_flat()
    result = TRPO(max_kl=0.01).step(meta, MetaObjective(spec, [pre], post, False))
    assert result.accepted
    assert result.loss_after < result.loss_before
    assert 0 < result.kl <= 0.01
    n_theta = sum(v.numel() for v in meta.theta.values())
    delta = meta.get_flat() - before
    assert delta[:n_theta].abs().max() > 0 and delta[n_theta:].abs().max() > 0, "TRPO must move both θ and α"


def test_maml_keeps_alpha_fixed(tiny):
    spec, theta, pre, post = tiny
    meta = _leaves(theta, learn_alpha=False, perturb=False)
    alpha_before = {k: v.clone() for k, v in meta.alpha_values().items()}
    assert len(meta.leaves) == len(meta.theta)
    TRPO().step(meta, MetaObjective(spec, [pre], post, False))
    for k in alpha_before:
        assert torch.equal(meta.alpha_values()[k], alpha_before[k])


@pytest.mark.parametrize("alpha_update", ["joint", "natural", "adam"])
def test_task_groups_give_the_whole_batch_step(monkeypatch, alpha_update):
    """On a CPU the objective is evaluated in groups of tasks (cache-sized, for speed): the loss, gradient,
    Fisher-vector product, line search and so the TRPO step equal the one-group computation."""
    import metarl.core.meta_update as mu

    spec, theta, pre, post = tiny_problem(num_tasks=5, episodes=3, horizon=6)
    rows = post.mask[0].numel()
    steps = {}
    for name, group_rows in (("whole", 10**9), ("groups", 2 * rows)):  # groups of 2, 2 and 1 task
        monkeypatch.setattr(mu, "CPU_GROUP_ROWS", group_rows)
        meta = _leaves(theta)
        objective = MetaObjective(spec, [pre], post, False)
        groups = mu.task_groups(objective, meta)
        assert len(groups) == (1 if name == "whole" else 3)
        dists = mu.freeze_old(meta, groups, True)
        loss, g = mu.loss_and_gradient(meta, groups, dists)
        fvp = TRPO()._grouped_fisher_vector_product(groups, dists, meta.leaves)
        v = torch.randn(g.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        product = fvp(v)
        # 3 CG iterations: CG's early stop (residual < 1e-10) must not fall between the two computations
        result = TRPO(alpha_update=alpha_update, cg_iters=3).step(meta, MetaObjective(spec, [pre], post, False))
        steps[name] = (loss, g, product, meta.get_flat(), result)
    (l1, g1, f1, x1, r1), (l2, g2, f2, x2, r2) = steps["whole"], steps["groups"]
    torch.testing.assert_close(l1, l2, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(f1, f2, rtol=1e-10, atol=1e-12)
    assert r1.accepted and r2.accepted and r1.line_search_steps == r2.line_search_steps
    torch.testing.assert_close(x1, x2, rtol=1e-9, atol=1e-11)
    assert r1.kl == pytest.approx(r2.kl, rel=1e-8)


def test_conjugate_gradient_solves_spd_system_and_reports_quadratic_form():
    from metarl.core.meta_update import conjugate_gradient

    gen = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    a = m @ m.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    x, xax = conjugate_gradient(lambda v: a @ v, b, iters=6)
    torch.testing.assert_close(x, torch.linalg.solve(a, b))
    torch.testing.assert_close(xax, x @ a @ x)


def test_trpo_with_subsampled_fisher_still_respects_trust_region():
    # Enough rows per task that half the tasks still pin down the 58 parameters' curvature.
    spec, theta, pre, post = tiny_problem(num_tasks=4, episodes=10, horizon=20)
    meta = _leaves(theta)
    result = TRPO(max_kl=0.01, fisher_subsample=0.5).step(meta, MetaObjective(spec, [pre], post, False))
    assert result.accepted and result.loss_after < result.loss_before and result.kl <= 0.01


# -- TRPO's line search and curvature guards ---------------------------------------------------------
def _at_start(kind="gaussian"):
    """(meta, objective with its old distribution set, loss at the start, flat gradient)."""
    spec, theta, pre, post = PROBLEMS[kind]()
    meta = _leaves(theta)
    objective = MetaObjective(spec, [pre], post, False)
    dist = objective.distribution(meta.theta, meta.alpha_values(), create_graph=True)
    objective.set_old(dist)
    loss = objective.loss(dist)
    return meta, objective, loss.item(), _flat(torch.autograd.grad(loss, meta.leaves))


def _loss_and_kl(objective, meta, flat):
    saved = meta.get_flat()
    meta.set_flat(flat)
    with torch.enable_grad():
        dist = objective.distribution(meta.theta, meta.alpha_values(), create_graph=False)
    out = objective.loss(dist).item(), objective.kl(dist).item()
    meta.set_flat(saved)
    return out


def test_line_search_backtracks_to_the_first_acceptable_step():
    """Candidates start − ratioʲ·step, j = 0, 1, ...: the first with a lower loss and KL ≤ max_kl is taken."""
    meta, objective, loss0, g = _at_start()
    trpo = TRPO(max_kl=0.01, ls_ratio=0.5, ls_max_steps=25)
    step = 20.0 * g / g.norm()  # far too long: the first candidates break the trust region
    start = meta.get_flat()
    candidates = [start - trpo.ls_ratio**j * step for j in range(trpo.ls_max_steps)]
    verdicts = [_loss_and_kl(objective, meta, x) for x in candidates]
    first = next(j for j, (loss, kl) in enumerate(verdicts) if loss < loss0 and kl <= trpo.max_kl)
    assert first >= 2, "the case should make the line search backtrack"
    result = trpo._line_search(meta, [objective], step, loss0, g, trpo.max_kl)
    assert result.accepted and result.line_search_steps == first + 1 and result.reason == ""
    torch.testing.assert_close(meta.get_flat(), candidates[first], rtol=0, atol=0)
    assert (result.loss_after, result.kl) == pytest.approx(verdicts[first], rel=1e-12)


@pytest.mark.parametrize(
    "direction, reason", [("uphill", "line search failed"), ("nan", "non-finite loss or KL at every line-search step")]
)
def test_rejected_line_search_reverts_theta_and_alpha(direction, reason):
    meta, objective, loss0, g = _at_start()
    trpo = TRPO(max_kl=0.01, ls_ratio=0.5, ls_max_steps=4)
    step = -1e-3 * g / g.norm() if direction == "uphill" else torch.full_like(g, float("nan"))
    start = meta.get_flat()
    if direction == "uphill":  # every candidate raises the surrogate: nothing to accept
        assert all(_loss_and_kl(objective, meta, start - 0.5**j * step)[0] > loss0 for j in range(4))
    result = trpo._line_search(meta, [objective], step, loss0, g, trpo.max_kl)
    assert not result.accepted and result.reason == reason and result.line_search_steps == 4
    assert result.loss_after == loss0 and result.kl == 0.0
    assert torch.equal(meta.get_flat(), start), "a rejected step must leave (θ, α) exactly as they were"


@pytest.mark.parametrize(
    "fvp, reason", [(lambda v: -v, "non-positive curvature"), (lambda v: 0 * v, "non-finite curvature")]
)
@pytest.mark.parametrize("alpha_update", ["joint", "natural"])
def test_trpo_skips_a_step_without_positive_curvature(monkeypatch, fvp, reason, alpha_update):
    """A Fisher-vector product with vᵀFv ≤ 0 (or a CG that blows up) skips the update and says why; for the
    natural α update the α block alone is checked too."""
    meta, objective, _, _ = _at_start()
    trpo = TRPO(alpha_update=alpha_update)
    n_theta = meta.num_theta
    if alpha_update == "natural":  # θ's block is fine, α's is not

        def product(v):
            out = fvp(v)
            out[:n_theta] = v[:n_theta]
            return out
    else:
        product = fvp
    monkeypatch.setattr(trpo, "_fisher_vector_product", lambda *args: product)
    start = meta.get_flat()
    result = trpo.step(meta, MetaObjective(objective.spec, objective.pre, objective.post, False))
    expected = reason if alpha_update == "joint" else f"α block: {reason}"
    assert not result.accepted and result.reason == expected and result.line_search_steps == 0
    assert result.non_finite == reason.startswith("non-finite")  # the trainer counts only these toward its limit
    assert torch.equal(meta.get_flat(), start)


def test_natural_alpha_block_damping_bounds_steps_along_flat_directions():
    """α's curvature is ~0 where the inner gradient is ~0: undamped CG steps there without bound; the relative
    damping (alpha_damping) keeps the step within the block's own scale and still meets the KL model."""
    curvature = torch.tensor([1.0, 1e-8], dtype=torch.float64)
    g = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)  # coordinate 0 stands for θ; the α block is [1, 3)

    def fvp(v):
        return torch.cat([v[:1], curvature * v[1:]])

    trpo = TRPO(cg_iters=10, cg_damping=0.0)
    free = trpo._natural_step(fvp, g, 1, 3, 0.01)
    damped = trpo._natural_step(fvp, g, 1, 3, 0.01, relative_damping=0.1)
    assert abs(free[1] / free[0]) > 1e6  # the flat direction takes everything
    c = 0.5 * (1 + 1e-8)  # gᵀFg / gᵀg of the block
    assert abs(damped[1] / damped[0]) == pytest.approx((1 + 0.1 * c) / (1e-8 + 0.1 * c), rel=1e-6)
    quadratic_kl = 0.5 * float(damped @ (curvature * damped))
    assert quadratic_kl <= 0.01 + 1e-12  # the damped step is conservative in the true quadratic model
