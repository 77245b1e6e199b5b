"""metarl task environments, installed as ``metarl.envs``. Importing it (``import metarl`` does) registers
them with Gymnasium.

The MuJoCo families (locomotion, Meta-World) import MuJoCo only when one of them is made.
"""

from gymnasium.envs.registration import register, registry

from metarl.envs.gridworld import GridNavigationEnv
from metarl.envs.metaworld import HORIZON as METAWORLD_HORIZON
from metarl.envs.metaworld import family_ids as metaworld_family_ids
from metarl.envs.navigation_2d import Navigation2DEnv, Navigation2DVectorEnv
from metarl.envs.task_env import Task, TaskEnv, TaskVectorEnv

FAMILIES = {  # id -> (entry point, max_episode_steps: the papers' horizon)
    "metarl/Navigation2D-v0": ("metarl.envs.navigation_2d:Navigation2DEnv", 100),
    "metarl/GridNavigation-v0": ("metarl.envs.gridworld:GridNavigationEnv", 20),
    "metarl/HalfCheetahVel-v0": ("metarl.envs.locomotion:HalfCheetahVelEnv", 200),
    "metarl/HalfCheetahDir-v0": ("metarl.envs.locomotion:HalfCheetahDirEnv", 200),
    "metarl/AntDir-v0": ("metarl.envs.locomotion:AntDirEnv", 200),
    "metarl/AntVel-v0": ("metarl.envs.locomotion:AntVelEnv", 200),
}

for _id, (_entry_point, _steps) in FAMILIES.items():
    if _id not in registry:
        register(id=_id, entry_point=_entry_point, max_episode_steps=_steps)

# Meta-World's ML1-<task> (50), ML10 and ML45 (envs/metaworld.py; metaworld is imported when one is made)
for _id, _kwargs in metaworld_family_ids().items():
    if _id not in registry:
        register(
            id=_id,
            entry_point="metarl.envs.metaworld:MetaWorldTaskEnv",
            kwargs=_kwargs,
            max_episode_steps=METAWORLD_HORIZON,
            disable_env_checker=True,
        )  # it warns on the zeroed goal slots

__all__ = [
    "FAMILIES",
    "GridNavigationEnv",
    "Navigation2DEnv",
    "Navigation2DVectorEnv",
    "Task",
    "TaskEnv",
    "TaskVectorEnv",
]
