"""The task API every metarl task family implements.

A *task* is plain data (a JSON-serialisable dict) that selects one MDP out of a family.
Envs never draw a new task on ``reset()``: the meta-learner decides which task an env
runs, so ``reset`` only restarts an episode of the current task.
"""

from __future__ import annotations

import json
import math
from typing import Any, Protocol, runtime_checkable

import numpy as np

Task = dict[str, Any]


@runtime_checkable
class TaskEnv(Protocol):
    """What a single (Gymnasium) env of a task family offers the meta-learner."""

    def sample_tasks(self, n: int, rng: np.random.Generator | None = None) -> list[Task]:
        """Draw ``n`` tasks; the same generator state gives the same tasks."""

    def set_task(self, task: Task) -> None:
        """Switch the env to ``task`` (validated); takes effect at the next ``reset``."""

    def get_task(self) -> Task:
        """The current task, as plain data."""


@runtime_checkable
class TaskVectorEnv(Protocol):
    """A natively vectorised form: many (task, episode) pairs stepped as one array.

    Arrays are laid out ``(num_tasks, episodes_per_task, ...)``.
    """

    def reset(self) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns ``(obs, reward, terminated)``."""


def check_float_vector(
    task: Task, key: str, size: int, low: float | None = None, high: float | None = None
) -> np.ndarray:
    """Validate ``task[key]`` as a finite float vector, raising ``ValueError`` naming task and rule."""
    if not isinstance(task, dict) or key not in task:
        raise ValueError(f"invalid task {task!r}: must be a dict with key {key!r}")
    raw = task[key]
    items = raw if isinstance(raw, (list, tuple, np.ndarray)) else [raw]
    if any(isinstance(x, (str, bytes, bool, np.bool_)) for x in np.asarray(items, dtype=object).ravel()):
        raise ValueError(f"invalid task {task!r}: {key!r} must hold numbers, not strings or booleans")
    try:
        value = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"invalid task {task!r}: {key!r} must be a list of {size} numbers") from None
    if value.shape != (size,):
        raise ValueError(f"invalid task {task!r}: {key!r} must have shape ({size},), got {value.shape}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"invalid task {task!r}: {key!r} must be finite (no NaN or inf)")
    if low is not None and high is not None and (np.any(value < low) or np.any(value > high)):
        raise ValueError(f"invalid task {task!r}: {key!r} must lie in [{low}, {high}] element-wise")
    return value


def check_float_scalar(task: Task, key: str, low: float | None = None, high: float | None = None) -> float:
    if not isinstance(task, dict) or key not in task:
        raise ValueError(f"invalid task {task!r}: must be a dict with key {key!r}")
    value = task[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"invalid task {task!r}: {key!r} must be a finite number")
    if low is not None and high is not None and not (low <= value <= high):
        raise ValueError(f"invalid task {task!r}: {key!r} must lie in [{low}, {high}]")
    return float(value)


def task_to_json(task: Task) -> str:
    return json.dumps(task, sort_keys=True)


def task_from_json(text: str) -> Task:
    task = json.loads(text)
    if not isinstance(task, dict):
        raise ValueError(f"invalid task {task!r}: a task is a JSON object")
    return task


def episode_seed(task_seed: int, episode: int) -> int:
    """Reset seed of episode ``episode`` of a task (Gymnasium path): a function of the task's seed alone."""
    return int(np.random.SeedSequence([task_seed, episode]).generate_state(1)[0])
