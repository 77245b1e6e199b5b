"""Property-based checks that no bad config gets past validation, and that each fails well.

Hundreds of generated bad configs (wrong types, NaN/inf, huge, negative and out-of-range numbers,
bad choices, unknown keys, junk nested in ``policy.hidden_sizes``/``env_kwargs``, malformed YAML and
binary garbage) go through ``Config.from_dict`` / ``Config.load`` in-process: each must raise
``ConfigError`` with one short line naming the offending key (or the file). A smaller sample goes
through the real CLI in subprocesses: exit status 2, exactly one line on stderr, nothing created.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from metarl.config import OLD_FLAT_KEYS, SECTIONS, Config, ConfigError, key_specs, yaml_load

BASE = {"meta_batch_size": 4, "episodes_per_task": 4, "policy": {"hidden_sizes": [8]}, "iterations": 2}
FIELDS = key_specs()  # every key (dotted: trpo.max_kl): type, range or choices (read off the typed model)
NAMES = sorted(FIELDS)
REPO = Path(__file__).resolve().parents[1]
SETTINGS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _with(name: str, value) -> tuple[dict, str]:
    """BASE with ``name`` (dotted for a section's key) set to ``value``, and the key the error must name."""
    section, _, field = name.rpartition(".")
    if not section:
        return {**BASE, name: value}, name
    return {**BASE, section: {**BASE.get(section, {}), field: value}}, name


def _base_type(name: str) -> str:
    return FIELDS[name].type


def _optional(name: str) -> bool:
    return FIELDS[name].optional


FIELDS_OF = {t: [n for n in NAMES if _base_type(n) == t] for t in ("int", "float", "bool", "str", "list", "dict")}
NUMERIC = FIELDS_OF["int"] + FIELDS_OF["float"]
CHOICES = [n for n in NAMES if FIELDS[n].choices]

# -- strategies: (raw config, the key the error must name) ------------------------------------
small_text = st.text(min_size=0, max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), small_text)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(small_text, inner, max_size=3)),
    max_leaves=6,
)


def _wrong_type(name: str):
    t = _base_type(name)
    non_int_float = st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not float(x).is_integer())
    by_type = {
        "int": st.one_of(
            small_text,
            st.booleans(),
            non_int_float,
            st.integers().map(float),
            st.lists(scalars, max_size=2),
            st.dictionaries(small_text, scalars, max_size=2),
        ),
        "float": st.one_of(
            small_text, st.booleans(), st.lists(scalars, max_size=2), st.dictionaries(small_text, scalars, max_size=2)
        ),
        "bool": st.one_of(st.integers(), st.floats(), small_text, st.lists(scalars, max_size=2)),
        "str": st.one_of(
            st.integers(),
            st.floats(),
            st.booleans(),
            st.lists(scalars, max_size=2),
            st.dictionaries(small_text, scalars, max_size=2),
        ),
        "list": st.one_of(st.integers(), small_text, st.booleans(), st.dictionaries(small_text, scalars, max_size=2)),
        "dict": st.one_of(st.integers(), small_text, st.booleans(), st.lists(scalars, max_size=2)),
    }[t]
    if not _optional(name):
        by_type = st.one_of(by_type, st.none())
    return by_type.map(lambda v: _with(name, v))


def _bad_number(name: str):
    spec, is_int = FIELDS[name], _base_type(name) == "int"
    options = [
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.floats(min_value=1.000001e9, max_value=1e308).flatmap(lambda x: st.sampled_from([x, -x])),
        st.integers(min_value=10**9 + 1, max_value=10**400).flatmap(lambda x: st.sampled_from([x, -x])),
    ]
    low, high = spec.low, spec.high
    if low is not None:
        below = st.integers(-(10**9), math.ceil(low) - 1) if is_int else st.floats(-1e9, low, exclude_max=True)
        options.append(below)
        if spec.exclusive_low:
            options.append(st.just(int(low) if is_int else float(low)))
    if high is not None:
        above = st.integers(math.floor(high) + 1, 10**9) if is_int else st.floats(high, 1e9, exclude_min=True)
        options.append(above)
        if spec.exclusive_high:
            options.append(st.just(float(high)))
    return st.one_of(options).map(lambda v: _with(name, v))


