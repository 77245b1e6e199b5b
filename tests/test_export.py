"""``metarl export``: the policy as a plain PyTorch module that loads without metarl and acts like metarl's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from metarl.api import MetaAlgorithm
from metarl.cli import main
from metarl.config import Config
from metarl.core.policies import forward, init_params, mode
from metarl.envs.tasks import make_env
from metarl.export import adapted_params, deterministic_action, policy_module, save_policy
from metarl.runtime.checkpoint import save_checkpoint
from metarl.runtime.evaluation import load_run
from metarl.runtime.trainer import policy_spec

REPO = Path(__file__).resolve().parents[1]
TINY = dict(meta_batch_size=4, episodes_per_task=3, hidden_sizes=[8, 8])


def fake_run(out: Path, **overrides) -> Path:
    """A run directory with one checkpoint of random θ and α (no training: export only reads it)."""
    cfg = Config.from_dict({**TINY, **overrides})
    spec = policy_spec(cfg, make_env(cfg.env, cfg.env_kwargs))
    g = torch.Generator().manual_seed(7)
    theta = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in init_params(spec, g).items()}
    alpha = {
        k: (cfg.inner_lr + 0.02 * torch.randn(v.shape, generator=g))
        if cfg.algorithm == "metasgd"
        else torch.tensor(cfg.inner_lr)
        for k, v in theta.items()
    }
    out.mkdir(parents=True)
    cfg.dump(out / "config.yaml")
    save_checkpoint(
        out / "checkpoints", 5, {"theta": theta, "alpha": alpha, "iteration": 5, "config": cfg.to_dict_json()}
    )
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {
        "nav": fake_run(root / "nav"),
        "grid": fake_run(root / "grid", env="metarl/GridNavigation-v0", algorithm="maml", activation="tanh"),
    }


def _outputs(spec, params, obs):
    return tuple(t.detach() for t in forward(spec, params, obs))


@pytest.mark.parametrize("family", ["nav", "grid"])
def test_module_matches_metarl_forward_before_and_after_adaptation(runs, family):
    run = load_run(runs[family])
    task = [0.3, -0.2] if family == "nav" else [2, 3]
    adapted = adapted_params(run, task, steps=2, episodes=2, seed=1)
    assert any(not torch.equal(adapted[k], run.theta[k]) for k in adapted), "adaptation moved θ"
    obs = torch.rand(64, run.spec.obs_dim) * 4 - 2
    for params in (run.theta, adapted):
        expected = _outputs(run.spec, params, obs)
        got = policy_module(run.spec, params)(obs)
        assert len(got) == len(expected) == (2 if family == "nav" else 1)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_same_adaptation_as_evaluate_seed(runs):
    """The exported adaptation is a function of (run, task, steps, episodes, seed): metarl evaluate's."""
    run = load_run(runs["nav"])
    a = adapted_params(run, {"goal": [0.3, -0.2]}, 1, 2, seed=3)
    b = adapted_params(run, [0.3, -0.2], 1, 2, seed=3)
    c = adapted_params(run, [0.3, -0.2], 1, 2, seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a) and any(not torch.equal(a[k], c[k]) for k in a)


LOAD_WITHOUT_METARL = """
import sys
sys.modules["metarl"] = None  # importing metarl (and metarl.envs) now fails
import numpy as np, torch
path, obs_file = sys.argv[1], sys.argv[2]
policy = torch.export.load(path).module() if path.endswith(".pt2") else torch.jit.load(path)
out = policy(torch.from_numpy(np.load(obs_file)))
np.save(obs_file + ".out.npy", out[0].detach().numpy())
"""


@pytest.mark.parametrize("suffix", [".pt2", ".pt"])
def test_cli_export_loads_without_metarl_and_gives_the_same_actions(runs, tmp_path, suffix, capsys):
    out = tmp_path / f"policy{suffix}"
    assert (
        main(
            [
                "export",
                str(runs["nav"]),
                "--goal",
                "0.3,-0.2",
                "--steps",
                "1",
                "--episodes",
                "2",
                "--seed",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "after 1 inner step" in capsys.readouterr().err
    obs = np.random.default_rng(0).uniform(-0.5, 0.5, size=(5, 2)).astype(np.float32)
    np.save(tmp_path / "obs.npy", obs)
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_METARL, str(out), str(tmp_path / "obs.npy")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = load_run(runs["nav"])
    params = adapted_params(run, [0.3, -0.2], 1, 2, seed=2)
    expected = mode(run.spec, forward(run.spec, params, torch.from_numpy(obs))).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "obs.npy.out.npy"), expected, rtol=1e-5, atol=1e-6)


def test_cli_export_rejects_bad_input_in_one_line(runs, tmp_path, capsys):
    for argv, fragment in [
        (["export", str(runs["nav"]), "--out", str(tmp_path / "p.onnx")], "use .pt2"),
        (["export", str(runs["nav"]), "--steps", "2", "--out", str(tmp_path / "p.pt2")], "needs the task"),
        (["export", str(runs["grid"]), "--goal", "2.5,3", "--out", str(tmp_path / "p.pt2")], "2 integers"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
    assert not list(tmp_path.iterdir()), "nothing written for bad input"


def test_compute_single_action_is_the_deterministic_mode(runs):
    run = load_run(runs["grid"])
    algo = MetaAlgorithm.__new__(MetaAlgorithm)  # no Ray: the API's weights come from the checkpoint
    algo._trainer = SimpleNamespace(spec=run.spec)
    algo.get_weights = lambda: {"theta": {k: v.numpy() for k, v in run.theta.items()}}
    obs = np.array([1.0, 3.0], dtype=np.float32)
    logits = forward(run.spec, run.theta, torch.from_numpy(obs)[None])[0][0]
    action = algo.compute_single_action(obs)
    assert action == int(logits.argmax()) == deterministic_action(run.spec, run.theta, obs)
    sampled = [algo.compute_single_action(obs, explore=True, rng=np.random.default_rng(s)) for s in range(40)]
    assert len(set(sampled)) > 1 and sampled == [
        algo.compute_single_action(obs, explore=True, rng=np.random.default_rng(s)) for s in range(40)
    ]


def test_modules_hold_plain_nn_linear_weights_out_by_in(runs, tmp_path):
    run = load_run(runs["nav"])
    module = policy_module(run.spec, run.theta)
    assert module.net[0].weight.shape == (8, 2)
    torch.testing.assert_close(module.net[0].weight, run.theta["layer0.weight"].T)
    assert save_policy(module, run.spec, tmp_path / "p.pt2").stat().st_size > 0
