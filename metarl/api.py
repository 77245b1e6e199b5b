"""Python API in RLlib's idiom: a config builder with chained setters, and an algorithm object.

::

    from metarl.api import MetaSGDConfig

    config = (
        MetaSGDConfig()
        .environment("metarl/Navigation2D-v0", env_kwargs={"action_mode": "clip"})
        .env_runners(num_env_runners=2, num_cpus_per_env_runner=1)  # resources.num_workers, .worker_cpus
        .learners(device="cpu", num_cpus=1)                          # resources.device, .learner_cpus
        .training(meta_batch_size=20, episodes_per_task=20, inner_lr=0.1, trpo={"max_kl": 0.01})
        .debugging(seed=0)
    )
    algo = config.build_algo(out_dir="runs/nav-api")
    for _ in range(10):
        result = algo.train()                    # one meta-iteration; the metrics.jsonl row
    path = algo.save_to_path()                   # checkpoint file
    algo.stop()
    algo = MetaAlgorithm.from_checkpoint(path)   # rebuilt from the checkpoint's own config
    report = algo.evaluate(num_tasks=40, steps=3)

The builders only collect keys of :class:`metarl.config.Config`, in its form: run-wide keys by name,
a section as a mapping of its keys (``trpo={"max_kl": 0.01}``, merged into what the builder holds);
RLlib's names (``env_runners``, ``learners``) set the ``resources`` section. ``to_config()`` validates
them exactly as a YAML file is validated. :class:`MetaAlgorithm` is a thin handle on the same
:class:`metarl.runtime.trainer.Trainer` that ``metarl train`` runs: one training core, with the same
run directory (``config.yaml``, ``metrics.jsonl``/``.csv``, ``tensorboard/``, ``checkpoints/``).

Setters mutate and return the builder (RLlib's convention); ``copy()`` branches a variant.
``stop()`` ends the algorithm's actors, not Ray: like RLlib, whoever started Ray shuts it down.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np

from metarl.config import OLD_FLAT_KEYS, SECTIONS, Config, ConfigError, note_old_spelling, place_keys

log = logging.getLogger(__name__)

_UNSET: Any = object()


class MetaRLConfig:
    """Builder for :class:`Config`; use :class:`MetaSGDConfig` or :class:`MAMLConfig`."""

    algorithm: str = ""

    def __init__(self) -> None:
        if not self.algorithm:
            raise TypeError("use MetaSGDConfig or MAMLConfig")
        self._values: dict[str, Any] = {"algorithm": self.algorithm}

    # -- chained setters (RLlib's names) ------------------------------------------------------
    def environment(
        self, env: str = _UNSET, env_kwargs: dict | None = _UNSET, horizon: int | None = _UNSET
    ) -> MetaRLConfig:
        """Task family: a registered Gymnasium id, its keyword arguments, steps per episode."""
        if env_kwargs is not _UNSET:
            env_kwargs = dict(env_kwargs or {})
        return self._set(env=env, env_kwargs=env_kwargs, horizon=horizon)

    def env_runners(self, num_env_runners: int = _UNSET, num_cpus_per_env_runner: float = _UNSET) -> MetaRLConfig:
        """Rollout actors (``resources.num_workers``) and the CPUs Ray reserves for each (``resources.worker_cpus``)."""
        return self._set(resources={"num_workers": num_env_runners, "worker_cpus": num_cpus_per_env_runner})

    def learners(self, device: str = _UNSET, num_cpus: float = _UNSET, num_threads: int = _UNSET) -> MetaRLConfig:
        """The learner actor: ``resources.device`` (auto/cpu/cuda), ``resources.learner_cpus``,
        ``resources.learner_threads``."""
        return self._set(resources={"device": device, "learner_cpus": num_cpus, "learner_threads": num_threads})

    def training(self, **kwargs: Any) -> MetaRLConfig:
        """Any other :class:`Config` key: run-wide ones by name (``inner_lr``, ``meta_batch_size``,
        ``iterations``, ``meta_optimizer``, ``checkpoint_every``, …), a section's as a mapping
        (``trpo={"max_kl": 0.02}``, ``policy={"hidden_sizes": [64, 64]}``; the keys it names change, the
        others stay). The old flat names (``max_kl=0.02``) are read as their section's, with the note."""
        if "algorithm" in kwargs:
            raise ConfigError("training(algorithm=...): choose the builder instead (MetaSGDConfig or MAMLConfig)")
        return self._set(**kwargs)

    def debugging(self, seed: int = _UNSET) -> MetaRLConfig:
        """Seed for initialisation, tasks and action noise."""
        return self._set(seed=seed)

    def update_from_dict(self, values: dict[str, Any]) -> MetaRLConfig:
        """Set keys from a plain ``Config``-style dict (e.g. a parsed YAML preset; sections merged key by key)."""
        values = dict(values)
        algorithm = values.pop("algorithm", self.algorithm)
        if algorithm != self.algorithm:
            raise ConfigError(f"algorithm: {algorithm!r} given to {type(self).__name__} ({self.algorithm!r})")
        return self._set(**values)

    def _set(self, **values: Any) -> MetaRLConfig:
        source, old = type(self).__name__, []
        for key, value in values.items():
            if value is _UNSET:
                continue
            if key in OLD_FLAT_KEYS:  # the old spelling: training(max_kl=0.02) is training(trpo={"max_kl": 0.02})
                old.append(key)
                section, name = OLD_FLAT_KEYS[key].split(".")
                key, value = section, {name: value}
            if key in SECTIONS:
                if isinstance(value, SECTIONS[key]):  # trpo=TRPOConfig(max_kl=0.02): every key of the section
                    value = value.model_dump()
                value = {k: v for k, v in value.items() if v is not _UNSET} if isinstance(value, dict) else value
                place_keys(
                    {key: value}, source
                )  # a mapping of the section's own keys, or one line naming the wrong one
                self._values.setdefault(key, {}).update(copy.deepcopy(value))
            elif key in Config.model_fields:
                self._values[key] = copy.deepcopy(value)
            else:
                Config.from_dict({key: value}, source=source)  # raises with a "did you mean"
        note_old_spelling(old)
        return self

    # -- results ------------------------------------------------------------------------------
    def copy(self) -> MetaRLConfig:
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        """The keys set so far (unset keys take :class:`Config`'s defaults); e.g. a Tune ``param_space``."""
        return copy.deepcopy(self._values)

    def to_config(self) -> Config:
        """The validated :class:`Config` (raises :class:`ConfigError` naming a bad key)."""
        return Config.from_dict(self.to_dict(), source=type(self).__name__)

    def build_algo(self, out_dir: str | Path | None = None, address: str | None = None) -> MetaAlgorithm:
        """Start the algorithm: Ray (``address``, or the one already initialised, or a new local
        one), the learner and the rollout actors. ``out_dir`` is the run directory (default:
        ``runs/<algorithm>-<time>-<id>``)."""
        return MetaAlgorithm(self.to_config(), out_dir=out_dir, address=address)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._values})"


