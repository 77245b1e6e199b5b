"""Navigation2D against the reference table (tasks.md), the task API, and the vectorised form."""

from __future__ import annotations

import importlib
import math
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from metarl import __version__, envs
from metarl.envs.navigation_2d import Navigation2DEnv, Navigation2DVectorEnv
from metarl.envs.task_env import TaskEnv, TaskVectorEnv, task_from_json

ENV_ID = "metarl/Navigation2D-v0"
MODES = ("clip", "scale")
REPO = Path(__file__).resolve().parents[1]
DIST_INFO = f"metarl-{__version__}.dist-info"


def physical(action, mode):
    """The reference rule for raw action -> velocity, written independently of the env."""
    a = np.asarray(action, dtype=np.float64)
    if mode == "clip":
        return np.minimum(np.maximum(a, -0.1), 0.1)
    return np.minimum(np.maximum(a, -1.0), 1.0) * 0.1


# -- registration and Gymnasium conformance -----------------------------------------------


def test_reimport_does_not_reregister():
    importlib.reload(envs)  # would raise / warn on a duplicate registration
    assert gym.spec(ENV_ID).max_episode_steps == 100


MAKE_AFTER_IMPORT_METARL = """
import sys
import gymnasium, metarl
env = gymnasium.make("metarl/Navigation2D-v0")
assert type(env.unwrapped).__module__ == "metarl.envs.navigation_2d", type(env.unwrapped).__module__
assert "envs" not in sys.modules, "something imported the families as a top-level module `envs`"
print("MADE")
"""


