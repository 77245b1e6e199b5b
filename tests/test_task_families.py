"""Every task family against one contract (tasks.md), plus each family's reward on hand-computed cases.

The contract: registered with the paper's horizon; Gymnasium's env checker passes; seeded task
sampling is reproducible; tasks round-trip through JSON; invalid tasks raise ``ValueError`` and
leave the env's task alone; ``reset`` never changes the task. The rollout workers' Gymnasium
vector path is checked here too. Navigation2D's own rules (reward, termination, action modes, its
invalid tasks, the native vector form) are in test_envs.py and not repeated here.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from examples.my_task_family import ENV_ID as EXAMPLE_ID
from metarl import envs
from metarl.core.policies import PolicySpec, init_params
from metarl.envs import locomotion as loco
from metarl.envs.task_env import episode_seed, task_from_json, task_to_json
from metarl.runtime.rollouts import GymTaskVectorEnv, VectorEnvs, sample_rollouts

NAN, INF = float("nan"), float("inf")
BAD_ANY = [{}, None, [0.5], "task", {"other": 1}]
# id -> (horizon, invalid tasks beyond BAD_ANY)
FAMILIES = {
    "metarl/Navigation2D-v0": (100, []),  # its invalid tasks, rule by rule: test_envs.py
    "metarl/GridNavigation-v0": (
        20,
        [
            {"goal": [2, 2]},
            {"goal": [5, 0]},
            {"goal": [-1, 0]},
            {"goal": [1.5, 0]},
            {"goal": [True, 0]},
            {"goal": [1, 2, 3]},
            {"goal": "a1"},
        ],
    ),
    "metarl/HalfCheetahVel-v0": (
        200,
        [
            {"velocity": -0.1},
            {"velocity": 2.01},
            {"velocity": NAN},
            {"velocity": INF},
            {"velocity": "1"},
            {"velocity": True},
            {"velocity": [1.0]},
        ],
    ),
    "metarl/HalfCheetahDir-v0": (
        200,
        [
            {"direction": 0},
            {"direction": 2},
            {"direction": 0.5},
            {"direction": True},
            {"direction": "1"},
            {"direction": NAN},
            {"direction": [1]},
        ],
    ),
    "metarl/AntDir-v0": (200, [{"direction": 0}, {"direction": -2}, {"direction": False}]),
    "metarl/AntVel-v0": (200, [{"velocity": -0.5}, {"velocity": 3.01}, {"velocity": NAN}]),
    EXAMPLE_ID: (200, [{"gravity": 4.9}, {"gravity": 15.1}, {"gravity": NAN}, {"gravity": "9.8"}]),
}
IDS = list(FAMILIES)


def make(env_id: str) -> gym.Env:
    return gym.make(env_id).unwrapped


def test_every_registered_metarl_family_is_tested():
    assert set(envs.FAMILIES) <= set(IDS)


# -- the contract ---------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", IDS)
def test_registered_with_paper_horizon(env_id):
    assert gym.spec(env_id).max_episode_steps == FAMILIES[env_id][0]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Navigation2D's unbounded Box is by design
@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_env_checker(env_id):
    env = make(env_id)
    env.set_task(env.sample_tasks(1, np.random.default_rng(0))[0])
    check_env(env, skip_render_check=True)


@pytest.mark.parametrize("env_id", IDS)
def test_seeded_task_sampling_is_reproducible(env_id):
    env = make(env_id)
    a = env.sample_tasks(20, np.random.default_rng(7))
    b = make(env_id).sample_tasks(20, np.random.default_rng(7))
    assert a == b and len(a) == 20
    assert a != env.sample_tasks(20, np.random.default_rng(8))
    env.reset(seed=3)  # without a generator: the env's own, seeded by reset(seed=...)
    c = env.sample_tasks(5)
    env.reset(seed=3)
    assert env.sample_tasks(5) == c


@pytest.mark.parametrize("env_id", IDS)
def test_set_get_task_round_trips_through_json(env_id):
    env = make(env_id)
    for task in env.sample_tasks(10, np.random.default_rng(0)):
        fresh = make(env_id)
        fresh.set_task(task_from_json(task_to_json(task)))
        assert fresh.get_task() == task
        assert task_to_json(fresh.get_task()) == task_to_json(task)
        got = fresh.get_task()
        got[next(iter(got))] = "changed"  # a copy: mutating it leaves the env's task alone
        assert fresh.get_task() == task


@pytest.mark.parametrize("env_id", IDS)
def test_invalid_tasks_raise_value_error_and_keep_the_task(env_id):
    env = make(env_id)
    good = env.sample_tasks(1, np.random.default_rng(0))[0]
    env.set_task(good)
    for task in [*BAD_ANY, *FAMILIES[env_id][1]]:
        with pytest.raises(ValueError, match="invalid task"):
            env.set_task(task)
        assert env.get_task() == good


@pytest.mark.parametrize("env_id", IDS)
def test_reset_never_changes_the_task(env_id):
    env = make(env_id)
    task = env.sample_tasks(1, np.random.default_rng(1))[0]
    env.set_task(task)
    other = env.sample_tasks(1, np.random.default_rng(2))[0]
    for seed in (None, 0, 1):
        env.reset(seed=seed)
        env.step(env.action_space.sample())
        assert env.get_task() == task
    env.reset(seed=0, options={"task": other})  # not even when asked through reset's options
    assert env.get_task() == task


# -- task distributions (tasks.md) ------------------------------------------------------------------
@pytest.mark.parametrize("env_id, high", [("metarl/HalfCheetahVel-v0", 2.0), ("metarl/AntVel-v0", 3.0)])
def test_velocity_tasks_uniform(env_id, high):
    v = np.array([t["velocity"] for t in make(env_id).sample_tasks(4000, np.random.default_rng(0))])
    assert v.min() >= 0 and v.max() <= high
    assert abs(v.mean() - high / 2) < 0.05 * high and abs(v.std() - high / math.sqrt(12)) < 0.05 * high


@pytest.mark.parametrize("env_id", ["metarl/HalfCheetahDir-v0", "metarl/AntDir-v0"])
def test_direction_tasks_are_plus_minus_one_with_equal_odds(env_id):
    d = np.array([t["direction"] for t in make(env_id).sample_tasks(4000, np.random.default_rng(0))])
    assert set(d.tolist()) == {-1, 1} and abs(d.mean()) < 0.05


def test_grid_goals_uniform_over_cells_other_than_start():
    goals = [tuple(t["goal"]) for t in make("metarl/GridNavigation-v0").sample_tasks(4800, np.random.default_rng(0))]
    counts = {g: goals.count(g) for g in set(goals)}
    assert len(counts) == 24 and (2, 2) not in counts
    assert min(counts.values()) > 150 and max(counts.values()) < 250  # 200 expected each


# -- rewards on hand-computed cases -----------------------------------------------------------------
def test_locomotion_reward_rules_by_hand():
    a6 = np.full(6, 0.1)  # ‖a‖² = 0.06
    assert loco.cheetah_vel_reward(0.5, a6, 1.5) == pytest.approx(-1.0 - 0.003)
    assert loco.cheetah_vel_reward(2.0, np.zeros(6), 1.5) == pytest.approx(-0.5)
    assert loco.cheetah_dir_reward(1.2, np.array([0.5, 0, 0, 0, 0, 0]), -1) == pytest.approx(-1.2 - 0.0125)
    assert loco.cheetah_dir_reward(1.2, np.zeros(6), 1) == pytest.approx(1.2)
    a8 = np.full(8, 0.5)  # ctrl 0.005 · 2 = 0.01
    contact = np.zeros((14, 6))
    contact[3, :2] = [2.0, -0.5]  # clipped to [1, -0.5]: contact 0.0005 · 1.25 = 0.000625
    assert loco.ant_dir_reward(0.8, a8, contact, 1) == pytest.approx(0.8 - 0.01 - 0.000625 + 0.05)
    assert loco.ant_dir_reward(0.8, a8, contact, -1) == pytest.approx(-0.8 - 0.01 - 0.000625 + 0.05)
    assert loco.ant_vel_reward(2.0, np.zeros(8), np.zeros((14, 6)), 2.5) == pytest.approx(-0.5 + 1.0 + 0.05)
    assert loco.ant_vel_reward(1.0, a8, contact, 0.25) == pytest.approx(-0.75 + 1.0 - 0.010625 + 0.05)


def _torso_x(env) -> float:
    return float(env.data.qpos[0]) if "Cheetah" in type(env).__name__ else float(env.data.body(1).xpos[0])


@pytest.mark.parametrize(
    "env_id, task",
    [
        ("metarl/HalfCheetahVel-v0", {"velocity": 1.3}),
        ("metarl/HalfCheetahDir-v0", {"direction": -1}),
        ("metarl/AntDir-v0", {"direction": 1}),
        ("metarl/AntVel-v0", {"velocity": 2.2}),
    ],
)
def test_locomotion_env_reward_uses_measured_velocity_and_clipped_action(env_id, task):
    """The env's reward is the reference formula of the torso's x displacement / dt and the clipped action."""
    env = make(env_id)
    env.set_task(task)
    env.reset(seed=0)
    raw = np.random.default_rng(0).uniform(-2, 2, size=env.action_space.shape)  # half of it out of [-1, 1]
    for _ in range(3):
        x0 = _torso_x(env)
        _, reward, *_ = env.step(raw)
        vx = (_torso_x(env) - x0) / env.dt
        a2 = float(np.sum(np.clip(raw, -1, 1) ** 2))
        if "Cheetah" in env_id:
            expected = (-abs(vx - task["velocity"]) if "Vel" in env_id else task["direction"] * vx) - 0.05 * a2
        else:
            costs = 0.005 * a2 + 0.0005 * float(np.sum(np.clip(env.data.cfrc_ext, -1, 1) ** 2))
            progress = -abs(vx - task["velocity"]) + 1.0 if "Vel" in env_id else task["direction"] * vx
            expected = progress - costs + 0.05
        assert reward == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_ant_terminates_when_unhealthy_cheetah_never():
    ant = make("metarl/AntDir-v0")
    ant.reset(seed=0)
    ant.data.qpos[2] = 1.5  # torso above the healthy range [0.2, 1.0]
    assert ant.step(np.zeros(8))[2]
    cheetah = make("metarl/HalfCheetahVel-v0")
    cheetah.reset(seed=0)
    assert not any(cheetah.step(np.ones(6))[2] for _ in range(50))


def test_grid_navigation_reward_walls_and_termination_by_hand():
    env = make("metarl/GridNavigation-v0")
    env.set_task({"goal": [4, 2]})
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, [2, 2])
    obs, reward, terminated, *_ = env.step(0)  # +x
    assert obs.tolist() == [3, 2] and reward == -1 and not terminated
    obs, reward, terminated, *_ = env.step(0)
    assert obs.tolist() == [4, 2] and reward == 0 and terminated
    env.set_task({"goal": [0, 0]})
    env.reset()
    for expected in ([2, 3], [2, 4], [2, 4]):  # +y twice, then the wall
        obs, reward, *_ = env.step(2)
        assert obs.tolist() == expected and reward == -(2 + expected[1])
    obs, reward, *_ = env.step(1)  # −x
    assert obs.tolist() == [1, 4] and reward == -5
    with pytest.raises(ValueError, match="action"):
        env.step(4)


def test_example_pendulum_reward_and_gravity_by_hand():
    env = make(EXAMPLE_ID)
    env.set_task({"gravity": 12.0})
    env.reset(seed=0)
    env.state = np.array([0.5, 1.0])
    _, reward, *_ = env.step(np.array([1.0]))
    assert reward == pytest.approx(-(0.25 + 0.1 * 1.0 + 0.001 * 1.0))
    # the task sets the dynamics: θ̇' = θ̇ + (3g/2 · sin θ + 3u) · dt, with l = m = 1, dt = 0.05
    assert env.state[1] == pytest.approx(1.0 + (1.5 * 12.0 * math.sin(0.5) + 3.0) * 0.05)
    env.state = np.array([0.5, 1.0])
    _, reward, *_ = env.step(np.array([3.0]))  # torque clipped to 2
    assert reward == pytest.approx(-(0.25 + 0.1 + 0.001 * 4.0))


# -- the rollout workers' Gymnasium vector path ------------------------------------------------------
def test_native_vector_form_is_used_when_a_family_has_one():
    assert VectorEnvs("metarl/Navigation2D-v0", {}).native
    assert VectorEnvs("metarl/HalfCheetahVel-v0", {}).native  # tests/test_locomotion_vector.py
    assert VectorEnvs("metarl/AntVel-v0", {}).native  # AntVectorEnv, tests/test_locomotion_vector.py
    vec = VectorEnvs("metarl/GridNavigation-v0", {}).make([{"goal": [0, 0]}, {"goal": [1, 1]}], 3, [5, 6])
    assert isinstance(vec, GymTaskVectorEnv) and vec.reset().shape == (2, 3, 2)


def test_gym_vector_env_matches_single_envs():
    """Copy i·E + e runs episode e of task i, reset with episode_seed(task seed, e)."""
    tasks, seeds, episodes = [{"velocity": 0.4}, {"velocity": 1.7}], [11, 12], 2
    vec = VectorEnvs("metarl/HalfCheetahVel-v0", {}).make(tasks, episodes, seeds)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(5, 2, episodes, 6)).astype(np.float32)
    obs = [vec.reset()]
    rewards = []
    for a in actions:
        o, r, _ = vec.step(a)
        obs.append(o)
        rewards.append(r)
    for i, task in enumerate(tasks):
        for e in range(episodes):
            env = make("metarl/HalfCheetahVel-v0")
            env.set_task(task)
            o, _ = env.reset(seed=episode_seed(seeds[i], e))
            np.testing.assert_allclose(obs[0][i, e], o, rtol=1e-6)
            for t, a in enumerate(actions):
                o, r, *_ = env.step(a[i, e])
                np.testing.assert_allclose(obs[t + 1][i, e], o, rtol=1e-6)
                assert rewards[t][i, e] == pytest.approx(r, rel=1e-6)


def _sample(vector_envs, spec, theta, tasks, seeds, horizon, episodes=3):
    return sample_rollouts(vector_envs.make(tasks, episodes, seeds), spec, theta, horizon, seeds)


@pytest.mark.parametrize("env_id", ["metarl/HalfCheetahDir-v0", "metarl/GridNavigation-v0"])
def test_rollouts_do_not_depend_on_how_tasks_are_split(env_id):
    """Reset seeds and action noise follow each task's seed, not the worker's slice.

    Only up to float rounding for MuJoCo: the policy's batched matmul may round the last bit
    differently for another row count, and the physics amplifies that over a long horizon.
    """
    vector_envs = VectorEnvs(env_id, {})
    env = make(env_id)
    obs_dim = env.observation_space.shape[0]
    kind = "categorical" if isinstance(env.action_space, gym.spaces.Discrete) else "gaussian"
    act_dim = env.action_space.n if kind == "categorical" else env.action_space.shape[0]
    spec = PolicySpec(obs_dim, act_dim, (8,), "tanh", kind=kind)
    theta = init_params(spec, torch.Generator().manual_seed(0))
    tasks, seeds = env.sample_tasks(3, np.random.default_rng(0)), [21, 22, 23]
    whole = _sample(vector_envs, spec, theta, tasks, seeds, horizon=5)
    parts = [
        _sample(vector_envs, spec, theta, tasks[:1], seeds[:1], horizon=5),
        _sample(vector_envs, spec, theta, tasks[1:], seeds[1:], horizon=5),
    ]
    np.testing.assert_array_equal(whole["obs"][:, :, 0], np.concatenate([p["obs"][:, :, 0] for p in parts]))
    for key in ("obs", "actions", "rewards", "mask"):
        np.testing.assert_allclose(whole[key], np.concatenate([p[key] for p in parts]), rtol=1e-4, atol=1e-5)


def test_terminated_episodes_are_masked_on_the_gym_path():
    """Grid goals next to the start: episodes end on the goal; later steps are masked and earn 0."""
    spec = PolicySpec(2, 4, (8,), "tanh", kind="categorical")
    theta = init_params(spec, torch.Generator().manual_seed(0))
    tasks = [{"goal": [3, 2]}, {"goal": [2, 1]}]
    out = _sample(VectorEnvs("metarl/GridNavigation-v0", {}), spec, theta, tasks, [1, 2], horizon=20, episodes=8)
    mask, rewards = out["mask"], out["rewards"]
    assert mask[:, :, 0].all() and not mask[:, :, -1].all(), "some episodes should reach the adjacent goal"
    for i in range(2):
        for e in range(8):
            alive = int(mask[i, e].sum())
            np.testing.assert_array_equal(mask[i, e], np.arange(20) < alive)  # alive, then never again
            assert (rewards[i, e, alive:] == 0).all()
            if alive < 20:
                assert rewards[i, e, alive - 1] == 0  # the terminating step reached the goal
            assert (rewards[i, e, : alive - 1] < 0).all()
    assert set(np.unique(out["actions"])) <= {0.0, 1.0, 2.0, 3.0}
