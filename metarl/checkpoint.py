"""Checkpoints: atomic writes, checksums, and loading that never unpickles arbitrary objects.

Layout: ``checkpoints/checkpoint-000010.pt`` (torch tensors and plain data, read back with
``torch.load(weights_only=True)``) plus ``checkpoint-000010.json`` holding its SHA-256. Each
file is written to a temporary name and renamed, and the JSON is written last, so a process
killed at any moment leaves either a complete, verifiable checkpoint or none.

Trust: a checkpoint is data, never code. Loading verifies the checksum, unpickles with
PyTorch's restricted ``weights_only`` unpickler (tensors, dicts, lists, numbers, strings; a
pickle that names any other callable, e.g. ``os.system``, is refused before anything runs),
then checks the structure (``theta``/``alpha`` dicts of finite tensors). The checksum only
detects torn or corrupted files; it is no signature (whoever can write the ``.pt`` can write
the ``.json``), so safety rests on the restricted unpickler, not on the checksum.

Saving refuses non-finite θ or α (:class:`NonFiniteStateError`): a diverged run never
replaces a good checkpoint with NaN.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

NAME = re.compile(r"^checkpoint-(\d{6,})\.pt$")
TMP = re.compile(r"^\..+\.tmp-(\d+)$")

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or did not verify."""


class NonFiniteStateError(RuntimeError):
    """Refused to write a checkpoint whose tensors hold NaN or inf (the run diverged)."""


def _non_finite(obj: Any, where: str = "") -> list[str]:
    """Names of floating tensors / floats in ``obj`` (nested dicts and lists) that are not all finite."""
    if isinstance(obj, torch.Tensor):
        return [where] if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else []
    if isinstance(obj, float):
        return [where] if not math.isfinite(obj) else []
    if isinstance(obj, dict):
        return [n for k, v in obj.items() for n in _non_finite(v, f"{where}.{k}" if where else str(k))]
    if isinstance(obj, (list, tuple)):
        return [n for i, v in enumerate(obj) for n in _non_finite(v, f"{where}[{i}]")]
    return []


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
    """Write ``state`` as checkpoint ``iteration``; keep only the newest ``keep`` checkpoints.

    Raises :class:`NonFiniteStateError`, writing nothing, when θ, α or the optimizer state
    holds NaN or inf.
    """
    bad = _non_finite({k: state[k] for k in ("theta", "alpha", "optimizer") if k in state})
    if bad:
        raise NonFiniteStateError(
            f"refusing to write checkpoint {iteration}: non-finite values in {', '.join(bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''}; the previous checkpoint is kept"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(directory)
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


def _remove_stale_tmp(directory: Path) -> None:
    """Temporary files left by a writer that was killed mid-write (one writer per run directory)."""
    for p in directory.iterdir():
        m = TMP.match(p.name)
        if m and int(m.group(1)) != os.getpid():
            p.unlink(missing_ok=True)


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
    meta_path = path.with_suffix(".json")
    try:
        data = path.read_bytes()
        if not meta_path.is_file():
            raise CheckpointError(f"{path}: no {meta_path.name} beside it (incomplete write?)")
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    except json.JSONDecodeError:
        raise CheckpointError(f"{meta_path}: not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("sha256") != hashlib.sha256(data).hexdigest():
        raise CheckpointError(f"{path}: checksum mismatch (corrupt or modified file)")
    try:
        # weights_only: PyTorch's restricted unpickler; it refuses any global outside its allow-list
        # (os.system, builtins.eval, ...) before calling it, so a crafted pickle never runs code.
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError and others for foreign content
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: refused to load, not plain tensors and data ({type(exc).__name__}: {first})") from None
    _check_state(path, state)
    return state


def _check_state(path: Path, state: Any) -> None:
    if not isinstance(state, dict) or "theta" not in state:
        raise CheckpointError(f"{path}: not a metarl checkpoint (no 'theta')")
    for group in ("theta", "alpha"):
        params = state.get(group)
        if not isinstance(params, dict) or not params or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) and v.is_floating_point() for k, v in params.items()
        ):
            raise CheckpointError(f"{path}: not a metarl checkpoint ({group!r} must map names to float tensors)")
    if not isinstance(state.get("iteration", 0), int) or state.get("iteration", 0) < 0:
        raise CheckpointError(f"{path}: not a metarl checkpoint ('iteration' must be a non-negative int)")
    bad = _non_finite({"theta": state["theta"], "alpha": state["alpha"]})
    if bad:
        raise CheckpointError(f"{path}: holds non-finite values in {', '.join(bad[:5])}")


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


def load_latest(directory: str | Path, quarantine: bool = False) -> tuple[Path, dict[str, Any]] | None:
    """Newest checkpoint that verifies; falls back to older ones with a logged warning.

    ``None`` when the directory holds no complete checkpoint (a ``.pt`` without its ``.json`` is
    an interrupted first write); :class:`CheckpointError` when it holds complete ones but none
    verifies (resuming must not silently start over). ``quarantine=True`` (used on resume)
    renames the skipped newer files to ``*.bad`` so that retention does not count them and a
    later load does not trip over them again; they stay on disk for inspection.
    """
    complete, errors, skipped = 0, [], []
    for path in reversed(list_checkpoints(directory)):
        complete += path.with_suffix(".json").is_file()
        try:
            state = load_checkpoint(path)
        except (CheckpointError, OSError) as exc:
            errors.append(str(exc))
            skipped.append(path)
            log.warning("skipping checkpoint: %s", exc)
            continue
        if quarantine:
            for bad in skipped:
                for f in (bad, bad.with_suffix(".json")):
                    if f.exists():
                        os.replace(f, f.with_name(f.name + ".bad"))
        return path, state
    if complete:
        raise CheckpointError(f"{directory}: none of its {complete} checkpoints verifies (newest: {errors[0]})")
    return None
