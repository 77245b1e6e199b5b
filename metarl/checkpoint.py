"""Checkpoints: atomic writes, checksums, and loading that never unpickles arbitrary objects.

Layout: ``checkpoints/checkpoint-000010.pt`` (torch tensors and plain data, read back with
``torch.load(weights_only=True)``) plus ``checkpoint-000010.json`` holding its SHA-256. Each
file is written to a temporary name and renamed, and the JSON is written last, so a process
killed at any moment leaves either a complete, verifiable checkpoint or none.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

NAME = re.compile(r"^checkpoint-(\d{6,})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or did not verify."""


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(directory: str | Path, iteration: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as checkpoint ``iteration``; keep only the newest ``keep`` checkpoints."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    path = directory / f"checkpoint-{iteration:06d}.pt"
    _atomic_write(path, data)
    meta = {"iteration": iteration, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    _atomic_write(path.with_suffix(".json"), json.dumps(meta).encode())
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return path


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first (by iteration)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Verify and load one checkpoint file; refuses anything but tensors and plain data."""
    path = Path(path)
    data = path.read_bytes()
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise CheckpointError(f"{path}: no {meta_path.name} beside it (incomplete write?)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        raise CheckpointError(f"{meta_path}: not valid JSON") from None
    if meta.get("sha256") != hashlib.sha256(data).hexdigest():
        raise CheckpointError(f"{path}: checksum mismatch (corrupt or modified file)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError and others for foreign content
        raise CheckpointError(f"{path}: refused to load ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or "theta" not in state:
        raise CheckpointError(f"{path}: not a metarl checkpoint (no 'theta')")
    return state


def resolve_checkpoint(run_or_file: str | Path) -> Path:
    """A checkpoint file, or the latest checkpoint of a run directory."""
    p = Path(run_or_file)
    if p.is_file():
        return p
    for directory in (p / "checkpoints", p):
        found = list_checkpoints(directory)
        if found:
            return found[-1]
    raise CheckpointError(f"{p}: no checkpoint found (expected a checkpoint-*.pt file or a run directory)")


def load_latest(directory: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """Newest checkpoint that verifies; falls back to older ones with a warning."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path)
        except (CheckpointError, OSError) as exc:
            warnings.warn(f"skipping checkpoint: {exc}", stacklevel=2)
    return None
