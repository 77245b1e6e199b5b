"""The typed config: sections that are the optimizers' arguments, defaults in one place, flat and nested
input alike, options that do not apply refused in one line, a saved form that round-trips, old runs that resume."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import yaml

from metarl import cli
from metarl.config import (
    SECTIONS,
    AdamConfig,
    Config,
    ConfigError,
    PolicyConfig,
    ReptileConfig,
    TRPOConfig,
    apply_overrides,
    describe_keys,
    flat_defaults,
    flat_keys,
)
from metarl.core.alpha import Alpha
from metarl.core.meta_update import TRPO, Adam, Reptile
from metarl.core.policies import PolicySpec
from metarl.runtime import checkpoint as ckpt
from metarl.runtime import rundir

REPO = Path(__file__).resolve().parents[1]
NAV_MAML = REPO / "configs/navigation2d-maml.yaml"
SMALL = {"meta_batch_size": 2, "episodes_per_task": 2, "hidden_sizes": [8], "iterations": 3}


def _init_fields(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.init}


# -- sections map onto the objects that consume them; defaults live in the config only ----------------
def test_trpo_section_is_exactly_trpos_constructor_with_the_same_defaults():
    assert list(TRPOConfig.model_fields) == list(_init_fields(TRPO))
    assert TRPOConfig().model_dump() == _init_fields(TRPO)
    cfg = Config.from_dict({"trpo": {"max_kl": 0.02, "cg_iters": 7}}, check_env=False)
    trpo = TRPO(**cfg.trpo.model_dump())
    assert (trpo.max_kl, trpo.cg_iters, trpo.ls_ratio) == (0.02, 7, TRPOConfig().ls_ratio)


def test_adam_reptile_policy_and_alpha_defaults_come_from_their_sections():
    assert AdamConfig().model_dump() == _init_fields(Adam)
    assert _init_fields(Reptile)["step_size"] == ReptileConfig().step_size
    spec = PolicySpec(2, 2)
    policy = PolicyConfig()
    assert (list(spec.hidden_sizes), spec.activation, spec.init_std) == (
        policy.hidden_sizes,
        policy.activation,
        policy.init_std,
    )
    create = inspect.signature(Alpha.create).parameters
    assert {k: create[k].default for k in ("granularity", "parametrization")} == Config().alpha.model_dump()


def test_the_learner_builds_its_optimizer_from_the_section():
    from metarl.runtime.learner import Learner

    spec = PolicySpec(2, 2, (8,))
    learner = Learner(
        Config.from_dict({**SMALL, "max_kl": 0.03, "alpha_update": "natural", "alpha_max_kl": 0.002}, check_env=False),
        spec,
    )
    assert isinstance(learner.optimizer, TRPO)
    assert (learner.optimizer.max_kl, learner.optimizer.alpha_update, learner.optimizer.alpha_max_kl) == (
        0.03,
        "natural",
        0.002,
    )
    adam = Learner(Config.from_dict({**SMALL, "meta_optimizer": "adam", "adam": {"lr": 0.02}}, check_env=False), spec)
    assert isinstance(adam.optimizer, Adam) and adam.optimizer.lr == 0.02
    reptile = Learner(
        Config.from_dict({**SMALL, "algorithm": "reptile", "reptile_step_size": 0.3}, check_env=False), spec
    )
    assert (reptile.optimizer.step_size, reptile.optimizer.anneal_over) == (0.3, 3)


def test_every_flat_key_is_documented_with_its_section():
    rows = {row["key"]: row for row in describe_keys()}
    assert list(rows) == list(flat_keys()) == list(Config().to_dict())
    assert rows["max_kl"]["path"] == "trpo.max_kl" and rows["meta_lr"]["path"] == "adam.lr"
    assert rows["reptile_step_size"]["path"] == "reptile.step_size" and rows["seed"]["path"] == "seed"
    assert rows["ls_ratio"]["allowed"] == "0 < x < 1" and rows["horizon"]["type"] == "int | None"
    assert all(row["help"] for row in rows.values())


# -- flat (legacy) and nested input ----------------------------------------------------------------------
def test_flat_nested_and_mixed_input_load_the_same_config():
    flat = {
        "algorithm": "metasgd",
        "max_kl": 0.02,
        "alpha_update": "adam",
        "alpha_lr": 0.03,
        "alpha_granularity": "scalar",
        "gamma": 0.9,
        "hidden_sizes": [16],
        "num_workers": 2,
        "seed": 4,
    }
    nested = {
        "algorithm": "metasgd",
        "trpo": {"max_kl": 0.02, "alpha_update": "adam", "alpha_lr": 0.03},
        "alpha": {"granularity": "scalar"},
        "advantages": {"gamma": 0.9},
        "policy": {"hidden_sizes": [16]},
        "resources": {"num_workers": 2},
        "seed": 4,
    }
    mixed = {
        "algorithm": "metasgd",
        "trpo": {"max_kl": 0.02},
        "alpha_update": "adam",
        "alpha_lr": 0.03,
        "alpha": {"granularity": "scalar"},
        "gamma": 0.9,
        "policy": {"hidden_sizes": [16]},
        "num_workers": 2,
        "seed": 4,
    }
    configs = [Config.from_dict(raw, check_env=False) for raw in (flat, nested, mixed)]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].max_kl == configs[0].trpo.max_kl == 0.02 and configs[0].num_workers == 2


def test_a_key_given_flat_and_nested_with_different_values_is_refused():
    with pytest.raises(
        ConfigError, match=r"^trpo\.max_kl: given twice, as max_kl \(0.02\) and as trpo.max_kl \(0.03\)"
    ):
        Config.from_dict({"max_kl": 0.02, "trpo": {"max_kl": 0.03}}, check_env=False)
    assert Config.from_dict({"max_kl": 0.02, "trpo": {"max_kl": 0.02}}, check_env=False).max_kl == 0.02


def test_unknown_keys_get_a_did_you_mean_flat_or_nested():
    with pytest.raises(ConfigError, match="unknown key 'maxkl'; did you mean 'max_kl'"):
        Config.from_dict({"maxkl": 0.1}, check_env=False)
    with pytest.raises(ConfigError, match="unknown key 'trpo.maxkl'; did you mean 'trpo.max_kl'"):
        Config.from_dict({"trpo": {"maxkl": 0.1}}, check_env=False)
    with pytest.raises(ConfigError, match=r"^trpo: expected a mapping of trpo's keys \(max_kl, "):
        Config.from_dict({"trpo": 0.1}, check_env=False)


def test_set_reaches_sections_and_replaces_the_other_spelling(tmp_path):
    assert apply_overrides({"max_kl": 0.01}, ["trpo.max_kl=0.02"]) == {"trpo": {"max_kl": 0.02}}
    assert apply_overrides({"trpo": {"max_kl": 0.01, "cg_iters": 3}}, ["max_kl=0.02"]) == {
        "trpo": {"cg_iters": 3},
        "max_kl": 0.02,
    }
    cfg = Config.load(NAV_MAML, ["trpo.max_kl=0.02", "env_kwargs.action_mode=clip", "meta_lr=0.001"])
    assert cfg.max_kl == 0.02 and cfg.env_kwargs == {"action_mode": "clip"}
    with pytest.raises(ConfigError, match="trpo.max_kl is float, not a mapping"):
        apply_overrides({}, ["trpo.max_kl.x=1"])


def test_errors_name_the_key_as_written():
    with pytest.raises(ConfigError, match=r"^max_kl: must be > 0.0, got -1 "):
        Config.from_dict({"max_kl": -1}, check_env=False)
    with pytest.raises(ConfigError, match=r"^adam.lr: must be > 0.0, got 0 "):
        Config.from_dict({"meta_optimizer": "adam", "adam": {"lr": 0}}, check_env=False)
    with pytest.raises(ConfigError, match=r"^num_workers: expected int, got 1.5 "):
        Config.from_dict({"num_workers": 1.5}, check_env=False)


# -- options that do not apply -----------------------------------------------------------------------------
INAPPLICABLE = [
    (
        {"algorithm": "maml", "alpha_update": "natural"},
        "alpha_update applies only to algorithm metasgd (this config: maml)",
    ),
    ({"algorithm": "maml", "alpha_granularity": "scalar"}, "alpha_granularity applies only to algorithm metasgd"),
    (
        {"algorithm": "maml", "alpha": {"parametrization": "log"}},
        "alpha_parametrization applies only to algorithm metasgd",
    ),
    ({"algorithm": "reptile", "meta_optimizer": "adam"}, "meta_optimizer does not apply to algorithm reptile"),
    ({"algorithm": "reptile", "max_kl": 0.02}, "max_kl does not apply to algorithm reptile"),
    ({"algorithm": "reptile", "meta_gradient": "lvc"}, "meta_gradient does not apply to algorithm reptile"),
    (
        {"algorithm": "maml", "reptile_step_size": 0.3},
        "reptile_step_size applies only to algorithm reptile (this config: maml)",
    ),
    ({"meta_lr": 0.01}, "meta_lr applies only to meta_optimizer adam (this config: trpo)"),
    ({"meta_optimizer": "adam", "cg_iters": 5}, "cg_iters applies only to meta_optimizer trpo (this config: adam)"),
    ({"alpha_lr": 0.05}, "alpha_lr applies only to alpha_update adam (this config: joint)"),
    (
        {"alpha_update": "adam", "alpha_max_kl": 0.05},
        "alpha_max_kl applies only to alpha_update natural (this config: adam)",
    ),
]


@pytest.mark.parametrize("raw, message", INAPPLICABLE)
def test_options_that_do_not_apply_are_refused_in_one_line(raw, message):
    with pytest.raises(ConfigError) as info:
        Config.from_dict(raw, check_env=False)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text, text
    assert "set it to its default" in text


def test_options_that_do_not_apply_at_their_defaults_are_accepted():
    """Full dumps (every key) and presets that spell out TRPO's settings stay usable with any algorithm."""
    full = Config().to_dict()
    for change in ({"algorithm": "maml"}, {"algorithm": "reptile"}, {"meta_optimizer": "adam"}):
        cfg = Config.from_dict({**full, **change}, check_env=False)
        assert cfg.to_dict() == {**full, **change}
    Config.load(NAV_MAML, ["algorithm=reptile"])
    Config.load(NAV_MAML, ["meta_optimizer=adam"])


