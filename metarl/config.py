"""Typed training configuration: YAML presets + ``--set`` overrides, validated before Ray starts.

A pydantic model (:class:`Config`) with run-wide keys and one section per object that consumes
its keys: ``trpo`` (exactly :class:`metarl.core.meta_update.TRPO`'s constructor arguments), ``adam``,
``reptile``, ``alpha`` (Meta-SGD's α), ``advantages``, ``policy`` and ``resources``. The
algorithm's defaults live in the core's dataclasses (:mod:`metarl.core.options`, which imports nothing)
and the sections read them there: the config depends on the core, never the reverse.

Each key has one spelling: ``seed: 0`` at the top, ``trpo: {max_kl: 0.02}`` in its section; ``--set
trpo.max_kl=0.02``; read ``cfg.trpo.max_kl``. The presets, ``config.yaml`` and checkpoints are written so.
Files, checkpoints and commands from before the sections spell section keys flat (``max_kl``, ``meta_lr``
for ``adam.lr``: :data:`OLD_FLAT_KEYS`): they are read as their section's key, and the process says so
once (:func:`note_old_spelling`). A key that does not apply to the chosen algorithm or optimizer must
stay at its default. Every error is one line naming the key and what is allowed; constructing the env
is one separate step (:meth:`Config.check_env`).
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import logging
import math
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from metarl.config_checks import _check_env, _check_memory, _check_plain_data, _is_int
from metarl.config_text import (
    MAX_INNER_STEPS,
    MAX_LAYERS,
    MAX_NUMBER,
    MAX_POLICY_PARAMETERS,
    MAX_STEPS_PER_PHASE,
    AliasRefused,
    ConfigError,
    _show,
    _yaml_problem,
    parse_override,
    read_config_bytes,
    yaml_load,
)
from metarl.core.options import AdamOptions, AdvantageOptions, AlphaOptions, PolicyOptions, ReptileOptions, TRPOOptions

# -- the old flat spelling: read, translated, noted once -------------------------------------------------
# Before issue 30 every section key also had a flat name, and presets, ``--set``, ``config.yaml`` and
# checkpoints used it. Those files and commands still exist (archived runs, printed resume commands), so
# input may still use these names; nothing writes them. The table is frozen: new keys get no flat name.
OLD_FLAT_KEYS: dict[str, str] = {
    "alpha_granularity": "alpha.granularity",
    "alpha_parametrization": "alpha.parametrization",
    "max_kl": "trpo.max_kl",
    "cg_iters": "trpo.cg_iters",
    "cg_damping": "trpo.cg_damping",
    "ls_ratio": "trpo.ls_ratio",
    "ls_max_steps": "trpo.ls_max_steps",
    "fisher_subsample": "trpo.fisher_subsample",
    "alpha_update": "trpo.alpha_update",
    "alpha_max_kl": "trpo.alpha_max_kl",
    "alpha_damping": "trpo.alpha_damping",
    "alpha_lr": "trpo.alpha_lr",
    "meta_lr": "adam.lr",
    "reptile_step_size": "reptile.step_size",
    "reptile_anneal": "reptile.anneal",
    "gamma": "advantages.gamma",
    "gae_lambda": "advantages.gae_lambda",
    "normalize_advantages": "advantages.normalize_advantages",
    "loss_average": "advantages.loss_average",
    "bootstrap_truncated": "advantages.bootstrap_truncated",
    "hidden_sizes": "policy.hidden_sizes",
    "activation": "policy.activation",
    "init_std": "policy.init_std",
    "num_workers": "resources.num_workers",
    "worker_cpus": "resources.worker_cpus",
    "learner_cpus": "resources.learner_cpus",
    "learner_threads": "resources.learner_threads",
    "device": "resources.device",
    "dtype": "resources.dtype",
}
_OLD_NAME = {path: old for old, path in OLD_FLAT_KEYS.items()}  # "trpo.max_kl" -> "max_kl"
log = logging.getLogger(__name__)
_noted_old_spelling = False
NOTE_KEYS = 8  # mappings the note names in full; past that it names 6 and counts the rest


def note_old_spelling(old_keys: Sequence[str]) -> None:
    """Say once per process that flat keys were read, and as what (the first input that had any)."""
    global _noted_old_spelling
    if not old_keys or _noted_old_spelling:
        return
    _noted_old_spelling = True
    keys = list(dict.fromkeys(old_keys))
    named = keys if len(keys) <= NOTE_KEYS else keys[:6]  # a whole old config (a checkpoint's): a readable line
    read_as = ", ".join(f"{key} -> {OLD_FLAT_KEYS[key]}" for key in named)
    if len(named) < len(keys):
        read_as += f" and {len(keys) - len(named)} more, as `metarl config FILE` prints them"
    log.warning("flat config keys are the old spelling, read as: %s (write the nested form)", read_as)


def canonical_key(key: str) -> str:
    """A dotted key in its one spelling: an old flat head becomes its section's path (``max_kl.x`` ->
    ``trpo.max_kl.x``); anything else is returned as it is."""
    head, dot, rest = key.partition(".")
    return OLD_FLAT_KEYS[head] + dot + rest if head in OLD_FLAT_KEYS else key


# -- overrides on raw config dicts (nested, or old flat files): they need the model's sections ----------
def set_dotted(raw: dict, key: str, value: Any) -> None:
    """``raw[a][b] = value`` for ``key = "a.b"``: Hydra/OmegaConf-style dotted keys into mappings.

    The first part must be a config key holding a mapping (``env_kwargs``) or a section
    (``trpo.max_kl``); missing inner mappings are created. A key without dots is set as is
    (``from_dict`` checks it, and reads an old flat key such as ``max_kl`` as its section's, with
    the note). The value replaces the same key written in its other spelling in ``raw`` (an old
    flat file's ``max_kl: 0.01`` under ``--set trpo.max_kl=0.02``, and the reverse).
    """
    head, *rest = key.split(".")
    run_wide = [k for k in Config.model_fields if k not in SECTIONS]
    if head in OLD_FLAT_KEYS:  # kept flat here: from_dict reads it, and says so in the one note
        sec, name = OLD_FLAT_KEYS[head].split(".")
        if rest:
            default = _key_defaults()[OLD_FLAT_KEYS[head]]
            raise ConfigError(
                f"{_show(key)}: {head} ({OLD_FLAT_KEYS[head]}) is {type(raw.get(head, default)).__name__}, "
                f"not a mapping; dotted keys reach into mappings such as env_kwargs and the sections "
                f"({', '.join(SECTIONS)})"
            )
        if isinstance(raw.get(sec), dict) and name in raw[sec]:  # drop the nested spelling of this flat key
            raw[sec] = {k: v for k, v in raw[sec].items() if k != name}
        raw[key] = value
        return
    if head not in run_wide and head not in SECTIONS:
        if not rest:
            raw[key] = value
            return
        close = difflib.get_close_matches(head[:100], [*run_wide, *SECTIONS], n=1)
        hint = f"; did you mean {close[0] + '.' + '.'.join(rest)!r}?" if close else ""
        raise ConfigError(f"unknown key {_show(key)}: {_show(head)} is not a config key{hint}")
    if head in SECTIONS:  # drop the old flat spelling of the fields set here
        for name in rest[:1] if rest else (list(value) if isinstance(value, dict) else []):
            raw.pop(_OLD_NAME.get(f"{head}.{name}", ""), None)
    if not rest:
        raw[key] = value
        return
    parent, name, node = raw, head, raw.get(head, {} if head in SECTIONS else _key_defaults()[head])
    for depth, part in enumerate(rest):
        if not isinstance(node, dict):
            where = ".".join([head, *rest[:depth]])
            raise ConfigError(
                f"{_show(key)}: {where} is {type(node).__name__}, not a mapping; dotted keys reach "
                f"into mappings such as env_kwargs and the sections ({', '.join(SECTIONS)})"
            )
        if not part:
            raise ConfigError(f"{_show(key)}: empty part in a dotted key")
        node = parent[name] = dict(node)  # copy along the path: the caller's mappings stay as they were
        default: Any = {}
        if depth == 0 and head in SECTIONS and part in SECTIONS[head].model_fields:
            default = _key_defaults()[f"{head}.{part}"]
        parent, name, node = node, part, node.get(part, default)
    parent[name] = value


def get_dotted(raw: dict, key: str, default: Any = None) -> Any:
    """The value at a dotted key (``env_kwargs.action_mode``), or ``default`` where a part is missing.

    A section's key is found in either spelling: ``trpo.max_kl`` and ``max_kl`` alike, in a nested
    config or an old flat one.
    """
    key = canonical_key(key)
    head, _, name = key.partition(".")
    old = _OLD_NAME.get(f"{head}.{name}")
    if old is not None and not (isinstance(raw.get(head), dict) and name in raw[head]) and old in raw:
        return raw[old]
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def apply_overrides(raw: dict, overrides: Sequence[str], flag: str = "--set") -> dict:
    """A copy of ``raw`` with every ``key=value`` (dotted keys allowed) applied in order."""
    raw = dict(raw)
    for item in overrides:
        set_dotted(raw, *parse_override(item, flag))
    return raw


# -- the typed model ---------------------------------------------------------------------------------
RAY_CPU_UNIT = 1e-4  # Ray 2.60's resource granularity (ray_constants.MIN_RESOURCE_GRANULARITY)


def _bounded(value: Any) -> Any:
    """Every number in a config is finite and of sane size (runs before the type and range checks)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        if abs(value) > MAX_NUMBER:  # ints beyond float range included
            raise ValueError(f"{_show(value)} is unreasonably large (limit {MAX_NUMBER:.0e})")
    return value


Int = Annotated[int, BeforeValidator(_bounded)]
Float = Annotated[float, BeforeValidator(_bounded)]  # strict: an int is accepted (as a float), a bool is not


def _f(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    exclusive_low: bool = False,
    exclusive_high: bool = False,
) -> Any:
    """A config field: its default, its one-line help and its range (``low``/``high``, inclusive unless said)."""
    bounds: dict[str, float] = {}
    if low is not None:
        bounds["gt" if exclusive_low else "ge"] = low
    if high is not None:
        bounds["lt" if exclusive_high else "le"] = high
    if isinstance(default, (list, dict)):
        return Field(default_factory=lambda: type(default)(default), description=help, **bounds)
    return Field(default, description=help, **bounds)


class Section(BaseModel):
    """A group of keys that one object consumes (``TRPO(**cfg.trpo.model_dump())``); written
    ``trpo: {max_kl: 0.02}`` in YAML, ``--set trpo.max_kl=0.02`` on the command line, read ``cfg.trpo.max_kl``."""

    model_config = ConfigDict(strict=True, extra="forbid")


class AlphaConfig(Section):
    """Meta-SGD's learned α (``algorithm: metasgd``); :meth:`metarl.core.alpha.Alpha.create`'s options."""

    granularity: Literal["scalar", "per_layer", "per_parameter"] = _f(
        AlphaOptions.granularity,
        "metasgd's learned α: one value (scalar), one per parameter tensor (per_layer) or one per "
        "element (per_parameter, Meta-SGD proper)",
    )
    parametrization: Literal["direct", "log"] = _f(
        AlphaOptions.parametrization,
        "metasgd's α as learned: direct (α itself; may change sign) or log (α = sign·exp(ρ), ρ learned; "
        "relative updates, sign fixed)",
    )


class TRPOConfig(Section):
    """:class:`metarl.core.meta_update.TRPO`'s constructor arguments, field for field (its defaults are read there)."""

    max_kl: Float = _f(
        TRPOOptions.max_kl, "TRPO trust-region size (mean KL of post-adaptation policies)", low=0.0, exclusive_low=True
    )
    cg_iters: Int = _f(TRPOOptions.cg_iters, "TRPO conjugate-gradient iterations", low=1)
    cg_damping: Float = _f(TRPOOptions.cg_damping, "TRPO damping added to the Fisher", low=0.0)
    ls_ratio: Float = _f(
        TRPOOptions.ls_ratio, "TRPO backtracking ratio", low=0.0, high=1.0, exclusive_low=True, exclusive_high=True
    )
    ls_max_steps: Int = _f(TRPOOptions.ls_max_steps, "TRPO backtracking steps", low=1)
    fisher_subsample: Float = _f(
        TRPOOptions.fisher_subsample,
        "share of the meta-batch's tasks used for TRPO's Fisher-vector products (1.0 = exact)",
        low=0.0,
        high=1.0,
        exclusive_low=True,
    )
    alpha_update: Literal["joint", "natural", "adam"] = _f(
        TRPOOptions.alpha_update,
        "how TRPO moves metasgd's α: joint (one trust region with θ), natural (its own natural step and "
        "trust region trpo.alpha_max_kl) or adam (Adam on α with trpo.alpha_lr beside TRPO on θ; joint KL checked)",
    )
    alpha_max_kl: Float = _f(
        TRPOOptions.alpha_max_kl,
        "trpo.alpha_update natural: α's own trust-region size",
        low=0.0,
        exclusive_low=True,
    )
    alpha_damping: Float = _f(
        TRPOOptions.alpha_damping,
        "trpo.alpha_update natural: damping of α's block, relative to its curvature along its gradient (gᵀFg/gᵀg); "
        "without it entries whose inner gradient is ~0 have ~0 curvature and CG moves them without bound",
        low=0.0,
    )
    alpha_lr: Float = _f(
        TRPOOptions.alpha_lr, "trpo.alpha_update adam: Adam learning rate for α's leaves", low=0.0, exclusive_low=True
    )


class AdamConfig(Section):
    """:class:`metarl.core.meta_update.Adam`'s constructor arguments (``meta_optimizer: adam``)."""

    lr: Float = _f(AdamOptions.lr, "Adam learning rate (meta_optimizer: adam)", low=0.0, exclusive_low=True)


class ReptileConfig(Section):
    """``algorithm: reptile``: :class:`metarl.core.meta_update.Reptile`'s ``step_size``; ``anneal`` sets its
    ``anneal_over`` to the run's iterations."""

    step_size: Float = _f(
        ReptileOptions.step_size, "reptile's outer step size β in θ ← θ + β·mean(θ'ᵢ − θ)", low=0.0, exclusive_low=True
    )
    anneal: bool = _f(True, "reptile: anneal β linearly to 0 over the run's iterations")


class AdvantagesConfig(Section):
    """Returns, advantages and loss averaging (:meth:`metarl.core.batch.Batch.from_rollouts`)."""

    gamma: Float = _f(AdvantageOptions.gamma, "discount", low=0.0, high=1.0)
    gae_lambda: Float = _f(AdvantageOptions.gae_lambda, "GAE λ", low=0.0, high=1.0)
    normalize_advantages: bool = _f(AdvantageOptions.normalize_advantages, "normalise advantages per task")
    loss_average: Literal["steps", "episodes"] = _f(
        AdvantageOptions.loss_average,
        "how a task's per-step losses, KL and advantage statistics are averaged: steps (pooled over valid "
        "steps) or episodes (per episode, then over episodes: pytorch-maml-rl / rllab); they differ when episodes "
        "end early",
    )
    bootstrap_truncated: bool = _f(
        AdvantageOptions.bootstrap_truncated,
        "GAE: where the horizon (not termination) ends an episode, bootstrap from the baseline's value of the "
        "state it was cut in; off = the horizon counts as termination, as the MAML reference code does",
    )


class PolicyConfig(Section):
    """The policy network (:class:`metarl.core.policies.PolicySpec`, whose defaults these read)."""

    hidden_sizes: list = _f(list(PolicyOptions.hidden_sizes), "policy MLP hidden layer sizes")
    activation: Literal["relu", "tanh"] = _f(PolicyOptions.activation, "relu or tanh")
    init_std: Float = _f(
        PolicyOptions.init_std,
        "initial policy standard deviation (Box actions; Discrete ones get a categorical policy)",
        low=0.0,
        exclusive_low=True,
    )

    @field_validator("hidden_sizes")
    @classmethod
    def _layers(cls, sizes: list) -> list:
        if not sizes or len(sizes) > MAX_LAYERS or not all(_is_int(h) and 0 < h <= MAX_NUMBER for h in sizes):
            raise ConfigError(
                f"policy.hidden_sizes: must be a non-empty list of at most {MAX_LAYERS} positive integers, "
                f"got {_show(sizes)}"
            )
        return sizes


class ResourcesConfig(Section):
    """What Ray reserves and where the learner computes (the trainer's placement)."""

    num_workers: Int = _f(1, "rollout actors", low=1)
    worker_cpus: Float = _f(1.0, "CPUs Ray reserves per rollout actor", low=0.0)
    learner_cpus: Float = _f(1.0, "CPUs Ray reserves for the learner actor", low=0.0)
    learner_threads: Int = _f(0, "torch threads in the learner; 0 = the node's CPU count", low=0, high=1024)
    device: Literal["auto", "cpu", "cuda"] = _f("auto", "learner device: auto, cpu or cuda")
    dtype: Literal["float32", "float64"] = _f("float32", "learner precision")

    @field_validator("worker_cpus", "learner_cpus")
    @classmethod
    def _ray_cpu_unit(cls, value: float, info: ValidationInfo) -> float:
        # Ray counts resources in fixed point (ray._raylet.RESOURCE_UNIT_SCALING = 10000 in Ray 2.60) and
        # refuses a non-zero request that rounds to 0 units when the actor is created, in its own words.
        if 0 < value < RAY_CPU_UNIT:
            raise ConfigError(
                f"resources.{info.field_name}: {value:g} CPUs is below Ray's smallest fractional request; use 0 "
                f"(reserve no CPU) or at least {RAY_CPU_UNIT:g} (Ray counts CPUs in units of {RAY_CPU_UNIT:g}), "
                "up to a node's CPUs"
            )
        return value


def _section(cls: type[Section], help: str) -> Any:
    return Field(default_factory=cls, description=help)


class Config(BaseModel):
    """A training run's configuration: run-wide keys plus one section per object that consumes them.

    Every key has one spelling: run-wide keys at the top (``seed``, ``inner_lr``), the others in their
    section (``trpo: {max_kl: 0.02}``, read ``cfg.trpo.max_kl``). Built from a mapping by :meth:`from_dict`
    (or a YAML file by :meth:`load`), which checks types, ranges and choices, refuses keys that do not
    apply to the chosen algorithm and optimizer, and then, in one named step (:meth:`check_env`),
    constructs the env. :meth:`to_dict` is the form written to ``config.yaml`` and checkpoints. Input
    written before the sections (``max_kl: 0.02``, :data:`OLD_FLAT_KEYS`) is read as its section's key,
    with one note per process.
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    algorithm: Literal["maml", "metasgd", "reptile"] = _f(
        "metasgd",
        "maml (fixed scalar α), metasgd (learned α) or reptile (first-order, θ moves toward the θ'ᵢ)",
    )
    alpha: AlphaConfig = _section(AlphaConfig, "metasgd's learned α")
    env: str = _f(
        "metarl/Navigation2D-v0",
        "registered Gymnasium id of a metarl task family; 'module:id' imports "
        "module (which registers id) first, in every process",
    )
    env_kwargs: dict = _f({}, "keyword arguments for the env (e.g. action_mode: clip | scale)")
    horizon: Int | None = _f(None, "steps per episode; null = the env's max_episode_steps", low=1)
    iterations: Int = _f(500, "meta-iterations to run", low=1)
    meta_batch_size: Int = _f(20, "tasks per meta-iteration", low=1)
    episodes_per_task: Int = _f(20, "trajectories per task per phase (K)", low=1)
    inner_steps: Int = _f(1, "inner policy-gradient steps per task", low=1)
    inner_lr: Float = _f(0.1, "α for maml, α's initial value for metasgd")
    first_order: bool = _f(False, "drop second-order terms of the meta-gradient")
    meta_gradient: Literal["maml", "lvc"] = _f(
        "maml",
        "the meta-gradient estimator: maml (differentiates through the inner step with the pre-adaptation "
        "batches held fixed) or lvc (ProMP's low-variance curvature surrogate in the inner step, which adds the "
        "sampling distribution's curvature term)",
    )
    meta_optimizer: Literal["trpo", "adam"] = _f("trpo", "trpo or adam")
    trpo: TRPOConfig = _section(TRPOConfig, "meta_optimizer trpo")
    adam: AdamConfig = _section(AdamConfig, "meta_optimizer adam")
    reptile: ReptileConfig = _section(ReptileConfig, "algorithm reptile's outer step")
    advantages: AdvantagesConfig = _section(AdvantagesConfig, "returns, advantages and loss averaging")
    policy: PolicyConfig = _section(PolicyConfig, "the policy network")
    seed: Int = _f(0, "seed for initialisation, tasks and action noise", low=0)
    resources: ResourcesConfig = _section(ResourcesConfig, "Ray resources and the learner's device")
    checkpoint_every: Int = _f(10, "iterations between checkpoints (and always at the end)", low=1)
    keep_checkpoints: Int = _f(3, "most recent checkpoints kept", low=1)
    max_consecutive_skips: Int = _f(
        5, "stop with a diagnosis after this many meta-updates in a row skipped for non-finite values", low=1
    )
    learner_timeout_factor: Float = _f(
        10.0,
        "a learner call taking longer than this many times its slowest of the last 5 (and longer than "
        "learner_timeout_min) stops the run with the resume command; 0 = wait as long as it takes",
        low=0.0,
    )
    learner_timeout_min: Float = _f(
        600.0,
        "seconds that any learner call may take (the whole limit of a call's first time)",
        low=0.0,
        exclusive_low=True,
    )
    worker_timeout_factor: Float = _f(
        10.0,
        "a rollout call taking longer than this many times its slowest per-episode time of the last 5 (times "
        "its episodes, and longer than worker_timeout_min) is given up: the worker is killed and replaced, the call "
        "re-sent to another; 0 = wait as long as it takes",
        low=0.0,
    )
    worker_timeout_min: Float = _f(
        600.0,
        "seconds that any rollout call may take (the whole limit of a worker's first calls)",
        low=0.0,
        exclusive_low=True,
    )

    # -- construction --------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _place_keys(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        return place_keys(data, (info.context or {}).get("source", "config"))

    @field_validator("env_kwargs")
    @classmethod
    def _plain_env_kwargs(cls, value: dict) -> dict:
        _check_plain_data("env_kwargs", value)
        return value

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Config:
        workers = self.resources.num_workers
        if workers > self.meta_batch_size:
            raise ConfigError(
                f"resources.num_workers: {workers} rollout actors for meta_batch_size {self.meta_batch_size} "
                "would leave some idle; use resources.num_workers <= meta_batch_size"
            )
        if self.inner_steps > MAX_INNER_STEPS:
            raise ConfigError(
                f"inner_steps: {self.inner_steps} is more than {MAX_INNER_STEPS} (each inner step is a "
                "pass over the whole pre-adaptation batch; papers use 1-5)"
            )
        drop = bool((info.context or {}).get("drop_inapplicable"))
        defaults, values = key_defaults(), dotted_items(self.model_dump())
        for key, why in self.inapplicable().items():
            if values[key] != defaults[key]:
                if not drop:
                    raise ConfigError(f"{key} {why}; remove it or set it to its default {_show(defaults[key])}")
                section, _, name = key.rpartition(".")
                setattr(getattr(self, section) if section else self, name, defaults[key])
        return self

    @classmethod
    def from_dict(
        cls, raw: Any, source: str = "config", *, check_env: bool = True, drop_inapplicable: bool = False
    ) -> Config:
        """The validated config of a mapping (nested; old flat keys read with the note); :class:`ConfigError`
        in one line.

        ``check_env``: also run :meth:`check_env` (construct the env once). ``drop_inapplicable``:
        reset keys that do not apply to their defaults instead of refusing them (for configs that
        versions before the typed config wrote, which accepted such keys and ignored them).
        """
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: must be a mapping of key: value, got {type(raw).__name__}")
        old: list[str] = []
        nested = place_keys(raw, source, old)  # unknown keys first (and before pydantic, which wants str keys)
        try:
            cfg = cls.model_validate(nested, context={"source": source, "drop_inapplicable": drop_inapplicable})
        except ValidationError as exc:
            raise _one_line(exc) from None
        if check_env:
            cfg.check_env()
        note_old_spelling(old)  # once the config is accepted: a refused one is one line on stderr
        return cfg

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] = ()) -> Config:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {str(path)!r} is a directory, not a YAML file")
        if not path.exists():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        data = read_config_bytes(path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file (not UTF-8); expected a YAML mapping of key: value") from None
        try:
            raw = yaml_load(text)
        except AliasRefused as exc:
            raise ConfigError(f"{path}: {exc.describe()}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
        except RecursionError:
            raise ConfigError(f"{path}: not a usable config (YAML nested too deeply)") from None
        if raw is None:
            raise ConfigError(
                f"{path}: the file is empty; expected a YAML mapping of key: value (write {{}} to mean all defaults)"
            )
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: must be a mapping of key: value, got {type(raw).__name__}")
        return cls.from_dict(apply_overrides(raw, overrides), source=str(path))

    @classmethod
    def field_names(cls) -> list[str]:
        """Every key as ``--set`` writes it (``seed``, ``trpo.max_kl``), in the order of :meth:`to_dict`."""
        return list(config_keys())

    @property
    def learns_alpha(self) -> bool:
        return self.algorithm == "metasgd"

    def inapplicable(self) -> dict[str, str]:
        """Keys (dotted) that this config's algorithm and optimizer never read, each with why (one phrase)."""
        why: dict[str, str] = {}

        def mark(keys, reason: str) -> None:
            for key in keys:
                why.setdefault(key, reason)

        def section(name: str) -> list[str]:
            return [f"{name}.{field}" for field in SECTIONS[name].model_fields]

        alg, opt = self.algorithm, self.meta_optimizer
        if alg == "reptile":
            mark(
                ["meta_optimizer", *section("adam"), *section("trpo")],
                "does not apply to algorithm reptile (its outer step is reptile.step_size)",
            )
            mark(["first_order", "meta_gradient"], "does not apply to algorithm reptile (first order by construction)")
        else:
            mark(section("reptile"), f"applies only to algorithm reptile (this config: {alg})")
            if opt == "trpo":
                mark(section("adam"), "applies only to meta_optimizer adam (this config: trpo)")
            else:
                mark(section("trpo"), f"applies only to meta_optimizer trpo (this config: {opt})")
        if alg != "metasgd":
            mark(
                [*section("alpha"), "trpo.alpha_update", "trpo.alpha_max_kl", "trpo.alpha_damping", "trpo.alpha_lr"],
                f"applies only to algorithm metasgd (this config: {alg})",
            )
        update = self.trpo.alpha_update
        if update != "natural":
            mark(
                ["trpo.alpha_max_kl", "trpo.alpha_damping"],
                f"applies only to trpo.alpha_update natural (this config: {update})",
            )
        if update != "adam":
            mark(["trpo.alpha_lr"], f"applies only to trpo.alpha_update adam (this config: {update})")
        return {key: why[key] for key in config_keys() if key in why}

    # -- the saved form --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Every key, in its section (keys that do not apply at their defaults): the form of ``config.yaml``
        and checkpoints. ``Config.from_dict(cfg.to_dict()) == cfg``."""
        return self.model_dump()

    def to_dict_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_yaml(self) -> str:
        """:meth:`to_dict` as YAML: sections as blocks, lists in flow style (``hidden_sizes: [100, 100]``)."""
        return dump_yaml(self.to_dict())

    def dump(self, path: str | Path) -> None:
        """Write the resolved config atomically (a kill mid-write leaves the old file or the new one)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(self.to_yaml())
        os.replace(tmp, path)

    # -- the env ---------------------------------------------------------------------------------
    def check_env(self) -> None:
        """The one step that constructs the env: the id is a registered metarl task family that takes
        ``env_kwargs``, and the sizes it implies (steps per phase, policy parameters, learner memory) fit."""
        obs_dim, act_dim, max_steps, kind = _check_env(self.env, self.env_kwargs, self.horizon)
        horizon = self.horizon if self.horizon is not None else max_steps
        if horizon is None:
            raise ConfigError(f"horizon: {self.env} registers no max_episode_steps; set horizon")
        steps = self.meta_batch_size * self.episodes_per_task * horizon
        if steps > MAX_STEPS_PER_PHASE:
            key = max(
                (self.meta_batch_size / 20, "meta_batch_size"),
                (self.episodes_per_task / 20, "episodes_per_task"),
                (horizon / 100, "horizon"),
            )[1]  # the one furthest above the presets' values
            raise ConfigError(
                f"{key}: {self.meta_batch_size} tasks x episodes_per_task {self.episodes_per_task} x "
                f"horizon {horizon} = {steps:.3g} env steps per phase exceeds {MAX_STEPS_PER_PHASE:.0e}; lower them"
            )
        sizes = self.policy.hidden_sizes
        widths = [obs_dim, *sizes, act_dim]
        params = sum(a * b + b for a, b in zip(widths, widths[1:])) + (act_dim if kind == "gaussian" else 0)
        if params > MAX_POLICY_PARAMETERS:
            raise ConfigError(
                f"policy.hidden_sizes: {_show(sizes)} gives a policy of {params:.3g} parameters "
                f"(limit {MAX_POLICY_PARAMETERS:.0e}); use smaller layers"
            )
        _check_memory(self, steps, widths, params)

    def validate(self) -> None:
        """Re-check a config built or changed in code: every key (as :meth:`from_dict`), then the env."""
        type(self).from_dict(self.to_dict())


SECTIONS: dict[str, type[Section]] = {
    name: info.annotation
    for name, info in Config.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, Section)
}


