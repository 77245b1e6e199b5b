"""``conventions: rllab``: the MAML paper's HalfCheetah and Ant (cbfinn/maml_rl's rllab envs).

rllab itself does not run here (Python 2 era mujoco_py), so these tests check the conventions that
were read off its source: one MuJoCo step per action, the centre of mass in the observation and as
the velocity, Gaussian reset noise, and for the Ant rllab's model options, start pose and 125-number
observation; and that the native vector form equals the Gymnasium path (the Ant's:
tests/test_locomotion_vector.py).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metarl.envs.locomotion import AntDirEnv, AntVelEnv, HalfCheetahDirEnv, HalfCheetahVelEnv
from metarl.runtime.rollouts import GymTaskVectorEnv

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "cls, tasks",
    [
        (HalfCheetahVelEnv, [{"velocity": 0.3}, {"velocity": 1.7}]),
        (HalfCheetahDirEnv, [{"direction": 1}, {"direction": -1}]),
    ],
)
def test_native_rllab_cheetah_equals_the_gymnasium_path_step_for_step(cls, tasks):
    seeds, episodes = [11, 12], 3
    gym_path = GymTaskVectorEnv(lambda: cls(conventions="rllab"), len(tasks) * episodes).assign(tasks, episodes, seeds)
    native = cls.make_vector(tasks, episodes, seeds=seeds, conventions="rllab")
    obs_g, obs_n = gym_path.reset(), native.reset()
    assert obs_n.shape == (2, episodes, 20) and np.array_equal(obs_g, obs_n)
    rng = np.random.default_rng(0)
    for _ in range(60):
        actions = (4.0 * rng.standard_normal((2, episodes, 6))).astype(np.float32)  # mostly outside [-1, 1]
        for a, b in zip(gym_path.step(actions), native.step(actions)):
            assert np.array_equal(a, b)
    gym_path.close()


def test_rllab_cheetah_steps_once_per_action_and_pays_for_its_centre_of_mass_velocity():
    env = HalfCheetahDirEnv({"direction": -1}, conventions="rllab")
    gym_env = HalfCheetahDirEnv({"direction": -1})
    assert (env.frame_skip, env.dt) == (1, 0.01) and (gym_env.frame_skip, gym_env.dt) == (5, 0.05)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (20,) and np.array_equal(obs[-3:], env.data.subtree_com[1])
    rng, gaps = np.random.default_rng(1), []
    for _ in range(100):
        com_before = obs[-3]
        action = rng.uniform(-2, 2, 6)
        obs, reward, terminated, truncated, info = env.step(action)
        velocity = info["x_velocity"]
        assert velocity == env.data.subtree_linvel[1, 0]  # the centre of mass's, not the torso's
        clipped = np.clip(action, -1, 1)
        assert reward == pytest.approx(-velocity - 0.05 * np.sum(clipped**2), abs=1e-12)  # d = −1
        gaps.append((obs[-3] - com_before) / env.dt - velocity)
        assert not (terminated or truncated)
    # the centre of mass's displacement over a step is its velocity × dt to first order (joints rotate)
    assert np.abs(gaps).max() < 0.05 * np.abs(velocity) + 0.05, np.abs(gaps).max()


def test_rllab_ant_has_rllabs_model_start_pose_observation_and_reward():
    env, gym_env = AntVelEnv({"velocity": 1.0}, conventions="rllab"), AntVelEnv({"velocity": 1.0})
    assert (env.frame_skip, env.dt, env.metadata["render_fps"]) == (1, 0.02, 50)
    assert np.allclose(env.model.geom_solimp, [0.8, 0.8, 0.01, 0.5, 2.0])
    # another instance's model keeps Gymnasium's own options
    assert (gym_env.frame_skip, gym_env.dt) == (5, 0.05) and np.allclose(
        gym_env.model.geom_solimp[:, :3], [0.9, 0.95, 0.001]
    )
    assert env.init_qpos[2] == 0.55 and np.array_equal(env.init_qpos[7:], [0, 1, 0, -1, 0, -1, 0, 1])
    obs, _ = env.reset(seed=3)
    assert obs.shape == (125,) and env.observation_space.shape == (125,)
    assert abs(obs[2] - 0.55) < 0.05 and np.array_equal(obs[:15], env.data.qpos)  # x, y included
    rng, fell = np.random.default_rng(3), False
    for _ in range(200):
        action = 4.0 * rng.standard_normal(8)  # mostly outside [-1, 1]
        obs, reward, terminated, _, info = env.step(action)
        qpos, contact = obs[:15], obs[29:113].reshape(14, 6)
        assert np.array_equal(contact, np.clip(env.data.cfrc_ext, -1, 1))  # every body's, the world's too
        assert np.array_equal(obs[113:122], env.data.xmat[1]) and np.array_equal(obs[122:], env.data.subtree_com[1])
        velocity = info["x_velocity"]
        assert velocity == env.data.subtree_linvel[1, 0]  # the centre of mass's
        costs = 0.005 * np.sum(np.clip(action, -1, 1) ** 2) + 0.0005 * np.sum(contact**2)
        assert reward == pytest.approx(-abs(velocity - 1.0) + 1.0 - costs + 0.05, abs=1e-12)
        assert terminated == (not 0.2 <= qpos[2] <= 1.0)
        if terminated:
            fell = True
            break
    assert fell, "these random actions make the ant jump out of its healthy range (z > 1) within 4 s"


@pytest.mark.parametrize("cls", [HalfCheetahVelEnv, AntVelEnv])
def test_rllab_resets_draw_gaussian_noise_at_rllabs_scales(cls):
    env = cls(conventions="rllab")
    qpos, qvel = [], []
    for seed in range(400):
        env.reset(seed=seed)
        qpos.append(env.data.qpos - env.init_qpos)
        qvel.append(env.data.qvel - env.init_qvel)
    qpos, qvel = np.array(qpos), np.array(qvel)
    assert qpos.std() == pytest.approx(0.01, rel=0.05) and qvel.std() == pytest.approx(0.1, rel=0.05)
    assert np.abs(qpos).max() > 0.02  # Gaussian tails: Gymnasium's uniform noise would stay inside its scale


def test_the_conventions_survive_pickling_and_unknown_ones_are_refused():
    env = pickle.loads(pickle.dumps(HalfCheetahVelEnv({"velocity": 1.5}, conventions="rllab")))
    assert env.conventions == "rllab" and env.dt == 0.01 and env.get_task() == {"velocity": 1.5}
    ant = pickle.loads(pickle.dumps(AntDirEnv({"direction": -1}, conventions="rllab")))
    assert ant.conventions == "rllab" and ant.dt == 0.02 and ant.get_task() == {"direction": -1}
    for cls in (HalfCheetahDirEnv, AntDirEnv):
        with pytest.raises(ValueError, match="'gymnasium' or 'rllab'"):
            cls(conventions="garage")


def test_a_config_asking_for_unknown_conventions_is_refused_in_one_line():
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("metarl")),
            "config",
            "configs/ant-dir.yaml",
            "--set",
            "env_kwargs.conventions=garage",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "env_kwargs" in lines[0] and "conventions 'garage'" in lines[0] and "'gymnasium' or 'rllab'" in lines[0]
