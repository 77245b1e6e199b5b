"""Runs that survive real life: the cases of docs/reliability.md, one test (or parameter) each.

Fast cases run in-process without Ray: configs, checkpoints and run directories are refused
before anything starts, so they cost milliseconds. Cases that need a real ``metarl train``
(process-group signals, two live writers, resume through the CLI) are ``@pytest.mark.slow``;
each starts its own processes and ends them by PID (never ``ray stop``, never by name).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

import metarl.runtime.checkpoint as ckpt
from metarl import cli
from metarl.config import OLD_FLAT_KEYS, Config, ConfigError, dotted_items, set_dotted
from metarl.runtime import rundir
from metarl.runtime.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    load_checkpoint,
    resolve_checkpoint,
    run_config,
)
from metarl.runtime.evaluation import load_run
from metarl.runtime.learner import Learner
from metarl.runtime.metrics import read_metrics
from metarl.runtime.trainer import Trainer, policy_spec

REPO = Path(__file__).resolve().parents[1]
TINY = dict(
    meta_batch_size=2,
    episodes_per_task=2,
    policy={"hidden_sizes": [8]},
    resources={"learner_cpus": 0.5, "worker_cpus": 0.5, "learner_threads": 1, "num_workers": 1},
)
CONFIG = "configs/navigation2d-metasgd.yaml"


# -- helpers -------------------------------------------------------------------------------------
def _run_cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """``metarl ARGV`` in this process: its exit status and its stderr lines."""
    rc = cli.main(argv)
    return rc, capsys.readouterr().err.strip().splitlines()


def _changed(cfg: Config, **changes) -> Config:
    """``cfg`` with some keys changed, dotted keys written ``__`` (``advantages__gamma=0.9``)."""
    raw = cfg.to_dict()
    for key, value in changes.items():
        set_dotted(raw, key.replace("__", "."), value)
    return Config.from_dict(raw)


def _real_state(cfg: Config, iteration: int = 1) -> dict:
    """What ``Trainer.save`` writes, built in-process (no Ray): θ, α, optimizer, counters, config."""
    from metarl.envs.tasks import make_env

    env = make_env(cfg.env, cfg.env_kwargs)
    state = Learner(cfg, policy_spec(cfg, env)).state_dict()
    env.close()
    state.update(
        iteration=iteration, env_steps=0, worker_restarts=0, config=cfg.to_dict_json(), rng_state=json.dumps({})
    )
    return state


def _forge(path: Path, state_or_bytes) -> Path:
    """Write a checkpoint with a matching checksum (a checksum is no signature: anyone can forge one)."""
    if isinstance(state_or_bytes, bytes):
        data = state_or_bytes
    else:
        buffer = io.BytesIO()
        torch.save(state_or_bytes, buffer)
        data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.with_suffix(".json").write_text(json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}))
    return path


@pytest.fixture(scope="module")
def cfg() -> Config:
    return Config.from_dict({**TINY, "iterations": 3})


@pytest.fixture
def run(tmp_path, cfg) -> Path:
    """A run directory as a finished 1-iteration run leaves it (config.yaml, metrics, one checkpoint)."""
    out = tmp_path / "run"
    ckpt.save_checkpoint(out / "checkpoints", 1, _real_state(cfg))
    cfg.dump(out / "config.yaml")
    (out / "metrics.jsonl").write_text(json.dumps({"iteration": 1}) + "\n")
    return out


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# -- 6. absurd sizes fail fast, naming the key, before Ray starts ----------------------------------
@pytest.mark.parametrize(
    "setting, key",
    [
        ("policy.hidden_sizes=[1000000]", "policy.hidden_sizes"),
        ("inner_steps=1000000", "inner_steps"),
        ("inner_steps=500", "inner_steps"),  # under the cap, but the learner's graphs would not fit
        ("meta_batch_size=250000", "meta_batch_size"),
        ("horizon=6000000", "horizon"),
    ],
)
def test_absurd_config_sizes_fail_in_one_line_naming_the_key(tmp_path, capsys, setting, key, monkeypatch):
    monkeypatch.setenv("METARL_MAX_MEMORY_GB", "24")  # the same answer on any machine
    out = tmp_path / "out"
    start = time.monotonic()
    rc, err = _run_cli(["train", CONFIG, "--out", str(out), "--set", setting], capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"metarl: error: {key}:"), err
    assert time.monotonic() - start < 10 and not out.exists()


def test_memory_estimate_accepts_the_presets(monkeypatch):
    """The estimate must not refuse what the project ships, even on an 8 GB laptop."""
    monkeypatch.setenv("METARL_MAX_MEMORY_GB", "8")
    for preset in sorted((REPO / "configs").glob("*.yaml")):
        try:
            Config.load(preset)
        except ConfigError as exc:
            assert "GiB" not in str(exc), f"{preset.name}: {exc}"


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["evaluate", "RUN", "--tasks", "1000000000"], "--tasks"),
        (["evaluate", "RUN", "--steps", "1000000000"], "--steps"),
        (["evaluate", "RUN", "--episodes", "1000000000"], "--episodes"),
        (["evaluate", "RUN", "--tasks", "5000", "--episodes", "5000"], "--tasks x --episodes"),
        (["plot", "curves", "RUN", "--out", "OUT/c.png", "--dpi", "9000"], "--dpi"),
        (["plot", "curves", "RUN", "--out", "OUT/c.png", "--dpi", "100000"], "--dpi"),
        (
            ["plot", "trajectories", "RUN", "--goal", "0.1,0.1", "--out", "OUT/t.png", "--steps", "1000000000"],
            "--steps",
        ),
    ],
)
def test_absurd_command_line_sizes_fail_before_anything_is_read(run, tmp_path, capsys, argv, flag):
    argv = [a.replace("RUN", str(run)).replace("OUT", str(tmp_path)) for a in argv]
    before = _snapshot(run)
    rc, err = _run_cli(argv, capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"metarl: error: {flag}"), err
    assert _snapshot(run) == before and not list(tmp_path.glob("*.png"))


# -- 6. hostile config files: aliases, bombs, huge files, FIFOs -------------------------------------
BOMB = textwrap.dedent("""\
    a: &a [x, x, x, x, x, x, x, x, x]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
    """)
MERGE_BOMB = "base: &b {iterations: 3}\nrun:\n  <<: *b\n"


@pytest.mark.parametrize(
    "text",
    [BOMB, MERGE_BOMB, "iterations: &n 3\ncheckpoint_every: *n\n"],
    ids=["alias-bomb", "merge-key", "plain-alias"],
)
def test_yaml_anchors_and_aliases_are_refused(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="anchors and aliases"):
        Config.load(path)
    assert time.monotonic() - start < 5


def test_yaml_anchor_in_a_set_value_is_refused(tmp_path, capsys):
    rc, err = _run_cli(["train", CONFIG, "--out", str(tmp_path / "o"), "--set", "iterations=&a 3"], capsys)
    assert rc == 2 and len(err) == 1 and "iterations=&a 3" in err[0], err
    assert not (tmp_path / "o").exists()


def test_plot_reads_a_run_config_with_a_merge_key_bomb_in_one_line(run, tmp_path, capsys):
    (run / "config.yaml").write_text(BOMB)
    start = time.monotonic()
    rc, err = _run_cli(["plot", "curves", str(run), "--out", str(tmp_path / "c.png")], capsys)
    assert rc == 2 and len(err) == 1 and "anchors and aliases" in err[0], err
    assert time.monotonic() - start < 10


def test_a_5_mb_config_is_refused_without_parsing_it(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("iterations: 3\n" + "# padding\n" * 500_000)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="bytes; the limit is"):
        Config.load(path)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_config_that_is_a_fifo_or_a_device_is_refused_without_blocking(tmp_path, kind):
    path = tmp_path / "c.yaml"
    if kind == "fifo":
        os.mkfifo(path)  # nobody writes: a read would block forever
    else:
        path.symlink_to("/dev/zero")  # a read would never end
    with pytest.raises(ConfigError, match="not a regular file"):
        Config.load(path)


# -- 6. hostile checkpoint files -----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_checkpoint_that_is_a_fifo_or_a_device_is_refused_without_blocking(tmp_path, kind):
    path = tmp_path / "checkpoint-000001.pt"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    path.with_suffix(".json").write_text(json.dumps({"sha256": "0", "bytes": 0}))
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(path)


def test_an_oversized_checkpoint_is_refused_before_it_is_read(tmp_path, cfg, monkeypatch):
    path = _forge(tmp_path / "checkpoint-000001.pt", _real_state(cfg))
    monkeypatch.setattr(ckpt, "max_checkpoint_bytes", lambda: 1000)
    with pytest.raises(CheckpointError, match="more than the 1,000 bytes metarl reads"):
        load_checkpoint(path)


def test_a_zip_bomb_checkpoint_is_refused(tmp_path):
    """A small deflated entry that would inflate to 200 MB: torch writes only stored entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"\0" * (200 * 2**20))
    assert len(buffer.getvalue()) < 2**20
    with pytest.raises(CheckpointError, match="compressed zip entries"):
        load_checkpoint(_forge(tmp_path / "checkpoint-000001.pt", buffer.getvalue()))


