"""Task families seen from the driver: make the env, sample tasks, find the vectorised form."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the metarl families)
from envs.task_env import Task


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> gym.Env:
    return gym.make(env_id, **(env_kwargs or {}))


def env_horizon(env: gym.Env, horizon: int | None) -> int:
    if horizon is not None:
        return horizon
    if env.spec is None or env.spec.max_episode_steps is None:
        raise ValueError(f"{env.spec.id if env.spec else env}: no max_episode_steps registered; set `horizon`")
    return env.spec.max_episode_steps


def sample_tasks(env: gym.Env, n: int, rng: np.random.Generator) -> list[Task]:
    return env.unwrapped.sample_tasks(n, rng)


def space_dims(env: gym.Env) -> tuple[int, int]:
    """(obs_dim, act_dim) of a flat Box -> Box task family."""
    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, gym.spaces.Box) or not isinstance(act, gym.spaces.Box):
        raise ValueError(f"{env.spec.id}: metarl's Gaussian policy needs Box observation and action spaces")
    return int(np.prod(obs.shape)), int(np.prod(act.shape))