def test_an_option_that_does_not_apply_exits_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", str(NAV_MAML), "--set", "alpha_update=natural", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [
        "metarl: error: alpha_update applies only to algorithm metasgd (this config: maml); "
        "remove it or set it to its default 'joint'"
    ]
    assert not out.exists()


# -- the saved form ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_the_saved_form_round_trips(tmp_path, preset):
    cfg = Config.load(REPO / "configs" / preset, ["max_kl=0.02"] if "reptile" not in preset else [])
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict(json.loads(cfg.to_dict_json())) == cfg
    assert Config.from_dict(cfg.to_nested()) == cfg
    cfg.dump(tmp_path / "config.yaml")
    assert Config.load(tmp_path / "config.yaml") == cfg
    assert list(yaml.safe_load((tmp_path / "config.yaml").read_text())) == list(flat_keys())  # flat, every key


# What metarl wrote into checkpoints and config.yaml before the typed config: dataclasses.asdict of the
# flat dataclass, every key, including ones the algorithm ignored (here a MAML run with alpha_lr 0.05).
LEGACY = {
    "algorithm": "maml",
    "alpha_granularity": "per_parameter",
    "alpha_parametrization": "direct",
    "alpha_update": "joint",
    "alpha_max_kl": 0.01,
    "alpha_lr": 0.05,
    "reptile_step_size": 0.5,
    "reptile_anneal": True,
    "env": "metarl/Navigation2D-v0",
    "env_kwargs": {},
    "horizon": None,
    "iterations": 3,
    "meta_batch_size": 2,
    "episodes_per_task": 2,
    "inner_steps": 1,
    "inner_lr": 0.1,
    "first_order": False,
    "meta_gradient": "maml",
    "meta_optimizer": "trpo",
    "meta_lr": 0.001,
    "max_kl": 0.01,
    "cg_iters": 10,
    "cg_damping": 1e-05,
    "ls_ratio": 0.8,
    "ls_max_steps": 15,
    "fisher_subsample": 1.0,
    "gamma": 0.99,
    "gae_lambda": 1.0,
    "normalize_advantages": True,
    "loss_average": "steps",
    "hidden_sizes": [8],
    "activation": "relu",
    "init_std": 1.0,
    "seed": 0,
    "num_workers": 1,
    "worker_cpus": 1.0,
    "learner_cpus": 1.0,
    "learner_threads": 0,
    "device": "auto",
    "dtype": "float32",
    "checkpoint_every": 10,
    "keep_checkpoints": 3,
    "max_consecutive_skips": 5,
}  # bootstrap_truncated did not exist yet