def _bad_choice(name: str):
    choices = FIELDS[name].choices
    return small_text.filter(lambda s: s not in choices).map(lambda v: _with(name, v))


def _typo(name: str):
    """A near miss of a real key (exercises 'did you mean')."""
    return st.tuples(st.integers(0, len(name) - 1), st.sampled_from(["drop", "dup", "swap", "case"])).map(
        lambda a: {
            "drop": name[: a[0]] + name[a[0] + 1 :],
            "dup": name[: a[0]] + name[a[0]] + name[a[0] :],
            "swap": name[: a[0]] + name[a[0] + 1 : a[0] + 2] + name[a[0]] + name[a[0] + 2 :],
            "case": name.upper(),
        }[a[1]]
    )


unknown_key = (
    st.one_of(st.sampled_from(NAMES).flatmap(_typo), st.text(min_size=1, max_size=30))
    .filter(lambda k: k not in FIELDS and k not in SECTIONS and k not in OLD_FLAT_KEYS)
    .flatmap(lambda k: junk.map(lambda v: ({**BASE, k: v}, k)))
)

bad_hidden = st.one_of(
    st.just([]),
    st.lists(st.integers(-(10**6), 0), min_size=1, max_size=4),
    st.lists(
        st.one_of(st.booleans(), st.floats(), small_text, st.lists(st.integers(1, 9), max_size=2), st.none()),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.integers(1, 64), min_size=65, max_size=70),
    st.lists(st.integers(10**5, 10**9), min_size=2, max_size=3),  # a policy of > 1e8 parameters
    st.integers(10**9 + 1, 10**30).map(lambda x: [8, x]),
).map(lambda v: _with("policy.hidden_sizes", v))

bad_env_kwargs = st.one_of(
    st.dictionaries(st.integers(), scalars, min_size=1, max_size=2),  # non-string keys
    st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda k: k != "action_mode"), junk, min_size=1, max_size=2
    ),
    junk.filter(lambda v: v not in ("clip", "scale")).map(lambda v: {"action_mode": v}),
    st.sampled_from([math.nan, math.inf]).map(lambda v: {"action_mode": "clip", "extra": [v]}),
).map(lambda v: ({**BASE, "env_kwargs": v}, "env_kwargs"))

bad_env = (
    st.text(max_size=40).filter(lambda s: s != "metarl/Navigation2D-v0").map(lambda v: ({**BASE, "env": v}, "env"))
)

too_many_workers = st.integers(5, 10**6).map(lambda w: _with("resources.num_workers", w))

bad_configs = st.one_of(
    st.sampled_from(NAMES).flatmap(_wrong_type),
    st.sampled_from(NUMERIC).flatmap(_bad_number),
    st.sampled_from(CHOICES).flatmap(_bad_choice),
    unknown_key,
    bad_hidden,
    bad_env_kwargs,
    bad_env,
    too_many_workers,
)


def _named(message: str, key: str) -> bool:
    """The message names ``key`` (as written, or as the bounded repr used for odd keys)."""
    from metarl.config import _show

    return key in message or _show(key) in message


def _assert_one_line(message: str) -> None:
    assert message and "\n" not in message and "\r" not in message and len(message) <= ConfigError.MAX_CHARS, message


def _yaml_text(raw: dict) -> str | None:
    """``raw`` as YAML, or None when YAML cannot carry it faithfully (so the file test would differ)."""
    try:
        text = yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)
        back = yaml_load(text)
    except Exception:
        return None
    return text if repr(back) == repr(raw) else None


