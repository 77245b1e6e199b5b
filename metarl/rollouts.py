"""Vectorised sampling of (task × episode) rollouts with one policy forward per step."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from envs.task_env import Task
from metarl.policies import Params, PolicySpec, forward


def action_noise(seeds: list[int], horizon: int, episodes: int, act_dim: int) -> np.ndarray:
    """Pre-drawn standard-normal noise ``(T, H, E, A)``, one generator per task.

    Seeding per task (not per worker) makes a task's rollouts independent of how tasks are
    split over workers, so results do not change with the worker count or a re-run after a
    worker failure.
    """
    return np.stack(
        [np.random.default_rng(s).standard_normal((horizon, episodes, act_dim), dtype=np.float32) for s in seeds]
    )


@torch.no_grad()
def sample_rollouts(
    vec_env: Any,
    spec: PolicySpec,
    params: Params,
    horizon: int,
    seeds: list[int],
) -> dict[str, np.ndarray]:
    """Run every (task, episode) pair of ``vec_env`` for ``horizon`` steps.

    ``params`` are either shared (θ) or stacked per task of this env ``(T, ...)``. Returns
    contiguous arrays ``obs (T,E,H,obs)``, ``actions (T,E,H,act)``, ``rewards (T,E,H)`` and
    ``mask (T,E,H)`` (1 while alive; a terminated episode's later steps are 0).
    """
    T, E = vec_env.num_tasks, vec_env.episodes_per_task
    obs_shape, act_dim = vec_env.observation_shape, spec.act_dim
    noise = torch.from_numpy(action_noise(seeds, horizon, E, act_dim))
    obs_buf = np.zeros((T, E, horizon, *obs_shape), dtype=np.float32)
    act_buf = np.zeros((T, E, horizon, act_dim), dtype=np.float32)
    rew_buf = np.zeros((T, E, horizon), dtype=np.float32)
    mask_buf = np.zeros((T, E, horizon), dtype=np.float32)
    alive = np.ones((T, E), dtype=bool)
    obs = vec_env.reset()
    for t in range(horizon):
        mean, log_std = forward(spec, params, torch.from_numpy(obs.reshape(T, E, -1)))
        actions = (mean + log_std.exp() * noise[:, t]).numpy()
        next_obs, reward, terminated = vec_env.step(actions)
        obs_buf[:, :, t] = obs
        act_buf[:, :, t] = actions
        rew_buf[:, :, t] = reward * alive
        mask_buf[:, :, t] = alive
        alive &= ~terminated
        if not alive.any():
            break
        obs = next_obs
    return {"obs": obs_buf, "actions": act_buf, "rewards": rew_buf, "mask": mask_buf}


def make_vector_env(env_cls: type, tasks: list[Task], episodes: int, env_kwargs: dict[str, Any]) -> Any:
    """The family's natively vectorised form."""
    if not hasattr(env_cls, "make_vector"):
        raise ValueError(f"{env_cls.__name__} has no vectorised form (make_vector); it cannot be sampled yet")
    return env_cls.make_vector(tasks, episodes, **env_kwargs)
