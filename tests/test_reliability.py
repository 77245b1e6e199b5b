"""Reliability and safety: kills, signals, numerical faults, untrusted checkpoints, determinism.

Ray-backed tests share one local cluster (2 CPUs, private ``RAY_TMPDIR``) started by this
module; ``metarl train`` subprocesses join it by its address, so each costs seconds, not a Ray
start. Every process a test starts is ended by its PID (with its descendants); nothing here
runs ``ray stop`` or kills by name.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from conftest import proc_stats, short_ray_tmpdir  # tests/ is on sys.path (pytest rootdir-less import)

import metarl.cli as cli
import metarl.runtime.learner as learner_mod
from metarl.config import Config
from metarl.core import meta_update
from metarl.core.policies import PolicySpec
from metarl.runtime.checkpoint import (
    CheckpointError,
    NonFiniteStateError,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)
from metarl.runtime.learner import Learner
from metarl.runtime.metrics import read_metrics
from metarl.runtime.trainer import Trainer, TrainingDivergedError

REPO = Path(__file__).resolve().parents[1]
TINY = dict(
    meta_batch_size=4,
    episodes_per_task=4,
    hidden_sizes=[8],
    learner_cpus=0.5,
    worker_cpus=0.5,
    learner_threads=1,
    num_workers=1,
)


# -- processes: started here, ended here by PID ------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, fields in proc_stats():
        children.setdefault(int(fields[1]), []).append(pid)
    return children


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def _tree(pid: int) -> dict[int, str]:
    """``pid`` and its descendants, each with its start time (to never signal a reused PID)."""
    children, found, todo = _children_map(), {}, [pid]
    while todo:
        p = todo.pop()
        start = _start_time(p)
        if start is not None:
            found[p] = start
            todo += children.get(p, [])
    return found


def _end_tree(tree: dict[int, str], timeout: float = 10.0) -> None:
    """Wait for the processes of ``tree`` to exit; SIGKILL those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_start_time(p) == s for p, s in tree.items()):
        time.sleep(0.2)
    for p, s in tree.items():
        if _start_time(p) == s:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


class _Run:
    """A ``metarl train`` subprocess; ``kill`` signals it by PID and reaps its process tree."""

    def __init__(self, out: Path, address: str, *extra: str, sets: dict | None = None):
        sets = {**TINY, "iterations": 10_000, "checkpoint_every": 1, **(sets or {})}
        args = [
            sys.executable,
            "-m",
            "metarl.cli",
            "train",
            "configs/navigation2d-metasgd.yaml",
            "--quiet",
            "--out",
            str(out),
            "--address",
            address,
            "--set",
            *[f"{k}={json.dumps(v).replace(' ', '')}" for k, v in sets.items()],
            *extra,
        ]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=self.stderr)
        self.tree: dict[int, str] = {}

    def send(self, signum: int) -> None:
        self.tree = _tree(self.proc.pid)
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 120) -> tuple[int, str]:
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.send(signal.SIGKILL)
                self.proc.wait()
            _end_tree(self.tree or {self.proc.pid: ""}, timeout=5)
        self.stderr.seek(0)
        return rc, self.stderr.read().decode(errors="replace")