@functools.cache
def config_keys() -> dict[str, tuple[str | None, str]]:
    """Every key as ``--set`` writes it (``seed``, ``trpo.max_kl``) → ``(section or None, field)``, in the
    order of :meth:`Config.to_dict`."""
    keys: dict[str, tuple[str | None, str]] = {}
    for name in Config.model_fields:
        section = SECTIONS.get(name)
        if section is None:
            keys[name] = (None, name)
        else:
            keys.update({f"{name}.{field}": (name, field) for field in section.model_fields})
    return keys


def dotted_items(nested: dict) -> dict[str, Any]:
    """A nested config mapping with each section's keys written dotted: ``{"trpo": {"max_kl": x}}`` →
    ``{"trpo.max_kl": x}`` (values unchecked; other mappings, such as ``env_kwargs``, kept whole)."""
    items: dict[str, Any] = {}
    for key, value in nested.items():
        if key in SECTIONS and isinstance(value, dict):
            items.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            items[key] = value
    return items


@functools.cache
def _key_defaults() -> dict[str, Any]:
    # the declared defaults, without running the validators
    return dotted_items(Config.model_construct().to_dict())


def key_defaults() -> dict[str, Any]:
    """Every key's default, keys dotted (a fresh copy: lists and dicts may be changed by the caller)."""
    return copy.deepcopy(_key_defaults())


