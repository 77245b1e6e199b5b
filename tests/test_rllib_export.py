"""``metarl export --format rllib``: an RLlib RLModule checkpoint whose action distribution is metarl's policy."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule
from test_export import fake_run  # tests/ is on sys.path (pytest's rootdir-less import)

from metarl.api import export_rllib
from metarl.cli import main
from metarl.core.policies import PolicySpec, forward, init_params, log_prob
from metarl.export import adapted_params
from metarl.rllib import model_config, module_spec, rl_module
from metarl.runtime.evaluation import load_run

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
SPACES = {"gaussian": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32), "categorical": gym.spaces.Discrete(4)}


def random_policy(kind: str, activation: str, hidden=(16, 8), seed=0):
    """A policy with non-trivial biases and log-std, so a swapped or dropped tensor shows."""
    spec = PolicySpec(3, 2 if kind == "gaussian" else 4, hidden, activation, init_std=0.7, kind=kind)
    g = torch.Generator().manual_seed(seed)
    params = {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in init_params(spec, g).items()}
    return spec, params


def assert_same_distribution(module, spec: PolicySpec, params, obs: torch.Tensor) -> None:
    """RLlib's inference distribution (what its EnvRunners sample from) vs metarl's ``forward``, to 1e-6."""
    with torch.no_grad():
        inputs = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        dist = module.get_inference_action_dist_cls().from_logits(inputs)
        expected = forward(spec, params, obs)
    if spec.kind == "gaussian":
        mean, log_std = inputs.chunk(2, dim=-1)  # RLlib's TorchDiagGaussian.from_logits
        torch.testing.assert_close(mean, expected[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(log_std, expected[1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(dist.loc, expected[0], rtol=1e-6, atol=1e-6)
        actions = expected[0] + torch.randn_like(expected[0]) * expected[1].exp()
    else:
        torch.testing.assert_close(inputs, expected[0], rtol=1e-6, atol=1e-6)
        actions = torch.randint(0, spec.act_dim, (obs.shape[0], 1)).float()
    rllib_actions = actions if spec.kind == "gaussian" else actions[:, 0].long()  # metarl stores an index column
    torch.testing.assert_close(dist.logp(rllib_actions), log_prob(spec, expected, actions), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_module_distribution_matches_metarl_policy(kind, activation):
    spec, params = random_policy(kind, activation)
    module = rl_module(spec, params, OBS_SPACE, SPACES[kind])
    obs = torch.randn(256, 3, generator=torch.Generator().manual_seed(1)) * 2
    assert_same_distribution(module, spec, params, obs)
    assert module.state_dict()["encoder.actor_encoder.net.mlp.0.weight"].shape == (16, 3)


def test_exploration_distribution_is_the_same_as_inference():
    """RLlib's EnvRunners sample with forward_exploration; PPO's loss uses forward_train: all three agree."""
    spec, params = random_policy("gaussian", "tanh")
    module = rl_module(spec, params, OBS_SPACE, SPACES["gaussian"])
    obs = torch.randn(32, 3)
    with torch.no_grad():
        outs = [
            getattr(module, f)({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
            for f in ("forward_inference", "forward_exploration", "forward_train")
        ]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=0, atol=0)


def test_checkpoint_round_trip_gives_the_same_distribution(tmp_path):
    from metarl.rllib import save_rl_module

    for kind in ("gaussian", "categorical"):
        spec, params = random_policy(kind, "relu", seed=3)
        path = save_rl_module(rl_module(spec, params, OBS_SPACE, SPACES[kind]), tmp_path / kind)
        restored = RLModule.from_checkpoint(str(path))
        assert_same_distribution(restored, spec, params, torch.randn(64, 3))
    with pytest.raises(ValueError, match="exists"):
        save_rl_module(rl_module(spec, params, OBS_SPACE, SPACES[kind]), tmp_path / kind)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["categorical", "gaussian"], "no temp dir left behind"


def test_no_hidden_layers_is_refused_in_one_line():
    with pytest.raises(ValueError, match="at least one hidden layer"):
        model_config(PolicySpec(3, 2, ()))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rllib-export")
    return {
        "nav": fake_run(root / "nav"),
        "grid": fake_run(root / "grid", env="metarl/GridNavigation-v0", algorithm="maml", activation="tanh"),
    }


@pytest.mark.parametrize("family", ["nav", "grid"])
def test_cli_export_rllib_of_theta_and_of_adapted_theta(runs, tmp_path, family, capsys):
    run = load_run(runs[family])
    goal = "0.3,-0.2" if family == "nav" else "2,3"
    assert main(["export", str(runs[family]), "--format", "rllib", "--out", str(tmp_path / "theta")]) == 0
    assert "RLlib RLModule checkpoint" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                str(runs[family]),
                "--format",
                "rllib",
                "--goal",
                goal,
                "--steps",
                "1",
                "--episodes",
                "2",
                "--seed",
                "2",
                "--out",
                str(tmp_path / "adapted"),
            ]
        )
        == 0
    )
    adapted = adapted_params(run, [float(g) if family == "nav" else int(g) for g in goal.split(",")], 1, 2, seed=2)
    obs = torch.rand(64, run.spec.obs_dim) * 4 - 2
    for name, params in (("theta", run.theta), ("adapted", adapted)):
        assert_same_distribution(RLModule.from_checkpoint(str(tmp_path / name)), run.spec, params, obs)
    assert any(not torch.equal(adapted[k], run.theta[k]) for k in adapted), "the adapted export is not θ"


def test_cli_export_rllib_to_a_relative_out(runs, tmp_path, monkeypatch):
    """A relative ``--out`` (as typed in a shell) works: RLlib reads a relative path as a URI and refused it."""
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(runs["nav"]), "--format", "rllib", "--out", "exports/theta"]) == 0
    run = load_run(runs["nav"])
    obs = torch.rand(16, run.spec.obs_dim)
    assert_same_distribution(RLModule.from_checkpoint(str(tmp_path / "exports" / "theta")), run.spec, run.theta, obs)
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["theta"], "no temp dir left behind"


def test_api_export_is_the_cli_export(runs, tmp_path):
    path = export_rllib(runs["nav"], tmp_path / "api", task={"goal": [0.3, -0.2]}, steps=1, episodes=2, seed=2)
    run = load_run(runs["nav"])
    assert_same_distribution(
        RLModule.from_checkpoint(str(path)), run.spec, adapted_params(run, [0.3, -0.2], 1, 2, seed=2), torch.rand(16, 2)
    )


def test_cli_export_rllib_rejects_bad_input_in_one_line(runs, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    for argv, fragment in [
        (["export", str(runs["nav"]), "--format", "rllib", "--out", str(tmp_path / "taken")], "exists"),
        (["export", str(runs["nav"]), "--format", "pt2", "--out", str(tmp_path / "p.pt")], "must end in .pt2"),
        (
            ["export", str(runs["nav"]), "--format", "rllib", "--steps", "2", "--out", str(tmp_path / "d")],
            "needs the task",
        ),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"], "nothing written for bad input"


def test_ppo_built_from_the_checkpoint_acts_as_metarl_before_its_first_update(local_ray, runs, tmp_path):
    """RLlib's own fine-tuning recipe: PPOConfig + RLModuleSpec(load_state_path=...) loads θ at build time."""
    from ray.rllib.algorithms.ppo import PPOConfig

    run = load_run(runs["nav"])
    path = export_rllib(runs["nav"], tmp_path / "theta")
    config = (
        PPOConfig()
        .environment("metarl/Navigation2D-v0", normalize_actions=False)
        .env_runners(num_env_runners=0)
        .learners(num_learners=0)
        .rl_module(
            rl_module_spec=module_spec(run.spec, run.env.observation_space, run.env.action_space, load_state_path=path)
        )
        .debugging(seed=5)
    )
    algo = config.build_algo()
    try:
        obs = torch.rand(64, 2) - 0.5
        assert_same_distribution(algo.get_module(), run.spec, run.theta, obs)  # the EnvRunner's module
        # the module PPO updates, on the learner (local here: num_learners=0)
        learner_inputs = algo.learner_group.foreach_learner(
            lambda learner: learner.module["default_policy"].forward_train({Columns.OBS: obs})[
                Columns.ACTION_DIST_INPUTS
            ]
        )
        mean, log_std = forward(run.spec, run.theta, obs)
        torch.testing.assert_close(
            list(learner_inputs)[0].get().detach(), torch.cat([mean, log_std], -1), rtol=1e-6, atol=1e-6
        )
    finally:
        algo.stop()
