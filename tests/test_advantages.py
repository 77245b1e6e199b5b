"""Discounting, the per-task linear baseline and GAE against numpy references and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metarl.core.advantages as adv
from metarl.core.advantages import baseline_features, discounted_cumsum, fit_linear_baseline, gae_advantages

# -- numpy references, written independently of metarl ------------------------------------


def np_discounted_cumsum(x: np.ndarray, discount: float) -> np.ndarray:
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        running = 0.0
        for t in reversed(range(x.shape[-1])):
            running = x[idx + (t,)] + discount * running
            out[idx + (t,)] = running
    return out


def np_features(obs_episode: np.ndarray) -> np.ndarray:
    """rllab's LinearFeatureBaseline features for one episode ``(L, D)``: obs, obs², t, t², t³, 1."""
    o = np.clip(obs_episode, -10, 10)
    t = np.arange(len(o)).reshape(-1, 1) / 100.0
    return np.concatenate([o, o**2, t, t**2, t**3, np.ones((len(o), 1))], axis=1)


def np_task_design(obs_task: np.ndarray, mask_task: np.ndarray):
    """Stack the valid steps of a task's episodes: design matrix and (episode, step) indices."""
    rows, index = [], []
    for e in range(obs_task.shape[0]):
        length = int(mask_task[e].sum())
        rows.append(np_features(obs_task[e, :length]))
        index += [(e, t) for t in range(length)]
    return np.concatenate(rows), index


def np_ridge(feats: np.ndarray, targets: np.ndarray, reg: float = 1e-5) -> np.ndarray:
    return np.linalg.solve(feats.T @ feats + reg * np.eye(feats.shape[1]), feats.T @ targets)


def np_gae(obs, rewards, mask, gamma, lam, normalize):
    """Per task: fit the baseline to discounted returns, then GAE per episode with V = 0 after the end."""
    T, E, H = rewards.shape
    out = np.zeros((T, E, H))
    for i in range(T):
        returns = np.zeros((E, H))
        for e in range(E):
            length = int(mask[i, e].sum())
            returns[e, :length] = np_discounted_cumsum(rewards[i, e, :length], gamma)
        feats, index = np_task_design(obs[i], mask[i])
        w = np_ridge(feats, np.array([returns[e, t] for e, t in index]))
        for e in range(E):
            length = int(mask[i, e].sum())
            values = np.append(np_features(obs[i, e, :length]) @ w, 0.0)
            deltas = rewards[i, e, :length] + gamma * values[1:] - values[:-1]
            out[i, e, :length] = np_discounted_cumsum(deltas, gamma * lam)
        if normalize:
            valid = mask[i] > 0
            a = out[i][valid]
            out[i][valid] = (a - a.mean()) / (a.std() + 1e-8)
    return out