# -- in-process: hundreds of bad configs -----------------------------------------------------
def test_generated_bad_configs_are_rejected_with_one_line_naming_the_key(tmp_path, capsys):
    """Every generated config is refused by ``Config.from_dict`` with one line naming the key; every
    one that YAML can carry is also written to a file and run through ``metarl train`` in-process
    (``cli.main``, the CLI's own error handling): exit status 2, one line on stderr, no run directory."""
    from metarl import cli

    seen: set[str] = set()
    via_cli = [0]

    @settings(max_examples=300, **SETTINGS)
    @given(case=bad_configs)
    def check(case):
        raw, key = case
        with pytest.raises(ConfigError) as info:
            Config.from_dict(raw)
        message = str(info.value)
        _assert_one_line(message)
        assert _named(message, key), (raw, message)
        text = _yaml_text(raw)
        if text is not None:  # the same config as a file, through the command line's entry point
            path, out = tmp_path / "bad.yaml", tmp_path / "run"
            path.write_text(text)
            capsys.readouterr()
            status = cli.main(["train", str(path), "--out", str(out), "--quiet"])
            captured = capsys.readouterr()
            lines = captured.err.splitlines()
            assert status == 2, (text, captured.err)
            assert len(lines) == 1 and lines[0].startswith("metarl: error: "), (text, captured.err)
            assert _named(lines[0], key), (text, lines[0])
            assert not out.exists(), "nothing is created for a rejected config"
            via_cli[0] += 1
        seen.add(repr(raw))

    check()
    assert len(seen) >= 200, f"only {len(seen)} distinct bad configs were generated"
    assert via_cli[0] >= 100, f"only {via_cli[0]} went through the CLI"


YAML_NOISE = st.text(
    alphabet=st.sampled_from(list("{}[]:,&*!|>'\"%@`\t\n -?#=.0123456789abcxyz_\\")), min_size=1, max_size=40
)
bad_files = st.one_of(
    YAML_NOISE.map(str.encode),
    st.binary(min_size=0, max_size=64),
    st.lists(scalars, max_size=3).map(lambda v: yaml.safe_dump(v).encode()),  # a list, not a mapping
    scalars.map(lambda v: yaml.safe_dump(v).encode()),
    st.integers(2, 2000).map(lambda n: ("[" * n).encode()),  # unbalanced / deeply nested
    st.sampled_from(
        [
            b"",
            b"\n\n",
            b"# only a comment\n",
            b"a: 1\na: 2\n",
            b"\xff\xfe\x00garbage",
            b"!!python/object/apply:os.system ['true']\n",
            b"adam: {lr: !!binary aGVsbG8=}\n",
            b"inner_lr: 2024-01-01\n",
            b"x: &a [*a]\n",
            b"\x00\x01\x02",
        ]
    ),
)


def _is_maybe_valid(data: bytes) -> bool:
    """Would this file parse to a mapping of only known keys (then it might be a valid config)?"""
    try:
        parsed = yaml_load(data.decode("utf-8"))
    except Exception:
        return False
    return isinstance(parsed, dict) and all(
        isinstance(k, str) and (k in FIELDS or k in SECTIONS or k in OLD_FLAT_KEYS) for k in parsed
    )


def test_generated_bad_files_are_rejected_with_one_line(tmp_path):
    seen: set[bytes] = set()
    path = tmp_path / "config.yaml"

    @settings(max_examples=100, **SETTINGS)
    @given(data=bad_files)
    def check(data):
        assume(not _is_maybe_valid(data))
        path.write_bytes(data)
        with pytest.raises(ConfigError) as info:
            Config.load(path)
        _assert_one_line(str(info.value))
        assert str(path) in str(info.value), str(info.value)
        seen.add(data)

    check()
    assert len(seen) >= 50


@settings(max_examples=60, **SETTINGS)
@given(
    item=st.one_of(
        st.text(max_size=20).filter(lambda s: "=" not in s),
        st.text(min_size=1, max_size=10)
        .filter(lambda k: k.strip() and "=" not in k and k.strip() not in {*FIELDS, *SECTIONS, *OLD_FLAT_KEYS})
        .map(lambda k: f"{k}=1"),
        st.sampled_from(NUMERIC).map(lambda k: f"{k}=.nan"),
        st.sampled_from(
            [
                "policy.hidden_sizes=[8,",
                "env_kwargs={a: [}",
                "seed=1e400",
                "iterations=-3",
                "inner_lr=!!python/name:os.system",
            ]
        ),
    )
)
def test_bad_overrides_are_rejected(item):
    with pytest.raises(ConfigError) as info:
        Config.load(REPO / "configs/navigation2d-maml.yaml", [item])
    _assert_one_line(str(info.value))


