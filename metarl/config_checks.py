"""Config checks that look outside the config: the learner's memory against this machine's, env
kwargs that must be plain data, and constructing the env once (importing its module with a time
limit). :class:`metarl.config.Config` calls them; every failure is one :class:`ConfigError` line."""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import os
import re
import signal
import threading
import warnings
from typing import TYPE_CHECKING, Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

import metarl.envs  # noqa: F401  (registers the metarl families)
from metarl.config_text import ENV_IMPORT_TIMEOUT_S, MAX_ENV_KWARGS_NODES, ConfigError, _show

if TYPE_CHECKING:
    from metarl.config import Config


def learner_memory_bytes(cfg: Config, steps_per_phase: int, widths: list[int], params: int) -> int:
    """A rough upper estimate of the learner's memory for one meta-iteration (before anything starts).

    Activations: a policy forward over one phase keeps ``steps x sum(widths)`` values for the
    backward pass; the meta-gradient keeps one such graph per inner step plus the post-adaptation
    one, each about 4x (pre-activations, gradients, the Fisher products' double backward).
    Parameters: θ, α and the optimizer's moments, plus each task's θ'ᵢ (and its gradient) per
    inner step. Calibrated loosely: the Navigation2D preset estimates 0.3 GB, its learner's peak
    RSS (with torch itself) is about 1 GB.
    """
    size = 8 if cfg.resources.dtype == "float64" else 4
    activations = 4 * (cfg.inner_steps + 1) * steps_per_phase * sum(widths) * size
    parameters = (4 + 2 * cfg.meta_batch_size * cfg.inner_steps) * params * size
    return activations + parameters


def memory_limit_bytes() -> int:
    """What an estimate is checked against: this machine's memory, or ``METARL_MAX_MEMORY_GB``.

    Set the variable when the learner runs on a larger node of a cluster than the driver's.
    """
    override = os.environ.get("METARL_MAX_MEMORY_GB")
    if override:
        try:
            return int(float(override) * 2**30)
        except ValueError:
            raise ConfigError(f"METARL_MAX_MEMORY_GB: expected a number of GB, got {_show(override)}") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 64 * 2**30


def _check_memory(cfg: Config, steps: int, widths: list[int], params: int) -> None:
    """Refuse a config whose learner would not fit in memory; the message leads with the key to lower."""
    need, limit = learner_memory_bytes(cfg, steps, widths, params), memory_limit_bytes()
    if need <= limit:
        return
    sizes = cfg.policy.hidden_sizes
    growth = {  # how far each knob is above its preset value: the largest is named first
        "policy.hidden_sizes": (sum(sizes) / 200, sizes),
        "inner_steps": (cfg.inner_steps / 1, cfg.inner_steps),
        "meta_batch_size": (cfg.meta_batch_size / 20, cfg.meta_batch_size),
        "episodes_per_task": (cfg.episodes_per_task / 20, cfg.episodes_per_task),
        "horizon": (steps / (cfg.meta_batch_size * cfg.episodes_per_task * 100), cfg.horizon),
    }
    key = max(growth, key=lambda k: growth[k][0])
    raise ConfigError(
        f"{key}: {_show(growth[key][1])} makes the learner need about {need / 2**30:,.0f} GiB (policy.hidden_sizes "
        f"{_show(sizes)}, inner_steps {cfg.inner_steps}, {steps:,} env steps per phase); this machine "
        f"has {limit / 2**30:,.0f} GiB (METARL_MAX_MEMORY_GB overrides). Lower {key}"
    )


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_plain_data(name: str, value: Any) -> None:
    """``value`` is JSON-like (str keys; None, bool, int, finite float, str, list, dict) and small."""
    budget = [MAX_ENV_KWARGS_NODES]
    on_path: set[int] = set()

    def walk(v: Any, where: str) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError(f"{name}: too large or too deeply shared (more than {MAX_ENV_KWARGS_NODES} values)")
        if v is None or isinstance(v, (bool, str)):
            return
        if isinstance(v, (int, float)):
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{where}: must be a finite number, got {v!r}")
            if abs(v) > 1e300:
                raise ConfigError(f"{where}: {_show(v)} is unreasonably large")
            return
        if isinstance(v, (list, dict)):
            if id(v) in on_path:
                raise ConfigError(f"{where}: refers to itself (a recursive YAML anchor)")
            on_path.add(id(v))
            if isinstance(v, dict):
                for k, item in v.items():
                    if not isinstance(k, str):
                        raise ConfigError(f"{where}: keys must be strings, got {_show(k)}")
                    walk(item, f"{where}.{k[:40]}")
            else:
                for i, item in enumerate(v):
                    walk(item, f"{where}[{i}]")
            on_path.discard(id(v))
            return
        raise ConfigError(f"{where}: {type(v).__name__} values are not allowed (plain YAML data only), got {_show(v)}")

    walk(value, name)


