"""The typed config: sections that are the optimizers' arguments, defaults in one place, one spelling per key
(nested; the old flat keys read with one note), options that do not apply refused in one line, a saved form
that round-trips, old runs that resume."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import metarl.config as config_module
from metarl import cli
from metarl.config import (
    OLD_FLAT_KEYS,
    SECTIONS,
    AdamConfig,
    Config,
    ConfigError,
    PolicyConfig,
    ReptileConfig,
    TRPOConfig,
    apply_overrides,
    config_keys,
    describe_keys,
    dotted_items,
    key_defaults,
    yaml_load,
)
from metarl.core.alpha import Alpha
from metarl.core.meta_update import TRPO, Adam, Reptile
from metarl.core.policies import PolicySpec
from metarl.runtime import checkpoint as ckpt
from metarl.runtime import rundir

REPO = Path(__file__).resolve().parents[1]
NAV_MAML = REPO / "configs/navigation2d-maml.yaml"
FLAT_PRESETS = REPO / "tests/data/flat-presets"  # configs/*.yaml and examples/*.yaml as of ce5bb88, all flat
SMALL = {"meta_batch_size": 2, "episodes_per_task": 2, "policy": {"hidden_sizes": [8]}, "iterations": 3}
NOTE = "flat config keys are the old spelling, read as: "


@pytest.fixture
def note(monkeypatch, caplog):
    """The old-spelling notes logged while the test runs (the once-per-process flag reset first)."""
    monkeypatch.setattr(config_module, "_noted_old_spelling", False)
    caplog.set_level(logging.WARNING, logger="metarl.config")
    return lambda: [r.getMessage() for r in caplog.records if r.getMessage().startswith(NOTE)]


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
        Config.from_dict(
            {**SMALL, "trpo": {"max_kl": 0.03, "alpha_update": "natural", "alpha_max_kl": 0.002}}, check_env=False
        ),
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
        Config.from_dict({**SMALL, "algorithm": "reptile", "reptile": {"step_size": 0.3}}, check_env=False), spec
    )
    assert (reptile.optimizer.step_size, reptile.optimizer.anneal_over) == (0.3, 3)


def test_every_key_is_documented_in_its_one_spelling():
    rows = {row["key"]: row for row in describe_keys()}
    assert list(rows) == list(config_keys()) == list(dotted_items(Config().to_dict()))
    assert rows["trpo.max_kl"]["old_key"] == "max_kl" and rows["adam.lr"]["old_key"] == "meta_lr"
    assert rows["reptile.step_size"]["old_key"] == "reptile_step_size" and rows["seed"]["old_key"] is None
    assert rows["trpo.ls_ratio"]["allowed"] == "0 < x < 1" and rows["horizon"]["type"] == "int | None"
    assert all(row["help"] for row in rows.values())


# -- one spelling: nested, the canonical form -----------------------------------------------------------
def test_to_dict_is_nested_and_every_key_is_read_as_an_attribute_of_its_section():
    saved = Config().to_dict()
    assert list(saved) == list(Config.model_fields)  # run-wide keys and sections, nothing flat
    assert not set(saved) & set(OLD_FLAT_KEYS)
    assert all(isinstance(saved[name], dict) for name in SECTIONS)
    cfg = Config.from_dict({"trpo": {"max_kl": 0.02}, "resources": {"num_workers": 2}}, check_env=False)
    assert (cfg.trpo.max_kl, cfg.resources.num_workers) == (0.02, 2)


@pytest.mark.parametrize("old", sorted(OLD_FLAT_KEYS))
def test_a_flat_attribute_is_no_spelling_of_a_key(old):
    cfg = Config()
    with pytest.raises(AttributeError):
        getattr(cfg, old)
    with pytest.raises((AttributeError, ValueError)):  # pydantic refuses a field it does not have
        setattr(cfg, old, key_defaults()[OLD_FLAT_KEYS[old]])


def test_the_old_flat_names_are_exactly_the_section_keys_of_their_time():
    """Every section key existed flat before the sections (ce5bb88); keys added since get no flat name."""
    section_keys = [k for k, (sec, _) in config_keys().items() if sec is not None]
    assert sorted(OLD_FLAT_KEYS.values()) == sorted(section_keys)
    assert not set(OLD_FLAT_KEYS) & set(Config.model_fields)


# -- the old flat spelling: read as its section's key, with one note --------------------------------------
def test_flat_nested_and_mixed_input_load_the_same_config(note):
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
    assert Config.from_dict(nested, check_env=False) and note() == []  # the one spelling: no note
    configs = [Config.from_dict(raw, check_env=False) for raw in (flat, nested, mixed)]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].trpo.max_kl == 0.02 and configs[0].resources.num_workers == 2
    assert (
        note()
        == [  # one note for the process, naming the flat keys of the first input that had any
            NOTE + "max_kl -> trpo.max_kl, alpha_update -> trpo.alpha_update, alpha_lr -> trpo.alpha_lr, "
            "alpha_granularity -> alpha.granularity, gamma -> advantages.gamma, hidden_sizes -> policy.hidden_sizes, "
            "num_workers -> resources.num_workers (write the nested form)"
        ]
    )


def test_an_old_flat_file_is_read_with_one_note_per_process(note):
    first = Config.load(FLAT_PRESETS / "navigation2d-maml.yaml")
    second = Config.load(FLAT_PRESETS / "navigation2d-metasgd.yaml", ["max_kl=0.02", "num_workers=1"])
    assert first == Config.load(NAV_MAML) and second.trpo.max_kl == 0.02
    [message] = note()
    assert "max_kl -> trpo.max_kl" in message  # a whole flat file: six mappings named, the rest counted
    flat = [k for k in yaml.safe_load((FLAT_PRESETS / "navigation2d-maml.yaml").read_text()) if k in OLD_FLAT_KEYS]
    assert message.count(" -> ") == 6 and f" and {len(flat) - 6} more, as `metarl config FILE` prints them" in message
    assert "alpha_update" not in message  # the second file's: the note was said once, for the first


def test_old_flat_set_overrides_are_read_as_their_sections_keys(note):
    """Resume commands printed by earlier runs say ``--set num_workers=2 max_kl=0.02``."""
    cfg = Config.load(NAV_MAML, ["num_workers=2", "max_kl=0.02", "trpo.cg_iters=5"])
    assert (cfg.resources.num_workers, cfg.trpo.max_kl, cfg.trpo.cg_iters) == (2, 0.02, 5)
    assert note() == [NOTE + "num_workers -> resources.num_workers, max_kl -> trpo.max_kl (write the nested form)"]


def test_the_command_line_says_the_note_once_for_a_flat_file_and_flat_overrides(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "metarl.cli", "config", str(FLAT_PRESETS / "navigation2d-maml.yaml")]
        + ["--set", "max_kl=0.02", "num_workers=2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("metarl: WARNING: " + NOTE) and line.endswith("(write the nested form)")
    assert "max_kl -> trpo.max_kl" in line and " more, as `metarl config FILE` prints them" in line
    printed = json.loads(proc.stdout)
    assert printed["trpo"]["max_kl"] == 0.02 and printed["resources"]["num_workers"] == 2
    assert printed == Config.load(NAV_MAML, ["trpo.max_kl=0.02", "resources.num_workers=2"]).to_dict()


def test_a_key_given_flat_and_nested_with_different_values_is_refused(note):
    with pytest.raises(
        ConfigError, match=r"^trpo\.max_kl: given twice, as max_kl \(0.02\) and as trpo.max_kl \(0.03\); keep one$"
    ):
        Config.from_dict({"max_kl": 0.02, "trpo": {"max_kl": 0.03}}, check_env=False)
    assert note() == [], "a refused config says one line, no note"
    assert Config.from_dict({"max_kl": 0.02, "trpo": {"max_kl": 0.02}}, check_env=False).trpo.max_kl == 0.02


def test_both_spellings_with_different_values_exit_2_with_one_line(tmp_path, capsys):
    path, out = tmp_path / "both.yaml", tmp_path / "run"
    path.write_text("num_workers: 1\nresources:\n  num_workers: 2\n")
    assert cli.main(["train", str(path), "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "metarl: error: resources.num_workers: given twice, as num_workers (1) and as resources.num_workers (2); "
        "keep one"
    ]
    assert not out.exists()


def test_unknown_keys_get_a_did_you_mean_in_the_one_spelling():
    with pytest.raises(ConfigError, match="unknown key 'maxkl'; did you mean 'trpo.max_kl'"):
        Config.from_dict({"maxkl": 0.1}, check_env=False)
    with pytest.raises(ConfigError, match="unknown key 'trpo.maxkl'; did you mean 'trpo.max_kl'"):
        Config.from_dict({"trpo": {"maxkl": 0.1}}, check_env=False)
    with pytest.raises(ConfigError, match=r"^trpo: expected a mapping of trpo's keys \(max_kl, "):
        Config.from_dict({"trpo": 0.1}, check_env=False)
    with pytest.raises(ConfigError, match="unknown key 'inner_rl'; did you mean 'inner_lr'"):
        Config.from_dict({"inner_rl": 0.1}, check_env=False)


def test_set_reaches_sections_and_replaces_the_other_spelling(tmp_path):
    assert apply_overrides({"max_kl": 0.01}, ["trpo.max_kl=0.02"]) == {"trpo": {"max_kl": 0.02}}
    assert apply_overrides({"trpo": {"max_kl": 0.01, "cg_iters": 3}}, ["max_kl=0.02"]) == {
        "trpo": {"cg_iters": 3},
        "max_kl": 0.02,
    }
    cfg = Config.load(NAV_MAML, ["trpo.max_kl=0.02", "env_kwargs.action_mode=clip", "adam.lr=0.001"])
    assert cfg.trpo.max_kl == 0.02 and cfg.env_kwargs == {"action_mode": "clip"} and cfg.adam.lr == 0.001
    with pytest.raises(ConfigError, match="trpo.max_kl is float, not a mapping"):
        apply_overrides({}, ["trpo.max_kl.x=1"])
    with pytest.raises(ConfigError, match=r"max_kl \(trpo.max_kl\) is float, not a mapping"):
        apply_overrides({}, ["max_kl.x=1"])


def test_errors_name_the_key_in_its_one_spelling():
    with pytest.raises(ConfigError, match=r"^trpo\.max_kl: must be > 0.0, got -1 "):
        Config.from_dict({"trpo": {"max_kl": -1}}, check_env=False)
    with pytest.raises(ConfigError, match=r"^trpo\.max_kl: must be > 0.0, got -1 "):  # written flat: named nested
        Config.from_dict({"max_kl": -1}, check_env=False)
    with pytest.raises(ConfigError, match=r"^adam.lr: must be > 0.0, got 0 "):
        Config.from_dict({"meta_optimizer": "adam", "adam": {"lr": 0}}, check_env=False)
    with pytest.raises(ConfigError, match=r"^resources\.num_workers: expected int, got 1.5 "):
        Config.from_dict({"resources": {"num_workers": 1.5}}, check_env=False)
    with pytest.raises(ConfigError, match=r"^resources\.num_workers: 5 rollout actors for meta_batch_size 4 "):
        Config.from_dict({"meta_batch_size": 4, "resources": {"num_workers": 5}}, check_env=False)
    with pytest.raises(ConfigError, match=r"^policy\.hidden_sizes: must be a non-empty list"):
        Config.from_dict({"policy": {"hidden_sizes": []}}, check_env=False)


# -- options that do not apply -----------------------------------------------------------------------------
INAPPLICABLE = [
    (
        {"algorithm": "maml", "trpo": {"alpha_update": "natural"}},
        "trpo.alpha_update applies only to algorithm metasgd (this config: maml)",
    ),
    (
        {"algorithm": "maml", "alpha": {"granularity": "scalar"}},
        "alpha.granularity applies only to algorithm metasgd",
    ),
    (
        {"algorithm": "maml", "alpha": {"parametrization": "log"}},
        "alpha.parametrization applies only to algorithm metasgd",
    ),
    ({"algorithm": "reptile", "meta_optimizer": "adam"}, "meta_optimizer does not apply to algorithm reptile"),
    (
        {"algorithm": "reptile", "trpo": {"max_kl": 0.02}},
        "trpo.max_kl does not apply to algorithm reptile (its outer step is reptile.step_size)",
    ),
    ({"algorithm": "reptile", "meta_gradient": "lvc"}, "meta_gradient does not apply to algorithm reptile"),
    (
        {"algorithm": "maml", "reptile": {"step_size": 0.3}},
        "reptile.step_size applies only to algorithm reptile (this config: maml)",
    ),
    ({"adam": {"lr": 0.01}}, "adam.lr applies only to meta_optimizer adam (this config: trpo)"),
    (
        {"meta_optimizer": "adam", "trpo": {"cg_iters": 5}},
        "trpo.cg_iters applies only to meta_optimizer trpo (this config: adam)",
    ),
    ({"trpo": {"alpha_lr": 0.05}}, "trpo.alpha_lr applies only to trpo.alpha_update adam (this config: joint)"),
    (
        {"trpo": {"alpha_update": "adam", "alpha_max_kl": 0.05}},
        "trpo.alpha_max_kl applies only to trpo.alpha_update natural (this config: adam)",
    ),
    ({"algorithm": "maml", "alpha_update": "natural"}, "trpo.alpha_update applies only to algorithm metasgd"),  # flat
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
    full = Config().to_dict()  # every section with every key
    for change in ({"algorithm": "maml"}, {"algorithm": "reptile"}, {"meta_optimizer": "adam"}):
        cfg = Config.from_dict({**full, **change}, check_env=False)
        assert cfg.to_dict() == {**full, **change}
    Config.load(NAV_MAML, ["algorithm=reptile"])
    Config.load(NAV_MAML, ["meta_optimizer=adam"])


def test_an_option_that_does_not_apply_exits_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", str(NAV_MAML), "--set", "trpo.alpha_update=natural", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [
        "metarl: error: trpo.alpha_update applies only to algorithm metasgd (this config: maml); "
        "remove it or set it to its default 'joint'"
    ]
    assert not out.exists()


# -- the saved form ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_the_saved_form_round_trips(tmp_path, preset):
    cfg = Config.load(REPO / "configs" / preset, ["trpo.max_kl=0.02"] if "reptile" not in preset else [])
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict(json.loads(cfg.to_dict_json())) == cfg
    cfg.dump(tmp_path / "config.yaml")
    assert Config.load(tmp_path / "config.yaml") == cfg
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written == cfg.to_dict() and list(written) == list(Config.model_fields)  # nested, every key


PRESETS = sorted([*(REPO / "configs").glob("*.yaml"), REPO / "examples/my_task_family.yaml"])


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_each_preset_is_nested_and_says_what_its_flat_predecessor_said(preset):
    """The presets were rewritten in the nested form, each comment beside its key; the values are those of
    the flat files they replaced (tests/data/flat-presets, copied from ce5bb88). Presets added since
    have no flat predecessor: they are checked to be nested and valid."""
    new = yaml_load(preset.read_text())
    assert not set(new) & set(OLD_FLAT_KEYS), f"{preset.name} spells a key flat"
    if not (FLAT_PRESETS / preset.name).exists():
        Config.from_dict(new, check_env=False)
        return
    old = yaml_load((FLAT_PRESETS / preset.name).read_text())
    assert set(old) & set(OLD_FLAT_KEYS), "the test data is the flat form"
    assert Config.from_dict(new, check_env=False).to_dict() == Config.from_dict(old, check_env=False).to_dict()

    def comments(path: Path) -> list[str]:  # a flat name in a comment's prose may have become its nested one
        texts = [line.split("#", 1)[1].strip() for line in path.read_text().splitlines() if "#" in line]
        return sorted(
            re.sub(rf"(?<![\w.])({'|'.join(OLD_FLAT_KEYS)})\b", lambda m: OLD_FLAT_KEYS[m[1]], t) for t in texts
        )

    assert comments(preset) == comments(FLAT_PRESETS / preset.name), "a comment was lost or changed"


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
    assert rundir.resume_changes(out, Config.from_dict(cfg.to_dict())) == {}  # the same config, written nested
    longer = apply_overrides(cfg.to_dict(), ["iterations=9", "resources.num_workers=2"])
    assert rundir.resume_changes(out, Config.from_dict(longer)) == {
        "iterations": (3, 9),
        "resources.num_workers": (1, 2),
    }
    with pytest.raises(rundir.RunDirError, match=r"in trpo\.max_kl 0.01 -> 0.02"):
        rundir.resume_changes(out, Config.from_dict(apply_overrides(cfg.to_dict(), ["trpo.max_kl=0.02"])))
    path = ckpt.resolve_checkpoint(out)
    loaded = ckpt.run_config(path, ckpt.load_checkpoint(path))  # what evaluate/export/render use
    assert loaded == cfg and loaded.trpo.alpha_lr == key_defaults()["trpo.alpha_lr"]


def test_the_legacy_dict_is_refused_as_new_input_but_named_precisely():
    with pytest.raises(ConfigError, match="^trpo.alpha_lr applies only to algorithm metasgd"):
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
