"""Reading config text safely: one-line errors, YAML without tags or alias bombs, ``--set`` values, the
limits on input size. :mod:`metarl.config` builds the typed model on top of these;
:mod:`metarl.tune` reuses the value parser for search spaces."""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any

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


def _key_path(parts: list) -> str:
    """``["env_kwargs", "inner", 2]`` -> ``env_kwargs.inner[2]`` (the spelling of dotted ``--set`` keys)."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text[:120]


class AliasRefused(yaml.composer.ComposerError):
    """A YAML anchor or alias (refused in configs), with the key path where it stands."""

    def __init__(self, key: str, alias: bool, anchor: str | None, mark):
        self.key, self.what = key, f"alias *{anchor}" if alias else f"anchor &{anchor}"
        super().__init__(None, None, f"{key or 'value'}: YAML {self.what} is not allowed", mark)

    def describe(self, prefix: str = "") -> str:
        """``KEY: YAML anchor &a (line 3, column 13) is not allowed; ...what is``: one line for ConfigError.

        ``prefix``: the key that the parsed text is the value of (``--set env_kwargs={...}``).
        """
        mark = self.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        joint = "" if not prefix or not self.key or self.key.startswith("[") else "."
        key = f"{prefix}{joint}{self.key}: " if prefix or self.key else ""
        return (
            f"{key}YAML {self.what}{where} is not allowed; metarl configs take no anchors and aliases "
            "(&name, *name, <<: *name): write the value out in full"
        )


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (never constructs Python objects) with two fixes for config files.

    * YAML 1.2 floats: PyYAML (YAML 1.1) reads ``1e-3`` and ``1.0e3`` as strings, which would
      reject ``adam: {lr: 1e-3}``; here they are floats.
    * A key given twice in one mapping is an error instead of silently keeping the last value.
    * Anchors and aliases (``&a``, ``*a``, ``<<: *a``) are refused: configs never need them, and
      a few hundred bytes of nested aliases expand to billions of values ("billion laughs").
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._path: list[str | int] = []  # key path of the node being composed, for messages

    def compose_node(self, parent, index):
        # ``index`` is the key node of a mapping's value, the position of a sequence's item, or None.
        part = index.value if isinstance(index, yaml.ScalarNode) else index if isinstance(index, int) else None
        if part is not None:
            self._path.append(part)
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise AliasRefused(
                _key_path(self._path), isinstance(event, yaml.AliasEvent), event.anchor, event.start_mark
            )
        try:
            return super().compose_node(parent, index)
        finally:
            if part is not None:
                self._path.pop()

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


def parse_value(text: str, where: str, key: str = "") -> Any:
    """A command-line value read as YAML, exactly as in a config file (``1e-2`` a float, ``[8, 8]`` a list).

    ``key``: the key it is the value of, to name the place of a refused alias.
    """
    try:
        return yaml_load(text)
    except AliasRefused as exc:
        raise ConfigError(f"{where}: {exc.describe(key)}") from None
    except (yaml.YAMLError, RecursionError):
        raise ConfigError(f"{where}: value is not valid YAML") from None


def parse_override(item: str, flag: str = "--set") -> tuple[str, Any]:
    """``"key=value"`` → ``(key, value)``; the one parser behind ``--set`` and ``--grid``'s keys."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{flag} {_show(item)}: expected key=value")
    return key, parse_value(value, f"{flag} {_show(item)}", key)


def read_config_bytes(path: Path) -> bytes:
    """A config file's bytes: a regular file of at most :data:`MAX_CONFIG_BYTES` (no FIFO, no device)."""
    try:
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} is not a regular file (a FIFO, device or socket)")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file {str(path)!r} is {path.stat().st_size:,} bytes; the limit is "
                f"{MAX_CONFIG_BYTES:,} (configs are a few dozen keys)"
            )
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
    except AliasRefused as exc:
        raise ConfigError(f"{path}: {exc.describe()}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem
