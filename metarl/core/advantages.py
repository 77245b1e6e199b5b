"""Per-task linear feature baseline and GAE, batched over tasks.

Rollout arrays are ``(T tasks, E episodes, H steps, ...)`` with a ``mask`` that is 1 while
an episode is alive. Everything here is plain tensor algebra: no Python loop over tasks or
episodes (only over the horizon for the backwards discount recursion).
"""

from __future__ import annotations

import torch


def discounted_cumsum(x: torch.Tensor, discount: float) -> torch.Tensor:
    """y[t] = x[t] + discount * y[t+1] along the last dim."""
    out = torch.empty_like(x)
    running = torch.zeros_like(x[..., 0])
    for t in range(x.shape[-1] - 1, -1, -1):
        running = x[..., t] + discount * running
        out[..., t] = running
    return out


def _features(obs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(obs, obs², t, t², t³, 1) with ``t`` = step/100 broadcast to ``obs.shape[:-1] + (1,)``."""
    clipped = obs.clamp(-10, 10)
    return torch.cat([clipped, clipped.square(), t, t**2, t**3, torch.ones_like(t)], dim=-1)


def baseline_features(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Features (obs, obs², t, t², t³, 1) with t = step/100, as in the MAML reference code."""
    horizon = obs.shape[-2]
    t = (torch.arange(horizon, dtype=obs.dtype, device=obs.device) / 100.0).expand(obs.shape[:-1]).unsqueeze(-1)
    return _features(obs, t) * mask.unsqueeze(-1)


def fit_linear_baseline(
    obs: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, reg_coeff: float = 1e-5
) -> torch.Tensor:
    """Ridge regression of returns on features, one weight vector per task: ``(T, F)``.

    Regularisation grows ×10 (up to 5 times) if the normal equations are singular, as the
    reference baseline does.

    The normal equations (XᵀX + λI) w = Xᵀy are symmetric positive definite, so they are solved
    by Cholesky. Why not ``torch.linalg.solve``: its batched LU (MKL ``sgetrf``) never returns for
    ``(T ≥ 2, F, F)`` with F ≳ 160 under ``torch.set_num_threads(2)`` with torch 2.13 CPU (Ant's
    214 features hung the learner; tests/test_advantages.py runs that case under a timeout).
    """
    feats = baseline_features(obs, mask).flatten(1, 2)  # (T, E*H, F)
    targets = (returns * mask).flatten(1, 2).unsqueeze(-1)
    gram = feats.transpose(1, 2) @ feats
    rhs = feats.transpose(1, 2) @ targets
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    for _ in range(5):
        factor, info = torch.linalg.cholesky_ex(gram + reg_coeff * eye)
        if bool((info == 0).all()):
            weights = torch.cholesky_solve(rhs, factor)
            if bool(torch.isfinite(weights).all()):
                return weights.squeeze(-1)
        reg_coeff = max(reg_coeff, 1e-8) * 10
    return torch.zeros(gram.shape[:-1], dtype=gram.dtype, device=gram.device)


LOSS_AVERAGES = ("steps", "episodes")


def step_weights(mask: torch.Tensor, average: str = "steps") -> torch.Tensor:
    """Per-step weights ``(T, E, H)`` that sum to 1 over each task's valid steps.

    ``steps`` pools every valid step of a task (each weighs 1 / its number of steps);
    ``episodes`` averages within each episode, then over episodes (a step of an episode of
    length L weighs 1 / (E·L)), as pytorch-maml-rl and rllab-era code do. The two agree when
    no episode ends early; when some do (a goal reached), ``episodes`` gives the steps of short
    episodes more weight. Losses, KL and advantage normalisation all use the same weights.
    """
    if average not in LOSS_AVERAGES:
        raise ValueError(f"loss average {average!r} is not one of {LOSS_AVERAGES}")
    if average == "steps":
        return mask / mask.sum(dim=(1, 2), keepdim=True).clamp_min(1)
    lengths = mask.sum(-1, keepdim=True)
    live = (lengths > 0).to(mask.dtype).sum(1, keepdim=True).clamp_min(1)  # episodes with any step
    return mask / (lengths.clamp_min(1) * live)


def gae_advantages(
    obs: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    gae_lambda: float,
    normalize: bool = True,
    weights: torch.Tensor | None = None,
    last_obs: torch.Tensor | None = None,
    truncated: torch.Tensor | None = None,
) -> torch.Tensor:
    """GAE(γ, λ) with the per-task linear baseline as the value estimate; ``(T, E, H)``.

    The baseline is fitted to the discounted returns of the same batch. Normalisation is per
    task: mean and standard deviation under ``weights`` (:func:`step_weights`; pooled over the
    task's valid steps when None).

    After an episode's last step the value is 0 (the reference code's rule: the horizon counts
    as termination) unless ``last_obs`` ``(T, E, obs)`` and ``truncated`` ``(T, E)`` are given:
    then an episode that the horizon cut (not one that terminated) bootstraps from the
    baseline's value of the state it was cut in, and the baseline is refitted once to the
    returns with that tail added (partial-episode bootstrapping, Pardo et al. 2018). The cut
    state is valued as if an episode started there (time feature 0): the time features fit the
    finite-horizon value, which is ≈ 0 at step H by construction, so valuing it at step H would
    bootstrap nothing.
    """
    rewards = rewards * mask
    returns = discounted_cumsum(rewards, gamma)
    coeffs = fit_linear_baseline(obs, returns, mask)
    tail = None
    if truncated is not None and last_obs is not None and bool(truncated.any()):
        horizon = obs.shape[-2]
        steps_left = torch.arange(horizon, 0, -1, dtype=obs.dtype, device=obs.device)  # H - t
        end_feats = _features(last_obs, torch.zeros((*last_obs.shape[:-1], 1), dtype=obs.dtype, device=obs.device))
        cut = truncated.to(obs.dtype)
        tail = (end_feats @ coeffs[:, :, None]).squeeze(-1) * cut  # (T, E): value at the cut, first fit
        coeffs = fit_linear_baseline(obs, returns + tail[..., None] * gamma**steps_left * mask, mask)
        tail = (end_feats @ coeffs[:, :, None]).squeeze(-1) * cut
    values = (baseline_features(obs, mask) @ coeffs[:, None, :, None]).squeeze(-1) * mask
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    if tail is not None:  # only where the horizon cut the episode: its last step is step H-1
        next_values[..., -1] = tail
    deltas = (rewards + gamma * next_values - values) * mask
    advantages = discounted_cumsum(deltas, gamma * gae_lambda) * mask
    if normalize:
        w = step_weights(mask) if weights is None else weights
        mean = (advantages * w).sum(dim=(1, 2), keepdim=True)
        var = ((advantages - mean).square() * w).sum(dim=(1, 2), keepdim=True)
        advantages = (advantages - mean) / (var.sqrt() + 1e-8) * mask
    return advantages
