"""metarl task environments. Importing this package registers them with Gymnasium."""

from gymnasium.envs.registration import register, registry

from envs.navigation_2d import Navigation2DEnv, Navigation2DVectorEnv
from envs.task_env import Task, TaskEnv, TaskVectorEnv

if "metarl/Navigation2D-v0" not in registry:
    register(id="metarl/Navigation2D-v0", entry_point="envs.navigation_2d:Navigation2DEnv", max_episode_steps=100)

__all__ = ["Navigation2DEnv", "Navigation2DVectorEnv", "Task", "TaskEnv", "TaskVectorEnv"]
