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
replaces a good checkpoint with NaN. A failed write (disk full, permissions) raises
:class:`CheckpointWriteError`, naming the newest checkpoint that is still complete.

Hostile files: only regular files are read (a FIFO or a link to ``/dev/zero`` is refused before
it is opened), at most :func:`max_checkpoint_bytes`; the archive must be torch's uncompressed
zip format (no entry may inflate). The config stored in a checkpoint is bounded JSON, and its
``env: module:id`` is never imported on the checkpoint's word: a module not already imported
(by the user's own config) needs ``trust_env_module`` (``--trust-env-module``).
:func:`run_config` checks θ and α against the policy that config describes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import math
import os
import re
import stat
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metarl.config import Config, ConfigError
from metarl.envs.tasks import make_env, space_dims

if TYPE_CHECKING:
    from metarl.config import Config

NAME = re.compile(r"^checkpoint-(\d{6,})\.pt$")
TMP = re.compile(r"^\..+\.tmp-(\d+)$")

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or did not verify."""


class NonFiniteStateError(RuntimeError):
    """Refused to write a checkpoint whose tensors hold NaN or inf (the run diverged)."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, permissions); the message names what was kept."""


MAX_CONFIG_CHARS = 64 * 1024  # a checkpoint's config JSON; real ones are about 1 KiB
MAX_CONFIG_DEPTH = 16  # nesting of that JSON (env_kwargs are shallow)
TRUST_ENV_MODULES = False  # process default for trust_env_module; ``--trust-env-module`` sets it


def max_checkpoint_bytes() -> int:
    """Largest checkpoint file metarl reads: 4 GiB or a quarter of this machine's memory, if less."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 16 * 2**30
    return min(4 * 2**30, memory // 4)


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


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` so that a kill leaves the old file or the new one, never half of it (fsync'd)."""
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
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    path = directory / f"checkpoint-{iteration:06d}.pt"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(directory)
        atomic_write(path, data)
        meta = {"iteration": iteration, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        atomic_write(path.with_suffix(".json"), json.dumps(meta).encode())
    except OSError as exc:
        raise _write_failed(directory, path, exc) from None
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return path


def _write_failed(directory: Path, path: Path, exc: OSError) -> CheckpointWriteError:
    """Undo a half-written checkpoint and say which complete checkpoint is kept (the newest left)."""
    try:
        if not path.with_suffix(".json").is_file():  # a .pt without its .json is no checkpoint: remove it
            path.unlink(missing_ok=True)
        if directory.is_dir():
            _remove_stale_tmp(directory, include_own=True)
        kept = [p for p in list_checkpoints(directory) if p.with_suffix(".json").is_file()]
    except OSError:  # the directory itself is unreadable: nothing more to undo or report
        kept = []
    reason = {
        errno.ENOSPC: "disk full",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "not permitted",
        errno.EROFS: "read-only file system",
    }.get(exc.errno)
    reason = reason or exc.strerror or str(exc)
    what = f"the newest complete checkpoint is still {kept[-1]}" if kept else "no complete earlier checkpoint was found"
    return CheckpointWriteError(
        f"cannot write checkpoint {path.name} in {directory} ({reason}); nothing was half-written, {what}"
    )


def _remove_stale_tmp(directory: Path, include_own: bool = False) -> None:
    """Temporary files left by a writer that was killed mid-write (one writer per run directory)."""
    for p in directory.iterdir():
        m = TMP.match(p.name)
        if m and (include_own or int(m.group(1)) != os.getpid()):
            p.unlink(missing_ok=True)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first (by iteration)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes (links followed).

    A FIFO would block ``read`` forever and ``/dev/zero`` never ends: both are refused by their
    ``stat`` before anything is opened.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path}: not a regular file (FIFOs, devices and sockets are never read)")
    if st.st_size > limit:
        raise CheckpointError(f"{path}: {st.st_size:,} bytes is more than the {limit:,} bytes metarl reads")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise CheckpointError(f"{path}: grew past the {limit:,} bytes metarl reads")
    return data


def _check_archive(path: Path, data: bytes) -> None:
    """torch's zip format, every entry stored uncompressed: nothing inflates beyond the file."""
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise CheckpointError(f"{path}: refused to load, not plain tensors and data (not torch's zip format)") from None
    if any(i.compress_type != zipfile.ZIP_STORED for i in infos) or sum(i.file_size for i in infos) > len(data):
        raise CheckpointError(
            f"{path}: refused to load, not plain tensors and data (compressed zip entries; "
            "torch writes them uncompressed)"
        )


_USE_ANOTHER = "use an older checkpoint of the run or an intact copy of this one"


def _size_mismatch(path: Path, size: int, recorded: int) -> str:
    """``is N bytes but X.json beside it records M (...); what to do``: after the file's name."""
    return (
        f"is {size:,} bytes but {path.with_suffix('.json').name} beside it records {recorded:,} (the file "
        f"was truncated or modified after it was written); {_USE_ANOTHER}"
    )


def load_checkpoint(path: str | Path, trust_env_module: bool | None = None) -> dict[str, Any]:
    """Verify and load one checkpoint file; refuses anything but tensors and plain data.

    ``trust_env_module``: allow a config whose ``env`` names a module not imported yet (default:
    :data:`TRUST_ENV_MODULES`, which ``--trust-env-module`` sets). Loading itself imports nothing.
    """
    path = Path(path)
    meta_path = path.with_suffix(".json")
    try:
        data = _read_regular(path, max_checkpoint_bytes())
        if not meta_path.is_file():
            raise CheckpointError(f"{path}: no {meta_path.name} beside it (incomplete write?)")
        meta = json.loads(_read_regular(meta_path, 4096).decode())
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    except json.JSONDecodeError:
        raise CheckpointError(f"{meta_path}: not valid JSON") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: not a checkpoint's record (expected a JSON object with sha256 and bytes)")
    if isinstance(meta.get("bytes"), int) and meta["bytes"] != len(data):
        raise CheckpointError(f"{path}: {_size_mismatch(path, len(data), meta['bytes'])}")
    if meta.get("sha256") != hashlib.sha256(data).hexdigest():
        raise CheckpointError(
            f"{path}: its SHA-256 does not match the one {meta_path.name} beside it records (the "
            f"file was damaged or modified after it was written); {_USE_ANOTHER}"
        )
    _check_archive(path, data)
    try:
        # weights_only: PyTorch's restricted unpickler; it refuses any global outside its allow-list
        # (os.system, builtins.eval, ...) before calling it, so a crafted pickle never runs code.
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError and others for foreign content
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: refused to load, not plain tensors and data ({type(exc).__name__}: {first})"
        ) from None
    _check_state(path, state)
    if "config" in state:
        trusted = TRUST_ENV_MODULES if trust_env_module is None else trust_env_module
        _check_env_trust(path, config_dict(path, state), trusted)
    return state


