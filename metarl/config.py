"""Typed training configuration: YAML presets + ``--set`` overrides, validated before Ray starts.

Every field has a docstring-like ``help``; ``validate()`` explains what is wrong in one line
naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import os
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml


class ConfigError(ValueError):
    """A bad config key or value; the CLI prints it as one line and exits with status 2.

    The message is always one line of bounded length (newlines folded, long values cut), so a
    hostile file cannot flood the terminal or break "one line on stderr".
    """

    MAX_CHARS = 400

    def __init__(self, message: str):
        message = " ".join(str(message).split())
        if len(message) > self.MAX_CHARS:
            message = message[: self.MAX_CHARS - 3] + "..."
        super().__init__(message)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 6
_REPR.maxlevel = 3


def _show(value: Any) -> str:
    """A short repr for error messages (safe on huge, deep or self-referencing YAML values)."""
    return _REPR.repr(value)


MAX_NUMBER = 1e9  # larger magnitudes in any numeric key are taken as a typo
MAX_STEPS_PER_PHASE = 10**8  # meta_batch_size x episodes_per_task x horizon
MAX_POLICY_PARAMETERS = 10**8
MAX_LAYERS = 64
MAX_ENV_KWARGS_NODES = 1000  # values in env_kwargs (nested), counted once each
MAX_CONFIG_BYTES = 256 * 1024  # a config file (the presets are about 1 KiB); PyYAML parses ~1 MB/s
MAX_INNER_STEPS = 1000  # papers use 1-5; each one is a full pass over the pre-adaptation batch
ENV_IMPORT_TIMEOUT_S = 60.0  # an env module's import (run in the main thread) that takes longer fails


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (never constructs Python objects) with two fixes for config files.

    * YAML 1.2 floats: PyYAML (YAML 1.1) reads ``1e-3`` and ``1.0e3`` as strings, which would
      reject ``meta_lr: 1e-3``; here they are floats.
    * A key given twice in one mapping is an error instead of silently keeping the last value.
    * Anchors and aliases (``&a``, ``*a``, ``<<: *a``) are refused: configs never need them, and
      a few hundred bytes of nested aliases expand to billions of values ("billion laughs").
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "YAML anchors and aliases (&name, *name) are not allowed in metarl configs", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.value in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                        )
                    seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def yaml_load(text: str | bytes) -> Any:
    """Parse YAML safely (plain data only); YAML 1.2 floats; duplicate keys refused."""
    return yaml.load(text, Loader=_Loader)


def parse_value(text: str, where: str) -> Any:
    """A command-line value read as YAML, exactly as in a config file (``1e-2`` a float, ``[8, 8]`` a list)."""
    try:
        return yaml_load(text)
    except (yaml.YAMLError, RecursionError):
        raise ConfigError(f"{where}: value is not valid YAML") from None


def parse_override(item: str, flag: str = "--set") -> tuple[str, Any]:
    """``"key=value"`` → ``(key, value)``; the one parser behind ``--set`` and ``--grid``'s keys."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{flag} {_show(item)}: expected key=value")
    return key, parse_value(value, f"{flag} {_show(item)}")


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """``raw[a][b] = value`` for ``key = "a.b"``: Hydra/OmegaConf-style dotted keys into mappings.

    The first part must be a config key holding a mapping (``env_kwargs``); missing inner
    mappings are created. A key without dots is set as is (``from_dict`` checks it).
    """
    head, *rest = key.split(".")
    if not rest:
        raw[key] = value
        return
    names = Config.field_names()
    if head not in names:
        close = difflib.get_close_matches(head[:100], names, n=1)
        hint = f"; did you mean {close[0] + '.' + '.'.join(rest)!r}?" if close else ""
        raise ConfigError(f"unknown key {_show(key)}: {_show(head)} is not a config key{hint}")
    parent, name, node = raw, head, raw.get(head, _defaults()[head])
    for depth, part in enumerate(rest):
        if not isinstance(node, dict):
            where = ".".join([head, *rest[:depth]])
            raise ConfigError(f"{_show(key)}: {where} is {type(node).__name__}, not a mapping; dotted keys reach "
                              "into mappings such as env_kwargs")
        if not part:
            raise ConfigError(f"{_show(key)}: empty part in a dotted key")
        node = parent[name] = dict(node)  # copy along the path: the caller's mappings stay as they were
        parent, name, node = node, part, node.get(part, {})
    parent[name] = value