def _legacy_run(tmp_path: Path) -> Path:
    from metarl.core.policies import PolicySpec
    from metarl.runtime.learner import Learner

    cfg = Config.from_dict(LEGACY, drop_inapplicable=True)
    state = Learner(cfg, PolicySpec(2, 2, (8,))).state_dict()
    state.update(iteration=1, env_steps=0, worker_restarts=0, config=json.dumps(LEGACY), rng_state=json.dumps({}))
    out = tmp_path / "old-run"
    ckpt.save_checkpoint(out / "checkpoints", 1, state)
    return out


def test_a_checkpoint_era_flat_config_resumes_and_evaluates(tmp_path):
    out = _legacy_run(tmp_path)
    current = {k: v for k, v in LEGACY.items() if k != "alpha_lr"}  # the run's config, minus the key it ignored
    cfg = Config.from_dict(current)
    assert rundir.resume_changes(out, cfg) == {}
    longer = Config.from_dict({**current, "iterations": 9, "num_workers": 2})
    assert rundir.resume_changes(out, longer) == {"iterations": (3, 9), "num_workers": (1, 2)}
    with pytest.raises(rundir.RunDirError, match=r"in max_kl 0.01 -> 0.02"):
        rundir.resume_changes(out, Config.from_dict({**current, "max_kl": 0.02}))
    path = ckpt.resolve_checkpoint(out)
    loaded = ckpt.run_config(path, ckpt.load_checkpoint(path))  # what evaluate/export/render use
    assert loaded == cfg and loaded.alpha_lr == flat_defaults()["alpha_lr"]


def test_the_legacy_dict_is_refused_as_new_input_but_named_precisely():
    with pytest.raises(ConfigError, match="^alpha_lr applies only to algorithm metasgd"):
        Config.from_dict(LEGACY, check_env=False)


def test_env_construction_is_one_separate_step(monkeypatch):
    import metarl.config as config

    def no_env(*args):
        raise AssertionError("the env was constructed")

    monkeypatch.setattr(config, "_check_env", no_env)
    cfg = Config.from_dict({"env": "metarl/NoSuchEnv-v0"}, check_env=False)  # the model alone: no env
    assert cfg.env == "metarl/NoSuchEnv-v0"
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="env: 'metarl/NoSuchEnv-v0' is not a registered Gymnasium id"):
        cfg.check_env()


def test_sections_are_the_only_nested_keys():
    assert set(SECTIONS) == {"alpha", "trpo", "adam", "reptile", "advantages", "policy", "resources"}
