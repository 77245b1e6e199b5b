"""Task families seen from the driver: make the env, sample tasks, find the vectorised form."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from metarl.core.policies import PolicySpec
from metarl.envs.task_env import Task  # importing metarl registers the families


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> gym.Env:
    return gym.make(env_id, **(env_kwargs or {}))


def env_horizon(env: gym.Env, horizon: int | None) -> int:
    if horizon is not None:
        return horizon
    if env.spec is None or env.spec.max_episode_steps is None:
        raise ValueError(f"{env.spec.id if env.spec else env}: no max_episode_steps registered; set `horizon`")
    return env.spec.max_episode_steps


def task_splits(env: gym.Env) -> tuple[str, ...]:
    """The family's task splits: ``("train", "test")`` for a benchmark with held-out tasks (Meta-World),
    else ``("train",)`` (every task is drawn from one distribution)."""
    return tuple(getattr(env.unwrapped, "SPLITS", ("train",)))


def sample_tasks(env: gym.Env, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
    """``n`` tasks of ``split``; training draws from ``train``, meta-testing from ``test`` where there is one."""
    if split not in task_splits(env):
        raise ValueError(
            f"split {split!r}: {env.spec.id if env.spec else env} has the splits {', '.join(task_splits(env))}"
        )
    if split == "train":
        return env.unwrapped.sample_tasks(n, rng)
    return env.unwrapped.sample_tasks(n, rng, split=split)


def space_dims(env: gym.Env) -> tuple[int, int, str]:
    """``(obs_dim, act_dim, policy kind)``: Box actions get a Gaussian policy, Discrete ones a categorical.

    ``act_dim`` is the action vector's size, or the number of discrete actions.
    """
    obs, act = env.observation_space, env.action_space
    name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    if not isinstance(obs, gym.spaces.Box):
        raise ValueError(f"{name}: metarl's MLP policies need a Box observation space, got {obs}")
    if isinstance(act, gym.spaces.Box):
        return int(np.prod(obs.shape)), int(np.prod(act.shape)), "gaussian"
    if isinstance(act, gym.spaces.Discrete) and act.start == 0:
        return int(np.prod(obs.shape)), int(act.n), "categorical"
    raise ValueError(f"{name}: metarl's policies need a Box or Discrete (starting at 0) action space, got {act}")


def policy_spec(cfg, env: gym.Env):
    """The policy network for ``cfg`` (hidden sizes, activation, initial std) on ``env``'s spaces."""
    obs_dim, act_dim, kind = space_dims(env)
    policy = cfg.policy
    return PolicySpec(obs_dim, act_dim, tuple(policy.hidden_sizes), policy.activation, policy.init_std, kind)