class MetaSGDConfig(MetaRLConfig):
    """Meta-SGD (Li et al. 2017): one learned inner step size α per policy parameter."""

    algorithm = "metasgd"


class MAMLConfig(MetaRLConfig):
    """MAML (Finn et al. 2017): a fixed scalar inner step size α = ``inner_lr``."""

    algorithm = "maml"


def export_rllib(
    run: str | Path,
    out: str | Path,
    task: Any = None,
    steps: int | None = None,
    episodes: int | None = None,
    seed: int = 0,
) -> Path:
    """``metarl export RUN --format rllib``: θ, or θ' adapted to ``task``, as an RLlib RLModule checkpoint.

    ``run`` is a run directory or checkpoint file; ``task`` a task dict or goal (``steps`` inner
    steps, default 1, sampled as ``metarl evaluate --seed seed``). ``out`` is a new directory
    holding PPO's default module (:mod:`metarl.rllib`): ``RLModule.from_checkpoint(out)``, or
    ``RLModuleSpec(load_state_path=out)`` to keep training with RLlib. RLlib's format is pickle:
    for RLlib, not for untrusted exchange.
    """
    # lazy: building a config loads neither torch nor Ray (nor RLlib)
    from metarl.export import export_params
    from metarl.rllib import export_run
    from metarl.runtime.evaluation import load_run

    loaded = load_run(run)
    params, _ = export_params(loaded, task, steps, episodes, seed)
    return export_run(loaded, params, out)


