"""Python API (RLlib idiom): config builders, MetaAlgorithm train/save/restore on a local Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_tensorboard import read_csv, read_scalars  # tests/ is on sys.path (pytest's rootdir-less import)

from metarl.api import MAMLConfig, MetaAlgorithm, MetaSGDConfig
from metarl.config import Config, ConfigError
from metarl.runtime.checkpoint import load_checkpoint
from metarl.runtime.metrics import read_metrics


def tiny(config):
    """Sized for a 2-CPU machine shared with others: learner and worker take half a CPU each."""
    return (
        config.environment("metarl/Navigation2D-v0", env_kwargs={"action_mode": "clip"})
        .env_runners(num_env_runners=1, num_cpus_per_env_runner=0.5)
        .learners(device="cpu", num_cpus=0.5, num_threads=1)
        .training(
            meta_batch_size=4,
            episodes_per_task=4,
            policy={"hidden_sizes": [8]},
            iterations=10,
            inner_lr=0.1,
            meta_optimizer="trpo",
            trpo={"max_kl": 0.01},
        )
        .debugging(seed=3)
    )


# -- builders: no Ray --------------------------------------------------------------------------------
def test_builder_maps_rllib_names_to_config_keys():
    cfg = tiny(MetaSGDConfig()).to_config()
    assert isinstance(cfg, Config)
    assert (cfg.algorithm, cfg.env, cfg.env_kwargs) == ("metasgd", "metarl/Navigation2D-v0", {"action_mode": "clip"})
    res = cfg.resources
    assert (res.num_workers, res.worker_cpus, res.device, res.learner_cpus, res.learner_threads) == (
        1,
        0.5,
        "cpu",
        0.5,
        1,
    )
    assert (cfg.meta_batch_size, cfg.episodes_per_task, cfg.policy.hidden_sizes, cfg.seed) == (4, 4, [8], 3)
    assert MAMLConfig().to_config().algorithm == "maml"
    # the builder holds the config's own form: sections as mappings (a Tune param_space)
    assert tiny(MetaSGDConfig()).to_dict()["resources"] == {
        "num_workers": 1,
        "worker_cpus": 0.5,
        "device": "cpu",
        "learner_cpus": 0.5,
        "learner_threads": 1,
    }
    # unset keys keep Config's defaults; a later setter call overrides only what it names, in a section too
    c = MetaSGDConfig().training(inner_lr=0.2, trpo={"cg_iters": 7}).training(trpo={"max_kl": 0.02})
    trpo = c.to_config().trpo
    assert (c.to_config().inner_lr, trpo.max_kl, trpo.cg_iters, trpo.ls_ratio) == (0.2, 0.02, 7, Config().trpo.ls_ratio)
    # copy() branches a variant without touching the original
    variant = c.copy().training(inner_lr=0.3)
    assert (c.to_config().inner_lr, variant.to_config().inner_lr) == (0.2, 0.3)


def test_builder_reads_old_flat_names_into_their_sections(monkeypatch, caplog):
    import metarl.config

    monkeypatch.setattr(metarl.config, "_noted_old_spelling", False)
    c = MetaSGDConfig().training(max_kl=0.02, hidden_sizes=[8]).training(trpo={"cg_iters": 7})
    assert c.to_dict() == {
        "algorithm": "metasgd",
        "trpo": {"max_kl": 0.02, "cg_iters": 7},
        "policy": {"hidden_sizes": [8]},
    }
    notes = [r.getMessage() for r in caplog.records if "old spelling" in r.getMessage()]
    assert notes == [
        "flat config keys are the old spelling, read as: max_kl -> trpo.max_kl, hidden_sizes -> policy.hidden_sizes "
        "(write the nested form)"
    ]


def test_builder_rejects_bad_keys_and_values_with_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'inner_lr'"):
        MetaSGDConfig().training(inner_rl=0.1)
    with pytest.raises(ConfigError, match="MetaSGDConfig or MAMLConfig"):
        MetaSGDConfig().training(algorithm="maml")
    with pytest.raises(ConfigError, match="meta_batch_size"):
        MetaSGDConfig().training(meta_batch_size=0).to_config()
    with pytest.raises(ConfigError, match="not a registered Gymnasium id"):
        MetaSGDConfig().environment("metarl/Nowhere-v0").to_config()
    with pytest.raises(ConfigError, match="resources.num_workers"):  # cross-field check from Config.validate
        MetaSGDConfig().env_runners(num_env_runners=5).training(meta_batch_size=4).to_config()
    with pytest.raises(ConfigError, match="unknown key 'trpo.maxkl'; did you mean 'trpo.max_kl'"):
        MetaSGDConfig().training(trpo={"maxkl": 0.1})
    with pytest.raises(ConfigError, match="^MetaSGDConfig: unknown key 'maxkl'; did you mean 'trpo.max_kl'"):
        MetaSGDConfig().training(maxkl=0.1)


# -- the algorithm on a local Ray ------------------------------------------------------------------------
def _same(a, b):
    return a.keys() == b.keys() and all(
        a[g].keys() == b[g].keys() and all(np.array_equal(a[g][k], b[g][k]) for k in a[g]) for g in a
    )


def test_train_save_restore_and_continue(local_ray, tmp_path):
    algo = tiny(MetaSGDConfig()).build_algo(out_dir=tmp_path / "run")
    try:
        results = [algo.train(), algo.train()]
        assert [r["iteration"] for r in results] == [1, 2]
        assert all(np.isfinite(r["return_pre"]) and np.isfinite(r["return_post"]) for r in results)
        saved = algo.get_weights()
        path = algo.save_to_path(tmp_path / "saved")
        assert path.endswith("checkpoint-000002.pt")
        # the saved file holds exactly the weights get_weights reports
        state = load_checkpoint(path)
        assert all(np.array_equal(state[g][k].numpy(), saved[g][k]) for g in saved for k in saved[g])
        # Meta-SGD: α is one learned value per parameter and has moved off inner_lr
        assert saved["alpha"]["layer0.weight"].shape == saved["theta"]["layer0.weight"].shape
        assert not np.allclose(saved["alpha"]["layer0.weight"], 0.1)
        continued = algo.train()  # the original keeps going from iteration 2 ...
    finally:
        algo.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        algo.train()

    restored = MetaAlgorithm.from_checkpoint(tmp_path / "saved", out_dir=tmp_path / "restored")
    try:
        assert restored.config == algo.config and restored.iteration == 2
        assert _same(restored.get_weights(), saved), "θ/α differ at the restore point"
        again = restored.train()  # ... and the restored copy does the same iteration 3
        report = restored.evaluate(num_tasks=2, steps=1, episodes=2, local=True)  # metarl.runtime.evaluation's protocol
    finally:
        restored.stop()
    assert again["iteration"] == 3
    # same θ, α, task-sampler RNG and noise seeds: the same iteration, to the last bit
    for key in ("return_pre", "return_post", "env_steps", "outer/kl", "alpha/mean"):
        assert again[key] == continued[key], key

    # both run directories are complete metarl runs (the YAML path's layout)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert [r["iteration"] for r in read_metrics(tmp_path / "restored" / "metrics.jsonl")] == [3]
    assert json.loads(state["config"]) == algo.config.to_dict()
    # the run's TensorBoard event files hold the return curves (and the other metrics), step = iteration
    history = [*results, continued]
    scalars = read_scalars(tmp_path / "run" / "tensorboard")
    for tag in ("return_pre", "return_post"):
        assert [s for s, _ in scalars[tag]] == [1, 2, 3], tag
        np.testing.assert_allclose([v for _, v in scalars[tag]], [m[tag] for m in history], rtol=1e-6)
    for tag in (
        "outer/kl",
        "outer/line_search_steps",
        "alpha/mean",
        "alpha/min",
        "alpha/max",
        "alpha/layer0.weight/mean",
        "env_steps",
        "seconds",
        "time/sample_pre",
        "time/adapt",
        "time/sample_post",
        "time/meta_update",
    ):
        assert [s for s, _ in scalars[tag]] == [1, 2, 3], tag
    assert [s for s, _ in read_scalars(tmp_path / "restored" / "tensorboard")["return_post"]] == [3]
    csv_rows = read_csv(tmp_path / "run" / "metrics.csv")  # and metrics.csv: the same rows
    assert [float(r["return_post"]) for r in csv_rows] == pytest.approx([m["return_post"] for m in history])
    assert set(csv_rows[0]) == set().union(*history)
    # evaluate() checkpointed iteration 3 first, so `metarl evaluate` can reproduce the report
    assert report["iteration"] == 3 and report["checkpoint"].endswith("restored/checkpoints/checkpoint-000003.pt")
    assert len(report["returns_by_step"]) == 2 and all(np.isfinite(report["returns_by_step"]))


@pytest.mark.slow
def test_maml_weights_keep_fixed_scalar_alpha(local_ray, tmp_path):
    with tiny(MAMLConfig()).training(meta_optimizer="adam", adam={"lr": 0.01}).build_algo(out_dir=tmp_path) as algo:
        algo.train()
        weights = algo.get_weights()
        path = algo.save_to_path()
    assert all(a.shape == () and a == np.float32(0.1) for a in weights["alpha"].values())
    assert path.startswith(str(tmp_path / "checkpoints"))