def random_batch(seed, T=3, E=4, H=12, D=2, min_length=2):
    """Random obs/rewards with episodes of random lengths; garbage (not zeros) after the end."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(scale=0.5, size=(T, E, H, D))
    rewards = rng.normal(size=(T, E, H))
    lengths = rng.integers(min_length, H + 1, size=(T, E))
    lengths[:, 0] = H  # at least one full-length episode per task
    mask = (np.arange(H) < lengths[..., None]).astype(np.float64)
    obs[mask == 0] = 1e3
    rewards[mask == 0] = -1e3
    return obs, rewards, mask


def t64(*arrays):
    return [torch.as_tensor(a, dtype=torch.float64) for a in arrays]


# -- discounted_cumsum ------------------------------------------------------------------


@pytest.mark.parametrize("discount", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_discounted_cumsum_matches_numpy_loop(discount):
    x = np.random.default_rng(0).normal(size=(3, 4, 9))
    got = discounted_cumsum(torch.as_tensor(x), discount).numpy()
    np.testing.assert_allclose(got, np_discounted_cumsum(x, discount), rtol=1e-12, atol=1e-12)


def test_discounted_cumsum_special_cases():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(discounted_cumsum(x, 0.0), x)
    torch.testing.assert_close(discounted_cumsum(x, 1.0), torch.tensor([10.0, 9.0, 7.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(
        discounted_cumsum(x, 0.5), torch.tensor([1 + 1 + 0.75 + 0.5, 2 + 1.5 + 1, 3 + 2, 4.0], dtype=torch.float64)
    )


def test_discounted_cumsum_is_differentiable():
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: discounted_cumsum(v, 0.7), (x,))


# -- baseline features and fit ----------------------------------------------------------


def test_baseline_features_match_reference_and_are_masked():
    obs, _, mask = random_batch(1, T=2, E=2, H=6)
    obs[0, 0, 0] = [20.0, -30.0]  # clipped to ±10 (inside a valid step)
    feats = baseline_features(*t64(obs, mask)).numpy()
    assert feats.shape == (2, 2, 6, 2 * 2 + 4)
    for i in range(2):
        for e in range(2):
            length = int(mask[i, e].sum())
            np.testing.assert_allclose(feats[i, e, :length], np_features(obs[i, e, :length]), rtol=1e-12)
            assert not feats[i, e, length:].any()
    np.testing.assert_array_equal(feats[0, 0, 0, :4], [10.0, -10.0, 100.0, 100.0])


def test_fit_linear_baseline_matches_numpy_ridge_per_task():
    obs, _, mask = random_batch(2, T=4, E=5, H=20)
    returns = np.random.default_rng(3).normal(size=mask.shape) * 5
    weights = fit_linear_baseline(*t64(obs, returns, mask)).numpy()
    assert weights.shape == (4, 8)
    for i in range(4):
        feats, index = np_task_design(obs[i], mask[i])
        y = np.array([returns[i, e, t] for e, t in index])
        np.testing.assert_allclose(weights[i], np_ridge(feats, y), rtol=1e-6, atol=1e-8)


_ANT_SIZED_FIT = """
import numpy as np, torch
from metarl.core.advantages import fit_linear_baseline
torch.set_num_threads(2)  # the learner's setting on a 2-core machine; batched LU hung here
rng = np.random.default_rng(0)
obs = rng.normal(size=(3, 4, 60, 105))  # Ant: 105-d observations -> 2*105 + 4 = 214 features
mask = np.ones((3, 4, 60)); returns = rng.normal(size=(3, 4, 60))
for dtype in (torch.float32, torch.float64):
    w = fit_linear_baseline(*(torch.tensor(a, dtype=dtype) for a in (obs, returns, mask)))
    assert w.shape == (3, 214) and bool(torch.isfinite(w).all())
    np.save(f"{OUT}/w_{str(dtype)[6:]}.npy", w.numpy())