def _check_state(path: Path, state: Any) -> None:
    if not isinstance(state, dict) or "theta" not in state:
        raise CheckpointError(f"{path}: not a metarl checkpoint (no 'theta')")
    for group in ("theta", "alpha"):
        params = state.get(group)
        if (
            not isinstance(params, dict)
            or not params
            or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) and v.is_floating_point() for k, v in params.items()
            )
        ):
            raise CheckpointError(f"{path}: not a metarl checkpoint ({group!r} must map names to float tensors)")
    if set(state["alpha"]) != set(state["theta"]):
        missing = sorted(set(state["theta"]) ^ set(state["alpha"]))
        raise CheckpointError(
            f"{path}: not a metarl checkpoint (theta and alpha name different parameters: "
            f"{', '.join(map(repr, missing[:5]))})"
        )
    if not isinstance(state.get("iteration", 0), int) or state.get("iteration", 0) < 0:
        raise CheckpointError(f"{path}: not a metarl checkpoint ('iteration' must be a non-negative int)")
    bad = _non_finite({"theta": state["theta"], "alpha": state["alpha"]})
    if bad:
        raise CheckpointError(f"{path}: holds non-finite values in {', '.join(bad[:5])}")


def config_dict(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's config: a bounded JSON object (a forged one fails here in one line)."""
    text = state.get("config")
    if not isinstance(text, str):
        got = "none" if text is None else type(text).__name__
        raise CheckpointError(f"{path}: not a metarl checkpoint ('config' must be a JSON string, got {got})")
    if len(text) > MAX_CONFIG_CHARS:
        raise CheckpointError(f"{path}: its config is {len(text):,} characters (limit {MAX_CONFIG_CHARS:,})")
    if _json_depth(text) > MAX_CONFIG_DEPTH:
        raise CheckpointError(f"{path}: its config is nested more than {MAX_CONFIG_DEPTH} levels deep")
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path}: its config is not valid JSON") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: its config must be a JSON object, got {type(raw).__name__}")
    return raw


