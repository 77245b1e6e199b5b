"""Tune by name: ``tune.Tuner("metarl/MetaSGD", param_space=...)`` and ``"metarl/MAML"`` after ``import metarl``.

RLlib's algorithms are reachable as ``tune.Tuner("PPO")``; these names do the same for
:class:`metarl.tune.MetaSGDTrainable` and :class:`metarl.tune.MAMLTrainable` through
``ray.tune.registry.register_trainable``. Importing Ray Tune costs seconds (measured: ``import
metarl`` ~1 s, with ``import ray.tune`` ~6 s on the 2-core dev machine), so ``import metarl``
does not import it: :func:`install` registers the names at once when Tune is already imported,
else the moment it is (a one-shot import hook on ``ray.tune``), and again after every
``ray.init``, because Tune's registry lives in the cluster's key-value store and a new cluster
starts empty. Nothing here imports ``ray.rllib``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

NAMES = ("metarl/MetaSGD", "metarl/MAML")
# Entry points as strings, the way Gymnasium's ids name their envs (envs/__init__.py): metarl.tune is a
# surface above this module, so it is named here and imported only when Tune asks for the trainables.
TRAINABLES = {"metarl/MetaSGD": "metarl.tune:MetaSGDTrainable", "metarl/MAML": "metarl.tune:MAMLTrainable"}


def register() -> None:
    """Register the names now (imports Ray Tune and metarl.tune); safe to call again."""
    # lazy: import metarl must not import Ray Tune (seconds)
    from ray.tune.registry import register_trainable

    for name, entry in TRAINABLES.items():
        module, _, attr = entry.partition(":")
        register_trainable(name, getattr(importlib.import_module(module), attr))


def _after_tune_import() -> None:
    """Register now, unless Tune's import came from ``metarl.tune`` itself: then that module, half
    executed, cannot hand out its trainables yet, and registers them at its end (this same call)."""
    import ray._private.worker  # lazy: Ray is loaded by now (Tune's import); import metarl never loads it

    own = sys.modules.get("metarl.tune")
    if own is not None and not hasattr(own, "TUNE_NAMES"):
        return
    register()
    # Tune's own registry re-flushes on every ray.init through this hook list; ours re-registers,
    # so the names also exist on a second cluster started in the same process.
    if register not in ray._private.worker._post_init_hooks:
        ray._private.worker._post_init_hooks.append(register)


class _RegisterAfterTuneImport:
    """A meta-path finder (duck-typed: ``importlib.abc`` alone costs milliseconds) that finds nothing
    itself: it wraps the real loader of ``ray.tune`` so registration runs once that has loaded."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "ray.tune":
            return None
        sys.meta_path.remove(self)  # one shot; the lookup below must not find this finder again
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _after_tune_import()

        spec.loader.exec_module = exec_then_register  # this spec's own loader instance
        return spec


def install() -> None:
    """Make the names resolvable (called by ``import metarl``); cheap unless Tune is already imported."""
    if "ray.tune" in sys.modules:
        _after_tune_import()
    elif not any(isinstance(f, _RegisterAfterTuneImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTuneImport())
