"""The native locomotion vector envs step exactly as the Gymnasium envs they replace in the rollouts."""

from __future__ import annotations

import numpy as np
import pytest

from metarl.envs.locomotion import AntDirEnv, AntVelEnv, HalfCheetahDirEnv, HalfCheetahVelEnv
from metarl.runtime.rollouts import GymTaskVectorEnv, VectorEnvs


@pytest.mark.parametrize(
    "cls, tasks, obs_dim, act_dim, conventions",
    [
        (HalfCheetahVelEnv, [{"velocity": 0.3}, {"velocity": 1.7}], 17, 6, "gymnasium"),
        (HalfCheetahDirEnv, [{"direction": 1}, {"direction": -1}], 17, 6, "gymnasium"),
        (AntDirEnv, [{"direction": 1}, {"direction": -1}], 105, 8, "gymnasium"),
        (AntVelEnv, [{"velocity": 0.5}, {"velocity": 2.5}], 105, 8, "gymnasium"),
        (AntDirEnv, [{"direction": 1}, {"direction": -1}], 125, 8, "rllab"),
        (AntVelEnv, [{"velocity": 0.5}, {"velocity": 2.5}], 125, 8, "rllab"),
    ],
)
def test_native_locomotion_equals_the_gymnasium_path_step_for_step(cls, tasks, obs_dim, act_dim, conventions):
    """Equal while a copy is alive in both, its terminating step included; later steps are masked by the
    rollout (the Gymnasium copy auto-resets, the native one stays put), so only the native contract is checked.
    (The rllab HalfCheetah's case is in tests/test_rllab_conventions.py.)"""
    seeds, episodes = [11, 12], 3
    make = lambda: cls(conventions=conventions)  # noqa: E731
    gym_path = GymTaskVectorEnv(make, len(tasks) * episodes).assign(tasks, episodes, seeds)
    native = cls.make_vector(tasks, episodes, seeds=seeds, conventions=conventions)
    obs_g, obs_n = gym_path.reset(), native.reset()
    assert obs_n.shape == (2, episodes, obs_dim) and obs_n.dtype == np.float32 and np.array_equal(obs_g, obs_n)
    rng = np.random.default_rng(0)
    alive = np.ones((2, episodes), dtype=bool)
    for _ in range(60 if conventions == "gymnasium" else 150):  # rllab's ant falls later (4 s episodes)
        actions = (4.0 * rng.standard_normal((2, episodes, act_dim))).astype(np.float32)  # mostly outside [-1, 1]
        last_obs = obs_n
        (obs_g, rew_g, term_g), (obs_n, rew_n, term_n) = gym_path.step(actions), native.step(actions)
        for a, b in ((obs_g, obs_n), (rew_g, rew_n), (term_g, term_n)):
            assert np.array_equal(a[alive], b[alive])
        # copies terminated earlier are not stepped: last observation, reward 0, still terminated
        assert np.array_equal(obs_n[~alive], last_obs[~alive]) and not rew_n[~alive].any() and term_n[~alive].all()
        alive &= ~term_g
    ant = cls in (AntDirEnv, AntVelEnv)
    assert (0 < alive.sum() < alive.size) if ant else alive.all()  # some ants fell, some did not
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


@pytest.mark.parametrize(
    "env_id, cls, tasks, other, act_dim",
    [
        (
            "metarl/HalfCheetahVel-v0",
            HalfCheetahVelEnv,
            [{"velocity": 0.4}, {"velocity": 1.6}],
            [{"velocity": 1.9}, {"velocity": 0.1}],
            6,
        ),
        (
            "metarl/AntVel-v0",
            AntVelEnv,
            [{"velocity": 0.4}, {"velocity": 2.6}],
            [{"velocity": 2.9}, {"velocity": 0.1}],
            8,
        ),
        (
            "metarl/AntDir-v0",
            AntDirEnv,
            [{"direction": 1}, {"direction": -1}],
            [{"direction": -1}, {"direction": -1}],
            8,
        ),
    ],
)
def test_kept_native_copies_roll_out_as_freshly_built_ones(env_id, cls, tasks, other, act_dim):
    """VectorEnvs keeps the native copies between phases (building 800 costs ~1.7 s); a reused set, after
    other tasks were run on it (ants falling there), steps exactly like a new one."""
    vector_envs = VectorEnvs(env_id, {})
    assert vector_envs.native
    rng = np.random.default_rng(1)
    env = vector_envs.make(other, 2, [8, 9])
    env.reset()
    fell = np.zeros((2, 2), dtype=bool)
    for _ in range(40):
        fell |= env.step((4.0 * rng.standard_normal((2, 2, act_dim))).astype(np.float32))[2]
    assert fell.any() == (cls is not HalfCheetahVelEnv)  # a reset must bring fallen ants back
    reused = vector_envs.make(tasks, 2, [5, 6])
    assert reused is env  # the same copies, new tasks and seeds
    fresh = cls.make_vector(tasks, 2, seeds=[5, 6])
    assert np.array_equal(reused.reset(), fresh.reset())
    for _ in range(10):
        actions = rng.uniform(-1, 1, (2, 2, act_dim)).astype(np.float32)
        for a, b in zip(reused.step(actions), fresh.step(actions)):
            assert np.array_equal(a, b)
    assert vector_envs.make(tasks * 2, 2, [5, 6, 7, 8]) is not env  # another size: built anew