def _did_you_mean(key: str) -> str | None:
    """The nearest key in its one spelling (an old flat name is matched, and named as its section's key)."""
    run_wide = [k for k in Config.model_fields if k not in SECTIONS]
    names = {**{k: k for k in [*run_wide, *SECTIONS, *config_keys()]}, **OLD_FLAT_KEYS}
    close = difflib.get_close_matches(key[:100], list(names), n=1)
    return names[close[0]] if close else None


def place_keys(raw: dict, source: str = "config", old_keys: list[str] | None = None) -> dict:
    """A config mapping → the nested form: sections as they are, old flat keys moved into their section.

    An unknown key is an error with a "did you mean"; a key given both flat and in its section
    with different values is an error. The old flat keys read are appended to ``old_keys``, or, without
    it, named in the note at once (:func:`note_old_spelling`).
    """
    nested: dict[str, Any] = {}
    written: dict[str, str] = {}
    old: list[str] = [] if old_keys is None else old_keys

    def put(key: str, value: Any, as_written: str) -> None:
        sec, _, name = key.rpartition(".")
        target = nested.setdefault(sec, {}) if sec else nested
        if key in written and target[name] != value:
            raise ConfigError(
                f"{key}: given twice, as {written[key]} ({_show(target[name])}) and as "
                f"{as_written} ({_show(value)}); keep one"
            )
        target[name], written[key] = value, as_written

    run_wide = [k for k in Config.model_fields if k not in SECTIONS]
    for key, value in raw.items():
        if isinstance(key, str) and key in SECTIONS:
            section = SECTIONS[key]
            if isinstance(value, section):
                value = value.model_dump()
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{key}: expected a mapping of {key}'s keys ({', '.join(section.model_fields)}), "
                    f"got {_show(value)} ({type(value).__name__})"
                )
            for sub, item in value.items():
                if not isinstance(sub, str) or sub not in section.model_fields:
                    close = difflib.get_close_matches(str(sub)[:100], list(section.model_fields), n=1)
                    hint = (
                        f"; did you mean {key + '.' + close[0]!r}?"
                        if close
                        else f"; {key} has {', '.join(section.model_fields)}"
                    )
                    raise ConfigError(f"{source}: unknown key {_show(f'{key}.{sub}')}{hint}")
                put(f"{key}.{sub}", item, f"{key}.{sub}")
        elif isinstance(key, str) and key in OLD_FLAT_KEYS:
            old.append(key)
            put(OLD_FLAT_KEYS[key], value, key)
        elif isinstance(key, str) and key in run_wide:
            put(key, value, key)
        else:
            close = _did_you_mean(str(key))
            hint = f"; did you mean {close!r}?" if close else f"; allowed keys: {', '.join(config_keys())}"
            raise ConfigError(f"{source}: unknown key {_show(key)}{hint}")
    if old_keys is None:
        note_old_spelling(old)
    return nested


