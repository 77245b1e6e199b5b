"""Meta-World families (envs/metaworld.py): Meta-World's own splits, tasks as plain data, and every env path
(the native vector env, the Gymnasium env, the rollout worker) stepping exactly as Meta-World's own env.

ML1 is built once for the module (about 5 s); ML10 / ML45 construction is slow (opt-in).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import metaworld
import numpy as np
import pytest
import torch
from metaworld.env_dict import ALL_V3_ENVIRONMENTS

from metarl.core.policies import PolicySpec, init_params, to_numpy
from metarl.envs import metaworld as mw
from metarl.envs.tasks import sample_tasks, task_splits
from metarl.runtime.rollout_group import split_by_share, spread_by_class
from metarl.runtime.rollouts import VectorEnvs, sample_rollouts

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reach():
    """The metarl family and Meta-World's own ML1 reach-v3 benchmark, same seed."""
    env = gym.make("metarl/ML1-reach-v3", benchmark_seed=3)
    return env, metaworld.ML1("reach-v3", seed=3)


def reference_env(task):
    """A fresh Meta-World env on ``task`` the way Meta-World's own code sets one (its ``_encode_task``)."""
    cls = ALL_V3_ENVIRONMENTS[task["env_name"]]
    env = cls()
    data = dict(rand_vec=np.asarray(task["rand_vec"]), env_cls=cls, partially_observable=True)
    env.set_task(metaworld._encode_task(task["env_name"], data))
    return env


def drawn_task(name: str, seed: int):
    """A goal of class ``name`` drawn as Meta-World's ``_make_tasks`` draws them (without building a benchmark)."""
    env = ALL_V3_ENVIRONMENTS[name]()
    env._freeze_rand_vec, env._set_task_called = False, True
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        env.reset()
    finally:
        np.random.set_state(state)
    task = {"env_name": name, "rand_vec": [float(x) for x in env._last_rand_vec]}
    env.close()
    return task


def test_names_and_ids_match_metaworld():
    assert list(mw.V3_NAMES) == list(ALL_V3_ENVIRONMENTS)
    ids = mw.family_ids()
    assert len(ids) == 52 and all(i in gym.registry for i in ids)
    assert gym.spec("metarl/ML10-v3").max_episode_steps == 500


def test_ml1_tasks_are_metaworlds_own_and_the_split_holds(reach):
    env, ref = reach
    u = env.unwrapped
    train, test = u.tasks("train"), u.tasks("test")
    assert [t["rand_vec"] for t in train] == [pickle.loads(t.data)["rand_vec"].tolist() for t in ref.train_tasks]
    assert [t["rand_vec"] for t in test] == [pickle.loads(t.data)["rand_vec"].tolist() for t in ref.test_tasks]
    assert len(train) == len(test) == 50
    train_goals = {tuple(t["rand_vec"]) for t in train}
    assert len(train_goals) == 50 and not train_goals & {tuple(t["rand_vec"]) for t in test}
    assert task_splits(env) == ("train", "test")
    drawn = sample_tasks(env, 20, np.random.default_rng(1))
    assert all(tuple(t["rand_vec"]) in train_goals for t in drawn)
    assert len({tuple(t["rand_vec"]) for t in drawn}) == 20  # within a class: without replacement
    held_out = sample_tasks(env, 20, np.random.default_rng(1), split="test")
    assert not {tuple(t["rand_vec"]) for t in held_out} & train_goals
    assert drawn == sample_tasks(env, 20, np.random.default_rng(1))  # seeded
    assert json.loads(json.dumps(drawn)) == drawn  # plain data: JSON round trip is exact


def test_tasks_are_validated_and_carry_no_pickle(reach):
    env, _ = reach
    u = env.unwrapped
    task = u.tasks("train")[0]
    u.set_task(task)
    assert u.get_task() == task
    bad = [
        {**task, "data": pickle.dumps({"x": 1})},  # Meta-World's pickled field is refused
        {"env_name": "push-v3", "rand_vec": task["rand_vec"]},  # not a class of ML1 reach
        {"env_name": "reach-v3", "rand_vec": [float("nan")] * 6},
        {"env_name": "reach-v3", "rand_vec": task["rand_vec"][:5]},  # reach's goal vector has 6 numbers
        {"env_name": "reach-v3", "rand_vec": "0.1,0.2"},
    ]
    for b in bad:
        with pytest.raises(ValueError, match="invalid task"):
            u.set_task(b)
    assert u.get_task() == task  # a refused task leaves the env as it was
    with pytest.raises(ValueError, match="split 'valid'"):
        u.sample_tasks(2, np.random.default_rng(0), split="valid")


