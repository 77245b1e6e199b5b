"""Vectorised sampling of (task × episode) rollouts with one policy forward per step.

A family's native vectorised form (``make_vector``, as Navigation2D's) is used when it has one;
any other Gymnasium task env runs as one copy per (task, episode) pair in a
``gymnasium.vector.SyncVectorEnv`` (:class:`GymTaskVectorEnv`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.core.policies import Params, PolicySpec, env_actions, forward, sample
from metarl.envs.task_env import Task, episode_seed
from metarl.envs.tasks import make_env


def action_noise(seeds: list[int], horizon: int, episodes: int, act_dim: int) -> np.ndarray:
    """Pre-drawn standard-normal noise ``(T, H, E, A)``, one generator per task.

    Seeding per task (not per worker) makes a task's rollouts independent of how tasks are
    split over workers, so results do not change with the worker count or a re-run after a
    worker failure.
    """
    return np.stack(
        [np.random.default_rng(s).standard_normal((horizon, episodes, act_dim), dtype=np.float32) for s in seeds]
    )


def gumbel_noise(seeds: list[int], horizon: int, episodes: int, num_actions: int) -> np.ndarray:
    """Pre-drawn Gumbel noise ``(T, H, E, n)`` for Gumbel-max sampling, one generator per task."""
    return np.stack(
        [np.random.default_rng(s).gumbel(size=(horizon, episodes, num_actions)).astype(np.float32) for s in seeds]
    )


def policy_noise(spec: PolicySpec, seeds: list[int], horizon: int, episodes: int) -> np.ndarray:
    draw = action_noise if spec.kind == "gaussian" else gumbel_noise
    return draw(seeds, horizon, episodes, spec.act_dim)


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
    ``mask (T,E,H)`` (1 while alive; a terminated episode's later steps are 0), plus
    ``last_obs (T,E,obs)`` (the observation the horizon cut an episode in) and ``truncated
    (T,E)`` (1 where the horizon, not termination, ended the episode), which GAE needs to
    bootstrap at the cut when asked to. A vector env with ``last_success`` (its last step's
    per-copy success flags) adds ``success (T,E)``: 1 where any live step of the episode succeeded.
    """
    T, E = vec_env.num_tasks, vec_env.episodes_per_task
    obs_shape, act_dim = vec_env.observation_shape, spec.action_width
    noise = torch.from_numpy(policy_noise(spec, seeds, horizon, E))
    obs_buf = np.zeros((T, E, horizon, *obs_shape), dtype=np.float32)
    act_buf = np.zeros((T, E, horizon, act_dim), dtype=np.float32)
    rew_buf = np.zeros((T, E, horizon), dtype=np.float32)
    mask_buf = np.zeros((T, E, horizon), dtype=np.float32)
    alive = np.ones((T, E), dtype=bool)
    reports_success = hasattr(vec_env, "last_success")  # families with a success signal (Meta-World)
    success = np.zeros((T, E), dtype=bool)
    obs = vec_env.reset()
    for t in range(horizon):
        dist = forward(spec, params, torch.from_numpy(obs.reshape(T, E, -1)))
        actions = sample(spec, dist, noise[:, t]).numpy()
        next_obs, reward, terminated = vec_env.step(env_actions(spec, actions))
        obs_buf[:, :, t] = obs
        act_buf[:, :, t] = actions
        rew_buf[:, :, t] = reward * alive
        mask_buf[:, :, t] = alive
        if reports_success:  # an episode succeeds if any of its live steps does
            success |= vec_env.last_success & alive
        alive &= ~terminated
        if not alive.any():
            break
        obs = next_obs
    last_obs = np.asarray(obs, dtype=np.float32).reshape(T, E, *obs_shape)  # after the last step (= next_obs)
    out = {
        "obs": obs_buf,
        "actions": act_buf,
        "rewards": rew_buf,
        "mask": mask_buf,
        "last_obs": last_obs,
        "truncated": alive.astype(np.float32),
    }
    if reports_success:
        out["success"] = success.astype(np.float32)  # (T, E)
    return out


class _DropInfo(gym.Wrapper):
    """Returns an empty info dict: SyncVectorEnv merging every sub-env's info costs as much as MuJoCo's step."""

    def step(self, action):
        obs, reward, terminated, truncated, _ = self.env.step(action)
        return obs, reward, terminated, truncated, {}