@dataclass(frozen=True)
class KeySpec:
    """One key as ``metarl config --keys`` documents it (read off the model's fields)."""

    key: str  # "trpo.max_kl", or the key itself for run-wide keys
    type: str  # "int", "float", "bool", "str", "list", "dict"
    optional: bool
    default: Any
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    exclusive_low: bool = False
    exclusive_high: bool = False

    @property
    def allowed(self) -> str:
        if self.choices:
            return " | ".join(map(str, self.choices))
        if self.low is None and self.high is None:
            return ""
        low = "" if self.low is None else f"{self.low:g} {'<' if self.exclusive_low else '<='} "
        high = "" if self.high is None else f" {'<' if self.exclusive_high else '<='} {self.high:g}"
        return f"{low}x{high}"


def _spec(key: str, info: FieldInfo, default: Any) -> KeySpec:
    annotation, optional = info.annotation, False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation, optional = args[0], True
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()
    base = "str" if choices else annotation.__name__
    bounds = {type(m).__name__: m for m in info.metadata}
    low, high = bounds.get("Gt") or bounds.get("Ge"), bounds.get("Lt") or bounds.get("Le")
    return KeySpec(
        key,
        base,
        optional,
        default,
        info.description or "",
        tuple(choices),
        low=None if low is None else getattr(low, "gt", getattr(low, "ge", None)),
        high=None if high is None else getattr(high, "lt", getattr(high, "le", None)),
        exclusive_low="Gt" in bounds,
        exclusive_high="Lt" in bounds,
    )


@functools.cache
def key_specs() -> dict[str, KeySpec]:
    """Every key's (dotted) type, default, range or choices and help, in the order of :meth:`Config.to_dict`."""
    defaults = _key_defaults()
    specs = {}
    for key, (sec, name) in config_keys().items():
        info = (Config if sec is None else SECTIONS[sec]).model_fields[name]
        specs[key] = _spec(key, info, defaults[key])
    return specs


def describe_keys() -> list[dict[str, Any]]:
    """Every config key (dotted) with its type, default, allowed values or range, help, and the flat name it
    had before the sections (``old_key``, or None): ``metarl config --keys``."""
    return [
        {
            "key": s.key,
            "type": s.type + (" | None" if s.optional else ""),
            "default": copy.deepcopy(s.default),
            "allowed": s.allowed,
            "help": s.help,
            "old_key": _OLD_NAME.get(s.key),
        }
        for s in key_specs().values()
    ]


def _one_line(exc: ValidationError) -> ConfigError:
    """Pydantic's first error as the one line metarl prints: the key, what is wrong, what is allowed."""
    err = exc.errors(include_url=False)[0]
    error = err.get("ctx", {}).get("error")
    if isinstance(error, ConfigError):  # our own checks already name the key
        return error
    loc = [part for part in err["loc"] if isinstance(part, str)]
    key = f"{loc[0]}.{loc[1]}" if len(loc) >= 2 and loc[0] in SECTIONS else (loc[0] if loc else "config")
    spec = key_specs().get(key)
    if spec is None:
        return ConfigError(f"{key}: {err['msg']}")
    value, kind = err.get("input"), err["type"]
    if kind == "value_error":
        return ConfigError(f"{key}: {error} ({spec.help})")
    if kind == "literal_error":
        return ConfigError(f"{key}: {_show(value)} is not allowed; choose one of {', '.join(spec.choices)}")
    relations = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in relations:
        bound = next(iter(err["ctx"].values()))
        return ConfigError(f"{key}: must be {relations[kind]} {bound}, got {value!r} ({spec.help})")
    return ConfigError(
        f"{key}: expected {spec.type}{' or null' if spec.optional else ''}, got {_show(value)} "
        f"({type(value).__name__}; {spec.help})"
    )


def dump_yaml(nested: dict) -> str:
    """A config mapping as YAML: mappings (the sections, ``env_kwargs``) as blocks, lists in flow style."""

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(
        list, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)
    )
    return yaml.dump(
        nested, Dumper=Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1 << 20
    )
