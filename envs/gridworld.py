"""Grid navigation with discrete moves: the discrete counterpart of 2D navigation.

## Observation
The agent's cell ``(x, y)`` as two float32 numbers in {0, …, size − 1}. Every episode starts in
the centre cell ``(size // 2, size // 2)``.

## Action
``Discrete(4)``: 0 = +x, 1 = −x, 2 = +y, 3 = −y. A move into the wall leaves the agent in place.

## Reward
Minus the Manhattan distance between the new cell and the goal (0 on reaching it).

## Termination / truncation
Terminates when the new cell is the goal; truncated at 20 steps (``max_episode_steps``).

## Task
``{"goal": [gx, gy]}``, integers, drawn uniformly among the ``size² − 1`` cells other than the start.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from metarl.envs.task_env import Task

MOVES = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]])


class GridNavigationEnv(gym.Env):
    """A ``size × size`` grid (default 5); the policy picks one of four moves per step."""

    metadata = {"render_modes": []}

    def __init__(self, task: Task | None = None, size: int = 5):
        if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= 1000:
            raise ValueError(f"size must be an integer in [2, 1000], got {size!r}")
        self.size = size
        self.start = np.array([size // 2, size // 2])
        self.observation_space = gym.spaces.Box(0.0, float(size - 1), shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(4)
        self._position = self.start.copy()
        self._goal = np.zeros(2, dtype=np.int64)
        self.set_task(task if task is not None else {"goal": [0, 0]})

    # -- task API -------------------------------------------------------------------
    def validate_task(self, task: Task) -> Task:
        if not isinstance(task, dict) or "goal" not in task:
            raise ValueError(f"invalid task {task!r}: must be a dict with key 'goal'")
        goal = task["goal"]
        if (
            not isinstance(goal, (list, tuple, np.ndarray))
            or len(goal) != 2
            or not all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) for g in goal)
        ):
            raise ValueError(f"invalid task {task!r}: 'goal' must be a list of 2 integers")
        if not all(0 <= g < self.size for g in goal):
            raise ValueError(f"invalid task {task!r}: 'goal' must lie in [0, {self.size - 1}] element-wise")
        if list(goal) == self.start.tolist():
            raise ValueError(f"invalid task {task!r}: 'goal' must differ from the start cell {self.start.tolist()}")
        return {"goal": [int(g) for g in goal]}

    def sample_tasks(self, n: int, rng: np.random.Generator | None = None) -> list[Task]:
        rng = self.np_random if rng is None else rng
        cells = [[x, y] for x in range(self.size) for y in range(self.size) if [x, y] != self.start.tolist()]
        return [{"goal": list(cells[i])} for i in rng.integers(0, len(cells), size=n)]

    def set_task(self, task: Task) -> None:
        self._goal = np.asarray(self.validate_task(task)["goal"])

    def get_task(self) -> Task:
        return {"goal": [int(g) for g in self._goal]}

    # -- Gymnasium API --------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._position = self.start.copy()
        return self._position.astype(np.float32), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not one of 0, 1, 2, 3")
        self._position = np.clip(self._position + MOVES[int(action)], 0, self.size - 1)
        distance = int(np.abs(self._position - self._goal).sum())
        return self._position.astype(np.float32), -float(distance), distance == 0, False, {}