class GymTaskVectorEnv:
    """Any Gymnasium task env as a :class:`~metarl.envs.task_env.TaskVectorEnv`: one copy per (task, episode).

    The copies (built once, reused phase after phase) run in a ``SyncVectorEnv``; each phase
    assigns tasks and per-episode reset seeds derived from the task's seed, so an episode does
    not depend on how tasks were split over workers. Copies are unwrapped (no ``TimeLimit``):
    the rollout's horizon truncates, and steps after termination are masked. Observations come
    back as float32, the policy's dtype.
    """

    def __init__(self, env_fn: Callable[[], gym.Env], num_envs: int):
        self.vector = gym.vector.SyncVectorEnv([lambda: _DropInfo(env_fn())] * num_envs)
        self.observation_shape = self.vector.single_observation_space.shape
        self.num_tasks, self.episodes_per_task = 0, 0
        self._seeds: list[int] = []

    @property
    def num_envs(self) -> int:
        return self.vector.num_envs

    def assign(self, tasks: list[Task], episodes_per_task: int, seeds: list[int]) -> GymTaskVectorEnv:
        """Copy ``i * E + e`` runs episode ``e`` of task ``i``; it takes effect at the next ``reset``."""
        if len(tasks) * episodes_per_task != self.num_envs:
            raise ValueError(f"{len(tasks)} tasks x {episodes_per_task} episodes != {self.num_envs} env copies")
        for i, env in enumerate(self.vector.envs):
            env.unwrapped.set_task(tasks[i // episodes_per_task])
        self.num_tasks, self.episodes_per_task = len(tasks), episodes_per_task
        self._seeds = [episode_seed(s, e) for s in seeds for e in range(episodes_per_task)]
        return self

    def reset(self) -> np.ndarray:
        obs, _ = self.vector.reset(seed=self._seeds)
        return obs.reshape(self.num_tasks, self.episodes_per_task, *self.observation_shape).astype(np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        flat = actions.reshape(self.num_envs, *actions.shape[2:])
        obs, reward, terminated, _, _ = self.vector.step(flat)
        shape = (self.num_tasks, self.episodes_per_task)
        obs = obs.reshape(*shape, *self.observation_shape).astype(np.float32)
        return obs, reward.reshape(shape).astype(np.float32), terminated.reshape(shape)

    def close(self) -> None:
        self.vector.close()


class VectorEnvs:
    """The vectorised form of a family for a list of tasks: native when it has one, else Gymnasium's.

    Keeps the last :class:`GymTaskVectorEnv` (or native form with an ``assign`` method) and reuses it
    while the number of (task, episode) pairs is unchanged, since building MuJoCo copies costs
    milliseconds each (1.7 s for the 800 copies of the HalfCheetah paper protocol).
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any]):
        self.env_id, self.env_kwargs = env_id, env_kwargs
        self.env_cls = type(make_env(env_id, env_kwargs).unwrapped)
        self._gym: GymTaskVectorEnv | None = None
        self._native: Any = None  # a native vector env that can take new tasks (``assign``), kept between phases

    def _make_one(self) -> gym.Env:
        return make_env(self.env_id, self.env_kwargs).unwrapped

    @property
    def native(self) -> bool:
        return hasattr(self.env_cls, "make_vector")

    def make(self, tasks: list[Task], episodes: int, seeds: list[int]) -> Any:
        if self.native:  # a native form whose resets are random takes the per-task seeds
            cached = self._native
            fits = getattr(cached, "any_size", False) or getattr(cached, "num_envs", None) == len(tasks) * episodes
            if cached is not None and fits:  # ``any_size``: a pool that takes any number of copies (Meta-World)
                return cached.assign(tasks, episodes, seeds)  # reusable forms (with ``assign``) are kept
            seeded = "seeds" in inspect.signature(self.env_cls.make_vector).parameters
            extra = {"seeds": seeds} if seeded else {}
            env = self.env_cls.make_vector(tasks, episodes, **extra, **self.env_kwargs)
            self._native = env if hasattr(env, "assign") else None
            return env
        if self._gym is None or self._gym.num_envs != len(tasks) * episodes:
            if self._gym is not None:
                self._gym.close()
            self._gym = GymTaskVectorEnv(self._make_one, len(tasks) * episodes)
        return self._gym.assign(tasks, episodes, seeds)
