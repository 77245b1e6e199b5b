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


def test_kept_native_copies_roll_out_as_freshly_built_ones():
    """VectorEnvs keeps the native copies between phases (building 800 costs ~1.7 s); a reused set, after
    other tasks were run on it, steps exactly like a new one."""
    from metarl.envs.locomotion import HalfCheetahVelEnv

    vector_envs = VectorEnvs("metarl/HalfCheetahVel-v0", {})
    tasks, other = [{"velocity": 0.4}, {"velocity": 1.6}], [{"velocity": 1.9}, {"velocity": 0.1}]
    actions = np.random.default_rng(1).uniform(-1, 1, (2, 2, 6)).astype(np.float32)
    env = vector_envs.make(other, 2, [8, 9])
    env.reset()
    env.step(actions)
    reused = vector_envs.make(tasks, 2, [5, 6])
    assert reused is env  # the same copies, new tasks and seeds
    fresh = HalfCheetahVelEnv.make_vector(tasks, 2, seeds=[5, 6])
    assert np.array_equal(reused.reset(), fresh.reset())
    for _ in range(5):
        for a, b in zip(reused.step(actions), fresh.step(actions)):
            assert np.array_equal(a, b)
    assert vector_envs.make(tasks * 2, 2, [5, 6, 7, 8]) is not env  # another size: built anew
