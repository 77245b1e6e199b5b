"""Ray Tune: MetaRLTrainable sweeps on a local Ray, checkpoints, restore after a crashed trial."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from ray import tune

from metarl.api import MetaSGDConfig
from metarl.config import Config, ConfigError
from metarl.runtime.checkpoint import load_checkpoint, resolve_checkpoint
from metarl.runtime.metrics import read_metrics
from metarl.tune import MetaRLTrainable, parse_grid, split_values, trial_layout

TINY = dict(
    meta_batch_size=4,
    episodes_per_task=4,
    hidden_sizes=[8],
    learner_threads=1,
    device="cpu",
    worker_cpus=0.5,
    learner_cpus=0.5,
)


class CrashOnce(MetaRLTrainable):
    """Test-only trainable: the first trial to reach its 2nd step crashes, once per marker file."""

    @classmethod
    def metarl_config(cls, config):
        config = {k: v for k, v in config.items() if k != "_crash_once_marker"}
        return super().metarl_config(config)

    def setup(self, config):
        self.marker = Path(config["_crash_once_marker"])
        super().setup(config)

    def step(self):
        if self.iteration == 1:
            try:  # atomic: with two trials running, exactly one crashes
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                raise RuntimeError("injected crash")
        return super().step()

    def load_checkpoint(self, checkpoint):
        super().load_checkpoint(checkpoint)
        with open(self.marker.with_suffix(".restored"), "a") as f:
            f.write(f"{self.trainer.iteration}\n")


# -- no Ray ------------------------------------------------------------------------------------------------
def test_grid_parsing():
    assert split_values("[32,32],[64],{a: 1, b: 2}") == ["[32,32]", "[64]", "{a: 1, b: 2}"]
    grid = parse_grid(["inner_lr=0.05,0.1", "hidden_sizes=[32,32],[64]", "meta_optimizer=trpo,adam"])
    assert grid == {"inner_lr": [0.05, 0.1], "hidden_sizes": [[32, 32], [64]], "meta_optimizer": ["trpo", "adam"]}
    for bad in (["inner_lr"], ["inner_lr="], ["inner_lr=0.1", "inner_lr=0.2"], ["inner_lr=0.1,"]):
        with pytest.raises(ConfigError):
            parse_grid(bad)


def test_trial_reserves_bundles_for_learner_and_workers():
    cfg = Config.from_dict({**TINY, "num_workers": 2})
    bundles, learner, workers = trial_layout(cfg)
    assert bundles == [{"CPU": 0.0}, {"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.5}]
    assert (learner, workers) == (0, [1, 2])  # indices in the group Tune creates (empty head bundle dropped)
    pgf = MetaRLTrainable.default_resource_request({**TINY, "num_workers": 2})
    assert pgf.required_resources == {"CPU": 1.5} and pgf.head_bundle_is_empty
    with pytest.raises(ConfigError, match="unknown key"):
        MetaRLTrainable.default_resource_request({**TINY, "inner_rl": 0.1})


# -- on a local Ray -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tune_ray(local_ray):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # trial actors cannot import this test module
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_two_trial_sweep_checkpoints_and_restores_a_crashed_trial(tune_ray, tmp_path):
    """2 trials x 2 iterations side by side on 2 CPUs (each reserves 0.5 + 0.5); the first trial to
    reach iteration 2 crashes once and is restored from its iteration-1 checkpoint."""
    marker = tmp_path / "crashed"
    space = (
        MetaSGDConfig().update_from_dict(TINY).training(iterations=2, inner_lr=tune.grid_search([0.05, 0.1])).to_dict()
    )
    tuner = tune.Tuner(
        CrashOnce,
        param_space={**space, "_crash_once_marker": str(marker)},
        run_config=tune.RunConfig(
            name="sweep",
            storage_path=str(tmp_path / "results"),
            verbose=0,
            stop={"training_iteration": 2},
            failure_config=tune.FailureConfig(max_failures=1),
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1),
            sync_config=tune.SyncConfig(sync_artifacts=True),
        ),
    )
    results = tuner.fit()

    assert len(results) == 2 and results.num_errors == 0
    assert sorted(r.config["inner_lr"] for r in results) == [0.05, 0.1]
    assert marker.exists() and marker.with_suffix(".restored").read_text() == "1\n", "one crash, restored at 1"
    crashed = [r for r in results if (Path(r.path) / "error.txt").exists()]
    assert len(crashed) == 1 and "injected crash" in (Path(crashed[0].path) / "error.txt").read_text()
    for r in results:
        assert r.metrics["training_iteration"] == 2 and r.metrics["iteration"] == 2
        assert r.checkpoint is not None
        state = load_checkpoint(resolve_checkpoint(r.checkpoint.path))  # a plain metarl checkpoint
        assert (
            state["iteration"] == 2
            and Config.from_dict(__import__("json").loads(state["config"])).inner_lr == r.config["inner_lr"]
        )
        history = r.metrics_dataframe
        assert list(history["training_iteration"])[-1] == 2 and history["return_post"].notna().all()
        # the trial's run directory, synced beside Tune's files: one row per iteration, even after the crash
        run = Path(r.path)
        assert [m["iteration"] for m in read_metrics(run / "metrics.jsonl")] == [1, 2]
        assert (run / "config.yaml").exists() and list((run / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_sweep_cli(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("\n".join(f"{k}: {v}" for k, v in TINY.items()) + "\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "metarl.cli",
            "sweep",
            str(config),
            "--grid",
            "inner_lr=0.05,0.1",
            "--iterations",
            "1",
            "--out",
            str(tmp_path / "exp"),
            "--quiet",
            "--json",
            "--address",
            "local",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(r["inner_lr"] for r in rows) == [0.05, 0.1]
    assert all(r["iteration"] == 1 and r["checkpoint"] and r["error"] is None for r in rows)


def test_tuner_by_name_runs_two_trials_with_metarl_checkpoints(tune_ray, tmp_path):
    """``import metarl`` registered "metarl/MetaSGD" and "metarl/MAML" (metarl.tune_names): Tune resolves
    them like RLlib's "PPO", here even on a Ray started after the registration."""
    from ray.tune.registry import get_trainable_cls

    from metarl.api import MAMLConfig
    from metarl.tune import MAMLTrainable, MetaSGDTrainable

    assert get_trainable_cls("metarl/MetaSGD") is MetaSGDTrainable and get_trainable_cls("metarl/MAML") is MAMLTrainable
    space = MAMLConfig().update_from_dict(TINY).training(iterations=1, inner_lr=tune.grid_search([0.05, 0.1])).to_dict()
    space.pop("algorithm")  # the name fixes it
    results = tune.Tuner(
        "metarl/MAML",
        param_space=space,
        run_config=tune.RunConfig(
            name="by-name",
            storage_path=str(tmp_path / "results"),
            verbose=0,
            stop={"training_iteration": 1},
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
            sync_config=tune.SyncConfig(sync_artifacts=True),
        ),
    ).fit()
    assert len(results) == 2 and results.num_errors == 0
    for r in results:
        state = load_checkpoint(resolve_checkpoint(r.checkpoint.path))  # a plain metarl checkpoint
        assert state["iteration"] == 1 and __import__("json").loads(state["config"])["algorithm"] == "maml"
        assert list((Path(r.path) / "checkpoints").glob("checkpoint-*.pt")), "the trial's run directory has its own"


def test_named_trainable_refuses_the_other_algorithm():
    from metarl.tune import MetaSGDTrainable

    with pytest.raises(ConfigError, match="algorithm: 'maml'.*MetaSGDTrainable"):
        MetaSGDTrainable.metarl_config({"algorithm": "maml"})
    assert MetaSGDTrainable.metarl_config({}).algorithm == "metasgd"