class MetaAlgorithm:
    """A running meta-learner: ``train()`` one meta-iteration at a time, save, restore, evaluate.

    A handle on :class:`metarl.runtime.trainer.Trainer` (the loop behind ``metarl train``).
    """

    def __init__(
        self, config: Config, out_dir: str | Path | None = None, address: str | None = None, resume: bool = False
    ):
        # lazy: building a config loads neither torch nor Ray
        from metarl.runtime.rundir import default_run_dir
        from metarl.runtime.trainer import Trainer

        config.validate()
        self.config = config
        self.run_dir = Path(out_dir) if out_dir is not None else default_run_dir(config.algorithm, unique=True)
        self._trainer: Trainer | None = Trainer(config, self.run_dir, address=address, resume=resume)

    @property
    def trainer(self):
        if self._trainer is None:
            raise RuntimeError("this algorithm was stopped; build a new one or use MetaAlgorithm.from_checkpoint")
        return self._trainer

    @property
    def iteration(self) -> int:
        return self.trainer.iteration

    def train(self) -> dict[str, Any]:
        """One meta-iteration (sample, adapt, sample, meta-update); returns its metrics.

        The same dict is appended to ``metrics.jsonl``; a checkpoint is written every
        ``checkpoint_every`` iterations and at ``iterations``, as in ``metarl train``. Calling
        ``train()`` more than ``iterations`` times is allowed.
        """
        return dict(self.trainer.train_iteration())

    def save_to_path(self, path: str | Path | None = None) -> str:
        """Write a checkpoint of the current state; returns the checkpoint file's path.

        ``path`` is a directory (created if needed; default: the run's ``checkpoints/``). The
        file is an ordinary metarl checkpoint: ``metarl evaluate`` and ``from_checkpoint`` read it.
        """
        return str(self.trainer.save(path))

    def restore_from_path(self, path: str | Path) -> str:
        """Load a checkpoint (file, checkpoint directory or run directory) into this algorithm."""
        return str(self.trainer.restore(path))

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        out_dir: str | Path | None = None,
        address: str | None = None,
        trust_env_module: bool = False,
    ) -> MetaAlgorithm:
        """Rebuild an algorithm from a checkpoint's own config and state.

        ``path`` is a checkpoint file, a directory of checkpoints, or a run directory (its
        latest checkpoint). Training continues in ``out_dir`` (default: a new run directory;
        pass the original run directory to continue that run in place, which drops its rows
        past the checkpoint). ``trust_env_module``: allow a config whose ``env`` is ``module:id`` to
        import that module (a checkpoint alone never makes metarl import code).
        """
        # lazy: building a config loads neither torch nor Ray
        from metarl.runtime.checkpoint import list_checkpoints, load_checkpoint, resolve_checkpoint, run_config
        from metarl.runtime.rundir import default_run_dir

        file = resolve_checkpoint(path)
        state = load_checkpoint(file, trust_env_module=trust_env_module)
        cfg = run_config(file, state, trust_env_module=trust_env_module)
        run_dir = Path(out_dir) if out_dir is not None else default_run_dir(cfg.algorithm, unique=True)
        algo = cls(cfg, out_dir=run_dir, address=address, resume=bool(list_checkpoints(run_dir / "checkpoints")))
        try:
            algo.trainer.restore(file)
        except BaseException:
            algo.stop()
            raise
        return algo

    def get_weights(self) -> dict[str, dict[str, np.ndarray]]:
        """``{"theta": {name: array}, "alpha": {name: array}}`` (α is a scalar per tensor for MAML)."""
        # lazy: building a config loads neither torch nor Ray
        import ray

        state = ray.get(self.trainer.learner.state_dict.remote())
        return {group: {k: v.numpy().copy() for k, v in state[group].items()} for group in ("theta", "alpha")}

    def compute_single_action(
        self, observation, explore: bool = False, params: dict | None = None, rng: np.random.Generator | None = None
    ):
        """The action for one observation under the current θ (RLlib's method name).

        ``explore=False`` (the default here) is deterministic: the Gaussian's mean or the
        categorical's arg-max, the same action for the same observation. ``explore=True``
        samples from the policy with ``rng``. ``params`` replaces θ, e.g. adapted parameters from
        :func:`metarl.export.adapted_params`. Returns what the env's ``step`` takes.
        """
        # lazy: building a config loads neither torch nor Ray
        import torch

        from metarl.core.policies import env_actions, forward, sample

        # lazy: building a config loads neither torch nor Ray
        from metarl.export import deterministic_action

        spec = self.trainer.spec
        if params is None:
            params = {k: torch.from_numpy(v) for k, v in self.get_weights()["theta"].items()}
        if not explore:
            return deterministic_action(spec, params, observation)
        rng = np.random.default_rng() if rng is None else rng
        dtype = next(iter(params.values())).dtype
        obs = torch.as_tensor(np.asarray(observation), dtype=dtype).reshape(1, spec.obs_dim)
        with torch.no_grad():
            dist = forward(spec, params, obs)
            noise = rng.standard_normal(dist[0].shape) if spec.kind == "gaussian" else rng.gumbel(size=dist[0].shape)
            action = sample(spec, dist, torch.as_tensor(noise, dtype=dtype)).numpy()
        return env_actions(spec, action)[0]

    def evaluate(
        self,
        goals=None,
        num_tasks: int | None = None,
        steps: int = 3,
        episodes: int | None = None,
        seed: int = 0,
        local: bool = False,
        num_workers: int | None = None,
    ) -> dict[str, Any]:
        """The papers' test protocol on the current (θ, α): :func:`metarl.runtime.evaluation.evaluate`.

        Evaluates the checkpoint of the current iteration (written first if there is none), so
        the report names a file that ``metarl evaluate`` reproduces. Sampling uses fresh
        RolloutWorker actors on this Ray; when the cluster has no CPU free for one (training's
        actors hold them), it samples in-process instead, which gives the same numbers.
        """
        # lazy: building a config loads neither torch nor Ray
        import ray

        # lazy: building a config loads neither torch nor Ray
        from metarl.runtime.checkpoint import list_checkpoints
        from metarl.runtime.evaluation import evaluate

        trainer = self.trainer
        current = [p for p in list_checkpoints(trainer.ckpt_dir) if p.name == f"checkpoint-{trainer.iteration:06d}.pt"]
        checkpoint = current[0] if current else trainer.save()
        if not local and ray.available_resources().get("CPU", 0.0) + 1e-9 < self.config.resources.worker_cpus:
            log.info("evaluate: no free CPU for a rollout actor; sampling in-process (same numbers)")
            local = True
        return evaluate(
            checkpoint,
            goals=goals,
            num_tasks=num_tasks,
            steps=steps,
            episodes=episodes,
            seed=seed,
            local=local,
            num_workers=num_workers,
        )

    def stop(self) -> None:
        """End this algorithm's actors and placement groups (Ray itself keeps running)."""
        if self._trainer is not None:
            self._trainer.close()
            self._trainer = None

    def __enter__(self) -> MetaAlgorithm:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"iteration {self._trainer.iteration}" if self._trainer is not None else "stopped"
        return f"MetaAlgorithm({self.config.algorithm} on {self.config.env}, {state}, run_dir={str(self.run_dir)!r})"
