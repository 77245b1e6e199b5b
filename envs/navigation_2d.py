"""2D navigation (point robot), exactly as in the MAML and Meta-SGD papers.

## Observation
The agent's 2-D position (float32). Every episode starts at the origin.

## Action
A 2-D velocity. ``action_mode="clip"`` (default, as the common PyTorch reimplementations)
clips the raw action element-wise to [-0.1, 0.1]; ``action_mode="scale"`` (as the original
MAML code) clips to [-1, 1] and multiplies by 0.1.

## Reward
Minus the Euclidean distance between the new position and the goal.

## Termination / truncation
Terminates when both |x - gx| < 0.01 and |y - gy| < 0.01; truncated at 100 steps
(``max_episode_steps`` of the registration).

## Task
``{"goal": [gx, gy]}`` with the goal drawn uniformly from [-0.5, 0.5]^2.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from metarl.envs.task_env import Task, check_float_vector

GOAL_LOW, GOAL_HIGH = -0.5, 0.5
MAX_SPEED = 0.1
GOAL_TOLERANCE = 0.01
ACTION_MODES = ("clip", "scale")


def apply_action(action: np.ndarray, action_mode: str) -> np.ndarray:
    """Raw policy action -> physical velocity, for either action mode."""
    if action_mode == "clip":
        return np.clip(action, -MAX_SPEED, MAX_SPEED)
    return np.clip(action, -1.0, 1.0) * MAX_SPEED


def transition(position: np.ndarray, action: np.ndarray, goal: np.ndarray, action_mode: str):
    """One step of the dynamics for any leading batch shape; shared by both env forms."""
    new_position = position + apply_action(action, action_mode)
    delta = new_position - goal
    reward = -np.sqrt(np.sum(np.square(delta), axis=-1))
    terminated = np.all(np.abs(delta) < GOAL_TOLERANCE, axis=-1)
    return new_position, reward, terminated


def _check_action_mode(action_mode: str) -> None:
    if action_mode not in ACTION_MODES:
        raise ValueError(f"action_mode {action_mode!r} is not allowed; choose one of {ACTION_MODES}")


class Navigation2DEnv(gym.Env):
    """Single-episode Gymnasium form, used for checks, evaluation and ``gym.make``."""

    metadata = {"render_modes": []}

    def __init__(self, task: Task | None = None, action_mode: str = "clip"):
        _check_action_mode(action_mode)
        self.action_mode = action_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self._goal = np.zeros(2)
        self._position = np.zeros(2)
        self.set_task(task if task is not None else {"goal": [0.0, 0.0]})

    # -- task API -------------------------------------------------------------------
    @staticmethod
    def validate_task(task: Task) -> Task:
        goal = check_float_vector(task, "goal", 2, GOAL_LOW, GOAL_HIGH)
        return {"goal": [float(g) for g in goal]}

    def sample_tasks(self, n: int, rng: np.random.Generator | None = None) -> list[Task]:
        rng = self.np_random if rng is None else rng
        goals = rng.uniform(GOAL_LOW, GOAL_HIGH, size=(n, 2))
        return [{"goal": [float(g) for g in goal]} for goal in goals]

    def set_task(self, task: Task) -> None:
        self._goal = np.asarray(self.validate_task(task)["goal"], dtype=np.float64)

    def get_task(self) -> Task:
        return {"goal": [float(g) for g in self._goal]}

    @classmethod
    def make_vector(cls, tasks: list[Task], episodes_per_task: int, **env_kwargs: Any) -> Navigation2DVectorEnv:
        return Navigation2DVectorEnv(tasks, episodes_per_task, **env_kwargs)

    # -- Gymnasium API --------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._position = np.zeros(2)
        return self._position.astype(np.float32), {"task": self.get_task()}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        self._position, reward, terminated = transition(self._position, action, self._goal, self.action_mode)
        obs = self._position.astype(np.float32)
        return obs, float(reward), bool(terminated), False, {"task": self.get_task()}


class Navigation2DVectorEnv:
    """Steps ``(num_tasks, episodes_per_task)`` point robots as one numpy array.

    Episodes are not reset or frozen here: ``terminated`` only says whether the current
    position is within the goal tolerance, so a finished episode that keeps moving can
    report ``False`` again. The rollout code tracks which episodes are alive and masks them.
    """

    def __init__(self, tasks: list[Task], episodes_per_task: int, action_mode: str = "clip"):
        _check_action_mode(action_mode)
        self.action_mode = action_mode
        goals = np.array([Navigation2DEnv.validate_task(t)["goal"] for t in tasks], dtype=np.float64)
        self.num_tasks, self.episodes_per_task = len(tasks), episodes_per_task
        self._goals = goals[:, None, :]  # (T, 1, 2) broadcasts over episodes
        self._position = np.zeros((self.num_tasks, episodes_per_task, 2))
        self.observation_shape, self.action_shape = (2,), (2,)

    def reset(self) -> np.ndarray:
        self._position = np.zeros((self.num_tasks, self.episodes_per_task, 2))
        return self._position.astype(np.float32)

    def step(self, actions: np.ndarray):
        self._position, reward, terminated = transition(
            self._position, np.asarray(actions, dtype=np.float64), self._goals, self.action_mode
        )
        return self._position.astype(np.float32), reward.astype(np.float32), terminated