"""


def test_fit_linear_baseline_returns_for_ant_sized_features_under_two_threads(tmp_path):
    """A batched (T ≥ 2, 214, 214) solve with two torch threads never returned with ``linalg.solve``
    (MKL's LU); run in a subprocess so that a hang fails the test instead of stalling the suite."""
    import subprocess
    import sys

    code = _ANT_SIZED_FIT.replace("OUT", repr(str(tmp_path)))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    rng = np.random.default_rng(0)
    obs, mask, returns = rng.normal(size=(3, 4, 60, 105)), np.ones((3, 4, 60)), rng.normal(size=(3, 4, 60))
    w64 = np.load(tmp_path / "w_float64.npy")
    for i in range(3):
        feats, index = np_task_design(obs[i], mask[i])
        y = np.array([returns[i, e, t] for e, t in index])
        np.testing.assert_allclose(w64[i], np_ridge(feats, y), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("horizon", [20, 100])
def test_fit_linear_baseline_matches_numpy_lstsq(horizon):
    obs, _, mask = random_batch(2, T=4, E=5, H=horizon)
    returns = np.random.default_rng(3).normal(size=mask.shape) * 5
    unregularised = fit_linear_baseline(*t64(obs, returns, mask), reg_coeff=0.0).numpy()
    default = fit_linear_baseline(*t64(obs, returns, mask)).numpy()
    for i in range(4):
        feats, index = np_task_design(obs[i], mask[i])
        y = np.array([returns[i, e, t] for e, t in index])
        w_lstsq = np.linalg.lstsq(feats, y, rcond=None)[0]
        np.testing.assert_allclose(unregularised[i], w_lstsq, rtol=1e-6, atol=1e-6)
        if horizon == 100:
            # time features well conditioned over 100 steps: the tiny ridge barely moves the fit
            np.testing.assert_allclose(feats @ default[i], feats @ w_lstsq, atol=1e-3)


def test_fit_linear_baseline_tasks_are_independent():
    obs, _, mask = random_batch(4, T=3, E=4, H=15)
    returns = np.random.default_rng(5).normal(size=mask.shape)
    batched = fit_linear_baseline(*t64(obs, returns, mask))
    for i in range(3):
        alone = fit_linear_baseline(*t64(obs[i : i + 1], returns[i : i + 1], mask[i : i + 1]))
        torch.testing.assert_close(alone[0], batched[i], rtol=1e-9, atol=1e-10)
    # changing one task's returns changes only that task's weights
    returns2 = returns.copy()
    returns2[1] *= 10
    changed = fit_linear_baseline(*t64(obs, returns2, mask))
    torch.testing.assert_close(changed[[0, 2]], batched[[0, 2]])
    assert not torch.allclose(changed[1], batched[1])


def test_fit_linear_baseline_recovers_exact_linear_returns():
    rng = np.random.default_rng(6)
    T, E, H = 3, 6, 100
    obs = rng.uniform(-1, 1, size=(T, E, H, 2))
    mask = np.ones((T, E, H))
    mask[:, 1, 60:] = 0
    w_true = rng.normal(size=(T, 8))
    returns = np.zeros((T, E, H))
    for i in range(T):
        for e in range(E):
            returns[i, e] = np_features(obs[i, e]) @ w_true[i]
    returns *= mask
    # no regularisation: the normal equations are solved exactly
    exact = fit_linear_baseline(*t64(obs, returns, mask), reg_coeff=0.0).numpy()
    np.testing.assert_allclose(exact, w_true, rtol=1e-6, atol=1e-6)
    # default (tiny) ridge: predictions are still essentially exact
    ridge = fit_linear_baseline(*t64(obs, returns, mask)).numpy()
    for i in range(T):
        feats, _ = np_task_design(obs[i], mask[i])
        np.testing.assert_allclose(feats @ ridge[i], feats @ w_true[i], atol=1e-3)
    # and GAE with λ = 1 then has (almost) nothing left to explain
    rewards = returns - 0.99 * np.concatenate([returns[..., 1:], np.zeros((T, E, 1))], axis=-1)
    a = gae_advantages(*t64(obs, rewards, mask), gamma=0.99, gae_lambda=1.0, normalize=False)
    assert a.abs().max() < 1e-3


def test_fit_linear_baseline_ignores_steps_after_termination():
    obs, _, mask = random_batch(7, T=2, E=3, H=10)
    returns = np.random.default_rng(8).normal(size=mask.shape)
    clean_obs, clean_ret = obs * (mask[..., None] > 0), returns * mask
    w_garbage = fit_linear_baseline(*t64(obs, returns, mask))
    w_clean = fit_linear_baseline(*t64(clean_obs, clean_ret, mask))
    torch.testing.assert_close(w_garbage, w_clean)


# -- GAE: hand-worked toy case with a known (constant) baseline ----------------------------


@pytest.fixture
def constant_baseline(monkeypatch):
    """Replace the fitted baseline by V = c (the weight of the constant feature) on valid steps."""

    def install(c):
        def fake_fit(obs, returns, mask, reg_coeff=1e-5):
            w = torch.zeros(obs.shape[0], 2 * obs.shape[-1] + 4, dtype=obs.dtype)
            w[:, -1] = c
            return w

        monkeypatch.setattr(adv, "fit_linear_baseline", fake_fit)

    return install


# r = [1, 2, 3], γ = 0.5, V = 1:  δ = [1 + .5 - 1, 2 + .5 - 1, 3 + 0 - 1] = [0.5, 1.5, 2]
#   λ = 0   -> δ                           = [0.5, 1.5, 2.0]
#   λ = 1   -> G - V = [2.75, 3.5, 3] - 1  = [1.75, 2.5, 2.0]
#   λ = 0.5 -> γλ = 0.25: [0.5 + .25*2, 1.5 + .25*2, 2] = [1.0, 2.0, 2.0]
@pytest.mark.parametrize("lam, expected", [(0.0, [0.5, 1.5, 2.0]), (1.0, [1.75, 2.5, 2.0]), (0.5, [1.0, 2.0, 2.0])])
def test_gae_toy_case_by_hand(constant_baseline, lam, expected):
    constant_baseline(1.0)
    obs = torch.zeros(1, 1, 3, 2, dtype=torch.float64)
    rewards = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=torch.float64)
    mask = torch.ones(1, 1, 3, dtype=torch.float64)
    a = gae_advantages(obs, rewards, mask, gamma=0.5, gae_lambda=lam, normalize=False)
    torch.testing.assert_close(a, torch.tensor([[expected]], dtype=torch.float64))


def test_gae_toy_case_terminated_early(constant_baseline):
    """Episode ends after step 1: the garbage step 2 contributes nothing and V after the end is 0."""
    constant_baseline(1.0)
    obs = torch.tensor([[[[0.0, 0.0], [0.1, 0.1], [50.0, 50.0]]]], dtype=torch.float64)
    rewards = torch.tensor([[[1.0, 2.0, 100.0]]], dtype=torch.float64)
    mask = torch.tensor([[[1.0, 1.0, 0.0]]], dtype=torch.float64)
    # δ = [1 + .5*1 - 1, 2 + .5*0 - 1] = [0.5, 1.0];  λ = 1: [0.5 + .5*1, 1] = [1.0, 1.0] = G - V = [2, 2] - 1
    a = gae_advantages(obs, rewards, mask, gamma=0.5, gae_lambda=1.0, normalize=False)
    torch.testing.assert_close(a, torch.tensor([[[1.0, 1.0, 0.0]]], dtype=torch.float64))
    a0 = gae_advantages(obs, rewards, mask, gamma=0.5, gae_lambda=0.0, normalize=False)
    torch.testing.assert_close(a0, torch.tensor([[[0.5, 1.0, 0.0]]], dtype=torch.float64))


def test_gae_zero_baseline_gives_discounted_returns(constant_baseline):
    constant_baseline(0.0)
    obs, rewards, mask = random_batch(9)
    a = gae_advantages(*t64(obs, rewards, mask), gamma=0.9, gae_lambda=1.0, normalize=False).numpy()
    expected = np.zeros_like(rewards)
    for idx in np.ndindex(mask.shape[:2]):
        length = int(mask[idx].sum())
        expected[idx][:length] = np_discounted_cumsum(rewards[idx][:length], 0.9)
    np.testing.assert_allclose(a, expected, rtol=1e-12, atol=1e-12)


# -- GAE with the real fitted baseline -----------------------------------------------------


@pytest.mark.parametrize("gamma, lam", [(0.99, 1.0), (0.99, 0.0), (0.9, 0.95)])
@pytest.mark.parametrize("normalize", [False, True])
def test_gae_matches_numpy_reference(gamma, lam, normalize):
    obs, rewards, mask = random_batch(10, T=3, E=4, H=15)
    got = gae_advantages(*t64(obs, rewards, mask), gamma=gamma, gae_lambda=lam, normalize=normalize).numpy()
    np.testing.assert_allclose(got, np_gae(obs, rewards, mask, gamma, lam, normalize), rtol=1e-6, atol=1e-7)


def test_gae_lambda_one_is_return_minus_baseline_and_lambda_zero_is_td_residual():
    obs, rewards, mask = random_batch(11, T=2, E=3, H=10)
    gamma = 0.95
    returns = np.zeros_like(rewards)
    for idx in np.ndindex(mask.shape[:2]):
        length = int(mask[idx].sum())
        returns[idx][:length] = np_discounted_cumsum(rewards[idx][:length], gamma)
    values = np.zeros_like(rewards)
    for i in range(2):
        feats, index = np_task_design(obs[i], mask[i])
        w = np_ridge(feats, np.array([returns[i, e, t] for e, t in index]))
        for (e, t), v in zip(index, feats @ w):
            values[i, e, t] = v
    next_values = np.concatenate([values[..., 1:], np.zeros_like(values[..., :1])], axis=-1)
    a1 = gae_advantages(*t64(obs, rewards, mask), gamma=gamma, gae_lambda=1.0, normalize=False).numpy()
    np.testing.assert_allclose(a1, (returns - values) * mask, rtol=1e-6, atol=1e-8)
    a0 = gae_advantages(*t64(obs, rewards, mask), gamma=gamma, gae_lambda=0.0, normalize=False).numpy()
    np.testing.assert_allclose(a0, (rewards + gamma * next_values - values) * mask, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("normalize", [False, True])
def test_gae_steps_after_termination_contribute_nothing(normalize):
    obs, rewards, mask = random_batch(12, T=3, E=5, H=12)
    keep = mask > 0
    clean_obs = np.where(keep[..., None], obs, 0.0)
    clean_rewards = np.where(keep, rewards, 0.0)
    other_obs = np.where(keep[..., None], obs, -7.0)
    other_rewards = np.where(keep, rewards, 55.0)
    results = [
        gae_advantages(*t64(o, r, mask), gamma=0.99, gae_lambda=1.0, normalize=normalize).numpy()
        for o, r in [(obs, rewards), (clean_obs, clean_rewards), (other_obs, other_rewards)]
    ]
    assert not results[0][~keep].any()
    np.testing.assert_allclose(results[0], results[1], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(results[0], results[2], rtol=1e-9, atol=1e-10)
    assert np.isfinite(results[0]).all()


def test_gae_normalised_per_task_over_valid_steps():
    obs, rewards, mask = random_batch(13, T=4, E=5, H=20)
    rewards[2] *= 1000.0  # wildly different scale in one task
    rewards[3] += 50.0
    a = gae_advantages(*t64(obs, rewards, mask), gamma=0.99, gae_lambda=1.0, normalize=True).numpy()
    keep = mask > 0
    for i in range(4):
        valid = a[i][keep[i]]
        assert abs(valid.mean()) < 1e-9
        assert valid.std() == pytest.approx(1.0, abs=1e-6)
    assert not a[~keep].any()
    # per task, not global: rescaling task 2 leaves the other tasks' advantages unchanged
    rewards_b = rewards.copy()
    rewards_b[2] /= 1000.0
    b = gae_advantages(*t64(obs, rewards_b, mask), gamma=0.99, gae_lambda=1.0, normalize=True).numpy()
    np.testing.assert_allclose(a[[0, 1, 3]], b[[0, 1, 3]], rtol=1e-9, atol=1e-10)


def test_gae_degenerate_tasks_stay_finite():
    obs, rewards, mask = random_batch(14, T=2, E=2, H=5)
    mask[1] = 0.0
    mask[1, 0, 0] = 1.0  # a task with a single valid step
    a = gae_advantages(*t64(obs, rewards, mask), gamma=0.99, gae_lambda=1.0, normalize=True)
    assert torch.isfinite(a).all()
    assert (a[1] == 0).all()


# -- bootstrapping where the horizon cut an episode (config ``bootstrap_truncated``) -----------


def _cut_case(horizon=30, gamma=0.95):
    """One task, two identical episodes of reward 1 per step on a fixed obs; A is cut by the horizon, B terminated."""
    obs = torch.full((1, 2, horizon, 2), 0.5, dtype=torch.float64)  # a stationary state: only time varies
    rewards = torch.ones(1, 2, horizon, dtype=torch.float64)
    mask = torch.ones(1, 2, horizon, dtype=torch.float64)
    last_obs = torch.full((1, 2, 2), 0.5, dtype=torch.float64)
    truncated = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    return obs, rewards, mask, last_obs, truncated, gamma


def test_gae_without_cut_information_treats_the_horizon_as_termination():
    obs, rewards, mask, last_obs, truncated, gamma = _cut_case()
    plain = gae_advantages(obs, rewards, mask, gamma, 1.0, normalize=False)
    assert torch.equal(plain[0, 0], plain[0, 1])  # a cut episode and a terminated one are valued alike
    none_cut = gae_advantages(
        obs, rewards, mask, gamma, 1.0, normalize=False, last_obs=last_obs, truncated=torch.zeros_like(truncated)
    )
    assert torch.equal(none_cut, plain)


def test_gae_bootstraps_only_the_cut_episode_by_the_value_of_its_last_state():
    obs, rewards, mask, last_obs, truncated, gamma = _cut_case()
    horizon = obs.shape[-2]
    boot = gae_advantages(obs, rewards, mask, gamma, 1.0, normalize=False, last_obs=last_obs, truncated=truncated)
    # λ = 1, no normalisation: A - B = γ^(H - t) · V(cut state) at every t (same baseline values for both)
    diff = (boot[0, 0] - boot[0, 1]) / gamma ** torch.arange(horizon, 0, -1, dtype=torch.float64)
    assert torch.allclose(diff, diff[0].expand_as(diff), rtol=1e-6)
    # the cut state is valued as an episode starting there: about the horizon's discounted return
    # of reward 1 per step (the baseline, refitted with the tail, sees returns between that and 1/(1-γ))
    start_value = (1 - gamma**horizon) / (1 - gamma)
    assert start_value * 0.9 < float(diff[0]) < 1 / (1 - gamma) * 1.1
    # and the terminated episode's last step keeps its own reward minus the baseline, with no tail
    plain = gae_advantages(obs, rewards, mask, gamma, 1.0, normalize=False)
    assert float(boot[0, 0, -1]) > float(plain[0, 0, -1]) + 5


class _CountingEnv:
    """Two tasks x two episodes; obs = step count; episode (0, 0) terminates on its 3rd step."""

    num_tasks, episodes_per_task, observation_shape = 2, 2, (1,)

    def reset(self):
        self.t = 0
        return np.zeros((2, 2, 1), dtype=np.float32)

    def step(self, actions):
        self.t += 1
        terminated = np.zeros((2, 2), dtype=bool)
        terminated[0, 0] = self.t == 3
        return np.full((2, 2, 1), self.t, dtype=np.float32), np.ones((2, 2), dtype=np.float32), terminated


def test_rollouts_say_which_episodes_the_horizon_cut():
    from metarl.core.policies import PolicySpec, init_params
    from metarl.runtime.rollouts import sample_rollouts

    spec = PolicySpec(1, 1, (4,), "tanh")
    theta = {k: v.float() for k, v in init_params(spec, torch.Generator().manual_seed(0), torch.float64).items()}
    r = sample_rollouts(_CountingEnv(), spec, theta, 5, [1, 2])
    assert r["truncated"].tolist() == [[0.0, 1.0], [1.0, 1.0]]  # only the episode that terminated is not cut
    assert r["mask"][0, 0].tolist() == [1, 1, 1, 0, 0] and r["mask"][0, 1].tolist() == [1] * 5
    assert r["obs"][1, 1, -1, 0] == 4 and r["last_obs"][1, 1, 0] == 5  # the state after the last step
