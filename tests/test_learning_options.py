"""Learning options: loss averaging, α parametrisations and TRPO's α updates, ProMP's LVC estimator,
multi-step adaptation on fresh batches, and evaluation's step-size schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.adaptation import adapt, inner_losses, log_probs
from metarl.advantages import gae_advantages, step_weights
from metarl.alpha import Alpha
from metarl.batch import Batch
from metarl.config import Config
from metarl.learner import Learner
from metarl.meta_update import TRPO, MetaObjective, MetaParameters, _flat
from metarl.policies import PolicySpec, forward, init_params
from tests.conftest import tiny_batches, tiny_problem


# -- loss averaging ---------------------------------------------------------------------------------
def _ragged_mask():
    mask = torch.ones(2, 3, 5, dtype=torch.float64)
    mask[0, 1, 2:] = 0  # an episode that reached its goal after 2 steps
    mask[1, 0, 4:] = 0
    return mask


def test_step_weights_pool_steps_or_average_episodes():
    mask = _ragged_mask()
    steps, episodes = step_weights(mask, "steps"), step_weights(mask, "episodes")
    torch.testing.assert_close(steps.sum((1, 2)), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(episodes.sum((1, 2)), torch.ones(2, dtype=torch.float64))
    assert steps[0, 0, 0] == pytest.approx(1 / 12) and steps[0, 1, 0] == pytest.approx(1 / 12)
    # per episode: mean over the episode's own steps, then over 3 episodes
    assert episodes[0, 0, 0] == pytest.approx(1 / 15) and episodes[0, 1, 0] == pytest.approx(1 / 6)
    assert float(episodes[0, 1, 3]) == 0.0
    full = torch.ones(1, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(step_weights(full, "steps"), step_weights(full, "episodes"))


def test_episode_normalisation_matches_pytorch_maml_rl_formula():
    """pytorch-maml-rl's weighted_normalize: mean of per-episode means, std from per-episode mean squares."""
    gen = torch.Generator().manual_seed(0)
    mask = _ragged_mask()
    obs = torch.randn(2, 3, 5, 2, generator=gen, dtype=torch.float64)
    rewards = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    raw = gae_advantages(obs, rewards, mask, 0.9, 1.0, normalize=False)
    got = gae_advantages(obs, rewards, mask, 0.9, 1.0, normalize=True, weights=step_weights(mask, "episodes"))
    for i in range(2):
        a, m = raw[i].numpy(), mask[i].numpy()
        lengths = m.sum(-1)
        mean = np.mean((a * m).sum(-1) / lengths)
        out = (a - mean) * m
        std = np.sqrt(np.mean((out**2).sum(-1) / lengths))
        np.testing.assert_allclose(got[i].numpy(), out / (std + 1e-8), rtol=1e-10, atol=1e-12)


def test_inner_loss_episode_average_by_hand():
    spec, theta, pre, _ = tiny_problem()
    mask = pre.mask.clone()
    mask[0, 0, 3:] = 0
    batch = Batch(pre.obs, pre.actions, pre.rewards, mask, pre.advantages * mask, step_weights(mask, "episodes"))
    params = {k: v[None].expand(batch.num_tasks, *v.shape) for k, v in theta.items()}
    lp = log_probs(spec, params, batch).view_as(mask)
    x = lp * batch.advantages
    expected = -((x * mask).sum(-1) / mask.sum(-1)).mean(-1)
    torch.testing.assert_close(inner_losses(spec, params, batch), expected)