def _wait_for(predicate, timeout: float, what: str, run: _Run | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if run is not None and run.proc.poll() is not None:
            rc, err = run.wait()
            raise AssertionError(f"metarl train exited ({rc}) while waiting for {what}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def ray_address():
    """A private local Ray (2 CPUs) for this module; its processes end with it."""
    with short_ray_tmpdir("mrr"):
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


def _cfg(**overrides) -> Config:
    return Config.from_dict({**TINY, **overrides})


def _state(iteration: int, value: float = 1.0, size: int = 8) -> dict:
    return {
        "theta": {"w": torch.full((size,), float(value))},
        "alpha": {"w": torch.full((size,), 0.1)},
        "iteration": iteration,
        "config": "{}",
    }


# -- checkpoints: retention, torn writes, SIGKILL ------------------------------------------------
def test_retention_keeps_last_n_and_removes_stale_temp_files(tmp_path):
    (tmp_path / ".checkpoint-000001.pt.tmp-999999").write_bytes(b"half a file")  # a killed writer's leftover
    for i in range(1, 8):
        save_checkpoint(tmp_path, i, _state(i), keep=3)
    assert [p.name for p in list_checkpoints(tmp_path)] == [f"checkpoint-00000{i}.pt" for i in (5, 6, 7)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"checkpoint-00000{i}.{ext}" for i in (5, 6, 7) for ext in ("pt", "json")
    )


def test_load_latest_falls_back_and_quarantines(tmp_path, caplog):
    for i in (1, 2, 3):
        save_checkpoint(tmp_path, i, _state(i), keep=5)
    (tmp_path / "checkpoint-000003.pt").write_bytes(b"torn")  # checksum no longer matches
    save_checkpoint(tmp_path, 4, _state(4), keep=5)
    (tmp_path / "checkpoint-000004.json").unlink()  # killed between the .pt and its .json
    with caplog.at_level(logging.WARNING, logger="metarl.runtime.checkpoint"):
        path, state = load_latest(tmp_path, quarantine=True)
    assert path.name == "checkpoint-000002.pt" and state["iteration"] == 2
    assert "was truncated or modified after it was written" in caplog.text and "incomplete write" in caplog.text
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-000001.pt", "checkpoint-000002.pt"]
    assert (tmp_path / "checkpoint-000003.pt.bad").exists()
    # Complete checkpoints exist but none verifies: an error, never a silent fresh start.
    for p in list_checkpoints(tmp_path):
        p.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="none of its 2 checkpoints verifies"):
        load_latest(tmp_path)
    assert load_latest(tmp_path / "nothing-here") is None


WRITER = """
import os, sys, torch
from metarl.runtime.checkpoint import save_checkpoint
torch.set_num_threads(1)  # no OpenMP pool in this process: its forked children stay safe
directory, w = sys.argv[1], torch.zeros(256, 1024)  # 1 MiB: writes take long enough to be hit mid-way
for line in sys.stdin:  # START: fork a writer process that checkpoints START, START+1, ...
    pid = os.fork()
    if pid == 0:
        try:
            for i in range(int(line), 10**9):
                w.fill_(i)
                save_checkpoint(directory, i, {"theta": {"w": w}, "alpha": {"w": w[:1]}, "iteration": i}, keep=3)
        finally:
            os._exit(1)
    print(pid, flush=True)
    os.waitpid(pid, 0)  # until the test SIGKILLs it
    print("reaped", flush=True)
"""


def test_sigkill_while_writing_checkpoints_never_leaves_a_bad_latest(tmp_path):
    """10 writer processes, each SIGKILLed by its PID at a random moment: the newest verifying
    checkpoint is always complete and consistent, and the next writer (a "resume") carries on.

    The writers are forked by one helper process so that a trial costs a fork, not a Python start.
    """
    rng = random.Random(0)
    start, torn, writer = 1, 0, (0, None)
    harness = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        cwd=REPO,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        for _trial in range(10):
            harness.stdin.write(f"{start}\n")
            harness.stdin.flush()
            pid = int(harness.stdout.readline())
            writer = (pid, _start_time(pid))
            _wait_for(
                lambda: (found := load_latest(tmp_path)) is not None and found[1]["iteration"] >= start,  # noqa: B023 (called in this iteration)
                60,
                "a first checkpoint",
            )
            time.sleep(rng.uniform(0.0, 0.4))
            os.kill(pid, signal.SIGKILL)
            assert harness.stdout.readline().strip() == "reaped"
            newest = list_checkpoints(tmp_path)[-1]
            torn += not newest.with_suffix(".json").exists() or any(p.name.startswith(".") for p in tmp_path.iterdir())
            path, state = load_latest(tmp_path)
            i = int(path.stem.split("-")[1])
            assert state["iteration"] == i and torch.equal(state["theta"]["w"], torch.full((256, 1024), float(i)))
            assert i >= start, "every trial made progress"
            start = i + 1
    finally:
        if writer[1] is not None and _start_time(writer[0]) == writer[1]:
            os.kill(writer[0], signal.SIGKILL)  # a failed trial's writer (the harness then reaps it)
        harness.stdin.close()
        try:
            harness.wait(30)
        except subprocess.TimeoutExpired:
            harness.kill()
            harness.wait()
    print(f"{torn} of 10 kills left a partial newest write behind")


def test_non_finite_state_is_never_written(tmp_path):
    save_checkpoint(tmp_path, 1, _state(1))
    for bad in (float("nan"), float("inf")):
        state = _state(2)
        state["alpha"]["w"][3] = bad
        with pytest.raises(NonFiniteStateError, match=r"checkpoint 2: non-finite values in alpha\.w"):
            save_checkpoint(tmp_path, 2, state)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-000001.pt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _forge(path: Path, data: bytes) -> None:
    """Write ``data`` as a checkpoint with a matching checksum (the checksum is no signature)."""
    path.write_bytes(data)
    meta = {"iteration": 9, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    path.with_suffix(".json").write_text(json.dumps(meta))


class _Payload:
    def __init__(self, call):
        self.call = call

    def __reduce__(self):
        return self.call


def _bombs(marker: Path) -> dict[str, bytes]:
    calls = {
        "os.system": (os.system, (f"touch {marker}",)),
        "builtins.exec": (exec, (f"open({str(marker)!r}, 'w').write('pwned')",)),
        "subprocess.call": (subprocess.call, (["touch", str(marker)],)),
    }
    out = {}
    for name, call in calls.items():
        buffer = io.BytesIO()
        torch.save({"theta": {"w": torch.zeros(2)}, "alpha": _Payload(call), "iteration": 9}, buffer)
        out[f"torch-zip/{name}"] = buffer.getvalue()  # torch's zip format with the payload in data.pkl
        out[f"raw-pickle/{name}"] = pickle.dumps({"theta": _Payload(call)}, protocol=2)  # legacy format
    return out


@pytest.mark.parametrize("kind", sorted(_bombs(Path("/nonexistent"))))
def test_pickle_bomb_checkpoint_is_refused_without_running_its_payload(tmp_path, kind):
    marker = tmp_path / "PWNED"
    run = tmp_path / "run" / "checkpoints"
    save_checkpoint(run, 8, _state(8))
    bomb = run / "checkpoint-000009.pt"
    _forge(bomb, _bombs(marker)[kind])
    with pytest.raises(CheckpointError, match="refused to load, not plain tensors and data"):
        load_checkpoint(bomb)
    path, state = load_latest(run)  # resume falls back to the good one
    assert path.name == "checkpoint-000008.pt"
    assert not marker.exists(), "the payload ran"


def test_pickle_bomb_via_cli_is_one_line_status_2(tmp_path):
    marker = tmp_path / "PWNED"
    _forge(tmp_path / "checkpoint-000001.pt", _bombs(marker)["torch-zip/os.system"])
    proc = subprocess.run(
        [sys.executable, "-m", "metarl.cli", "evaluate", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "refused to load" in lines[0], proc.stderr
    assert not marker.exists()


def test_forged_checkpoints_with_valid_checksums_are_refused(tmp_path):
    cases = {
        "not a dict": [1, 2, 3],
        "theta not tensors": {"theta": {"w": [1.0]}, "alpha": {"w": torch.zeros(1)}},
        "nan theta": {"theta": {"w": torch.tensor([float("nan")])}, "alpha": {"w": torch.zeros(1)}},
        "bad iteration": {"theta": {"w": torch.zeros(1)}, "alpha": {"w": torch.zeros(1)}, "iteration": -1},
    }
    for i, (_name, obj) in enumerate(cases.items()):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        path = tmp_path / f"checkpoint-{i:06d}.pt"
        _forge(path, buffer.getvalue())
        with pytest.raises(CheckpointError, match="not a metarl checkpoint|non-finite"):
            load_checkpoint(path)


# -- numerical faults ----------------------------------------------------------------------------
class _NaNGrad(torch.autograd.Function):
    """Identity forward; NaN gradient backward (an injected numerical fault)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _rollouts(cfg: Config, obs_dim=2, act_dim=2, horizon=5, seed=0):
    rng = np.random.default_rng(seed)
    shape = (cfg.meta_batch_size, cfg.episodes_per_task, horizon)
    return {
        "obs": rng.standard_normal((*shape, obs_dim), dtype=np.float32),
        "actions": rng.standard_normal((*shape, act_dim), dtype=np.float32),
        "rewards": rng.standard_normal(shape, dtype=np.float32),
        "mask": np.ones(shape, dtype=np.float32),
        "task_index": np.arange(cfg.meta_batch_size),
    }


@pytest.mark.parametrize("optimizer", ["trpo", "adam"])
def test_injected_nan_gradient_is_skipped_and_reported(monkeypatch, optimizer):
    threads = torch.get_num_threads()
    cfg = _cfg(meta_optimizer=optimizer)
    learner = Learner(cfg, PolicySpec(2, 2, (8,)))
    torch.set_num_threads(threads)
    before = learner.state_dict()
    loss = meta_update.MetaObjective.loss
    monkeypatch.setattr(meta_update.MetaObjective, "loss", lambda self, dist: _NaNGrad.apply(loss(self, dist)))
    learner.adapt([_rollouts(cfg)])
    metrics = learner.meta_update([_rollouts(cfg, seed=1)])
    assert metrics["outer/skip_reason"] == "non-finite gradient"
    assert metrics["outer/non_finite"] == 1.0 and metrics["outer/accepted"] == 0.0
    after = learner.state_dict()
    for group in ("theta", "alpha"):
        assert all(torch.equal(before[group][k], after[group][k]) for k in before[group]), "θ/α must not change"
    monkeypatch.undo()  # a healthy update afterwards is accepted (or fails its line search only)
    learner.adapt([_rollouts(cfg)])
    metrics = learner.meta_update([_rollouts(cfg, seed=1)])
    assert metrics["outer/non_finite"] == 0.0


def test_nan_in_rollouts_skips_adaptation_and_update():
    cfg = _cfg()
    learner = Learner(cfg, PolicySpec(2, 2, (8,)))
    bad = _rollouts(cfg)
    bad["rewards"][1, 2, 3] = np.nan
    adapted = learner.adapt([bad])
    assert all(np.isfinite(v).all() for v in adapted.values()), "post phase gets finite parameters (θ itself)"
    assert np.array_equal(adapted["layer0.weight"][0], learner.get_theta()["layer0.weight"])
    metrics = learner.meta_update([_rollouts(cfg, seed=1)])
    assert metrics["outer/skip_reason"] == "non-finite pre-adaptation rollouts (rewards, advantages)"
    assert metrics["outer/non_finite"] == 1.0


class _NaNGradLearner(Learner):
    """The real learner with every meta-gradient poisoned (runs as the trainer's Ray actor)."""

    def meta_update(self, post_parts):
        loss = meta_update.MetaObjective.loss
        meta_update.MetaObjective.loss = lambda obj, dist: _NaNGrad.apply(loss(obj, dist))
        try:
            return super().meta_update(post_parts)
        finally:
            meta_update.MetaObjective.loss = loss


def test_consecutive_nan_updates_stop_training_with_a_diagnosis(ray_address, tmp_path, monkeypatch, caplog):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actor process cannot import tests/
    monkeypatch.setattr(learner_mod, "Learner", _NaNGradLearner)  # the learner actor is built from it
    trainer = Trainer(_cfg(iterations=10, checkpoint_every=1, max_consecutive_skips=3), tmp_path)
    try:
        assert trainer.train(should_stop=lambda: True) == [] and trainer.stopped  # stop before any iteration:
        assert list_checkpoints(tmp_path / "checkpoints") == []  # nothing trained, nothing written
        with (
            caplog.at_level(logging.WARNING, logger="metarl.runtime.supervision"),
            pytest.raises(TrainingDivergedError) as err,
        ):
            trainer.train()
    finally:
        trainer.close()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    message = str(err.value)
    assert "iterations 1-3 were all skipped for non-finite values (last: non-finite gradient" in message
    assert "\n" not in message and "max_consecutive_skips=3" in message
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert all(r["outer/skip_reason"] == "non-finite gradient" for r in rows)
    assert [r["outer/consecutive_non_finite"] for r in rows] == [1, 2, 3]
    assert "iteration 2: meta-update skipped: non-finite gradient (2 in a row; training stops at 3)" in caplog.text
    # the checkpoints written before the stop hold the untouched, finite initial θ
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == [
        "checkpoint-000001.pt",
        "checkpoint-000002.pt",
    ]
    theta = load_checkpoint(tmp_path / "checkpoints" / "checkpoint-000002.pt")["theta"]
    assert all(torch.isfinite(v).all() for v in theta.values())


def test_cli_reports_divergence_in_one_line_with_status_1(monkeypatch, capsys):
    def diverge(args):
        raise TrainingDivergedError("training diverged: the meta-updates of iterations 1-5 were all skipped")

    monkeypatch.setattr(cli, "_train", diverge)
    assert cli.main(["train", "configs/navigation2d-maml.yaml"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "metarl: error: training diverged: the meta-updates of iterations 1-5 were all skipped"
    ]


# -- determinism -----------------------------------------------------------------------------------
DETERMINISTIC_KEYS = (
    "return_pre",
    "return_post",
    "env_steps",
    "outer/loss_before",
    "outer/loss_after",
    "outer/kl",
    "outer/accepted",
    "alpha/mean",
    "alpha/min",
    "alpha/max",
)


def _seeded_run(out: Path, **overrides):
    trainer = Trainer(_cfg(**{"iterations": 3, "checkpoint_every": 3, "seed": 7, **overrides}), out)
    try:
        history = trainer.train()
    finally:
        trainer.close()
    theta = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])["theta"]
    return [[m[k] for k in DETERMINISTIC_KEYS] for m in history], theta


@pytest.fixture(scope="module")
def seeded_run_a(ray_address, tmp_path_factory):
    return _seeded_run(tmp_path_factory.mktemp("seeded") / "a")


def test_two_seeded_runs_match(seeded_run_a, tmp_path):
    """Same config, seed and worker count: the same metrics and θ (to float tolerance)."""
    metrics_a, theta_a = seeded_run_a
    metrics_b, theta_b = _seeded_run(tmp_path / "b")
    np.testing.assert_allclose(metrics_a, metrics_b, rtol=1e-6, atol=1e-9)
    for k in theta_a:
        torch.testing.assert_close(theta_a[k], theta_b[k], rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_worker_count_does_not_change_results(seeded_run_a, tmp_path):
    """Per-task noise seeds: a run on 2 rollout workers matches the run on 1."""
    metrics_a, theta_a = seeded_run_a
    metrics_c, theta_c = _seeded_run(tmp_path / "c", num_workers=2)
    np.testing.assert_allclose(metrics_a, metrics_c, rtol=1e-5, atol=1e-7)
    for k in theta_a:
        torch.testing.assert_close(theta_a[k], theta_c[k], rtol=1e-5, atol=1e-7)


# -- signals and kills on a real `metarl train` ----------------------------------------------------
def test_stop_signals_set_a_flag_then_abort_and_restore_handlers():
    from metarl.runtime.signals import StopSignals

    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        assert not stop() and stop.exit_status == 0
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # handlers run between bytecodes of the main thread
        assert stop() and stop.name == "SIGTERM" and stop.exit_status == 143
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second signal aborts at once
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is before
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stop.exit_status == 130


_SIGNAL_AT = """
import atexit, os, signal, sys, time
from metarl.config import Config
when = sys.argv.pop(1)
if when == "start-up":  # while the config is read, before torch, Ray or the run directory
    real = Config.load.__func__
    Config.load = classmethod(lambda cls, *a, **k: (os.kill(os.getpid(), signal.SIGTERM), real(cls, *a, **k))[1])
else:  # as the program ends, after the last checkpoint and the trainer's close
    atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.5)))
from metarl.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("when", ["start-up", "exit"])
def test_a_sigterm_in_start_up_or_at_exit_is_taken_too(ray_address, tmp_path, when):
    """The `metarl` program takes SIGTERM from its start to its end: during start-up it stops before
    anything is written (143, one line); at exit, after a finished run, it leaves the run's status 0.
    (Before, both windows met the default action: the process ended by the signal, status −15.)"""
    out = tmp_path / "run"
    sets = {**TINY, "iterations": 2}
    argv = [sys.executable, "-c", _SIGNAL_AT, when, "train", "configs/navigation2d-maml.yaml", "--quiet"]
    argv += ["--out", str(out), "--address", ray_address, "--set"]
    argv += [f"{k}={json.dumps(v).replace(' ', '')}" for k, v in sets.items()]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    if when == "start-up":
        assert proc.returncode == 143, proc.stderr[-2000:]
        assert "stopped by SIGTERM during start-up; nothing was started or written" in proc.stderr
        assert not out.exists()
    else:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "metarl: done" in proc.stderr and len(read_metrics(out / "metrics.jsonl")) == 2


def _latest_iteration(ckpt: Path) -> int:
    found = load_latest(ckpt)
    return -1 if found is None else int(found[1]["iteration"])


@pytest.mark.slow
def test_sigint_to_the_process_group_exits_130_with_a_checkpoint(tmp_path):
    """Ctrl-C as a terminal sends it: SIGINT to the whole process group, embedded Ray included."""
    out = tmp_path / "run"
    ray_tmp = Path(tempfile.mkdtemp(prefix="mrs", dir="/tmp"))  # its own Ray: own sockets and session files
    sets = {**TINY, "iterations": 10_000, "checkpoint_every": 1000}
    args = [
        sys.executable,
        "-m",
        "metarl.cli",
        "train",
        "configs/navigation2d-metasgd.yaml",
        "--quiet",
        "--out",
        str(out),
        "--set",
        *[f"{k}={json.dumps(v).replace(' ', '')}" for k, v in sets.items()],
    ]
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            env={**os.environ, "RAY_ADDRESS": "local", "RAY_TMPDIR": str(ray_tmp)},
        )
        tree: dict[int, str] = {}
        try:
            _wait_for(
                lambda: (
                    (out / "metrics.jsonl").exists()
                    and len(read_metrics(out / "metrics.jsonl")) >= 2
                    or proc.poll() is not None
                ),
                300,
                "two iterations",
            )
            tree = _tree(proc.pid)
            os.killpg(proc.pid, signal.SIGINT)
            rc = proc.wait(120)
        finally:
            if proc.poll() is None:
                tree = _tree(proc.pid)
                proc.kill()
                proc.wait()
            _end_tree(tree, timeout=10)
        stderr.seek(0)
        err = stderr.read().decode(errors="replace")
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert rc == 130, err
    last = read_metrics(out / "metrics.jsonl")[-1]["iteration"]
    assert _latest_iteration(out / "checkpoints") == last, err


def _quiet_latest_iteration(ckpt: Path) -> int:
    """``_latest_iteration`` without the "skipping checkpoint" warning of every poll (a torn
    newest write of the previous trial stays on disk until the resumed run quarantines it)."""
    logger = logging.getLogger("metarl.runtime.checkpoint")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _latest_iteration(ckpt)
    finally:
        logger.setLevel(level)


@pytest.mark.parametrize(
    "kills", [pytest.param(1, id="1-kill"), pytest.param(10, id="10-kills", marks=pytest.mark.slow)]
)
def test_sigkill_at_random_moments_then_sigterm_then_resume(ray_address, tmp_path, kills):
    """A real `metarl train` (tiny config, checkpoint every iteration, ~0.1-0.5 s each), ``kills``
    times SIGKILLed by its PID at a random moment after it wrote a new checkpoint (mid-iteration,
    mid-checkpoint or mid-metrics write), each time resumed with ``--resume``: the newest verifying
    checkpoint is always sound and newer than the last. Then a SIGTERM (with periodic checkpoints
    off): the iteration finishes, the stop writes its checkpoint, exit status 143 and the resume
    command on stderr. Finally the run resumes to its end: status 0, every iteration in
    metrics.jsonl exactly once. The default suite kills once; ``-m slow`` kills 10 times."""
    rng = random.Random(kills)
    out, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoints"
    done = -1
    for trial in range(kills):
        run = _Run(out, ray_address, *(["--resume"] if trial else []))
        try:
            _wait_for(
                lambda: _quiet_latest_iteration(ckpt) > done,  # noqa: B023 (called in this iteration)
                180,
                f"trial {trial}'s first new checkpoint",
                run,
            )
            time.sleep(rng.uniform(0.0, 1.5))
        finally:
            run.send(signal.SIGKILL)
            rc, err = run.wait()
        assert rc == -signal.SIGKILL, f"trial {trial}: metarl train ended by itself ({rc}) before the kill: {err}"
        path, state = load_latest(ckpt)
        assert state["iteration"] > done and path.name == f"checkpoint-{state['iteration']:06d}.pt", (trial, path)
        assert all(torch.isfinite(v).all() for v in state["theta"].values())
        done = state["iteration"]

    # SIGTERM: only the stop writes a checkpoint (checkpoint_every 1000)
    run = _Run(out, ray_address, "--resume", sets={"checkpoint_every": 1000})
    try:
        _wait_for(
            lambda: (
                (out / "metrics.jsonl").exists() and read_metrics(out / "metrics.jsonl")[-1]["iteration"] > done + 1
            ),
            180,
            "two iterations after the resume",
            run,
        )
        run.send(signal.SIGTERM)
        rc, err = run.wait(120)
    finally:
        if run.proc.poll() is None:
            run.send(signal.SIGKILL)
            run.wait()
    assert rc == 143, err
    rows = read_metrics(out / "metrics.jsonl")
    last = rows[-1]["iteration"]
    assert [r["iteration"] for r in rows] == list(range(1, last + 1))
    assert f"stopped by SIGTERM after iteration {last}; checkpoint" in err and "--resume" in err, err
    assert "Traceback" not in err, err
    path, state = load_latest(ckpt)
    assert state["iteration"] == last and path.name == f"checkpoint-{last:06d}.pt"

    rc, err = _Run(out, ray_address, "--resume", sets={"iterations": last + 2}).wait(180)
    assert rc == 0, f"the final resume from checkpoint {last} failed ({rc}): {err}"
    assert "metarl: done" in err, err
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, last + 3))
    assert load_latest(ckpt)[1]["iteration"] == last + 2
    print(
        f"{kills} kill(s), resumed each time (last at checkpoint {done}); SIGTERM at {last}; "
        f"{len(list(ckpt.glob('*.bad')))} torn newest checkpoint(s) quarantined"
    )
