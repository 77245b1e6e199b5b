"""Ray Tune: :class:`MetaRLTrainable` runs the same :class:`~metarl.runtime.trainer.Trainer` as ``metarl train``.

::

    from ray import tune
    from metarl.api import MetaSGDConfig
    from metarl.tune import MetaRLTrainable

    space = MetaSGDConfig().training(meta_batch_size=20, inner_lr=tune.grid_search([0.05, 0.1])).to_dict()
    tuner = tune.Tuner(MetaRLTrainable, param_space=space, run_config=tune.RunConfig(
        stop={"training_iteration": 100},
        failure_config=tune.FailureConfig(max_failures=2),
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=10),
        sync_config=tune.SyncConfig(sync_artifacts=True),  # copy each trial's run directory to storage
    ))
    results = tuner.fit()

The same trainable by name, after ``import metarl`` (RLlib's ``tune.Tuner("PPO")`` idiom; the
name fixes the algorithm): ``tune.Tuner("metarl/MetaSGD", param_space=space, ...)``, or
``"metarl/MAML"`` with a :class:`~metarl.api.MAMLConfig` space.

A trial's config is a :class:`~metarl.config.Config` as a dict (validated in ``setup``). One
``step()`` is one meta-iteration; its result is the ``metrics.jsonl`` row (plus ``done`` once
``iterations`` is reached). Tune checkpoints are ordinary metarl checkpoints
(``checkpoint-NNNNNN.pt`` + ``.json``), so ``metarl evaluate`` reads them directly, and a
crashed trial continues exactly from its last one (``FailureConfig(max_failures=...)``).

Resources: the trial's placement group reserves what the trainer's actors need —
``[{CPU: 0}, {CPU: learner_cpus (+1 GPU)}, {CPU: worker_cpus} x num_workers]`` (the ``resources``
section's keys), by the rules of :mod:`metarl.runtime.rollout_group`: the trainable itself only
waits on its actors — and the trainer places its learner and rollout workers in those bundles
instead of creating placement groups of its own, so Tune starts a trial only when all of its
actors fit. A trial given other
resources (``tune.with_resources``) falls back to the trainer's own placement groups, which
then need CPUs outside the trial's reservation.

The trial's run directory (``config.yaml``, ``metrics.jsonl``/``.csv``, ``tensorboard/``, the
trainer's own ``checkpoints/``) is the trial's working directory (``self.logdir``); Tune copies
it to the experiment's storage with ``SyncConfig(sync_artifacts=True)`` (``run_sweep`` sets it).
A restarted trial continues the run directory; with a Tune checkpoint it continues from exactly
that checkpoint, dropping the rows logged after it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import PlacementGroupFactory

from metarl import tune_names
from metarl.config import Config, ConfigError, canonical_key, get_dotted, set_dotted
from metarl.config_text import parse_value
from metarl.runtime.checkpoint import list_checkpoints
from metarl.runtime.rollout_group import ReservedBundles, init_ray, learner_bundle, learner_uses_gpu, worker_bundles
from metarl.runtime.trainer import Trainer

log = logging.getLogger(__name__)

TRIAL_STRATEGY = "SPREAD"  # as the trainer's own rollout placement group: workers on different nodes


def trial_layout(cfg: Config) -> tuple[list[dict[str, float]], int | None, list[int]]:
    """Bundles for a trial of ``cfg`` and where its actors go.

    Returns ``(bundles, learner, workers)``: the PlacementGroupFactory's bundles (an empty head
    bundle for the trainable first), and the indices of the learner's and of each rollout
    worker's bundle in the placement group Tune creates from them (Tune drops the empty head
    bundle). ``None`` / ``[]`` where an actor asks for no resources.
    """
    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    res = cfg.resources
    learner = learner_bundle(res.learner_cpus, learner_uses_gpu(res.device, gpus))
    bundles: list[dict[str, float]] = [{"CPU": 0.0}]
    learner_index = None
    if learner:
        learner_index = len(bundles) - 1
        bundles.append(learner)
    workers = []
    for bundle in worker_bundles(res.num_workers, res.worker_cpus):
        workers.append(len(bundles) - 1)
        bundles.append(bundle)
    return bundles, learner_index, workers


class MetaRLTrainable(tune.Trainable):
    """One Tune trial = one :class:`~metarl.runtime.trainer.Trainer` (learner + rollout actors)."""

    algorithm: str | None = None  # set by the named trainables: the trial's algorithm, fixed

    @classmethod
    def metarl_config(cls, config: dict[str, Any]) -> Config:
        """The trial's :class:`Config` from Tune's config dict (subclasses may strip their own keys)."""
        config = dict(config)
        if cls.algorithm is not None:
            given = config.setdefault("algorithm", cls.algorithm)
            if given != cls.algorithm:
                raise ConfigError(
                    f"algorithm: {given!r} in the param_space of {cls.__name__}, which runs "
                    f"{cls.algorithm!r}; drop the key or use the other trainable"
                )
        return Config.from_dict(config, source="trial config")

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]) -> PlacementGroupFactory | None:
        bundles, learner, workers = trial_layout(cls.metarl_config(config))
        if learner is None and not workers:
            return None  # nothing to reserve for actors: Tune's default for the trainable applies
        return PlacementGroupFactory(bundles, strategy=TRIAL_STRATEGY)

    def setup(self, config: dict[str, Any]) -> None:
        cfg = self.metarl_config(config)
        bundles, learner, workers = trial_layout(cfg)
        group = ray.util.get_current_placement_group()
        placement = None
        if group is not None and self.trial_resources == PlacementGroupFactory(bundles, strategy=TRIAL_STRATEGY):
            placement = ReservedBundles(group, learner, workers)
        elif group is not None:
            log.warning(
                "trial resources %s are not metarl's layout %s; the trainer creates its own placement "
                "groups (they need CPUs outside the trial's)",
                self.trial_resources,
                bundles,
            )
        self.run_dir = Path(self.logdir)
        # A restarted trial finds its earlier attempt's run directory: continue it (Tune's
        # load_checkpoint, when it follows, pins the state to Tune's checkpoint). The directory is
        # Tune's (managed): its earlier attempt's metrics are cut back by that restore, or by step().
        resume = bool(list_checkpoints(self.run_dir / "checkpoints"))
        self.trainer = Trainer(cfg, self.run_dir, resume=resume, placement=placement, managed=True)

    def step(self) -> dict[str, Any]:
        if self.trainer.iteration == 0 and self.trainer.metrics.path.exists():
            self.trainer.metrics.truncate_after(0)  # a restarted trial that Tune did not restore starts over
        metrics = dict(self.trainer.train_iteration())
        if self.trainer.iteration >= self.trainer.cfg.iterations:
            metrics["done"] = True
        return metrics

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.trainer.save(checkpoint_dir)

    def load_checkpoint(self, checkpoint: str | dict) -> None:
        self.trainer.restore(checkpoint)

    def cleanup(self) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            trainer.close()


class MetaSGDTrainable(MetaRLTrainable):
    """``tune.Tuner("metarl/MetaSGD", param_space=MetaSGDConfig()....to_dict())``: Meta-SGD trials."""

    algorithm = "metasgd"


class MAMLTrainable(MetaRLTrainable):
    """``tune.Tuner("metarl/MAML", param_space=MAMLConfig()....to_dict())``: MAML trials."""

    algorithm = "maml"


# The names `import metarl` registers with Tune (metarl.tune_names), as RLlib's "PPO".
TUNE_NAMES: dict[str, type[MetaRLTrainable]] = {"metarl/MetaSGD": MetaSGDTrainable, "metarl/MAML": MAMLTrainable}
tune_names._after_tune_import()  # when this module's own `from ray import tune` was Tune's first import


# -- sweeps: `metarl sweep` and scripts/sweep.py ------------------------------------------------------
def split_values(text: str) -> list[str]:
    """``"0.05,0.1"`` → ``["0.05", "0.1"]``; commas inside ``[...]``/``{...}`` stay (``"[32,32],[64]"``)."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["inner_lr=1e-2,0.1", "env_kwargs.action_mode=clip,scale"]`` → ``{"inner_lr": [0.01, 0.1], …}``.

    Each value is read by ``--set``'s parser (:func:`metarl.config_text.parse_value`), so ``1e-2`` is a
    float in both; keys may be dotted like ``--set``'s.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ConfigError(f"--grid {item!r}: expected key=v1,v2,... e.g. --grid inner_lr=0.05,0.1")
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice; list all its values in one --grid")
        grid[key] = [parse_value(v, f"--grid {item!r}", key) for v in split_values(values)]
        if any(v is None for v in grid[key]):
            raise ConfigError(f"--grid {item!r}: empty value")
    return grid


