"""Bring your own task family: Gymnasium's Pendulum with a different gravity in every task.

The recipe (README, "Bring your own task family"):

1. Give a Gymnasium env the task API: ``sample_tasks(n, rng)`` draws tasks as plain JSON data,
   ``set_task(task)`` validates one (``ValueError`` for a bad one) and switches to it,
   ``get_task()`` returns it. ``reset()`` keeps the current task.
2. Register it with Gymnasium, with the paper's horizon as ``max_episode_steps``.
3. Point a config at ``"module:id"`` (``examples/my_task_family.yaml``): every process (the driver
   and each Ray actor) imports the module, which registers the family, before making the env.

Box or Discrete actions both work (a Gaussian or a categorical policy follows the action space);
observations must be a Box. Rollout workers run one copy of the env per (task, episode) in a
``gymnasium.vector.SyncVectorEnv``.
"""

from __future__ import annotations

import numpy as np
from gymnasium.envs.classic_control.pendulum import PendulumEnv
from gymnasium.envs.registration import register, registry

from metarl.envs.task_env import Task, check_float_scalar

ENV_ID = "my_tasks/PendulumGravity-v0"
GRAVITY_LOW, GRAVITY_HIGH = 5.0, 15.0


class PendulumGravityEnv(PendulumEnv):
    """Swing-up with gravity g ~ U[5, 15] per task; observation, action and reward as ``Pendulum-v1``."""

    def __init__(self, task: Task | None = None, render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        self.set_task(task if task is not None else {"gravity": 10.0})

    def sample_tasks(self, n: int, rng: np.random.Generator | None = None) -> list[Task]:
        rng = self.np_random if rng is None else rng
        return [{"gravity": float(g)} for g in rng.uniform(GRAVITY_LOW, GRAVITY_HIGH, size=n)]

    def set_task(self, task: Task) -> None:
        self.g = check_float_scalar(task, "gravity", GRAVITY_LOW, GRAVITY_HIGH)

    def get_task(self) -> Task:
        return {"gravity": float(self.g)}


if ENV_ID not in registry:
    register(id=ENV_ID, entry_point=PendulumGravityEnv, max_episode_steps=200)