# -- α ----------------------------------------------------------------------------------------------
def test_log_alpha_keeps_values_sign_and_round_trips():
    theta = {"w": torch.zeros(3, 2, dtype=torch.float64), "b": torch.zeros(2, dtype=torch.float64)}
    alpha = Alpha.create(theta, 0.5, learned=True, parametrization="log")
    torch.testing.assert_close(alpha.values()["w"], torch.full((3, 2), 0.5, dtype=torch.float64))
    stored = {"w": torch.tensor([[0.2, -0.1], [1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64),
              "b": torch.tensor([0.1, -0.4], dtype=torch.float64)}
    alpha.load_state_dict(stored)
    torch.testing.assert_close(alpha.state_dict()["w"], stored["w"])
    with torch.no_grad():  # a step on ρ changes α relatively and never flips its sign
        for leaf in alpha.leaves():
            leaf.add_(1.0)
    torch.testing.assert_close(alpha.values()["b"], stored["b"] * np.e)
    assert alpha.stats()["alpha/frac_negative"] == pytest.approx(3 / 8)


def test_scalar_alpha_is_one_leaf_and_fixed_alpha_has_none():
    theta = {"w": torch.zeros(3, 2), "b": torch.zeros(2)}
    shared = Alpha.create(theta, 0.1, learned=True, granularity="scalar")
    assert len(shared.leaves()) == 1 and shared.values()["w"] is shared.values()["b"]
    fixed = Alpha.create(theta, 0.1, learned=False)
    assert fixed.leaves() == [] and fixed.stats() == {"alpha/mean": pytest.approx(0.1)}


def _trpo_step(alpha_update, parametrization="direct"):
    spec, theta, pre, post = tiny_problem()
    theta = {k: v.clone().requires_grad_() for k, v in theta.items()}
    meta = MetaParameters(theta, Alpha.create(theta, 0.3, True, parametrization=parametrization))
    alpha_before = _flat(list(meta.alpha_values().values())).detach().clone()
    trpo = TRPO(max_kl=0.01, alpha_update=alpha_update, alpha_max_kl=0.01, alpha_lr=0.05)
    result = trpo.step(meta, MetaObjective(spec, [pre], post, False))
    moved = (_flat(list(meta.alpha_values().values())).detach() - alpha_before).abs()
    return result, moved


@pytest.mark.parametrize("alpha_update, bound", [("joint", 0.01), ("natural", 0.02), ("adam", 0.01)])
def test_trpo_alpha_updates_improve_within_their_trust_region(alpha_update, bound):
    result, moved = _trpo_step(alpha_update)
    assert result.accepted and result.loss_after < result.loss_before
    assert 0 < result.kl <= bound + 1e-12
    assert moved.max() > 0


def test_adam_alpha_update_takes_adams_step_scaled_by_the_line_search():
    result, adam = _trpo_step("adam")
    # Adam's first step is lr·sign(g) per entry (|g| ≫ eps), scaled by the accepted line-search step
    accepted_scale = 0.8 ** (result.line_search_steps - 1)
    assert float(adam.median()) == pytest.approx(0.05 * accepted_scale, rel=1e-3)
    assert float(adam.max()) <= 0.05 * accepted_scale * (1 + 1e-6)


# -- ProMP's LVC estimator: the exact meta-gradient it defines, on one task --------------------------
def test_lvc_meta_gradient_equals_its_closed_form():
    spec, theta, pre, post = tiny_problem(num_tasks=1)
    alpha = 0.3
    theta = {k: v.clone().requires_grad_() for k, v in theta.items()}
    meta = MetaParameters(theta, Alpha.create(theta, alpha, learned=False))
    names = list(theta)
    flat0 = _flat([theta[k] for k in names]).detach()

    def unflat(x):
        out, i = {}, 0
        for k in names:
            out[k] = x[i : i + theta[k].numel()].view_as(theta[k])
            i += theta[k].numel()
        return out

    grads = {}
    for estimator in ("maml", "lvc"):
        objective = MetaObjective(spec, [pre], post, False, estimator)
        dist = objective.distribution(meta.theta, meta.alpha_values(), create_graph=True)
        objective.set_old(dist)
        grads[estimator] = _flat(torch.autograd.grad(objective.loss(dist), meta.leaves))
    # closed form: (I − α H)ᵀ ∇L_post(θ'), H = ∇² of the REINFORCE loss, plus −Σ w A ∇logπ ∇logπᵀ for LVC
    reinforce = lambda x: inner_losses(spec, {k: v[None] for k, v in unflat(x).items()}, pre).sum()  # noqa: E731
    hessian = torch.autograd.functional.hessian(reinforce, flat0)
    jac = torch.autograd.functional.jacobian(
        lambda x: log_probs(spec, {k: v[None] for k, v in unflat(x).items()}, pre)[0], flat0)
    weights = (pre.flat("weights") * pre.flat("advantages"))[0]
    outer = -(jac.T * weights) @ jac
    g_inner = torch.autograd.functional.jacobian(reinforce, flat0)
    theta_prime = flat0 - alpha * g_inner
    post_objective = MetaObjective(spec, [pre], post, False)
    post_objective.set_old(post_objective.distribution(meta.theta, meta.alpha_values(), create_graph=False))

    def post_loss(x):
        from metarl.policies import forward

        return post_objective.loss(forward(spec, {k: v[None] for k, v in unflat(x).items()}, post.flat("obs")))

    g_post = torch.autograd.functional.jacobian(post_loss, theta_prime)
    eye = torch.eye(flat0.numel(), dtype=flat0.dtype)
    torch.testing.assert_close(grads["maml"], (eye - alpha * hessian).T @ g_post, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(grads["lvc"], (eye - alpha * (hessian + outer)).T @ g_post, rtol=1e-7, atol=1e-10)
    assert (grads["lvc"] - grads["maml"]).norm() > 1e-6 * grads["maml"].norm()


def test_lvc_adapts_to_the_same_parameters():
    spec, theta, pre, _ = tiny_problem()
    alpha = {k: torch.tensor(0.3, dtype=torch.float64) for k in theta}
    theta = {k: v.clone().requires_grad_() for k, v in theta.items()}
    a = adapt(spec, theta, alpha, [pre], create_graph=False)
    b = adapt(spec, theta, alpha, [pre], create_graph=False, meta_gradient="lvc")
    for k in a:
        torch.testing.assert_close(a[k], b[k])


# -- multi-step adaptation on fresh batches, through the learner -------------------------------------
def _rollouts_of(batch: Batch) -> dict[str, np.ndarray]:
    out = {k: getattr(batch, k).float().numpy() for k in ("obs", "actions", "rewards", "mask")}
    out["task_index"] = np.arange(batch.num_tasks)
    return out


def test_learner_adapts_step_j_on_batch_j_and_the_objective_uses_the_same_theta_prime():
    spec, _, batches = tiny_batches(3)
    cfg = Config.from_dict({"algorithm": "metasgd", "inner_steps": 2, "meta_batch_size": 3, "episodes_per_task": 3,
                            "hidden_sizes": [5], "activation": "tanh", "init_std": 0.5, "dtype": "float64",
                            "learner_threads": 1})
    threads = torch.get_num_threads()
    learner = Learner(cfg, spec)
    torch.set_num_threads(threads)
    first = learner.adapt([_rollouts_of(batches[0])], 0)
    second = learner.adapt([_rollouts_of(batches[1])], 1)
    pre0, pre1 = learner._pre
    alpha = learner.meta.alpha_values()
    # by hand: θ'₁ from batch 0 at θ, θ'₂ from batch 1 at θ'₁
    p1 = adapt(spec, learner.meta.theta, alpha, [pre0], create_graph=False)
    for k in p1:
        torch.testing.assert_close(torch.as_tensor(first[k]), p1[k].detach().to(torch.float64))
    p1 = {k: v.detach().requires_grad_() for k, v in p1.items()}
    loss = inner_losses(spec, p1, pre1).sum()
    g = torch.autograd.grad(loss, list(p1.values()))
    for (k, v), gk in zip(p1.items(), g):
        torch.testing.assert_close(torch.as_tensor(second[k]), (v - alpha[k] * gk).detach())
    metrics = learner.meta_update([_rollouts_of(batches[2])])
    assert "return_step1" in metrics and metrics["episodes_pre"] == 9
    with pytest.raises(RuntimeError, match="inner step 3"):
        learner.adapt([_rollouts_of(batches[0])], 0)
        learner.adapt([_rollouts_of(batches[0])], 2)


@pytest.mark.parametrize("meta_gradient, first_order", [("maml", False), ("lvc", False), ("maml", True)])
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_the_objective_differentiates_the_theta_prime_the_post_phase_sampled_with(meta_gradient, first_order,
                                                                                   inner_steps):
    """The learner hands the post phase θ' (what the rollout workers sample with); the objective it then gives
    the meta-optimizer must put the same θ' on the post observations, whatever the estimator or order."""
    spec, _, batches = tiny_batches(inner_steps + 1)
    cfg = Config.from_dict({"algorithm": "metasgd", "inner_steps": inner_steps, "meta_batch_size": 3,
                            "episodes_per_task": 3, "hidden_sizes": [5], "activation": "tanh", "init_std": 0.5,
                            "dtype": "float64", "learner_threads": 1, "meta_gradient": meta_gradient,
                            "first_order": first_order})
    threads = torch.get_num_threads()
    learner = Learner(cfg, spec)
    torch.set_num_threads(threads)
    for step in range(inner_steps):
        sampled_with = learner.adapt([_rollouts_of(batches[step])], step)
    seen = []
    step_fn = learner.optimizer.step

    def recording_step(meta, objective):  # the objective's distribution before the update moves (θ, α)
        seen.append((objective, objective.distribution(meta.theta, meta.alpha_values(), create_graph=False)))
        return step_fn(meta, objective)

    learner.optimizer.step = recording_step
    learner.meta_update([_rollouts_of(batches[-1])])
    (objective, dist), = seen
    assert (objective.meta_gradient, objective.first_order, objective.inner_steps) == (meta_gradient, first_order,
                                                                                       inner_steps)
    theta_prime = {k: torch.as_tensor(v) for k, v in sampled_with.items()}
    expected = forward(spec, theta_prime, batches[-1].flat("obs"))
    for got, want in zip(dist, expected):
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-12)


# -- evaluation's step sizes ---------------------------------------------------------------------------
def test_inner_step_scale_scales_the_step():
    from metarl.evaluation import inner_step

    spec, theta, pre, _ = tiny_problem()
    alpha = {k: torch.tensor(0.2, dtype=torch.float64) for k in theta}
    params = {k: v[None].expand(pre.num_tasks, *v.shape) for k, v in theta.items()}
    full, half = inner_step(spec, params, alpha, pre, 1.0), inner_step(spec, params, alpha, pre, 0.5)
    for k in params:
        torch.testing.assert_close(half[k] - params[k], 0.5 * (full[k] - params[k]))


def test_step_scales_from_sizes_and_refusals():
    from types import SimpleNamespace

    from metarl.evaluation import parse_step_sizes, step_scales

    maml = SimpleNamespace(cfg=Config.from_dict({"algorithm": "maml", "inner_lr": 0.5}), init="run")
    assert step_scales(maml, 3, step_sizes=[0.5, 0.25]) == [0.5, 0.25, 0.25]  # on a unit α (with_unit_alpha)
    assert step_scales(maml, 2) == [1.0, 1.0]
    metasgd = SimpleNamespace(cfg=Config.from_dict({"algorithm": "metasgd"}), init="run")
    with pytest.raises(ValueError, match="--alpha-scales"):
        step_scales(metasgd, 2, step_sizes=[0.1])
    metasgd.init = "random"  # a fresh θ has no learned α of its own: absolute sizes are allowed
    assert step_scales(metasgd, 2, step_sizes=[0.1]) == [0.1, 0.1]
    assert step_scales(metasgd, 3, alpha_scales=[1, 0.5]) == [1, 0.5, 0.5]
    for bad in ("0.5,x", "0.5,-1", "nan"):
        with pytest.raises(ValueError):
            parse_step_sizes(bad)


def test_mean_action_return_is_the_reward_along_the_mean_action_path(tmp_path):
    """`evaluate --deterministic`'s return: −Σ distance to the goal along the noiseless path (Navigation2D)."""
    from test_export import fake_run

    from metarl.adaptation import expand_to_tasks
    from metarl.evaluation import load_run, mean_action_rollout
    from metarl.policies import to_numpy

    run = load_run(fake_run(tmp_path / "run", algorithm="maml"))
    tasks = [{"goal": [0.3, -0.2]}, {"goal": [-0.1, 0.4]}]
    params = to_numpy({k: v.contiguous() for k, v in expand_to_tasks(run.theta, len(tasks)).items()})
    paths, returns = mean_action_rollout(run, tasks, params)
    for path, task, ret in zip(paths, tasks, returns):
        expected = -np.linalg.norm(path[1:].astype(np.float64) - np.array(task["goal"]), axis=-1).sum()
        assert ret == pytest.approx(expected, rel=1e-4)
        assert len(path) >= 2