def test_gymnasium_env_steps_as_metaworld(reach):
    env, _ = reach
    task = env.unwrapped.tasks("test")[4]
    env.unwrapped.set_task(task)
    ref = reference_env(task)
    obs, _ = env.reset(seed=0)
    ref_obs, _ = ref.reset()
    np.testing.assert_array_equal(obs, ref_obs)
    actions = np.random.default_rng(0).uniform(-1.5, 1.5, (30, 4)).astype(np.float32)  # past the box too
    for a in actions:
        o, r, term, trunc, info = env.step(a)
        ro, rr, rterm, rtrunc, rinfo = ref.step(a)
        np.testing.assert_array_equal(o, ro)
        assert (r, term, info["success"]) == (rr, rterm, rinfo["success"])


def test_vector_env_steps_as_metaworld_and_reuses_copies_across_phases():
    """Several classes (two of them move bodies in the MjModel at reset, which copies of one task share), two
    goals each, two episodes per task; then a second phase with other tasks on the same pool."""
    phases = [
        [drawn_task(n, s) for n in ("drawer-close-v3", "button-press-topdown-v3", "reach-v3") for s in (1, 2)],
        [drawn_task(n, s) for n in ("button-press-topdown-v3", "drawer-close-v3", "drawer-close-v3") for s in (3,)],
    ]
    vec = mw.MetaWorldVectorEnv(phases[0], 2)
    for p, tasks in enumerate(phases):
        if p:
            before = {name: [len(g.envs) for g in groups] for name, groups in vec._pool.items()}
            assert vec.assign(tasks, 2) is vec
            assert {n: [len(g.envs) for g in gs] for n, gs in vec._pool.items()} == before  # nothing rebuilt
        refs = [reference_env(t) for t in tasks]
        obs = vec.reset()
        for i, ref in enumerate(refs):
            expected = ref.reset()[0].astype(np.float32)
            np.testing.assert_array_equal(obs[i, 0], expected)
            np.testing.assert_array_equal(obs[i, 1], expected)
        rng = np.random.default_rng(p)
        for _ in range(40):
            a = rng.uniform(-1, 1, (len(tasks), 2, 4)).astype(np.float32)
            obs, reward, terminated = vec.step(a)
            assert not terminated.any()
            for i, ref in enumerate(refs):
                o, r, _, _, info = ref.step(a[i, 0])
                np.testing.assert_array_equal(obs[i, 0], o.astype(np.float32))
                assert reward[i, 0] == np.float32(r) and vec.last_success[i, 0] == bool(info["success"])
        for ref in refs:
            ref.close()
    vec.close()


def test_success_of_an_episode_is_any_step_and_matches_metaworld():
    """Meta-World's scripted reach policy succeeds; the rollouts' success says so, and agrees with the
    reference env's ``info["success"]`` on every step."""
    from metaworld.policies import SawyerReachV3Policy

    tasks = [drawn_task("reach-v3", s) for s in (5, 6)]
    vec, refs, scripted = mw.MetaWorldVectorEnv(tasks, 1), [reference_env(t) for t in tasks], SawyerReachV3Policy()
    obs = vec.reset()
    for ref in refs:
        ref.reset()
    seen = np.zeros(2, dtype=bool)
    for _ in range(60):
        a = np.stack(
            [
                scripted.get_action(np.r_[obs[i, 0, :36], refs[i]._target_pos])  # it reads the hidden goal
                for i in range(2)
            ]
        )[:, None].astype(np.float32)
        obs, _, _ = vec.step(a)
        for i, ref in enumerate(refs):
            assert vec.last_success[i, 0] == bool(ref.step(a[i, 0])[4]["success"])
        seen |= vec.last_success[:, 0]
    assert seen.all(), "the scripted policy should reach both goals within 60 steps"


def test_rollout_worker_path_reports_success_without_building_the_benchmark(reach):
    env, _ = reach
    tasks = env.unwrapped.tasks("train")[:2]
    builds = mw.benchmark_tasks.cache_info().misses
    spec = PolicySpec(39, 4, (8,), "tanh", init_std=1.0)
    theta = to_numpy(init_params(spec, torch.Generator().manual_seed(0)))
    vector_envs = VectorEnvs("metarl/ML1-reach-v3", {"benchmark_seed": 3})
    vec = vector_envs.make(tasks, 2, [0, 1])
    assert isinstance(vec, mw.MetaWorldVectorEnv)
    out = sample_rollouts(vec, spec, {k: torch.from_numpy(v) for k, v in theta.items()}, 25, [0, 1])
    assert out["success"].shape == (2, 2) and out["mask"].all()
    assert mw.benchmark_tasks.cache_info().misses == builds  # the actor side builds no benchmark
    assert vector_envs.make(tasks[:1], 3, [0]) is vec  # one pool, whatever the number of copies


