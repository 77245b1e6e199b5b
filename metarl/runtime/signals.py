"""Graceful stop of ``metarl train`` on SIGINT (Ctrl-C) or SIGTERM (``kill``, a scheduler).

The first signal only sets a flag; :meth:`metarl.runtime.trainer.Trainer.train` checks it between
meta-iterations, so the iteration in progress finishes, a checkpoint of it is written, and the
command exits with ``128 + signal number``: **130** after SIGINT, **143** after SIGTERM (the
shell's convention for "ended by this signal", so a script can tell a stopped run from a
finished one, which exits 0). ``metarl train ... --resume`` continues from that checkpoint.

A second signal aborts at once (``KeyboardInterrupt``) without waiting for the iteration; the
newest checkpoint is then the last periodic one, which is complete (checkpoints are written
atomically). SIGKILL cannot be caught: it too leaves the last complete checkpoint.

``ray.init`` installs its own SIGTERM handler (``sys.exit``), so call :meth:`StopSignals.install`
again once Ray has started. ``metarl train`` takes the signals before it reads the config or imports
torch and Ray (this module imports neither), so a signal during start-up also exits 130 / 143, before
anything is written, and keeps them to its end: ``ray.shutdown`` (also run by Ray at exit) resets the
OS-level SIGTERM action to the default while Python's table still names the handler, so the program
shuts Ray down itself when the run is over and takes the signals again; a signal then changes nothing
(the run's status stands). Only a signal in the interpreter's own first fraction of a second, before
``metarl.cli`` runs, meets the default action (the process ends by the signal: status −15 to Python's
``subprocess``, 143 to a shell); nothing has been touched by then either.

Job runners (``timeout``, SLURM, Kubernetes, a terminal's Ctrl-C) signal the whole process
group. A local Ray started by ``ray.init`` would be in that group, and SIGTERM would kill its
GCS and raylet before the driver could checkpoint. :func:`ray_processes_in_own_session` starts
them in a session of their own, so a group signal reaches only the driver; they still die with
the driver (Ray's kernel fate-sharing, ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager: SIGINT/SIGTERM set a flag (``stop()`` is true) instead of killing the process."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.ending = False  # set once the run is over: a signal then changes nothing
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def install(self) -> None:
        """Take SIGINT and SIGTERM (again); only possible in the main thread, else a no-op."""
        if threading.current_thread() is not threading.main_thread():
            return
        for s in SIGNALS:
            previous = signal.signal(s, self._handle)
            self._previous.setdefault(s, previous)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s, previous in self._previous.items():
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: aborting")
        self.signum = signum
        if self.ending:
            what = "the run is over, exiting as it ended"
        else:
            what = f"finishing this iteration, then a checkpoint and exit ({self.name} again aborts at once)"
        # os.write: no Python-level locks, safe while the main thread is inside print/logging
        os.write(2, f"\nmetarl: {self.name} received: {what}\n".encode())

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_status(self) -> int:
        """128 + signal number (130 for SIGINT, 143 for SIGTERM); 0 when no signal came."""
        return 128 + self.signum if self.signum is not None else 0


@contextlib.contextmanager
def ray_processes_in_own_session() -> Iterator[None]:
    """Processes Ray starts inside this block (a local ``ray.init``) get their own session.

    Only where Ray has kernel fate-sharing (Linux): there its processes die with the driver
    whatever group they are in; elsewhere Ray's reaper needs them in the driver's group.
    """
    # lazy: StopSignals is taken first thing in `metarl train`, before Ray or torch is imported
    from ray._private import services, utils

    if not utils.detect_fate_sharing_support():
        yield
        return
    original = services.ConsolePopen

    class _OwnSessionPopen(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:
            kwargs.setdefault("start_new_session", True)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = _OwnSessionPopen
    try:
        yield
    finally:
        services.ConsolePopen = original