def _import_env_module(env_id: str, module: str) -> None:
    """Import a config's env module; anything it raises (``sys.exit`` and Ctrl-C included) is one line.

    In the main thread the import is given :data:`ENV_IMPORT_TIMEOUT_S` (``SIGALRM``); an import
    blocked inside C code that ignores signals can still hang (documented in docs/reliability.md).
    """

    def too_slow(signum, frame):
        raise TimeoutError(f"no result after {ENV_IMPORT_TIMEOUT_S:g} s")

    timed = threading.current_thread() is threading.main_thread() and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    previous = signal.signal(signal.SIGALRM, too_slow) if timed else None
    if timed:
        signal.setitimer(signal.ITIMER_REAL, ENV_IMPORT_TIMEOUT_S)
    try:
        importlib.import_module(module)
    except BaseException as exc:  # ModuleNotFoundError, the module's own error, sys.exit(), KeyboardInterrupt
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ConfigError(f"env: {_show(env_id)}: importing {module} failed ({detail})") from None
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _env_keywords(env_id: str) -> list[str] | None:
    """The keyword arguments ``env_id``'s constructor takes, or ``None`` when it takes any (``**kwargs``)."""
    try:
        entry = gym.spec(env_id).entry_point
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
        params = inspect.signature(creator).parameters.values()
    except Exception:  # not introspectable: say nothing rather than something wrong
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]


def _refused_kwargs(env_id: str, env_kwargs: dict, exc: Exception) -> ConfigError:
    """One line for an env that would not construct with ``env_kwargs``: the key, why, and what it takes."""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    detail = detail.split(" was raised from the environment creator")[0]  # gymnasium repeats the kwargs
    unknown = re.search(r"unexpected keyword argument '([^']+)'", detail)
    if unknown:
        key, accepted = unknown.group(1)[:60], _env_keywords(env_id)
        takes = f"it takes {', '.join(accepted)}" if accepted else "it takes no keywords" if accepted == [] else ""
        return ConfigError(f"env_kwargs.{key}: {env_id} takes no keyword {key!r}{'; ' + takes if takes else ''}")
    return ConfigError(f"env_kwargs: {env_id} does not accept {_show(env_kwargs)}: {detail}")


def _check_env(env_id: str, env_kwargs: dict, horizon: int | None = None) -> tuple[int, int, int | None, str]:
    """The env id is registered and constructs with ``env_kwargs`` as a metarl task family.

    A family has Box observations, Box or Discrete actions and the task API (``sample_tasks``,
    ``set_task``, ``get_task``). Returns ``(obs_dim, act_dim, max_episode_steps, policy kind)``.
    """
    # lazy: metarl.envs.tasks loads torch; config errors stay fast
    from metarl.envs.tasks import space_dims

    module, _, name = env_id.rpartition(":")
    if module:  # Gymnasium's "module:id": importing the module registers the family
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", module):
            raise ConfigError(f"env: {_show(env_id)}: {_show(module)} is not a Python module name")
        _import_env_module(env_id, module)
    if name not in gym.registry:
        metarl_ids = sorted(k for k in gym.registry if k.startswith("metarl/"))
        close = difflib.get_close_matches(name[:200], metarl_ids, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; registered metarl envs: {', '.join(metarl_ids)}"
        raise ConfigError(f"env: {_show(env_id)} is not a registered Gymnasium id{hint}")
    make_options = sorted(set(env_kwargs) & {"max_episode_steps", "disable_env_checker"})  # gym.make's own
    if make_options:
        raise ConfigError(
            f"env_kwargs: {', '.join(make_options)} are options of gymnasium.make, not of the env, and "
            "metarl's vectorised rollouts never see them; set horizon for the episode length"
        )
    # Gymnasium warns on stderr about some keywords (render_mode) before the env refuses them: the
    # refusal is the one line; an env that is built keeps its warnings.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            env = gym.make(env_id, **env_kwargs)
        except Exception as exc:  # the env's own message says which keyword and why
            raise _refused_kwargs(env_id, env_kwargs, exc) from None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    try:
        try:
            obs_dim, act_dim, kind = space_dims(env)
        except ValueError as exc:
            raise ConfigError(f"env: {env_id} is not a metarl task family ({str(exc).split(': ', 1)[-1]})") from None
        if not all(hasattr(env.unwrapped, m) for m in ("sample_tasks", "set_task", "get_task")):
            raise ConfigError(f"env: {env_id} is not a metarl task family (needs sample_tasks, set_task and get_task)")
        max_steps = env.spec.max_episode_steps if env.spec is not None else None
        limit = getattr(env.unwrapped, "MAX_HORIZON", None)  # a family whose episodes cannot run longer (Meta-World)
        if horizon is not None and limit is not None and horizon > limit:
            raise ConfigError(
                f"horizon: {horizon} is longer than {env_id}'s episodes can run ({limit} steps, "
                f"the benchmark's own limit); use horizon <= {limit}"
            )
        return obs_dim, act_dim, max_steps, kind
    finally:
        env.close()
