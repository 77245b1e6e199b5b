"""The native HalfCheetah vector env steps exactly as the Gymnasium env it replaces in the rollouts."""

from __future__ import annotations

import numpy as np
import pytest

from metarl.envs.locomotion import HalfCheetahDirEnv, HalfCheetahVelEnv
from metarl.rollouts import GymTaskVectorEnv, VectorEnvs


@pytest.mark.parametrize("cls, tasks", [
    (HalfCheetahVelEnv, [{"velocity": 0.3}, {"velocity": 1.7}]),
    (HalfCheetahDirEnv, [{"direction": 1}, {"direction": -1}]),
])
def test_native_cheetah_equals_the_gymnasium_path_step_for_step(cls, tasks):
    seeds, episodes = [11, 12], 3
    gym_path = GymTaskVectorEnv(lambda: cls(), len(tasks) * episodes).assign(tasks, episodes, seeds)
    native = cls.make_vector(tasks, episodes, seeds=seeds)
    obs_g, obs_n = gym_path.reset(), native.reset()
    assert obs_n.shape == (2, episodes, 17) and np.array_equal(obs_g, obs_n)
    rng = np.random.default_rng(0)
    for _ in range(25):
        actions = (1.5 * rng.standard_normal((2, episodes, 6))).astype(np.float32)  # some outside [-1, 1]
        for a, b in zip(gym_path.step(actions), native.step(actions)):
            assert np.array_equal(a, b)
    gym_path.close()


def test_rollouts_use_the_native_cheetah_with_per_task_reset_seeds():
    vector_envs = VectorEnvs("metarl/HalfCheetahVel-v0", {})
    assert vector_envs.native
    tasks = [{"velocity": 1.0}] * 2
    first = vector_envs.make(tasks, 2, [5, 6]).reset()
    again = vector_envs.make(tasks, 2, [5, 6]).reset()
    other = vector_envs.make(tasks, 2, [7, 6]).reset()
    assert np.array_equal(first, again)
    assert not np.array_equal(first[0], other[0]) and np.array_equal(first[1], other[1])  # a task's own seed
    assert not np.array_equal(first[0, 0], first[0, 1])  # episodes of a task start apart
