"""Typed training configuration: YAML presets + ``--set`` overrides, validated before Ray starts.

Every field has a docstring-like ``help``; ``validate()`` explains what is wrong in one line
naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad config key or value; the CLI prints it as one line and exits with status 2."""


def _f(default, help: str, **meta):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class Config:
    algorithm: str = _f("metasgd", "maml (fixed scalar α) or metasgd (α learned per parameter)", choices=("maml", "metasgd"))
    env: str = _f("metarl/Navigation2D-v0", "registered Gymnasium id of a metarl task family")
    env_kwargs: dict = _f({}, "keyword arguments for the env (e.g. action_mode: clip | scale)")
    horizon: int | None = _f(None, "steps per episode; null = the env's max_episode_steps", low=1)
    iterations: int = _f(500, "meta-iterations to run", low=1)
    meta_batch_size: int = _f(20, "tasks per meta-iteration", low=1)
    episodes_per_task: int = _f(20, "trajectories per task per phase (K)", low=1)
    inner_steps: int = _f(1, "inner policy-gradient steps per task", low=1)
    inner_lr: float = _f(0.1, "α for maml, α's initial value for metasgd", finite=True)
    first_order: bool = _f(False, "drop second-order terms of the meta-gradient")
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
    hidden_sizes: list = _f([100, 100], "policy MLP hidden layer sizes")
    activation: str = _f("relu", "relu or tanh", choices=("relu", "tanh"))
    init_std: float = _f(1.0, "initial policy standard deviation", low=0.0, exclusive_low=True)
    seed: int = _f(0, "seed for initialisation, tasks and action noise", low=0)
    num_workers: int = _f(1, "rollout actors", low=1)
    worker_cpus: float = _f(1.0, "CPUs Ray reserves per rollout actor", low=0.0)
    learner_cpus: float = _f(1.0, "CPUs Ray reserves for the learner actor", low=0.0)
    learner_threads: int = _f(0, "torch threads in the learner; 0 = the node's CPU count", low=0)
    device: str = _f("auto", "learner device: auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    dtype: str = _f("float32", "learner precision", choices=("float32", "float64"))
    checkpoint_every: int = _f(10, "iterations between checkpoints (and always at the end)", low=1)
    keep_checkpoints: int = _f(3, "most recent checkpoints kept", low=1)

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
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; allowed keys: {', '.join(names)}"
                raise ConfigError(f"{source}: unknown key {key!r}{hint}")
        cfg = cls(**raw)
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] = ()) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: must be a mapping of key: value, got {type(raw).__name__}")
        raw = dict(raw)
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--set {item!r}: expected key=value")
            try:
                raw[key.strip()] = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"--set {item!r}: value is not valid YAML") from None
        return cls.from_dict(raw, source=str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_dict_json(self) -> str:
        import json

        return json.dumps(self.to_dict())

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    # ------------------------------------------------------------------------------------
    def validate(self) -> None:
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        if not self.hidden_sizes or not all(_is_int(h) and h > 0 for h in self.hidden_sizes):
            raise ConfigError(f"hidden_sizes: must be a non-empty list of positive integers, got {self.hidden_sizes!r}")
        if self.num_workers > self.meta_batch_size:
            raise ConfigError(
                f"num_workers: {self.num_workers} rollout actors for meta_batch_size {self.meta_batch_size} "
                "would leave some idle; use num_workers <= meta_batch_size"
            )
        _check_env(self.env, self.env_kwargs)

    @property
    def learns_alpha(self) -> bool:
        return self.algorithm == "metasgd"


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
        raise ConfigError(f"{name}: expected {base}{' or null' if optional else ''}, got {value!r} ({meta['help']})")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{name}: {value!r} is not allowed; choose one of {', '.join(meta['choices'])}")
    if base in ("int", "float"):
        if not math.isfinite(value):
            raise ConfigError(f"{name}: must be a finite number, got {value!r}")
        low, high = meta.get("low"), meta.get("high")
        if low is not None and (value < low or (meta.get("exclusive_low") and value == low)):
            rel = ">" if meta.get("exclusive_low") else ">="
            raise ConfigError(f"{name}: must be {rel} {low}, got {value!r} ({meta['help']})")
        if high is not None and (value > high or (meta.get("exclusive_high") and value == high)):
            rel = "<" if meta.get("exclusive_high") else "<="
            raise ConfigError(f"{name}: must be {rel} {high}, got {value!r} ({meta['help']})")
        if base == "int" and value > 10**9:
            raise ConfigError(f"{name}: {value!r} is unreasonably large (limit 1e9)")


def _check_env(env_id: str, env_kwargs: dict) -> None:
    import gymnasium as gym

    import envs  # noqa: F401  (registers the metarl families)

    if env_id not in gym.registry:
        metarl_ids = sorted(k for k in gym.registry if k.startswith("metarl/"))
        close = difflib.get_close_matches(env_id, metarl_ids, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; registered metarl envs: {', '.join(metarl_ids)}"
        raise ConfigError(f"env: {env_id!r} is not a registered Gymnasium id{hint}")
    if not all(isinstance(k, str) for k in env_kwargs):
        raise ConfigError("env_kwargs: keys must be strings")