def _json_depth(text: str) -> int:
    """Deepest bracket nesting of JSON ``text`` (brackets inside strings ignored), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _check_env_trust(path: Path, raw: dict[str, Any], trusted: bool) -> None:
    """Refuse an ``env: module:id`` whose module is not imported yet, unless the user trusts it."""
    env = raw.get("env")
    module = env.rpartition(":")[0] if isinstance(env, str) else ""
    if module and module not in sys.modules and not trusted:
        raise CheckpointError(
            f"{path}: its config names env {env[:100]!r}, which would import the Python module {module[:60]!r}; "
            "metarl never imports code named by a checkpoint. If you trust this run, pass --trust-env-module"
        )


def expected_shapes(cfg: Config, obs_dim: int, act_dim: int, kind: str) -> dict[str, tuple[int, ...]]:
    """θ's names and shapes for ``cfg``'s policy (the layout of :func:`metarl.core.policies.init_params`)."""
    sizes = (obs_dim, *cfg.policy.hidden_sizes, act_dim)
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"layer{i}.weight"], shapes[f"layer{i}.bias"] = (fan_in, fan_out), (fan_out,)
    if kind == "gaussian":
        shapes["log_std"] = (act_dim,)
    return shapes


def run_config(path: str | Path, state: dict[str, Any], trust_env_module: bool | None = None) -> Config:
    """The validated config of a loaded checkpoint, after checking θ and α fit the policy it describes.

    ``trust_env_module`` as in :func:`load_checkpoint`; validating the config imports the module.
    """
    path = Path(path)
    raw = config_dict(path, state)
    _check_env_trust(path, raw, TRUST_ENV_MODULES if trust_env_module is None else trust_env_module)
    try:
        cfg = Config.from_dict(raw, source="config", drop_inapplicable=True)  # older versions wrote ignored keys
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its config is not valid ({exc})") from None
    env = make_env(cfg.env, cfg.env_kwargs)
    try:
        obs_dim, act_dim, kind = space_dims(env)
    finally:
        env.close()
    expected = expected_shapes(cfg, obs_dim, act_dim, kind)
    for name, shape in expected.items():
        got = state["theta"].get(name)
        if got is None or tuple(got.shape) != shape:
            found = "missing" if got is None else f"has shape {tuple(got.shape)}"
            raise CheckpointError(f"{path}: theta.{name} {found}; its config's policy needs {shape}")
        alpha_shape = tuple(state["alpha"][name].shape)
        allowed = {shape} if cfg.learns_alpha and cfg.alpha.granularity == "per_parameter" else {(), (1,)}
        if alpha_shape not in allowed:
            raise CheckpointError(f"{path}: alpha.{name} has shape {alpha_shape}; expected one of {sorted(allowed)}")
    extra = sorted(set(state["theta"]) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: theta has parameters its config's policy lacks: {', '.join(extra[:5])}")
    return cfg


def resolve_checkpoint(run_or_file: str | Path) -> Path:
    """A checkpoint file, or the newest *complete* checkpoint of a run directory.

    A live run writes ``checkpoint-N.pt`` and then its ``.json``; a reader that comes between
    the two (or after a crash between them) skips N and takes the newest checkpoint whose
    ``.json`` is present and names the file's size.
    """
    p = Path(run_or_file)
    if p.is_file():
        return p
    for directory in (p / "checkpoints", p):
        found = list_checkpoints(directory)
        for path in reversed(found):
            if _looks_complete(path):
                return path
        if found:
            raise CheckpointError(
                f"{directory}: none of its {len(found)} checkpoint files is complete; the newest, "
                f"{_why_incomplete(found[-1])}"
            )
    raise CheckpointError(f"{p}: no checkpoint found (expected a checkpoint-*.pt file or a run directory)")


def _why_incomplete(path: Path) -> str:
    """Why ``path`` is not a complete checkpoint, for a message that starts with its name."""
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        return f"{path.name}, has no {meta_path.name} beside it (a write in progress, or interrupted)"
    try:
        recorded = json.loads(_read_regular(meta_path, 4096).decode()).get("bytes")
        size = os.stat(path).st_size
    except (OSError, ValueError, AttributeError, CheckpointError):
        return f"{path.name}: {meta_path.name} beside it cannot be read as a checkpoint's record"
    if not isinstance(recorded, int):
        return f"{path.name}: {meta_path.name} beside it records no size"
    return f"{path.name}, {_size_mismatch(path, size, recorded)}"


def _looks_complete(path: Path) -> bool:
    """The ``.json`` beside ``path`` exists and names its current size (cheap; the load verifies the hash)."""
    try:
        meta = json.loads(_read_regular(path.with_suffix(".json"), 4096).decode())
        return isinstance(meta, dict) and meta.get("bytes") == os.stat(path).st_size
    except (OSError, ValueError, CheckpointError):
        return False


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
            continue
        for error in errors:  # only when an older one is used: a refusal below stays one line
            log.warning("skipping checkpoint: %s", error)
        if quarantine:
            for bad in skipped:
                for f in (bad, bad.with_suffix(".json")):
                    if f.exists():
                        os.replace(f, f.with_name(f.name + ".bad"))
        return path, state
    if complete:
        raise CheckpointError(f"{directory}: none of its {complete} checkpoints verifies (newest: {errors[0]})")
    return None