def get_dotted(raw: dict, key: str, default: Any = None) -> Any:
    """The value at a dotted key (``env_kwargs.action_mode``), or ``default`` where a part is missing."""
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


def _defaults() -> dict[str, Any]:
    return {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
            for f in dataclasses.fields(Config)}


def describe_keys() -> list[dict[str, Any]]:
    """Every config key with its type, default, allowed values or range, and help: ``metarl config --keys``."""
    rows = []
    for f, default in zip(dataclasses.fields(Config), _defaults().values()):
        meta = f.metadata
        allowed = ""
        if "choices" in meta:
            allowed = " | ".join(map(str, meta["choices"]))
        elif meta.get("low") is not None or meta.get("high") is not None:
            low = "" if meta.get("low") is None else f"{meta['low']:g} {'<' if meta.get('exclusive_low') else '<='} "
            high = "" if meta.get("high") is None else f" {'<' if meta.get('exclusive_high') else '<='} {meta['high']:g}"
            allowed = f"{low}x{high}"
        rows.append({"key": f.name, "type": f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type)),
                     "default": default, "allowed": allowed, "help": meta.get("help", "")})
    return rows


def read_config_bytes(path: Path) -> bytes:
    """A config file's bytes: a regular file of at most :data:`MAX_CONFIG_BYTES` (no FIFO, no device)."""
    try:
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} is not a regular file (a FIFO, device or socket)")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {str(path)!r} is {path.stat().st_size:,} bytes; the limit is "
                              f"{MAX_CONFIG_BYTES:,} (configs are a few dozen keys)")
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {str(path)!r} grew past the limit of {MAX_CONFIG_BYTES:,} bytes")
    return data