# -- 7. forged checkpoints: one line, exit 2 ------------------------------------------------------
def _deep(n: int) -> str:
    return '{"a": ' * n + "1" + "}" * n


FORGED_CONFIGS = {
    "missing": None,
    "list": "[1, 2]",
    "int": 5,
    "deep": _deep(100_000),
    "deep but small": _deep(1000),
    "not json": "{oops",
    "unknown key": json.dumps({"no_such_key": 1}),
}


@pytest.mark.parametrize("case", sorted(FORGED_CONFIGS))
def test_forged_checkpoint_configs_fail_in_one_line(tmp_path, cfg, capsys, case):
    state = _real_state(cfg)
    if FORGED_CONFIGS[case] is None:
        del state["config"]
    else:
        state["config"] = FORGED_CONFIGS[case]
    path = _forge(tmp_path / "checkpoints" / "checkpoint-000001.pt", state)
    rc, err = _run_cli(["evaluate", str(path)], capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("metarl: error:") and str(path) in err[0], err


@pytest.mark.parametrize(
    "case", ["theta missing a key", "alpha missing a key", "theta shape", "alpha shape", "extra theta key"]
)
def test_forged_parameters_that_do_not_fit_the_config_fail_in_one_line(tmp_path, cfg, capsys, case):
    state = _real_state(cfg)
    name = "layer0.weight"
    if case == "theta missing a key":
        del state["theta"][name]
    elif case == "alpha missing a key":
        del state["alpha"][name]
    elif case == "theta shape":  # the probe's case: it used to evaluate, exit 0
        state["theta"][name] = torch.zeros(2, 9)
        state["alpha"][name] = torch.zeros(2, 9)
    elif case == "alpha shape":
        state["alpha"][name] = torch.zeros(3)
    else:
        state["theta"]["layer9.weight"] = state["alpha"]["layer9.weight"] = torch.zeros(1)
    path = _forge(tmp_path / "checkpoint-000001.pt", state)
    with pytest.raises(CheckpointError):
        run_config(path, load_checkpoint(path))
    rc, err = _run_cli(["evaluate", str(path)], capsys)
    assert rc == 2 and len(err) == 1 and str(path) in err[0], err


def test_a_genuine_checkpoint_passes_every_check(run, cfg):
    run_ = load_run(run)
    assert run_.cfg == cfg and run_.iteration == 1


# -- 5. a checkpoint never makes metarl import code -----------------------------------------------
@pytest.fixture
def payload_module(tmp_path, monkeypatch):
    """A module in a directory on sys.path whose import leaves a marker file (and registers nothing)."""
    name = f"r19payload_{os.getpid()}_{time.monotonic_ns()}"
    marker = tmp_path / "PAYLOAD-RAN"
    (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


@pytest.mark.parametrize("module", ["payload", "this"])
def test_evaluate_never_imports_a_module_named_by_a_checkpoint(tmp_path, cfg, capsys, payload_module, module):
    name, marker = payload_module
    module = name if module == "payload" else "this"
    if module == "this" and "this" in sys.modules:
        pytest.skip("'this' was imported by something else in this process")
    state = _real_state(cfg)
    state["config"] = json.dumps({**cfg.to_dict(), "env": f"{module}:metarl/Navigation2D-v0"})
    path = _forge(tmp_path / "ck" / "checkpoint-000001.pt", state)
    rc, err = _run_cli(["evaluate", str(path)], capsys)
    assert rc == 2 and len(err) == 1 and "--trust-env-module" in err[0], err
    assert not marker.exists() and module not in sys.modules, "the checkpoint's module was imported"


def test_trust_env_module_lets_the_user_import_it(tmp_path, cfg, payload_module):
    name, marker = payload_module
    state = _real_state(cfg)
    state["config"] = json.dumps({**cfg.to_dict(), "env": f"{name}:metarl/Navigation2D-v0"})
    path = _forge(tmp_path / "checkpoint-000001.pt", state)
    loaded = load_checkpoint(path, trust_env_module=True)
    assert not marker.exists(), "loading alone must import nothing"
    assert run_config(path, loaded, trust_env_module=True).env.startswith(name)
    assert marker.exists()


@pytest.mark.parametrize(
    "body, what",
    [
        ("import sys; sys.exit(0)", "SystemExit"),
        ("raise KeyboardInterrupt", "KeyboardInterrupt"),
        ("raise BaseException('boom')", "BaseException"),
        ("import time; time.sleep(30)", "TimeoutError"),
    ],
)
def test_a_config_env_module_that_exits_or_interrupts_is_one_line(tmp_path, capsys, monkeypatch, body, what):
    name = f"r19bad_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("metarl.config_checks.ENV_IMPORT_TIMEOUT_S", 0.5)
    out = tmp_path / "out"
    rc, err = _run_cli(["train", CONFIG, "--out", str(out), "--set", f"env={name}:metarl/Navigation2D-v0"], capsys)
    sys.modules.pop(name, None)
    assert rc == 2 and len(err) == 1 and f"importing {name} failed ({what}" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("key", ["max_episode_steps", "disable_env_checker"])
def test_env_kwargs_that_only_gym_make_understands_are_refused(key):
    with pytest.raises(ConfigError, match=f"env_kwargs: {key} are options of gymnasium.make"):
        Config.from_dict({**TINY, "env_kwargs": {key: 5 if key == "max_episode_steps" else True}})


# -- 7. --out that cannot be a run directory -----------------------------------------------------
def test_out_that_is_an_existing_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    rc, err = _run_cli(["train", CONFIG, "--out", str(target), "--set", "iterations=1"], capsys)
    assert rc == 2 and len(err) == 1 and "is an existing file" in err[0], err
    assert target.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_out_in_an_unwritable_directory_is_one_line(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o555)
    rc, err = _run_cli(["train", CONFIG, "--out", str(parent / "run"), "--set", "iterations=1"], capsys)
    assert rc == 2 and len(err) == 1 and "cannot create the run directory" in err[0], err


def test_plot_out_under_a_file_is_one_line(run, tmp_path, capsys):
    (tmp_path / "f").write_text("")
    rc, err = _run_cli(["plot", "curves", str(run), "--out", str(tmp_path / "f" / "c.png")], capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("metarl: error:"), err


def test_resume_without_out_is_one_line(capsys):
    rc, err = _run_cli(["train", CONFIG, "--resume"], capsys)
    assert rc == 2 and err == ["metarl: error: --resume needs --out RUN_DIR, the run directory to continue"]


def test_resume_into_a_missing_directory_is_refused(tmp_path, cfg):
    with pytest.raises(rundir.RunDirError, match="nothing to resume"):
        Trainer(cfg, tmp_path / "typo", resume=True)
    assert not (tmp_path / "typo").exists()


# -- 2./3. run directories: one writer, no appending, resumes that match ----------------------------
def test_fresh_run_into_a_killed_runs_directory_is_refused(tmp_path, cfg):
    """A run killed before its first checkpoint left metrics: a new run must not append to them."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i}) + "\n" for i in (1, 2, 3)))
    before = _snapshot(out)
    with pytest.raises(rundir.RunDirError, match="stopped before its first checkpoint.*choose another --out"):
        Trainer(cfg, out)
    assert {k: v for k, v in _snapshot(out).items() if k != rundir.LOCK_NAME} == before


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(run, cfg):
    first = rundir.RunLock(run)
    first.announce()
    try:
        before = _snapshot(run)
        with pytest.raises(rundir.RunDirError, match=rf"another metarl process \(pid {os.getpid()} on .*\) is writing"):
            Trainer(cfg, run, resume=True)
        assert _snapshot(run) == before
    finally:
        first.release()
    rundir.RunLock(run).release()  # free again once released


def test_the_lock_dies_with_its_process(run):
    """SIGKILL leaves no stale lock: the kernel drops a flock with its last descriptor."""
    code = (
        "import sys, time; from pathlib import Path; from metarl.runtime.rundir import RunLock; "
        "lock = RunLock(Path(sys.argv[1])); print('locked', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(rundir.RunDirError, match="another metarl process"):
            rundir.RunLock(run)
    finally:
        holder.kill()
        holder.wait()
    rundir.RunLock(run).release()


@pytest.mark.parametrize(
    "change",
    [
        {"inner_lr": 0.2},
        {"seed": 1},
        {"meta_batch_size": 4},
        {"advantages__gamma": 0.9},
        {"meta_optimizer": "adam"},
        {"policy__hidden_sizes": [16]},
        {"algorithm": "maml"},
    ],
)
def test_resume_with_a_different_learning_config_is_refused_and_writes_nothing(run, cfg, change):
    before = _snapshot(run)
    key = next(iter(change)).replace("__", ".")
    with pytest.raises(rundir.RunDirError, match=rf"differs from the checkpoint's .* in {re.escape(key)} "):
        Trainer(_changed(cfg, **change), run, resume=True)
    assert {k: v for k, v in _snapshot(run).items() if k != rundir.LOCK_NAME} == before


def test_resume_may_change_length_resources_and_checkpointing(run, cfg):
    new = _changed(
        cfg,
        iterations=9,
        resources__num_workers=2,
        resources__learner_threads=2,
        checkpoint_every=5,
        keep_checkpoints=7,
    )
    changes = rundir.resume_changes(run, new)
    assert changes == {
        "iterations": (3, 9),
        "resources.num_workers": (1, 2),
        "resources.learner_threads": (1, 2),
        "checkpoint_every": (10, 5),
        "keep_checkpoints": (3, 7),
    }
    assert rundir.format_changes(changes).startswith("iterations 3 -> 9, resources.num_workers 1 -> 2")


def test_resume_compares_keys_added_since_the_checkpoint_with_their_defaults(run, cfg):
    """A checkpoint written before a key existed ran with that key's default."""
    path = resolve_checkpoint(run)
    state = load_checkpoint(path)
    old = json.loads(state["config"])
    old["advantages"].pop("gae_lambda")
    state["config"] = json.dumps(old)
    _forge(path, state)
    assert rundir.resume_changes(run, cfg) == {}
    with pytest.raises(rundir.RunDirError, match=r"in advantages\.gae_lambda 1.0 -> 0.5"):
        rundir.resume_changes(run, _changed(cfg, advantages__gae_lambda=0.5))


def test_resume_of_a_checkpoint_with_the_old_flat_config_compares_key_by_key(run, cfg):
    """A checkpoint written before the sections stores its config flat: the same config, read as such."""
    path = resolve_checkpoint(run)
    state = load_checkpoint(path)
    nested = json.loads(state["config"])
    flat = {k: v for k, v in nested.items() if not isinstance(v, dict) or k == "env_kwargs"}
    for section in ("alpha", "trpo", "adam", "reptile", "advantages", "policy", "resources"):
        old_names = {v: k for k, v in OLD_FLAT_KEYS.items()}
        flat.update({old_names[f"{section}.{name}"]: value for name, value in nested[section].items()})
    state["config"] = json.dumps(flat)
    _forge(path, state)
    assert rundir.resume_changes(run, cfg) == {}
    assert rundir.resume_changes(run, _changed(cfg, resources__num_workers=2)) == {"resources.num_workers": (1, 2)}
    with pytest.raises(rundir.RunDirError, match=r"in trpo\.max_kl 0.01 -> 0.02"):
        rundir.resume_changes(run, _changed(cfg, trpo__max_kl=0.02))


# -- 4. loaders skip incomplete checkpoints; failed writes say what was kept -----------------------
def test_resolve_skips_a_checkpoint_whose_json_is_not_written_yet(run, cfg):
    newest = _forge(run / "checkpoints" / "checkpoint-000002.pt", _real_state(cfg, 2))
    newest.with_suffix(".json").unlink()  # the writer is between the .pt and the .json
    assert resolve_checkpoint(run).name == "checkpoint-000001.pt"
    assert load_run(run).iteration == 1


def test_evaluate_loader_against_a_live_writer_never_fails(tmp_path, cfg):
    """A writer saves a checkpoint every 20 ms (keep 3) while the evaluate loader reads the newest."""
    out = tmp_path / "run"
    states = [_real_state(cfg, i) for i in range(1, 3)]
    ckpt.save_checkpoint(out / "checkpoints", 1, states[0])
    stop, errors, loads = threading.Event(), [], [0]

    def write() -> None:
        i = 2
        while not stop.is_set():
            ckpt.save_checkpoint(out / "checkpoints", i, {**states[1], "iteration": i}, keep=3)
            i += 1
            time.sleep(0.02)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                path = resolve_checkpoint(out)
                load_checkpoint(path)
                loads[0] += 1
            except CheckpointError as exc:
                errors.append(str(exc))
    finally:
        stop.set()
        writer.join()
    assert loads[0] > 20 and not errors, f"{len(errors)} failures in {loads[0] + len(errors)} loads: {errors[:3]}"


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk full"), (errno.EACCES, "permission denied")])
def test_a_failed_checkpoint_write_names_what_was_kept(tmp_path, cfg, monkeypatch, code, words):
    directory = tmp_path / "checkpoints"
    first = ckpt.save_checkpoint(directory, 1, _real_state(cfg, 1))
    real_write, calls = ckpt.atomic_write, []

    def failing(path: Path, data: bytes) -> None:
        calls.append(path.name)
        if path.suffix == ".json":  # the .pt went through, its .json does not
            raise OSError(code, os.strerror(code), str(path))
        real_write(path, data)

    monkeypatch.setattr(ckpt, "atomic_write", failing)
    with pytest.raises(CheckpointWriteError) as err:
        ckpt.save_checkpoint(directory, 2, _real_state(cfg, 2))
    message = str(err.value)
    assert words in message and str(first) in message and "\n" not in message
    assert calls == ["checkpoint-000002.pt", "checkpoint-000002.json"]
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoint-000001.json", "checkpoint-000001.pt"]


# -- 1. process-group signals, live writers, resume through the CLI (real runs) --------------------
def _train_args(out: Path, *extra: str, sets: dict | None = None) -> list[str]:
    sets = {**TINY, "iterations": 10_000, "checkpoint_every": 1000, **(sets or {})}
    return [
        sys.executable,
        "-m",
        "metarl.cli",
        "train",
        CONFIG,
        "--quiet",
        "--out",
        str(out),
        "--set",
        *[f"{k}={json.dumps(v).replace(' ', '')}" for k, v in dotted_items(sets).items()],  # trpo.max_kl=...
        *extra,
    ]


def _wait_rows(out: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ((out / "metrics.jsonl").exists() and len(read_metrics(out / "metrics.jsonl")) >= n):
        assert proc.poll() is None, f"metarl train exited early ({proc.returncode})"
        assert time.monotonic() < deadline, f"timed out waiting for {n} iterations"
        time.sleep(0.1)


def _group_members(pgid: int) -> list[int]:
    from conftest import proc_stats

    return [pid for pid, fields in proc_stats() if int(fields[3]) == pgid]  # session id (start_new_session)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_group_signal_checkpoints_and_resume_refuses_other_configs(tmp_path, signum):
    """``setsid metarl train`` (own local Ray), then the signal to the whole process group, as
    ``timeout``, SLURM and Kubernetes send it: exit 128+N, a checkpoint of the last iteration and
    the resume line. Ray's processes are not in the group. Then a resume with another inner_lr is
    refused in one line and rewrites nothing."""
    out = tmp_path / "run"
    ray_tmp = tempfile.mkdtemp(prefix="r19", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            _train_args(out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True, env=env
        )
        try:
            _wait_rows(out, 2, proc)
            assert _group_members(proc.pid) == [proc.pid], "Ray's processes share the driver's process group"
            os.killpg(proc.pid, signum)
            rc = proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr.seek(0)
        err = stderr.read().decode(errors="replace")
    assert rc == 128 + signum, err
    last = read_metrics(out / "metrics.jsonl")[-1]["iteration"]
    assert f"stopped by {signal.Signals(signum).name} after iteration {last}; checkpoint" in err, err
    assert "resume with: " in err and "--resume" in err, err
    assert resolve_checkpoint(out).name == f"checkpoint-{last:06d}.pt"

    before = _snapshot(out)
    refused = subprocess.run(
        _train_args(out, "--resume", sets={"inner_lr": 0.05}),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and " -> 0.05; only iterations" in lines[0], refused.stderr
    assert _snapshot(out) == before, "a refused resume rewrote files in the run directory"
    import shutil

    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_two_live_writers_and_an_allowed_resume(tmp_path):
    """A second ``metarl train --resume`` into a live run is refused in one line; after SIGTERM,
    a resume that changes ``iterations`` prints the diff and finishes with every iteration once."""
    import ray
    from conftest import short_ray_tmpdir

    with short_ray_tmpdir("r19w"):
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        try:
            address = ray.get_runtime_context().gcs_address
            out = tmp_path / "run"
            with tempfile.TemporaryFile() as stderr:
                first = subprocess.Popen(
                    _train_args(out, "--address", address, sets={"checkpoint_every": 1}),
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
                try:
                    _wait_rows(out, 1, first)
                    second = subprocess.run(
                        _train_args(out, "--address", address, "--resume", sets={"checkpoint_every": 1}),
                        cwd=REPO,
                        capture_output=True,
                        text=True,
                        timeout=120,
                    )
                    lines = second.stderr.strip().splitlines()
                    assert second.returncode == 2 and len(lines) == 1 and "another metarl process" in lines[0], (
                        second.stderr
                    )
                    assert first.poll() is None, "the first writer was disturbed"
                    first.send_signal(signal.SIGTERM)
                    assert first.wait(120) == 143
                finally:
                    if first.poll() is None:
                        first.kill()
                        first.wait()
            last = read_metrics(out / "metrics.jsonl")[-1]["iteration"]
            done = subprocess.run(
                _train_args(
                    out, "--address", address, "--resume", sets={"checkpoint_every": 1, "iterations": last + 2}
                ),
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr
            assert "resuming with changed iterations 10000 -> " in done.stderr, done.stderr
            assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, last + 3))
        finally:
            ray.shutdown()


# -- 9. soak: random kills of the driver, a worker or the learner; the result is unchanged ----------
def _children(pid: int) -> list[int]:
    try:
        return [
            int(c)
            for t in os.listdir(f"/proc/{pid}/task")
            for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()
        ]
    except OSError:
        return []


def _actor_pids(raylet_pid: int, title: str) -> list[int]:
    """Processes of *our* cluster (children of its raylet) whose title starts with ``ray::TITLE``."""
    found = []
    for pid in _children(raylet_pid):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(f"ray::{title}".encode()):
                found.append(pid)
        except OSError:
            pass
    return found


def _same_results(a: Path, b: Path) -> None:
    rows_a, rows_b = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    assert [r["iteration"] for r in rows_a] == [r["iteration"] for r in rows_b]
    keys = [k for k in rows_a[0] if k.startswith(("return_", "outer/", "alpha/", "episodes_", "env_steps"))]
    for ra, rb in zip(rows_a, rows_b):
        for k in keys:
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), (ra["iteration"], k)
    sa, sb = load_checkpoint(resolve_checkpoint(a)), load_checkpoint(resolve_checkpoint(b))
    assert sa["iteration"] == sb["iteration"] == rows_a[-1]["iteration"]
    for group in ("theta", "alpha"):
        assert sa[group].keys() == sb[group].keys()
        for name in sa[group]:
            assert torch.equal(sa[group][name], sb[group][name]), (group, name)


def _disturb_after_progress(
    proc: subprocess.Popen, out: Path, raylet: int, rng, log: list[str], last: int, victim: str
) -> None:
    """Wait until the run logs a new iteration (one short of the end at most), then signal ``victim``."""

    def rows() -> int:
        return len(read_metrics(out / "metrics.jsonl")) if (out / "metrics.jsonl").exists() else 0

    target, deadline = min(rows() + 1, last - 1), time.monotonic() + 300
    while proc.poll() is None and rows() < target:
        assert time.monotonic() < deadline, "no progress in 300 s"
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.0))
    if proc.poll() is not None:
        return
    title = {"worker": "RolloutWorker", "learner": "Learner"}.get(victim)
    pids, deadline = ([proc.pid] if title is None else []), time.monotonic() + 10
    while not pids and proc.poll() is None and time.monotonic() < deadline:
        pids = _actor_pids(raylet, title)
        time.sleep(0.05)
    if proc.poll() is not None:
        return
    assert pids, f"no ray::{title} process of this cluster found"
    os.kill(pids[0], signal.SIGTERM if victim == "driver-TERM" else signal.SIGKILL)
    log.append(f"{victim}@{rows()}")
    if victim.startswith("worker"):
        time.sleep(1.0)  # let Ray restart it before the next disturbance is chosen


@pytest.mark.slow
def test_soak_random_kills_then_auto_resume_give_the_undisturbed_result(tmp_path):
    """``METARL_SOAK_KILLS`` (default 6) disturbances, each at a random moment: SIGKILL or SIGTERM
    of the driver, SIGKILL of a rollout worker or of the learner. After each, the run is resumed
    the way a job runner would (``--resume`` until exit 0). The metrics of every iteration and the
    final θ and α equal those of an undisturbed run with the same config."""
    import random

    import ray
    from conftest import short_ray_tmpdir
    from ray._private import ray_constants

    rng = random.Random(int(os.environ.get("METARL_SOAK_SEED", "19")))
    kills = int(os.environ.get("METARL_SOAK_KILLS", "6"))
    sets = {"iterations": 4 * kills + 4, "checkpoint_every": 1, "seed": 3}
    plan = [("driver-KILL", "driver-TERM", "worker", "learner")[i % 4] for i in range(kills)]  # each kind, shuffled
    rng.shuffle(plan)
    with short_ray_tmpdir("r19s"):
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        try:
            address = ray.get_runtime_context().gcs_address
            node = ray._private.worker._global_node
            raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
            straight = subprocess.run(
                _train_args(tmp_path / "straight", "--address", address, sets=sets),
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert straight.returncode == 0, straight.stderr

            out, done, log = tmp_path / "soak", False, []
            for attempt in range(kills + 20):
                extra = ["--resume"] if out.exists() else []
                with tempfile.TemporaryFile() as stderr:
                    proc = subprocess.Popen(
                        _train_args(out, "--address", address, *extra, sets=sets),
                        cwd=REPO,
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                    )
                    try:
                        while proc.poll() is None and len(log) < kills:  # a worker's death does not end the run
                            _disturb_after_progress(proc, out, raylet, rng, log, sets["iterations"], plan[len(log)])
                            if log and log[-1].startswith(("driver", "learner")):
                                break  # this attempt is ending: let it (a 2nd SIGTERM would abort its exit)
                        rc = proc.wait(600)
                    finally:
                        if proc.poll() is None:
                            proc.kill()
                            proc.wait()
                    stderr.seek(0)
                    err = stderr.read().decode(errors="replace")
                # Not -SIGTERM: that was seen once, a SIGTERM sent during the last iteration that reached the
                # process after it had restored the default handler, on its way out; the program now keeps
                # its handlers to the end (test_reliability.py::test_a_sigterm_in_start_up_or_at_exit_is_taken_too).
                allowed = (0, 1, 143, -signal.SIGKILL)
                assert rc in allowed, f"attempt {attempt} ({log[-1:]}): exit {rc}: {err}"
                if rc == 0:
                    done = True
                    break
            assert done and len(log) == kills, log
            _same_results(tmp_path / "straight", out)
            print("disturbances:", ", ".join(log))
        finally:
            ray.shutdown()