def grid_configs(base: dict[str, Any], grid: dict[str, list[Any]]) -> list[Config]:
    """Every combination as a validated Config (so a bad value stops before Ray starts)."""
    keys = list(grid)
    configs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = ", ".join(f"{k}={v!r}" for k, v in zip(keys, values))
        raw = dict(base)
        for k, v in zip(keys, values):
            set_dotted(raw, k, v)
        configs.append(Config.from_dict(raw, source=f"sweep point {point}"))
    return configs


def run_sweep(
    base: dict[str, Any],
    grid: dict[str, list[Any]],
    out: str | Path,
    iterations: int | None = None,
    max_failures: int = 0,
    address: str | None = None,
    verbose: int = 1,
    trainable: type[MetaRLTrainable] = MetaRLTrainable,
):
    """Grid search over ``grid`` on top of ``base`` (a Config dict); returns Tune's ResultGrid.

    ``out`` is the experiment directory (Tune's ``storage_path/name``); each trial's run
    directory is synced into its trial directory there. Trials stop after ``iterations``
    (default: the config's), checkpoint every ``checkpoint_every`` iterations and at the end,
    and are restarted from their last checkpoint up to ``max_failures`` times.
    """
    base = dict(base)
    if iterations is not None:
        base["iterations"] = iterations
    configs = grid_configs(base, grid)
    cfg = configs[0]
    out = Path(out).resolve()
    space = dict(base)
    for k, v in grid.items():  # an old flat grid key (max_kl) was read, with the note, by grid_configs
        set_dotted(space, canonical_key(k), tune.grid_search(v))
    init_ray(address)
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        run_config=tune.RunConfig(
            name=out.name,
            storage_path=str(out.parent),
            stop={"training_iteration": cfg.iterations},
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=cfg.checkpoint_every, checkpoint_at_end=True, num_to_keep=cfg.keep_checkpoints
            ),
            sync_config=tune.SyncConfig(sync_artifacts=True),
            verbose=verbose,
        ),
    )
    return tuner.fit()


def summarize(results, grid_keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per trial: its grid values, last iteration and returns, checkpoint, error."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        rows.append(
            {
                **{k: get_dotted(result.config, k) for k in grid_keys},
                "iteration": metrics.get("iteration"),
                "return_pre": metrics.get("return_pre"),
                "return_post": metrics.get("return_post"),
                "checkpoint": result.checkpoint.path if result.checkpoint else None,
                "trial_dir": result.path,
                "error": None
                if result.error is None
                else f"{type(result.error).__name__}: {result.error}".splitlines()[0],
            }
        )
    return rows


def format_summary(rows: list[dict[str, Any]], grid_keys: Sequence[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    columns = [*grid_keys, "iteration", "return_pre", "return_post", "trial_dir"]
    table = [columns] + [[fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in table]
    lines += [f"error in {r['trial_dir']}: {r['error']}" for r in rows if r["error"]]
    return "\n".join(lines)