def test_spread_by_class_gives_each_worker_its_share_of_every_class():
    tasks = [{"env_name": n, "rand_vec": [0.0] * 3} for n in ["a"] * 6 + ["b"] * 6 + ["c"] * 3]
    slices = spread_by_class(tasks, [1, 1, 1])
    assert sorted(int(i) for s in slices for i in s) == list(range(15))
    assert [len(s) for s in slices] == [len(s) for s in split_by_share(15, [1, 1, 1])]
    for s in slices:
        names = [tasks[i]["env_name"] for i in s]
        assert names.count("a") == 2 and names.count("b") == 2 and names.count("c") == 1
    plain = [{"goal": [0.0, 0.0]}] * 5
    assert [s.tolist() for s in spread_by_class(plain, [1, 2])] == [s.tolist() for s in split_by_share(5, [1, 2])]


def test_class_balanced_draw():
    by_class = {n: [{"env_name": n, "rand_vec": [float(i)] * 3} for i in range(50)] for n in "abcdefghij"}
    drawn = mw.class_balanced(by_class, 23, np.random.default_rng(0))
    counts = {n: sum(t["env_name"] == n for t in drawn) for n in by_class}
    assert sorted(counts.values()) == [2] * 7 + [3] * 3


def test_horizon_past_metaworlds_limit_is_a_config_error():
    from metarl.config import Config, ConfigError

    with pytest.raises(ConfigError, match="horizon: 600"):
        Config.from_dict({"env": "metarl/ML1-reach-v3", "horizon": 600, "meta_batch_size": 2, "episodes_per_task": 2})


@pytest.mark.slow
@pytest.mark.parametrize("benchmark,classes", [("ML10", (10, 5)), ("ML45", (45, 5))])
def test_ml10_ml45_hold_out_test_classes(benchmark, classes):
    env = gym.make(f"metarl/{benchmark}-v3", benchmark_seed=0).unwrapped
    train, test = env.tasks("train"), env.tasks("test")
    train_classes, test_classes = {t["env_name"] for t in train}, {t["env_name"] for t in test}
    assert (len(train_classes), len(test_classes)) == classes and not train_classes & test_classes
    assert len(train) == 50 * classes[0] and len(test) == 50 * classes[1]
    drawn = env.sample_tasks(20, np.random.default_rng(0), split="test")
    assert {t["env_name"] for t in drawn} == test_classes


