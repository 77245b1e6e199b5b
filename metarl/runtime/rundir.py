"""A run directory's rules: one name, one writer at a time, no mixing of two runs, resumes that match.

A run directory holds everything about one run: ``config.yaml`` (the resolved config),
``metrics.jsonl`` / ``metrics.csv`` / ``tensorboard/``, ``checkpoints/`` and the ``.lock``;
evaluation and plots read only that directory.

* Without ``--out``, :func:`default_run_dir` names it (``metarl train``, the Python API and
  ``metarl sweep`` all ask it).
* ``--out`` must be a directory metarl can write: an existing file, a read-only mount or a
  missing permission is one line (:class:`RunDirError`, exit status 2) before anything starts.
* A writer holds an exclusive ``flock`` on ``OUT/.lock`` for its lifetime; a second writer
  (another ``metarl train``, a Tune trial, an API user) is refused. The kernel drops the lock
  when the process dies, however it dies, so a killed run never leaves a stale lock. The lock
  file is the only thing a refused command may create (it never rewrites anything); an accepted
  writer names itself in it.
* A fresh run (no ``--resume``) refuses a directory that already holds a run's metrics or
  checkpoints, so ``metrics.jsonl`` never reads 1, 2, 3, 1, 2, 3.
* A resume compares the config with the one in the newest verifying checkpoint: only
  :data:`RESUMABLE_KEYS` (length, resources, checkpointing) may differ, and they are reported;
  any other difference refuses the resume before ``config.yaml`` or anything else is written.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarl.config import Config, ConfigError, _show, dotted_items, key_defaults, place_keys
from metarl.runtime.checkpoint import CheckpointError, config_dict, list_checkpoints, load_latest

LOCK_NAME = ".lock"
RESUMABLE_KEYS = (
    "iterations",
    "resources.num_workers",
    "resources.worker_cpus",
    "resources.learner_cpus",
    "resources.learner_threads",
    "resources.device",
    "checkpoint_every",
    "keep_checkpoints",
    "max_consecutive_skips",
    "learner_timeout_factor",
    "learner_timeout_min",
    "worker_timeout_factor",
    "worker_timeout_min",
)


class RunDirError(ConfigError):
    """The run directory cannot be used as asked; one line, exit status 2."""

    MAX_CHARS = 1000


def default_run_dir(name: str, unique: bool = False) -> Path:
    """The one rule for a run directory nobody named: ``runs/<name>-<YYYYmmdd-HHMMSS>``.

    ``unique`` appends ``-<6 hex>``, for callers that may start two runs of the same name within
    a second in one process (the Python API).
    """
    suffix = f"-{uuid.uuid4().hex[:6]}" if unique else ""
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"


def resume_command(
    out: Path, config_path: str | Path | None = None, overrides: Sequence[str] = (), address: str | None = None
) -> str:
    """The ``metarl train`` command that continues the run in ``out``.

    Without the original config file, the run directory's resolved config resumes the same run.
    """
    words = ["metarl", "train", str(config_path or out / "config.yaml")]
    if config_path and overrides:
        words += ["--set", *overrides]
    words += ["--out", str(out)]
    if address:
        words += ["--address", address]
    return shlex.join([*words, "--resume"])


def prepare(out: Path, resume: bool = False) -> None:
    """Create ``out`` (and parents) or fail in one line: a file in the way, no permission, read-only;
    for a ``resume``, ``out`` must already be a directory."""
    if resume and not out.is_dir():
        raise RunDirError(f"--resume: {out} does not exist or is not a directory; nothing to resume")
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out}: is an existing file, not a directory; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"--out {out}: cannot create the run directory ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunDirError(f"--out {out}: the run directory is not writable (permission denied or a read-only mount)")


class RunLock:
    """An exclusive ``flock`` on ``OUT/.lock``, held until :meth:`release` or the process ends."""

    def __init__(self, out: Path):
        path = out / LOCK_NAME
        try:
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(f"--out {out}: cannot create its lock file ({exc.strerror or exc})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            self._fd = None
            raise RunDirError(
                f"--out {out}: another metarl process ({holder}) is writing this run directory; "
                "wait for it to end or stop it, or choose another --out"
            ) from None

    def announce(self) -> None:
        """Name this process in the lock file (once the run is accepted: a refused one rewrites nothing)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def claim(out: Path, cfg: Config, resume: bool, managed: bool = False) -> tuple[RunLock, dict[str, tuple[Any, Any]]]:
    """Lock ``out``, then check it may be written as asked; returns the lock and :func:`resume_changes`.

    ``managed``: ``out`` belongs to a caller that restores state itself (a Ray Tune trial
    restarted in its own directory), so a fresh start there is not refused.
    """
    lock = RunLock(out)
    try:
        changes = resume_changes(out, cfg) if resume else {}
        if not resume and not managed:
            check_fresh(out)
    except BaseException:
        lock.release()
        raise
    lock.announce()
    return lock, changes


def check_fresh(out: Path) -> None:
    """A run without ``--resume`` must not write into another run's metrics or checkpoints."""
    if list_checkpoints(out / "checkpoints"):
        raise RunDirError(
            f"--out {out}: already holds a run's checkpoints; pass --resume to continue it or choose another --out"
        )
    metrics = out / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        # A run stopped before its first checkpoint: nothing to continue from, and its rows are a user's record.
        raise RunDirError(
            f"--out {out}: holds the metrics (metrics.jsonl) of a run that stopped before its first checkpoint, so "
            f"there is nothing to continue from; choose another --out, or remove {out} yourself to start this run "
            "there (--resume would start it again at iteration 1 and drop those rows)"
        )


def resume_changes(out: Path, cfg: Config) -> dict[str, tuple[Any, Any]]:
    """Keys whose value differs from the newest verifying checkpoint's config: ``{key: (old, new)}``.

    Raises :class:`RunDirError` when a key outside :data:`RESUMABLE_KEYS` differs. Reads only:
    a refused resume has written nothing. No checkpoint yet: nothing to compare (``{}``).
    """
    try:
        found = load_latest(out / "checkpoints")
    except CheckpointError as exc:
        raise RunDirError(f"--resume: {exc}") from None
    if found is None:
        return {}
    path, state = found
    if "config" not in state:
        raise RunDirError(f"--resume: {path} holds no config to compare with; it is not a metarl checkpoint")
    try:
        # an old checkpoint's flat keys read as their sections'; keys added since: their defaults
        old = {**key_defaults(), **dotted_items(place_keys(config_dict(path, state), "config"))}
    except (CheckpointError, ConfigError) as exc:
        raise RunDirError(f"--resume: {exc}") from None
    # inapplicable: keys the run never reads (older versions wrote any value)
    new, ignored = dotted_items(cfg.to_dict()), cfg.inapplicable()
    changes = {k: (old.get(k), v) for k, v in new.items() if k in old and old[k] != v and k not in ignored}
    refused = {k: ch for k, ch in changes.items() if k not in RESUMABLE_KEYS}
    if refused:
        raise RunDirError(
            f"--resume: the config differs from the checkpoint's ({path.name}) in {format_changes(refused)}; "
            f"only {', '.join(RESUMABLE_KEYS)} may change on resume. Resume with the run's own config: "
            f"metarl train {out / 'config.yaml'} --out {out} --resume"
        )
    return changes


def format_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """``inner_lr 0.1 -> 0.2, seed 0 -> 1`` (values shortened)."""
    return ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in changes.items())
