"""The categorical policy beside the Gaussian one: same parameter dict, distributions checked numerically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.core.policies import PolicySpec, env_actions, forward, init_params, kl, log_prob, mode, sample
from metarl.runtime.rollouts import gumbel_noise


def _spec(kind: str) -> PolicySpec:
    return PolicySpec(3, 4, (8,), "tanh", kind=kind)


def test_parameter_dicts_differ_only_by_log_std():
    gauss = init_params(_spec("gaussian"), torch.Generator().manual_seed(0))
    cat = init_params(_spec("categorical"), torch.Generator().manual_seed(0))
    assert set(gauss) - set(cat) == {"log_std"}
    for k in cat:
        torch.testing.assert_close(gauss[k], cat[k])
    with pytest.raises(ValueError, match="kind"):
        PolicySpec(3, 4, kind="beta")


def test_categorical_log_prob_kl_and_mode():
    spec = _spec("categorical")
    theta = init_params(spec, torch.Generator().manual_seed(0), torch.float64)
    obs = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dist = forward(spec, theta, obs)
    assert len(dist) == 1 and dist[0].shape == (2, 5, 4)
    every = torch.stack([log_prob(spec, dist, torch.full((2, 5, 1), a, dtype=torch.float64)) for a in range(4)], -1)
    torch.testing.assert_close(every.exp().sum(-1), torch.ones(2, 5, dtype=torch.float64))  # a distribution
    assert torch.allclose(kl(spec, dist, dist), torch.zeros(2, 5, dtype=torch.float64))
    other = (dist[0] + torch.randn(2, 5, 4, dtype=torch.float64),)
    p, q = every.exp(), torch.softmax(other[0], -1)
    torch.testing.assert_close(kl(spec, dist, other), (p * (p.log() - q.log())).sum(-1))
    torch.testing.assert_close(mode(spec, dist)[..., 0], dist[0].argmax(-1).double())


def test_gaussian_log_prob_and_kl_match_torch_distributions():
    """Values and gradients (TRPO differentiates both twice) against ``torch.distributions``."""
    spec = _spec("gaussian")
    gen = torch.Generator().manual_seed(0)

    def draw(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).requires_grad_()

    mean_p, log_std_p, mean_q, log_std_q = (
        draw(2, 5, 4),
        draw(2, 5, 4, scale=0.5),
        draw(2, 5, 4),
        draw(2, 5, 4, scale=0.5),
    )
    actions = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    leaves = [mean_p, log_std_p, mean_q, log_std_q]

    def normal(mean, log_std):
        return torch.distributions.Independent(torch.distributions.Normal(mean, log_std.exp()), 1)

    pairs = [
        (lambda: log_prob(spec, (mean_p, log_std_p), actions), lambda: normal(mean_p, log_std_p).log_prob(actions)),
        (
            lambda: kl(spec, (mean_p, log_std_p), (mean_q, log_std_q)),
            lambda: torch.distributions.kl_divergence(normal(mean_p, log_std_p), normal(mean_q, log_std_q)),
        ),
    ]
    for ours_fn, ref_fn in pairs:
        ours, ref = ours_fn(), ref_fn()
        assert ours.shape == (2, 5)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        weights = torch.randn(2, 5, generator=gen, dtype=torch.float64)
        for a, b in zip(
            torch.autograd.grad((ours * weights).sum(), leaves, allow_unused=True),
            torch.autograd.grad((ref * weights).sum(), leaves, allow_unused=True),
        ):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gumbel_max_sampling_follows_softmax():
    spec = _spec("categorical")
    logits = torch.tensor([[[1.0, 0.0, -1.0, 0.5]]])  # (T=1, E=1, 4)
    noise = torch.from_numpy(gumbel_noise([0], 20000, 1, 4))[0]  # (H, E, 4)
    draws = sample(spec, (logits.expand(20000, 1, 4),), noise)[..., 0].long().reshape(-1)
    freq = torch.bincount(draws, minlength=4).double() / 20000
    torch.testing.assert_close(freq, torch.softmax(logits.reshape(-1).double(), 0), atol=0.01, rtol=0)
    actions = env_actions(spec, np.array([[[2.0], [0.0]]], dtype=np.float32))
    assert actions.dtype == np.int64 and actions.tolist() == [[2, 0]]


def test_gaussian_sampling_unchanged():
    spec = _spec("gaussian")
    mean, log_std = torch.zeros(1, 1, 4), torch.full((1, 1, 4), -1.0)
    noise = torch.ones(1, 1, 4)
    torch.testing.assert_close(sample(spec, (mean, log_std), noise), torch.full((1, 1, 4), float(np.exp(-1.0))))
    x = np.ones((1, 1, 4), dtype=np.float32)
    assert env_actions(spec, x) is x