def test_yaml_1_2_floats_and_duplicate_keys(tmp_path):
    """``1e-3`` is a float (PyYAML alone reads it as a string); a repeated key is an error."""
    path = tmp_path / "c.yaml"
    path.write_text("adam: {lr: 1e-3}\ntrpo: {max_kl: 2.0e-2}\nmeta_batch_size: 4\nepisodes_per_task: 4\n")
    cfg = Config.load(path)
    assert cfg.adam.lr == 1e-3 and cfg.trpo.max_kl == 0.02
    path.write_text("inner_lr: 0.1\ninner_lr: 0.2\n")
    with pytest.raises(ConfigError, match="duplicate key 'inner_lr' at line 2"):
        Config.load(path)


# -- through the real CLI --------------------------------------------------------------------
def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metarl.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**__import__("os").environ, "RAY_ADDRESS": "local"},
    )


def _assert_status_2_one_line(proc: subprocess.CompletedProcess, fragment: str = "") -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("metarl"), proc.stderr
    assert "Traceback" not in proc.stderr and fragment in lines[0], proc.stderr
    return lines[0]


def test_cli_sample_of_generated_bad_configs(tmp_path):
    count = [0]

    @settings(max_examples=12, **SETTINGS)
    @given(case=bad_configs)
    def check(case):
        raw, key = case
        text = _yaml_text(raw)
        assume(text is not None)
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        out = tmp_path / "run"
        line = _assert_status_2_one_line(_cli("train", str(path), "--out", str(out)))
        assert _named(line, key), line
        assert not out.exists(), "nothing is created for a rejected config"
        count[0] += 1

    check()
    assert count[0] >= 10


SPECIAL_FILES = {
    "list.yaml": (b"- 1\n- 2\n", "must be a mapping"),
    "garbage.yaml": (bytes(range(256)) * 4, "not a text file"),
    "empty.yaml": (b"", "empty"),
    "scalar.yaml": (b"42\n", "must be a mapping"),
    "syntax.yaml": (b"inner_lr: [0.1\nseed: 3\n", "not valid YAML"),
    "python-tag.yaml": (b"inner_lr: !!python/object/apply:os.system ['touch MARKER']\n", "not valid YAML"),
    "deep.yaml": (b"[" * 50000, "nested too deeply"),
}


@pytest.mark.parametrize(
    "command, name",
    [("train", name) for name in sorted(SPECIAL_FILES)] + [("benchmark", "list.yaml"), ("benchmark", "garbage.yaml")],
)
def test_cli_bad_files(tmp_path, command, name):
    data, fragment = SPECIAL_FILES[name]
    marker = tmp_path / "MARKER"
    path = tmp_path / name
    path.write_bytes(data.replace(b"MARKER", str(marker).encode()))
    _assert_status_2_one_line(_cli(command, str(path)), fragment)
    assert not marker.exists(), "a YAML tag must never construct Python objects"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "/nonexistent/config.yaml"], "does not exist"),
        (["train", "configs"], "is a directory"),
        (["train", "configs/navigation2d-maml.yaml", "--set", "inner_lr"], "expected key=value"),
        (["train", "configs/navigation2d-maml.yaml", "--set", "policy.hidden_sizes=[8,"], "not valid YAML"),
        (["train"], "required: config"),
        (["frobnicate"], "invalid choice"),
        (["benchmark", "--iterations", "many"], "invalid int value"),
        (["evaluate", "/nonexistent-run"], "no checkpoint found"),
        (["plot", "alpha", "configs", "--out", "x.gif"], "unsupported format"),
    ],
)
def test_cli_bad_arguments(args, fragment):
    _assert_status_2_one_line(_cli(*args), fragment)