def load_yaml_file(path: str | Path) -> Any:
    """A small YAML file read as configs are (size cap, no aliases); ``ConfigError`` in one line."""
    path = Path(path)
    try:
        return yaml_load(read_config_bytes(path).decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def _f(default, help: str, **meta):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class Config:
    algorithm: str = _f(
        "metasgd", "maml (fixed scalar α), metasgd (learned α) or reptile (first-order, θ moves toward the θ'ᵢ)",
        choices=("maml", "metasgd", "reptile"),
    )
    alpha_granularity: str = _f(
        "per_parameter", "metasgd's learned α: one value (scalar), one per parameter tensor (per_layer) or one per "
        "element (per_parameter, Meta-SGD proper)", choices=("scalar", "per_layer", "per_parameter"),
    )
    alpha_parametrization: str = _f(
        "direct", "metasgd's α as learned: direct (α itself; may change sign) or log (α = sign·exp(ρ), ρ learned; "
        "relative updates, sign fixed)", choices=("direct", "log"),
    )
    alpha_update: str = _f(
        "joint", "how TRPO moves metasgd's α: joint (one trust region with θ), natural (its own natural step and "
        "trust region alpha_max_kl) or adam (Adam on α with alpha_lr beside TRPO on θ; joint KL checked)",
        choices=("joint", "natural", "adam"),
    )
    alpha_max_kl: float = _f(0.01, "alpha_update natural: α's own trust-region size", low=0.0, exclusive_low=True)
    alpha_lr: float = _f(0.01, "alpha_update adam: Adam learning rate for α's leaves", low=0.0, exclusive_low=True)
    reptile_step_size: float = _f(0.5, "reptile's outer step size β in θ ← θ + β·mean(θ'ᵢ − θ)", low=0.0, exclusive_low=True)
    reptile_anneal: bool = _f(True, "reptile: anneal β linearly to 0 over the run's iterations")
    env: str = _f("metarl/Navigation2D-v0", "registered Gymnasium id of a metarl task family; 'module:id' imports "
                  "module (which registers id) first, in every process")
    env_kwargs: dict = _f({}, "keyword arguments for the env (e.g. action_mode: clip | scale)")
    horizon: int | None = _f(None, "steps per episode; null = the env's max_episode_steps", low=1)
    iterations: int = _f(500, "meta-iterations to run", low=1)
    meta_batch_size: int = _f(20, "tasks per meta-iteration", low=1)
    episodes_per_task: int = _f(20, "trajectories per task per phase (K)", low=1)
    inner_steps: int = _f(1, "inner policy-gradient steps per task", low=1)
    inner_lr: float = _f(0.1, "α for maml, α's initial value for metasgd", finite=True)
    first_order: bool = _f(False, "drop second-order terms of the meta-gradient")
    meta_gradient: str = _f(
        "maml", "the meta-gradient estimator: maml (differentiates through the inner step with the pre-adaptation "
        "batches held fixed) or lvc (ProMP's low-variance curvature surrogate in the inner step, which adds the "
        "sampling distribution's curvature term)", choices=("maml", "lvc"),
    )
    meta_optimizer: str = _f("trpo", "trpo or adam", choices=("trpo", "adam"))
    meta_lr: float = _f(1e-3, "Adam learning rate (meta_optimizer: adam)", low=0.0, exclusive_low=True)
    max_kl: float = _f(0.01, "TRPO trust-region size (mean KL of post-adaptation policies)", low=0.0, exclusive_low=True)
    cg_iters: int = _f(10, "TRPO conjugate-gradient iterations", low=1)
    cg_damping: float = _f(1e-5, "TRPO damping added to the Fisher", low=0.0)
    ls_ratio: float = _f(0.8, "TRPO backtracking ratio", low=0.0, high=1.0, exclusive_low=True, exclusive_high=True)
    ls_max_steps: int = _f(15, "TRPO backtracking steps", low=1)
    fisher_subsample: float = _f(1.0, "share of the meta-batch's tasks used for TRPO's Fisher-vector products (1.0 = exact)", low=0.0, high=1.0, exclusive_low=True)
    gamma: float = _f(0.99, "discount", low=0.0, high=1.0)
    gae_lambda: float = _f(1.0, "GAE λ", low=0.0, high=1.0)
    normalize_advantages: bool = _f(True, "normalise advantages per task")
    loss_average: str = _f(
        "steps", "how a task's per-step losses, KL and advantage statistics are averaged: steps (pooled over valid "
        "steps) or episodes (per episode, then over episodes: pytorch-maml-rl / rllab); they differ when episodes end early",
        choices=("steps", "episodes"),
    )
    bootstrap_truncated: bool = _f(
        False, "GAE: where the horizon (not termination) ends an episode, bootstrap from the baseline's value of the "
        "state it was cut in; off = the horizon counts as termination, as the MAML reference code does",
    )
    hidden_sizes: list = _f([100, 100], "policy MLP hidden layer sizes")
    activation: str = _f("relu", "relu or tanh", choices=("relu", "tanh"))
    init_std: float = _f(1.0, "initial policy standard deviation (Box actions; Discrete ones get a categorical policy)",
                         low=0.0, exclusive_low=True)
    seed: int = _f(0, "seed for initialisation, tasks and action noise", low=0)
    num_workers: int = _f(1, "rollout actors", low=1)
    worker_cpus: float = _f(1.0, "CPUs Ray reserves per rollout actor", low=0.0)
    learner_cpus: float = _f(1.0, "CPUs Ray reserves for the learner actor", low=0.0)
    learner_threads: int = _f(0, "torch threads in the learner; 0 = the node's CPU count", low=0, high=1024)
    device: str = _f("auto", "learner device: auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    dtype: str = _f("float32", "learner precision", choices=("float32", "float64"))
    checkpoint_every: int = _f(10, "iterations between checkpoints (and always at the end)", low=1)
    keep_checkpoints: int = _f(3, "most recent checkpoints kept", low=1)
    max_consecutive_skips: int = _f(
        5, "stop with a diagnosis after this many meta-updates in a row skipped for non-finite values", low=1
    )

    # ------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config") -> "Config":
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: must be a mapping of key: value, got {type(raw).__name__}")
        names = cls.field_names()
        for key in raw:
            if not isinstance(key, str) or key not in names:
                close = difflib.get_close_matches(str(key)[:100], names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; allowed keys: {', '.join(names)}"
                raise ConfigError(f"{source}: unknown key {_show(key)}{hint}")
        cfg = cls(**raw)
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] = ()) -> "Config":
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
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
        except RecursionError:
            raise ConfigError(f"{path}: not a usable config (YAML nested too deeply)") from None
        if raw is None:
            raise ConfigError(f"{path}: the file is empty; expected a YAML mapping of key: value "
                              "(write {} to mean all defaults)")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: must be a mapping of key: value, got {type(raw).__name__}")
        return cls.from_dict(apply_overrides(raw, overrides), source=str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_dict_json(self) -> str:
        import json

        return json.dumps(self.to_dict())

    def dump(self, path: str | Path) -> None:
        """Write the resolved config atomically (a kill mid-write leaves the old file or the new one)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        os.replace(tmp, path)

    # ------------------------------------------------------------------------------------
    def validate(self) -> None:
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        sizes = self.hidden_sizes
        if not sizes or len(sizes) > MAX_LAYERS or not all(_is_int(h) and 0 < h <= MAX_NUMBER for h in sizes):
            raise ConfigError(
                f"hidden_sizes: must be a non-empty list of at most {MAX_LAYERS} positive integers, got {_show(sizes)}"
            )
        if self.num_workers > self.meta_batch_size:
            raise ConfigError(
                f"num_workers: {self.num_workers} rollout actors for meta_batch_size {self.meta_batch_size} "
                "would leave some idle; use num_workers <= meta_batch_size"
            )
        _check_plain_data("env_kwargs", self.env_kwargs)
        obs_dim, act_dim, max_steps, kind = _check_env(self.env, self.env_kwargs)
        horizon = self.horizon if self.horizon is not None else max_steps
        if horizon is None:
            raise ConfigError(f"horizon: {self.env} registers no max_episode_steps; set horizon")
        steps = self.meta_batch_size * self.episodes_per_task * horizon
        if steps > MAX_STEPS_PER_PHASE:
            key = max((self.meta_batch_size / 20, "meta_batch_size"), (self.episodes_per_task / 20, "episodes_per_task"),
                      (horizon / 100, "horizon"))[1]  # the one furthest above the presets' values
            raise ConfigError(
                f"{key}: {self.meta_batch_size} tasks x episodes_per_task {self.episodes_per_task} x "
                f"horizon {horizon} = {steps:.3g} env steps per phase exceeds {MAX_STEPS_PER_PHASE:.0e}; lower them"
            )
        widths = [obs_dim, *sizes, act_dim]
        params = sum(a * b + b for a, b in zip(widths, widths[1:])) + (act_dim if kind == "gaussian" else 0)
        if params > MAX_POLICY_PARAMETERS:
            raise ConfigError(
                f"hidden_sizes: {_show(sizes)} gives a policy of {params:.3g} parameters "
                f"(limit {MAX_POLICY_PARAMETERS:.0e}); use smaller layers"
            )
        if self.inner_steps > MAX_INNER_STEPS:
            raise ConfigError(f"inner_steps: {self.inner_steps} is more than {MAX_INNER_STEPS} (each inner step is a "
                              "pass over the whole pre-adaptation batch; papers use 1-5)")
        _check_memory(self, steps, widths, params)

    @property
    def learns_alpha(self) -> bool:
        return self.algorithm == "metasgd"


def learner_memory_bytes(cfg: "Config", steps_per_phase: int, widths: list[int], params: int) -> int:
    """A rough upper estimate of the learner's memory for one meta-iteration (before anything starts).

    Activations: a policy forward over one phase keeps ``steps x sum(widths)`` values for the
    backward pass; the meta-gradient keeps one such graph per inner step plus the post-adaptation
    one, each about 4x (pre-activations, gradients, the Fisher products' double backward).
    Parameters: θ, α and the optimizer's moments, plus each task's θ'ᵢ (and its gradient) per
    inner step. Calibrated loosely: the Navigation2D preset estimates 0.3 GB, its learner's peak
    RSS (with torch itself) is about 1 GB.
    """
    size = 8 if cfg.dtype == "float64" else 4
    activations = 4 * (cfg.inner_steps + 1) * steps_per_phase * sum(widths) * size
    parameters = (4 + 2 * cfg.meta_batch_size * cfg.inner_steps) * params * size
    return activations + parameters


def memory_limit_bytes() -> int:
    """What an estimate is checked against: this machine's memory, or ``METARL_MAX_MEMORY_GB``.

    Set the variable when the learner runs on a larger node of a cluster than the driver's.
    """
    override = os.environ.get("METARL_MAX_MEMORY_GB")
    if override:
        try:
            return int(float(override) * 2**30)
        except ValueError:
            raise ConfigError(f"METARL_MAX_MEMORY_GB: expected a number of GB, got {_show(override)}") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 64 * 2**30


def _check_memory(cfg: "Config", steps: int, widths: list[int], params: int) -> None:
    """Refuse a config whose learner would not fit in memory; the message leads with the key to lower."""
    need, limit = learner_memory_bytes(cfg, steps, widths, params), memory_limit_bytes()
    if need <= limit:
        return
    growth = {  # how far each knob is above its preset value: the largest is named first
        "hidden_sizes": sum(cfg.hidden_sizes) / 200, "inner_steps": cfg.inner_steps / 1,
        "meta_batch_size": cfg.meta_batch_size / 20, "episodes_per_task": cfg.episodes_per_task / 20,
        "horizon": steps / (cfg.meta_batch_size * cfg.episodes_per_task * 100),
    }
    key = max(growth, key=growth.get)
    raise ConfigError(
        f"{key}: {_show(getattr(cfg, key))} makes the learner need about {need / 2**30:,.0f} GiB (hidden_sizes "
        f"{_show(cfg.hidden_sizes)}, inner_steps {cfg.inner_steps}, {steps:,} env steps per phase); this machine "
        f"has {limit / 2**30:,.0f} GiB (METARL_MAX_MEMORY_GB overrides). Lower {key}"
    )


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_field(f: dataclasses.Field, value: Any) -> None:
    name, meta = f.name, f.metadata
    expected = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    optional = "None" in expected
    base = expected.replace(" | None", "")
    if value is None and optional:
        return
    ok = {
        "int": _is_int(value),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "list": isinstance(value, list),
        "dict": isinstance(value, dict),
    }[base]
    if not ok:
        raise ConfigError(
            f"{name}: expected {base}{' or null' if optional else ''}, got {_show(value)} "
            f"({type(value).__name__}; {meta['help']})"
        )
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{name}: {_show(value)} is not allowed; choose one of {', '.join(meta['choices'])}")
    if base in ("int", "float"):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}: must be a finite number, got {value!r}")
        if abs(value) > MAX_NUMBER:  # ints beyond float range included
            raise ConfigError(f"{name}: {_show(value)} is unreasonably large (limit {MAX_NUMBER:.0e}) ({meta['help']})")
        low, high = meta.get("low"), meta.get("high")
        if low is not None and (value < low or (meta.get("exclusive_low") and value == low)):
            rel = ">" if meta.get("exclusive_low") else ">="
            raise ConfigError(f"{name}: must be {rel} {low}, got {value!r} ({meta['help']})")
        if high is not None and (value > high or (meta.get("exclusive_high") and value == high)):
            rel = "<" if meta.get("exclusive_high") else "<="
            raise ConfigError(f"{name}: must be {rel} {high}, got {value!r} ({meta['help']})")


def _check_plain_data(name: str, value: Any) -> None:
    """``value`` is JSON-like (str keys; None, bool, int, finite float, str, list, dict) and small."""
    budget = [MAX_ENV_KWARGS_NODES]
    on_path: set[int] = set()

    def walk(v: Any, where: str) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError(f"{name}: too large or too deeply shared (more than {MAX_ENV_KWARGS_NODES} values)")
        if v is None or isinstance(v, (bool, str)):
            return
        if isinstance(v, (int, float)):
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{where}: must be a finite number, got {v!r}")
            if abs(v) > 1e300:
                raise ConfigError(f"{where}: {_show(v)} is unreasonably large")
            return
        if isinstance(v, (list, dict)):
            if id(v) in on_path:
                raise ConfigError(f"{where}: refers to itself (a recursive YAML anchor)")
            on_path.add(id(v))
            if isinstance(v, dict):
                for k, item in v.items():
                    if not isinstance(k, str):
                        raise ConfigError(f"{where}: keys must be strings, got {_show(k)}")
                    walk(item, f"{where}.{k[:40]}")
            else:
                for i, item in enumerate(v):
                    walk(item, f"{where}[{i}]")
            on_path.discard(id(v))
            return
        raise ConfigError(f"{where}: {type(v).__name__} values are not allowed (plain YAML data only), got {_show(v)}")

    walk(value, name)


def _import_env_module(env_id: str, module: str) -> None:
    """Import a config's env module; anything it raises (``sys.exit`` and Ctrl-C included) is one line.

    In the main thread the import is given :data:`ENV_IMPORT_TIMEOUT_S` (``SIGALRM``); an import
    blocked inside C code that ignores signals can still hang (documented in docs/reliability.md).
    """
    import signal
    import threading

    def too_slow(signum, frame):
        raise TimeoutError(f"no result after {ENV_IMPORT_TIMEOUT_S:g} s")

    timed = threading.current_thread() is threading.main_thread() and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    previous = signal.signal(signal.SIGALRM, too_slow) if timed else None
    if timed:
        signal.setitimer(signal.ITIMER_REAL, ENV_IMPORT_TIMEOUT_S)
    try:
        importlib.import_module(module)
    except BaseException as exc:  # ModuleNotFoundError, the module's own error, sys.exit(), KeyboardInterrupt
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ConfigError(f"env: {_show(env_id)}: importing {module} failed ({detail})") from None
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _check_env(env_id: str, env_kwargs: dict) -> tuple[int, int, int | None, str]:
    """The env id is registered and constructs with ``env_kwargs`` as a metarl task family.

    A family has Box observations, Box or Discrete actions and the task API (``sample_tasks``,
    ``set_task``, ``get_task``). Returns ``(obs_dim, act_dim, max_episode_steps, policy kind)``.
    """
    import gymnasium as gym

    import envs  # noqa: F401  (registers the metarl families)
    from metarl.tasks import space_dims

    module, _, name = env_id.rpartition(":")
    if module:  # Gymnasium's "module:id": importing the module registers the family
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", module):
            raise ConfigError(f"env: {_show(env_id)}: {_show(module)} is not a Python module name")
        _import_env_module(env_id, module)
    if name not in gym.registry:
        metarl_ids = sorted(k for k in gym.registry if k.startswith("metarl/"))
        close = difflib.get_close_matches(name[:200], metarl_ids, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; registered metarl envs: {', '.join(metarl_ids)}"
        raise ConfigError(f"env: {_show(env_id)} is not a registered Gymnasium id{hint}")
    make_options = sorted(set(env_kwargs) & {"max_episode_steps", "disable_env_checker"})  # gym.make's own
    if make_options:
        raise ConfigError(f"env_kwargs: {', '.join(make_options)} are options of gymnasium.make, not of the env, and "
                          "metarl's vectorised rollouts never see them; set horizon for the episode length")
    try:
        env = gym.make(env_id, **env_kwargs)
    except Exception as exc:  # the env's own message says which keyword and why
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        detail = detail.split(" was raised from the environment creator")[0]  # gymnasium repeats the kwargs
        raise ConfigError(f"env_kwargs: {env_id} does not accept {_show(env_kwargs)}: {detail}") from None
    try:
        try:
            obs_dim, act_dim, kind = space_dims(env)
        except ValueError as exc:
            raise ConfigError(f"env: {env_id} is not a metarl task family ({str(exc).split(': ', 1)[-1]})") from None
        if not all(hasattr(env.unwrapped, m) for m in ("sample_tasks", "set_task", "get_task")):
            raise ConfigError(f"env: {env_id} is not a metarl task family (needs sample_tasks, set_task and get_task)")
        max_steps = env.spec.max_episode_steps if env.spec is not None else None
        return obs_dim, act_dim, max_steps, kind
    finally:
        env.close()