def test_training_logs_success_and_evaluate_reports_it_per_class(local_ray, reach, tmp_path):
    """A tiny real run (Ray actors): success before/after adaptation in the metrics; ``evaluate`` meta-tests on
    the held-out goals and reports success per step, overall and per class; ``plot curves --metric success``."""
    from pathlib import Path

    from metarl import plots
    from metarl.config import Config
    from metarl.runtime.evaluation import evaluate, format_report
    from metarl.runtime.metrics import read_metrics
    from metarl.runtime.trainer import Trainer

    root = Path(__file__).resolve().parents[1]
    overrides = [
        "iterations=1",
        "meta_batch_size=2",
        "episodes_per_task=2",
        "horizon=20",
        "hidden_sizes=[16]",
        "learner_threads=1",
        "checkpoint_every=1",
        "env_kwargs.benchmark_seed=3",
    ]
    cfg = Config.load(root / "configs/ml1-reach.yaml", overrides)
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        (metrics,) = trainer.train()
    finally:
        trainer.close()
    for key in ("success_pre", "success_post"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["env_steps"] == 2 * 2 * 2 * 20
    assert "success_post" in read_metrics(tmp_path / "run/metrics.jsonl")[0]

    result = evaluate(tmp_path / "run", num_tasks=2, steps=1, episodes=2, local=True)
    assert result["split"] == "test"
    test_goals = {tuple(t["rand_vec"]) for t in reach[0].unwrapped.tasks("test")}
    assert all(tuple(p["task"]["rand_vec"]) in test_goals for p in result["per_task"])
    assert len(result["success_by_step"]) == len(result["success_ci95_by_step"]) == 2
    assert set(result["by_class"]) == {"reach-v3"} and result["by_class"]["reach-v3"]["num_tasks"] == 2
    assert all(len(p["success_by_step"]) == 2 for p in result["per_task"])
    assert "success" in format_report(result)
    json.dumps(result)

    fig = plots.curves_figure([tmp_path / "run"], metric="success")
    assert fig.axes[0].get_ylabel() == "success rate"


def test_render_a_metaworld_task_headless(tmp_path):
    """``metarl render`` on ML1 reach: θ's episode beside θ' after one step, offscreen (EGL here)."""
    from test_export import fake_run  # tests/ is on sys.path
    from test_render import _cannot_render, _cli, _env

    reason = _cannot_render()
    if reason:
        pytest.skip(reason)
    import imageio.v3 as iio

    run = fake_run(tmp_path / "reach", env="metarl/ML1-reach-v3", meta_batch_size=2, episodes_per_task=1, horizon=15)
    task = json.dumps(drawn_task("reach-v3", 1))
    out = tmp_path / "reach.gif"
    proc = _cli(
        "render", str(run), "--task", task, "--out", str(out), "--episodes", "1", "--width", "64", "--height", "48"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    frames = iio.imread(out, index=None)
    assert frames.shape == (16, 48, 128, 3) and frames.std() > 10  # horizon 15 + the reset frame, two panels
    assert np.abs(frames[-1, 12:, :64].astype(float) - frames[0, 12:, :64]).mean() > 0.1, "the arm moves"

    # Without --task: one held-out test task, drawn by --seed; .png: a frame strip, before above after.
    strip = tmp_path / "reach.png"
    argv = ("render", str(run), "--out", str(strip), "--episodes", "1", "--width", "64", "--height", "48")
    proc = _cli(*argv, "--strip-frames", "4", "--seed", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "drawn from the evaluation split" in proc.stderr and "success False before" in proc.stderr
    (wrote,) = [line for line in proc.stderr.splitlines() if line.startswith("metarl: wrote")]
    drawn = json.loads(wrote.split(" on ", 1)[1].removesuffix(" (drawn from the evaluation split)"))
    test_goals = [t["rand_vec"] for t in mw.MetaWorldTaskEnv("ML1", "reach-v3").tasks("test")]
    assert drawn["env_name"] == "reach-v3" and drawn["rand_vec"] in test_goals
    image = iio.imread(strip).astype(float)
    assert image.shape == (2 * 48, 4 * 64, 3)
    assert image[:48].std() > 10 and image[48:].std() > 10, "two rows of frames, not blank"

    # Right side up (Meta-World's cameras come out of MuJoCo upside down): in the corner view the plain
    # backdrop is above, the table and floor below. One uncaptioned frame, in a fresh process (MUJOCO_GL).
    probe = (
        "from metarl.render import choose_gl_backend; choose_gl_backend()\n"
        "import numpy as np; from metarl.envs.metaworld import MetaWorldTaskEnv\n"
        "e = MetaWorldTaskEnv('ML1', 'reach-v3', render_mode='rgb_array', width=64, height=48)\n"
        "e.set_task(e.tasks('test')[0]); e.reset(seed=0); f = np.asarray(e.render(), float)\n"
        "print(f[:8].std(), f[-8:].std())"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=REPO, env=_env()
    )
    top, bottom = (float(x) for x in done.stdout.split())
    assert top < bottom / 1.5, (top, bottom)


def test_families_without_success_log_none_and_rates_are_fractions_of_episodes():
    from metarl.core.batch import Batch, merge_rollouts
    from metarl.envs.navigation_2d import Navigation2DEnv
    from metarl.runtime.learner import success_metrics

    spec = PolicySpec(2, 2, (4,), "tanh")
    theta = init_params(spec, torch.Generator().manual_seed(0))
    nav = Navigation2DEnv.make_vector(Navigation2DEnv().sample_tasks(2, np.random.default_rng(0)), 2)
    plain = sample_rollouts(nav, spec, theta, 5, [0, 1])
    plain["task_index"] = np.arange(2)
    batch = Batch.from_rollouts(merge_rollouts([plain]), 0.99, 1.0, True, torch.float32, "cpu")
    assert "success" not in plain and batch.success is None and success_metrics([batch], batch) == {}

    parts = []
    for index, success in (([1], [[1.0, 0.0, 0.0, 0.0]]), ([0], [[1.0, 1.0, 1.0, 0.0]])):  # slices out of order
        part = {k: v[:1].repeat(4, axis=1) if v.ndim > 1 else v[:1] for k, v in plain.items()}
        part.update(task_index=np.asarray(index), success=np.asarray(success, dtype=np.float32))
        parts.append(part)
    merged = merge_rollouts(parts)
    pre = Batch.from_rollouts(merged, 0.99, 1.0, True, torch.float32, "cpu")
    np.testing.assert_allclose(pre.success, [0.75, 0.25])  # in task order
    assert success_metrics([pre, pre], pre) == {"success_pre": 0.5, "success_post": 0.5, "success_step1": 0.5}