def test_import_metarl_registers_the_families_under_its_own_name(tmp_path):
    """A fresh process: ``import metarl`` alone makes ``gymnasium.make("metarl/...")`` work (run outside the
    repository, so nothing on the path but the package)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", MAKE_AFTER_IMPORT_METARL],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip() == "MADE", done.stderr


def test_the_built_wheel_installs_metarl_envs_and_no_top_level_envs(tmp_path):
    """The wheel pyproject.toml builds holds the families as ``metarl/envs/*`` and only ``metarl`` at top level."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("metarl", "envs"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    build = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "dist")], cwd=src, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with zipfile.ZipFile(tmp_path / "dist" / done.stdout.strip().splitlines()[-1]) as wheel:
        names = wheel.namelist()
        top_level = wheel.read(f"{DIST_INFO}/top_level.txt").decode().split()
    assert {n.split("/")[0] for n in names} == {"metarl", DIST_INFO}
    assert top_level == ["metarl"]
    families = {Path(n).name for n in names if n.startswith("metarl/envs/")}
    assert families == {p.name for p in (REPO / "envs").glob("*.py")}


@pytest.mark.filterwarnings("ignore:.*infinity:UserWarning")  # raw actions are unbounded by design (clipped inside)
@pytest.mark.filterwarnings("ignore:.*symmetric and normalized:UserWarning")
def test_check_env_passes_in_scale_mode():
    """The default ("clip") mode is checked with every family in test_task_families.py."""
    env = gym.make(ENV_ID, action_mode="scale", task={"goal": [0.2, -0.3]})
    check_env(env.unwrapped, skip_render_check=True)


def test_protocols_implemented():
    assert isinstance(Navigation2DEnv(), TaskEnv)
    assert isinstance(Navigation2DEnv.make_vector([{"goal": [0.0, 0.1]}], 2), TaskVectorEnv)


# -- one test per rule of the reference table ---------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_starts_at_origin_float32(mode):
    env = Navigation2DEnv({"goal": [0.3, 0.3]}, action_mode=mode)
    for seed in (None, 0, 123):
        obs, info = env.reset(seed=seed)
        assert obs.dtype == np.float32 and obs.shape == (2,)
        np.testing.assert_array_equal(obs, [0.0, 0.0])
        assert info["task"] == {"goal": [0.3, 0.3]}
    # after moving, a reset brings it back to the origin
    env.step(np.array([0.1, -0.1]))
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, [0.0, 0.0])

    vec = Navigation2DEnv.make_vector([{"goal": [0.3, 0.3]}, {"goal": [-0.1, 0.2]}], 3, action_mode=mode)
    vec.step(np.full((2, 3, 2), 0.05))
    obs = vec.reset()
    assert obs.shape == (2, 3, 2) and obs.dtype == np.float32
    assert not obs.any()


@pytest.mark.parametrize(
    "action, expected",
    [
        ([0.05, -0.03], [0.05, -0.03]),  # inside the box: unchanged
        ([5.0, -0.05], [0.1, -0.05]),  # x saturates
        ([-0.2, 0.1000001], [-0.1, 0.1]),  # both saturate
        ([-1e6, 1e6], [-0.1, 0.1]),
    ],
)
def test_clip_mode_clips_to_point_one(action, expected):
    env = Navigation2DEnv({"goal": [0.5, 0.5]}, action_mode="clip")
    env.reset()
    obs, *_ = env.step(np.array(action))
    np.testing.assert_allclose(obs, expected, atol=1e-7)


@pytest.mark.parametrize(
    "action, expected",
    [
        ([0.5, -0.3], [0.05, -0.03]),  # inside [-1, 1]: multiplied by 0.1
        ([5.0, -0.05], [0.1, -0.005]),  # x clipped to 1 first
        ([-2.0, 1.0], [-0.1, 0.1]),
        ([0.05, 0.05], [0.005, 0.005]),  # small actions are scaled, not passed through
    ],
)
def test_scale_mode_clips_then_scales(action, expected):
    env = Navigation2DEnv({"goal": [0.5, 0.5]}, action_mode="scale")
    env.reset()
    obs, *_ = env.step(np.array(action))
    np.testing.assert_allclose(obs, expected, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_transition_accumulates_position(mode):
    rng = np.random.default_rng(1)
    env = Navigation2DEnv({"goal": [0.5, -0.5]}, action_mode=mode)
    env.reset()
    position = np.zeros(2)
    for _ in range(30):
        action = rng.normal(scale=0.3, size=2)
        position = position + physical(action, mode)
        obs, *_ = env.step(action)
        np.testing.assert_allclose(obs, position, atol=1e-6)


@pytest.mark.parametrize(
    "goal, action, expected_reward",
    [
        # new position (0.1, 0): distance to (0.1, 0.4) is 0.4 (from the old position it would be ~0.412)
        ([0.1, 0.4], [0.1, 0.0], -0.4),
        # new position (0.1, -0.1): delta (-0.3, -0.4) -> 3-4-5 triangle
        ([0.4, 0.3], [0.1, -0.1], -0.5),
        # new position (-0.1, 0.1): delta (-0.6, 0.3)
        ([0.5, -0.2], [-1.0, 1.0], -math.hypot(0.6, 0.3)),
        # L2, not squared: distance 0.5 gives -0.5, not -0.25
        ([-0.4, -0.3], [0.0, 0.0], -0.5),
    ],
)
def test_reward_is_minus_distance_of_new_position(goal, action, expected_reward):
    env = Navigation2DEnv({"goal": goal}, action_mode="clip")
    env.reset()
    _, reward, terminated, truncated, _ = env.step(np.array(action))
    assert reward == pytest.approx(expected_reward, abs=1e-12)
    assert not terminated and not truncated


def test_reward_second_step_uses_latest_position():
    env = Navigation2DEnv({"goal": [0.2, 0.0]}, action_mode="clip")
    env.reset()
    _, r1, *_ = env.step(np.array([0.1, 0.0]))
    _, r2, *_ = env.step(np.array([0.0, 0.1]))  # now at (0.1, 0.1)
    assert r1 == pytest.approx(-0.1, abs=1e-12)
    assert r2 == pytest.approx(-math.sqrt(0.02), abs=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_terminates_only_when_both_coordinates_within_tolerance(mode):
    scale = 1.0 if mode == "clip" else 0.1  # raw action = physical / scale
    # both within 0.01 -> terminated
    env = Navigation2DEnv({"goal": [0.1, -0.1]}, action_mode=mode)
    env.reset()
    _, _, terminated, _, _ = env.step(np.array([0.0955, -0.1]) / scale)  # dx = -0.0045, dy = 0
    assert terminated
    # near the boundary: |dx| = 0.0099 terminates, |dx| = 0.0101 does not
    env.reset()
    assert env.step(np.array([0.0901, -0.1]) / scale)[2]
    env.reset()
    assert not env.step(np.array([0.0899, -0.1]) / scale)[2]
    # only x within tolerance
    env = Navigation2DEnv({"goal": [0.1, -0.3]}, action_mode=mode)
    env.reset()
    assert not env.step(np.array([0.1, -0.1]) / scale)[2]
    # only y within tolerance
    env = Navigation2DEnv({"goal": [0.3, -0.1]}, action_mode=mode)
    env.reset()
    assert not env.step(np.array([0.1, -0.1]) / scale)[2]
    # Euclidean distance < 0.01 is not the rule: a box of half-width 0.01, so (0.009, 0.009) counts
    env = Navigation2DEnv({"goal": [0.009, 0.009]}, action_mode=mode)
    env.reset()
    assert env.step(np.zeros(2))[2]


def test_vector_termination_matches_rule():
    goals = [{"goal": [0.1, -0.1]}, {"goal": [0.1, -0.3]}, {"goal": [0.3, -0.1]}]
    vec = Navigation2DEnv.make_vector(goals, 1)
    vec.reset()
    _, _, terminated = vec.step(np.tile(np.array([0.1, -0.1]), (3, 1, 1)))
    np.testing.assert_array_equal(terminated, [[True], [False], [False]])
    # no latch: stepping out of the goal box reports False again (rollouts mask with their own alive flag)
    _, _, terminated = vec.step(np.tile(np.array([0.1, 0.0]), (3, 1, 1)))
    np.testing.assert_array_equal(terminated, [[False], [False], [False]])


@pytest.mark.parametrize("mode", MODES)
def test_horizon_100_truncation(mode):
    env = gym.make(ENV_ID, task={"goal": [0.5, 0.5]}, action_mode=mode)
    env.reset(seed=0)
    for t in range(1, 101):
        _, _, terminated, truncated, _ = env.step(np.array([-1.0, -1.0], dtype=np.float32))  # away from the goal
        assert not terminated
        assert truncated == (t == 100), f"truncated={truncated} at step {t}"


def test_goal_distribution_uniform_on_square():
    n = 40_000
    tasks = Navigation2DEnv().sample_tasks(n, np.random.default_rng(2024))
    assert len(tasks) == n
    goals = np.array([t["goal"] for t in tasks])
    assert goals.shape == (n, 2)
    assert goals.min() >= -0.5 and goals.max() <= 0.5
    # the whole square is covered, not a smaller range
    assert goals.min(axis=0).max() < -0.49 and goals.max(axis=0).min() > 0.49
    # U[-0.5, 0.5]: mean 0, std 1/sqrt(12) ~ 0.2887; standard error of the mean ~ 0.0015
    np.testing.assert_allclose(goals.mean(axis=0), 0.0, atol=0.01)
    np.testing.assert_allclose(goals.std(axis=0), 1 / math.sqrt(12), atol=0.005)
    assert abs(np.corrcoef(goals.T)[0, 1]) < 0.03
    # flat histogram: each of 10 bins per axis holds ~10% (binomial sd ~0.15%)
    for axis in range(2):
        counts, _ = np.histogram(goals[:, axis], bins=10, range=(-0.5, 0.5))
        np.testing.assert_allclose(counts / n, 0.1, atol=0.01)
    # every sampled task is valid
    env = Navigation2DEnv()
    for task in tasks[:100]:
        env.set_task(task)


# -- task API (seeded sampling, JSON round trip and reset keeping the task: test_task_families.py) ----


def test_get_task_is_plain_data_and_a_copy():
    env = Navigation2DEnv({"goal": [0.25, -0.125]})
    task = env.get_task()
    assert type(task["goal"]) is list and all(type(g) is float for g in task["goal"])
    task["goal"][0] = 0.4  # mutating the returned dict must not move the goal
    assert env.get_task() == {"goal": [0.25, -0.125]}


def test_set_task_accepts_numpy_and_ints():
    env = Navigation2DEnv()
    env.set_task({"goal": np.array([0.1, -0.2], dtype=np.float32)})
    np.testing.assert_allclose(env.get_task()["goal"], [0.1, -0.2], atol=1e-7)
    env.set_task({"goal": [0, 0]})
    assert env.get_task() == {"goal": [0.0, 0.0]}


def test_set_task_takes_effect_at_the_next_reset_position_kept():
    env = Navigation2DEnv({"goal": [0.5, 0.5]})
    env.reset()
    env.step(np.array([0.1, 0.1]))
    env.set_task({"goal": [-0.5, -0.5]})
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    _, reward, *_ = env.step(np.zeros(2))
    assert reward == pytest.approx(-math.sqrt(0.5))


INVALID_TASKS = [
    ({"goal": [0.1]}, "shape"),
    ({"goal": [0.1, 0.2, 0.3]}, "shape"),
    ({"goal": [[0.1, 0.2]]}, "shape"),
    ({"goal": 0.1}, "shape"),
    ({"goal": [float("nan"), 0.0]}, "finite"),
    ({"goal": [0.0, float("inf")]}, "finite"),
    ({"goal": [-float("inf"), 0.0]}, "finite"),
    ({"goal": [0.6, 0.0]}, "[-0.5, 0.5]"),
    ({"goal": [0.0, -0.5000001]}, "[-0.5, 0.5]"),
    ({"goal": [3.0, 3.0]}, "[-0.5, 0.5]"),
    ({"goal": ["a", "b"]}, "numbers"),
    ({}, "key 'goal'"),
    ({"target": [0.1, 0.1]}, "key 'goal'"),
    ([0.1, 0.2], "dict"),
    ("goal", "dict"),
    (None, "dict"),
]


@pytest.mark.parametrize("task, rule", INVALID_TASKS, ids=[repr(t) for t, _ in INVALID_TASKS])
def test_invalid_task_raises_naming_task_and_rule(task, rule):
    env = Navigation2DEnv({"goal": [0.1, 0.1]})
    with pytest.raises(ValueError) as excinfo:
        env.set_task(task)
    message = str(excinfo.value)
    assert repr(task) in message
    assert rule in message
    # a rejected task leaves the env on its previous task
    assert env.get_task() == {"goal": [0.1, 0.1]}
    # the other entry points validate too
    with pytest.raises(ValueError, match="invalid task"):
        Navigation2DEnv(task if task is not None else "not a task")
    with pytest.raises(ValueError, match="invalid task"):
        Navigation2DEnv.make_vector([{"goal": [0.0, 0.0]}, task], 2)


@pytest.mark.parametrize("bad", ["Clip", "tanh", "", None])
def test_invalid_action_mode_raises(bad):
    with pytest.raises(ValueError, match="action_mode"):
        Navigation2DEnv(action_mode=bad)
    with pytest.raises(ValueError, match="action_mode"):
        Navigation2DEnv.make_vector([{"goal": [0.0, 0.0]}], 1, action_mode=bad)


def test_goal_boundary_is_allowed():
    env = Navigation2DEnv({"goal": [-0.5, 0.5]})
    assert env.get_task() == {"goal": [-0.5, 0.5]}


def test_task_from_json_rejects_non_object():
    with pytest.raises(ValueError, match="JSON object"):
        task_from_json("[0.1, 0.2]")


@pytest.mark.parametrize("mode", MODES)
def test_env_pickle_round_trip_mid_episode(mode):
    rng = np.random.default_rng(3)
    env = Navigation2DEnv({"goal": [0.3, -0.4]}, action_mode=mode)
    env.reset(seed=4)
    for _ in range(5):
        env.step(rng.normal(size=2))
    clone = pickle.loads(pickle.dumps(env))
    assert clone.get_task() == env.get_task()
    assert clone.action_mode == mode
    assert clone.observation_space == env.observation_space and clone.action_space == env.action_space
    assert clone.sample_tasks(3) == env.sample_tasks(3)  # same generator state
    for _ in range(5):
        action = rng.normal(size=2)
        a, b = env.step(action), clone.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4]


def test_vector_env_pickle_round_trip():
    tasks = Navigation2DEnv().sample_tasks(3, np.random.default_rng(0))
    vec = Navigation2DEnv.make_vector(tasks, 2, action_mode="scale")
    vec.reset()
    vec.step(np.full((3, 2, 2), 0.3))
    clone = pickle.loads(pickle.dumps(vec))
    assert isinstance(clone, Navigation2DVectorEnv) and clone.action_mode == "scale"
    actions = np.random.default_rng(1).normal(size=(3, 2, 2))
    for x, y in zip(vec.step(actions), clone.step(actions)):
        np.testing.assert_array_equal(x, y)


# -- vectorised form == single env -------------------------------------------------------


def _mixed_actions(rng, goals, positions, mode, t):
    """Large random actions, interleaved with steps that head for the goal so some episodes terminate."""
    random = rng.normal(scale=3.0, size=positions.shape)
    towards = goals - positions
    if mode == "scale":
        towards = towards / 0.1
    use_towards = (rng.random(positions.shape[:-1]) < 0.7)[..., None] & (t > 2)
    return np.where(use_towards, towards, random)


@pytest.mark.parametrize("mode", MODES)
def test_vector_env_matches_single_env(mode):
    rng = np.random.default_rng(7)
    num_tasks, episodes, horizon = 4, 3, 40
    tasks = Navigation2DEnv().sample_tasks(num_tasks, rng)
    vec = Navigation2DEnv.make_vector(tasks, episodes, action_mode=mode)
    assert (vec.num_tasks, vec.episodes_per_task) == (num_tasks, episodes)
    goals = np.array([t["goal"] for t in tasks])[:, None, :]

    vec_obs = [vec.reset()]
    vec_rew, vec_term, actions = [], [], []
    for t in range(horizon):
        a = _mixed_actions(rng, goals, vec_obs[-1].astype(np.float64), mode, t)
        actions.append(a)
        obs, rew, term = vec.step(a)
        assert obs.shape == (num_tasks, episodes, 2) and obs.dtype == np.float32
        assert rew.shape == term.shape == (num_tasks, episodes)
        vec_obs.append(obs)
        vec_rew.append(rew)
        vec_term.append(term)
    vec_obs, vec_rew, vec_term = np.stack(vec_obs), np.stack(vec_rew), np.stack(vec_term)
    assert vec_term.any(), "the test should exercise termination"
    assert (~vec_term).any()
    assert np.abs(np.stack(actions)).max() > 1.0, "the test should exercise saturation"

    for i, task in enumerate(tasks):
        for e in range(episodes):
            env = Navigation2DEnv(task, action_mode=mode)
            obs, _ = env.reset(seed=e)
            np.testing.assert_array_equal(obs, vec_obs[0, i, e])
            first_term = None
            for t in range(horizon):
                obs, reward, terminated, truncated, _ = env.step(actions[t][i, e])
                np.testing.assert_array_equal(obs, vec_obs[t + 1, i, e])
                assert np.float32(reward) == vec_rew[t, i, e]
                assert terminated == bool(vec_term[t, i, e])
                assert not truncated
                if terminated and first_term is None:
                    first_term = t
            # the rollout reward is the reward of the new position, recomputed independently
            expected = -np.linalg.norm(vec_obs[1:, i, e].astype(np.float64) - goals[i, 0], axis=-1)
            np.testing.assert_allclose(vec_rew[:, i, e], expected, atol=1e-6)


def test_vector_env_tasks_are_independent_columns():
    """Tasks in one vector env do not leak into each other (goals broadcast per task, not per episode)."""
    tasks = [{"goal": [0.5, 0.0]}, {"goal": [-0.5, 0.0]}]
    vec = Navigation2DEnv.make_vector(tasks, 2)
    vec.reset()
    _, reward, _ = vec.step(np.zeros((2, 2, 2)))
    np.testing.assert_allclose(reward, -0.5)
    _, reward, _ = vec.step(np.tile(np.array([0.1, 0.0]), (2, 2, 1)))
    np.testing.assert_allclose(reward, [[-0.4, -0.4], [-0.6, -0.6]], atol=1e-6)
