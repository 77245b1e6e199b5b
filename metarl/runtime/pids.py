"""Processes identified by PID *and* start time, never by name: how the tests and ``scripts/chaos_soak.py``
prove that nothing a run or a cluster started was left behind (a reused PID is another process).

Linux ``/proc`` only; every function reads, none signals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """``(pid, fields)`` of every live process: /proc/PID/stat after the command name (state, ppid, pgrp, ...)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            yield int(entry), stat.rsplit(")", 1)[1].split()


def start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), or ``None`` when no such process runs."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def process_tree(pids: Iterable[int]) -> dict[int, str]:
    """``pids`` and all their descendants, each with its start time."""
    children: dict[int, list[int]] = {}
    for pid, fields in proc_stats():
        children.setdefault(int(fields[1]), []).append(pid)
    found: dict[int, str] = {}
    todo = list(pids)
    while todo:
        pid = todo.pop()
        started = start_time(pid)
        if started is not None and pid not in found:
            found[pid] = started
            todo += children.get(pid, [])
    return found


def node_processes(node) -> dict[int, str]:
    """The processes of one ``ray.cluster_utils.Cluster`` node (raylet, its workers, ...)."""
    return process_tree(p.process.pid for procs in node.all_processes.values() for p in procs)


def still_running(seen: dict[int, str], timeout: float = 15.0) -> list[int]:
    """Those of ``seen`` (PID -> start time) still running after up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid, started in seen.items() if start_time(pid) == started]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)
