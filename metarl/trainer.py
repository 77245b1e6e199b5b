"""The meta-training loop, on Ray actors: rollout workers + one central learner.

Per meta-iteration (MAML: Finn et al. 2017; Meta-SGD: Li et al. 2017)::

    tasks Tᵢ ~ p(T)                                   sample_tasks
    θ⁰ᵢ = θ
    for j = 0 .. inner_steps−1:
        Dʲᵢ   ← K episodes of π_θʲᵢ on each Tᵢ          workers, phase "pre" (then "inner step j+1")
        θʲ⁺¹ᵢ ← θʲᵢ − α ∘ ∇ L(Dʲᵢ; θʲᵢ)  (all i at once)  learner.adapt
    D'ᵢ  ← K episodes of π_θ'ᵢ on each Tᵢ  (θ'ᵢ = θᵏᵢ)  workers, phase "post"
    (θ, α) ← TRPO/Adam step on Σᵢ L(D'ᵢ; θ'ᵢ(θ, α))    learner.meta_update (through all k steps)
    checkpoint every N iterations

Rollouts go from the workers to the learner through the object store as contiguous numpy
arrays; the driver only passes references. θ (pre) and the stack of all θ'ᵢ (post) are put
in the object store once per phase and shared by every worker.

Placement: the rollout actors live in a placement group with one ``{CPU: worker_cpus}`` bundle
each and the ``SPREAD`` strategy, so they go to different nodes where the cluster has them; each
gets a slice of the meta-batch proportional to its share. The learner gets its own one-bundle
group (with a GPU when ``device`` is ``cuda``, or ``auto`` and the cluster has one). Requests
the cluster can never meet fail before anything starts (:func:`check_placement`); a group that
stays unplaced for :data:`PLACEMENT_TIMEOUT_S` fails with what is free.

Failures: a rollout call is a pure function of its arguments (per-task noise seeds), so it may
run again anywhere. A worker process that dies mid-call is restarted by Ray and the call re-run
there (``max_restarts``/``max_task_retries``); the driver notices the new process id in the
call's receipt, logs it and counts it in ``workers/restarts``. A worker that is gone for good
has its slice re-sent to a surviving worker and is replaced. A dead learner ends training with
:class:`LearnerDiedError`, whose message says how to resume from the last checkpoint.
"""

from __future__ import annotations

import logging
import math
import shlex
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from metarl import rundir
from metarl.checkpoint import load_checkpoint, load_latest, resolve_checkpoint, save_checkpoint
from metarl.config import Config
from metarl.learner import Learner
from metarl.metrics import MetricsWriter
from metarl.policies import PolicySpec
from metarl.runtime import ACTOR_RUNTIME_ENV
from metarl.tasks import env_horizon, make_env, sample_tasks, space_dims
from metarl.workers import RolloutWorker

log = logging.getLogger(__name__)

PLACEMENT_TIMEOUT_S = 30.0  # a placement group still pending after this fails with what is free
READY_TIMEOUT_S = 120.0  # actors' start (imports, env construction)
WORKER_MAX_RESTARTS = 3  # Ray restarts a killed rollout process this often ...
WORKER_MAX_TASK_RETRIES = 3  # ... and re-runs its in-flight call there
_EPS = 1e-9


class ResourceError(RuntimeError):
    """The cluster can never satisfy what the config asks for."""


class TrainingDivergedError(RuntimeError):
    """``max_consecutive_skips`` meta-updates in a row were skipped for non-finite values.

    θ and α are still the last finite values (a skipped update never touches them) and no NaN
    was checkpointed; the message names the iterations, the last reason and likely causes.
    """


class LearnerDiedError(RuntimeError):
    """The learner actor died; the run can continue from its last checkpoint with ``--resume``."""

    def __init__(self, iteration: int, resume_command: str):
        self.iteration, self.resume_command = iteration, resume_command
        super().__init__(f"learner died at iteration {iteration}; resume with: {resume_command}")


@dataclass(frozen=True)
class ReservedBundles:
    """Bundles that someone else reserved for this trainer's actors (a Ray Tune trial's placement group).

    The trainer then places the learner in bundle ``learner`` and rollout worker ``i`` in bundle
    ``workers[i]`` of ``group`` instead of creating placement groups of its own, and never
    removes ``group``. ``None`` / an empty list: that actor asks for no resources (0 CPUs).
    """

    group: Any  # ray.util.placement_group.PlacementGroup
    learner: int | None
    workers: list[int]


def policy_spec(cfg: Config, env) -> PolicySpec:
    obs_dim, act_dim, kind = space_dims(env)
    return PolicySpec(obs_dim, act_dim, tuple(cfg.hidden_sizes), cfg.activation, cfg.init_std, kind)


def init_ray(address: str | None) -> None:
    """Join ``address`` or start a local Ray whose processes a process-group signal does not reach."""
    from metarl.runtime import quiet_local_ray_auth_notice
    from metarl.signals import ray_processes_in_own_session

    if not ray.is_initialized():
        with ray_processes_in_own_session(), quiet_local_ray_auth_notice(address):
            ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=True)


# -- placement ----------------------------------------------------------------------------------
def split_by_share(n: int, shares: Sequence[float]) -> list[np.ndarray]:
    """Split ``range(n)`` into contiguous slices with sizes proportional to ``shares``.

    Largest-remainder rounding; ties go to the earlier share, so equal shares give the sizes of
    ``np.array_split``.
    """
    shares = np.asarray(shares, dtype=float)
    if len(shares) == 0 or shares.sum() <= 0:
        raise ValueError("split_by_share needs at least one positive share")
    quota = n * shares / shares.sum()
    sizes = np.floor(quota + _EPS).astype(int)
    rest = n - sizes.sum()
    for i in sorted(range(len(shares)), key=lambda i: (-(quota[i] - sizes[i]), i))[:rest]:
        sizes[i] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(len(shares))]


def _describe_nodes(nodes: Sequence[dict[str, float]]) -> str:
    parts = []
    for n in nodes:
        gpu = f", {n.get('GPU', 0):g} GPU" if n.get("GPU", 0) else ""
        parts.append(f"{n.get('CPU', 0):g} CPU{gpu}")
    return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}: " + "; ".join(parts)


def check_placement(
    nodes: Sequence[dict[str, float]], learner_cpus: float, learner_gpu: bool, num_workers: int, worker_cpus: float
) -> None:
    """Raise :class:`ResourceError` unless the learner and every worker fit on ``nodes`` at once.

    ``nodes`` are the total resources of each node. Each actor's resources must come from one
    node; with two kinds of request this is decided exactly: some node holds the learner, and
    every node holds ``floor(free CPUs / worker_cpus)`` workers.
    """
    cpus = [float(n.get("CPU", 0)) for n in nodes]
    gpus = [float(n.get("GPU", 0)) for n in nodes]
    where = _describe_nodes(nodes)
    hosts = [k for k in range(len(nodes)) if cpus[k] + _EPS >= learner_cpus and (not learner_gpu or gpus[k] >= 1)]
    if not hosts:
        if learner_gpu:
            raise ResourceError(
                f"GPU: the learner asks for 1 GPU and {learner_cpus:g} CPUs on one node; no node has both "
                f"({where}). Set device: cpu or lower learner_cpus."
            )
        raise ResourceError(
            f"CPU: the learner asks for learner_cpus={learner_cpus:g} CPUs on one node; the largest node has "
            f"{max(cpus, default=0):g} ({where}). Lower learner_cpus."
        )
    if worker_cpus <= 0:
        return
    if worker_cpus > max(cpus) + _EPS:
        raise ResourceError(
            f"CPU: each rollout worker asks for worker_cpus={worker_cpus:g} CPUs on one node; the largest node has "
            f"{max(cpus):g} ({where}). Lower worker_cpus."
        )

    def fit(c: float) -> int:
        return max(0, math.floor((c + _EPS) / worker_cpus))

    best = max(fit(cpus[k] - learner_cpus) + sum(fit(cpus[j]) for j in range(len(nodes)) if j != k) for k in hosts)
    if best < num_workers:
        raise ResourceError(
            f"CPU: {num_workers} rollout workers x {worker_cpus:g} CPUs (plus the learner's {learner_cpus:g}) do not "
            f"fit on the cluster's nodes, which hold at most {best} such workers beside the learner ({where}); a "
            f"worker's CPUs must come from one node. Lower num_workers or worker_cpus."
        )


def _alive_nodes() -> list[dict[str, float]]:
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


class Trainer:
    def __init__(
        self,
        cfg: Config,
        out_dir: str | Path,
        address: str | None = None,
        resume: bool = False,
        config_path: str | Path | None = None,
        overrides: Sequence[str] = (),
        placement: ReservedBundles | None = None,
        managed: bool = False,
    ):
        """``managed``: ``out_dir`` belongs to a caller that restores state itself (a Ray Tune
        trial restarted in its own directory), so a fresh start there is not refused."""
        self.cfg = cfg
        self.placement = placement
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.address = address
        self.resume_command = self._resume_command(config_path, overrides)
        if resume and not self.out.is_dir():
            raise rundir.RunDirError(f"--resume: {self.out} does not exist or is not a directory; nothing to resume")
        rundir.prepare(self.out)
        self._lock: rundir.RunLock | None = None
        self.resume_changes: dict[str, tuple[Any, Any]] = {}  # resumable keys that differ from the checkpoint's
        self.metrics = MetricsWriter(self.out / "metrics.jsonl")

        self.env = make_env(cfg.env, cfg.env_kwargs)
        self.horizon = env_horizon(self.env, cfg.horizon)
        self.spec = policy_spec(cfg, self.env)
        self.rng = np.random.default_rng(cfg.seed)
        self.iteration, self.env_steps = 0, 0
        self.consecutive_non_finite = 0  # meta-updates skipped in a row for NaN/inf (max_consecutive_skips)
        self.checkpointed_iteration: int | None = None  # iteration of the newest checkpoint in ckpt_dir
        self.last_checkpoint: Path | None = None

        # Actors and placement groups, set before anything can fail so close() can clean up.
        self.learner = None
        self.workers: list[Any] = []
        self._learner_pg = self._rollout_pg = None
        self.worker_pids: list[int | None] = []  # last seen process id of each rollout actor
        self.worker_nodes: list[str | None] = []  # ... and the node it ran on
        self.worker_restarts = 0  # restarted or replaced rollout processes, over the whole run
        self.resumes = 0  # times this run was stopped and continued with --resume, over the whole run
        self.last_nodes: set[str] = set()  # nodes that sampled in the last iteration
        self._starting: dict[int, ray.ObjectRef] = {}  # replacement actors not yet ready: index -> node_info ref
        self._iteration_refs: list[ray.ObjectRef] = []  # every call of the current iteration

        try:
            self._claim_run_dir(resume, managed)
            init_ray(address)
            use_gpu = self._check_resources()
            self._start_actors(use_gpu)
            if resume:
                self._restore()
            cfg.dump(self.out / "config.yaml")  # only once the run is sure to go on: a refused one rewrites nothing
        except BaseException:
            self.close()
            raise

    def _claim_run_dir(self, resume: bool, managed: bool) -> None:
        """Lock the run directory, then check it may be written as asked (see :mod:`metarl.rundir`)."""
        self._lock = rundir.RunLock(self.out)
        if resume:
            self.resume_changes = rundir.resume_changes(self.out, self.cfg)
        elif not managed:
            rundir.check_fresh(self.out)
        self._lock.announce()

    def _resume_command(self, config_path: str | Path | None, overrides: Sequence[str]) -> str:
        # Without the original file, the run directory's resolved config resumes the same run.
        words = ["metarl", "train", str(config_path or self.out / "config.yaml")]
        if config_path and overrides:
            words += ["--set", *overrides]
        words += ["--out", str(self.out)]
        if self.address:
            words += ["--address", self.address]
        return shlex.join([*words, "--resume"])

    # -- resources and placement -----------------------------------------------------------------
    def _check_resources(self) -> bool:
        """Fail fast on requests the cluster can never meet; return whether the learner gets a GPU."""
        total = ray.cluster_resources()
        gpus = total.get("GPU", 0)
        use_gpu = self.cfg.device == "cuda" or (self.cfg.device == "auto" and gpus >= 1)
        if use_gpu and gpus < 1:
            raise ResourceError(f"GPU: device: cuda asks for 1 GPU for the learner; the Ray cluster has {gpus:g} GPUs")
        cpus_needed = self.cfg.learner_cpus + self.cfg.num_workers * self.cfg.worker_cpus
        if cpus_needed > total.get("CPU", 0) + _EPS:
            raise ResourceError(
                f"CPU: the learner ({self.cfg.learner_cpus:g}) and {self.cfg.num_workers} rollout workers "
                f"({self.cfg.worker_cpus:g} each) ask for {cpus_needed:g} CPUs; the Ray cluster has "
                f"{total.get('CPU', 0):g}. Lower num_workers or worker_cpus."
            )
        check_placement(_alive_nodes(), self.cfg.learner_cpus, use_gpu, self.cfg.num_workers, self.cfg.worker_cpus)
        return use_gpu

    def _place(self, bundles: list[dict[str, float]], strategy: str, what: str):
        pg = placement_group(bundles, strategy=strategy, name=f"metarl-{what.split()[0]}-{uuid.uuid4().hex[:8]}")
        if not pg.wait(timeout_seconds=PLACEMENT_TIMEOUT_S):
            remove_placement_group(pg)
            free = ray.available_resources()
            raise ResourceError(
                f"placement: the {what} ({len(bundles)} x {bundles[0]}, {strategy}) was not placed within "
                f"{PLACEMENT_TIMEOUT_S:g} s; the cluster has {free.get('CPU', 0):g} CPUs and {free.get('GPU', 0):g} "
                f"GPUs free ({_describe_nodes(_alive_nodes())} in total). Other jobs may hold them."
            )
        return pg

    def _start_actors(self, use_gpu: bool) -> None:
        cfg = self.cfg
        # The learner first: it may need the one node with a GPU.
        learner_bundle = {k: v for k, v in (("CPU", cfg.learner_cpus), ("GPU", 1.0 if use_gpu else 0.0)) if v > 0}
        learner_opts: dict[str, Any] = {}
        if self.placement is not None:  # bundles reserved for us (a Tune trial): no groups of our own
            if self.placement.learner is not None:
                learner_opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    self.placement.group, self.placement.learner)
        elif learner_bundle:
            self._learner_pg = self._place([learner_bundle], "PACK", "learner placement group")
            learner_opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(self._learner_pg, 0)
        self.learner = ray.remote(Learner).options(
            num_cpus=cfg.learner_cpus, num_gpus=1 if use_gpu else 0, max_restarts=0, runtime_env=ACTOR_RUNTIME_ENV,
            **learner_opts,
        ).remote(cfg, self.spec)
        if cfg.worker_cpus > 0 and self.placement is None:  # Ray refuses bundles of zero resources
            self._rollout_pg = self._place(
                [{"CPU": float(cfg.worker_cpus)}] * cfg.num_workers, "SPREAD", "rollout placement group"
            )
        self.workers = [self._new_worker(i) for i in range(cfg.num_workers)]
        self.worker_pids = [None] * cfg.num_workers
        self.worker_nodes = [None] * cfg.num_workers
        refs = [w.node_info.remote() for w in self.workers]
        try:
            infos = ray.get([self.learner.__ray_ready__.remote(), *refs], timeout=READY_TIMEOUT_S)[1:]
        except GetTimeoutError:
            raise RuntimeError(f"the learner and rollout actors did not start within {READY_TIMEOUT_S:g} s") from None
        for i, info in enumerate(infos):
            self.worker_pids[i], self.worker_nodes[i] = info["pid"], info["node_id"]
        log.info("rollout workers on nodes %s", self.worker_nodes)

    def _new_worker(self, i: int):
        """Rollout actor ``i``: in bundle ``i`` of the rollout placement group (spread over nodes)."""
        cfg = self.cfg
        if self.placement is not None and self.placement.workers:
            strategy: Any = PlacementGroupSchedulingStrategy(self.placement.group, self.placement.workers[i])
        elif self._rollout_pg is not None:
            strategy = PlacementGroupSchedulingStrategy(self._rollout_pg, placement_group_bundle_index=i)
        else:
            strategy = "SPREAD"
        # Rollout calls are pure functions of their arguments, so Ray may re-run them on a
        # restarted actor: a killed worker costs time, never episodes.
        return ray.remote(RolloutWorker).options(
            num_cpus=cfg.worker_cpus, max_restarts=WORKER_MAX_RESTARTS, max_task_retries=WORKER_MAX_TASK_RETRIES,
            runtime_env=ACTOR_RUNTIME_ENV, scheduling_strategy=strategy,
        ).remote(cfg.env, cfg.env_kwargs, self.spec, self.horizon, i)

    # -- sampling with failure handling ------------------------------------------------------------
    def _active_workers(self) -> list[int]:
        """Workers that can take calls; a replacement joins once it has started."""
        for i, ref in list(self._starting.items()):
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                try:
                    info = ray.get(ref)
                except RayActorError:
                    self.workers[i] = self._new_worker(i)
                    self._starting[i] = self.workers[i].node_info.remote()
                    continue
                self.worker_pids[i], self.worker_nodes[i] = info["pid"], info["node_id"]
                del self._starting[i]
        active = [i for i in range(len(self.workers)) if i not in self._starting]
        if not active:  # every worker is being replaced: wait for one
            ready, _ = ray.wait(list(self._starting.values()), num_returns=1, timeout=READY_TIMEOUT_S)
            if not ready:
                raise RuntimeError(f"no rollout worker could be started within {READY_TIMEOUT_S:g} s")
            return self._active_workers()
        return active

    def _sample(self, tasks, params_ref, per_task: bool, seeds: np.ndarray, phase: str) -> list[ray.ObjectRef]:
        """Roll out the whole meta-batch, one call per worker; returns rollout references.

        Each call has two results: a small receipt, which the driver reads, and the rollouts,
        which only the learner fetches. A call whose worker died is re-sent to another worker.
        """
        active = self._active_workers()
        shares = [self.cfg.worker_cpus or 1.0] * len(active)
        slices = [idx for idx in split_by_share(len(tasks), shares)]
        pending: dict[ray.ObjectRef, tuple[int, int, ray.ObjectRef, int]] = {}
        results: dict[int, tuple[dict, ray.ObjectRef]] = {}

        def submit(s: int, w: int, attempt: int) -> None:
            idx = slices[s]
            info_ref, data_ref = self.workers[w].sample_with_info.options(num_returns=2).remote(
                [tasks[i] for i in idx], idx, params_ref, per_task, self.cfg.episodes_per_task,
                [int(seeds[i]) for i in idx],
            )
            pending[info_ref] = (s, w, data_ref, attempt)
            self._iteration_refs += [info_ref, data_ref]

        for s, w in enumerate(active):
            if len(slices[s]):
                submit(s, w, 0)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            s, w, data_ref, attempt = pending.pop(ready[0])
            try:
                info = ray.get(ready[0])
            except RayActorError as exc:
                if self._is_learner_error(exc):
                    raise
                _swallow(data_ref)  # the same error; fetched so Ray does not report it as unhandled
                if attempt >= 2 * len(self.workers) + 2:
                    raise RuntimeError(f"rollout slice of tasks {slices[s].tolist()} failed {attempt + 1} times") from exc
                submit(s, self._worker_failed(w, exc, phase, len(slices[s])), attempt + 1)
                continue
            self._note_receipt(w, info, phase)
            results[s] = (info, data_ref)

        # Every task exactly once, with every episode: nothing lost, nothing counted twice.
        covered = sorted(i for info, _ in results.values() for i in info["task_index"])
        episodes = sum(info["episodes"] for info, _ in results.values())
        if covered != list(range(len(tasks))) or episodes != len(tasks) * self.cfg.episodes_per_task:
            raise RuntimeError(f"{phase} rollouts cover tasks {covered} with {episodes} episodes; expected "
                               f"{len(tasks)} tasks x {self.cfg.episodes_per_task}")
        self.last_nodes.update(info["node_id"] for info, _ in results.values())
        return [results[s][1] for s in sorted(results)]

    def _note_receipt(self, w: int, info: dict, phase: str) -> None:
        """Record where worker ``w``'s call ran; a new process id means Ray restarted it."""
        old = self.worker_pids[w]
        if old is not None and info["pid"] != old:
            self.worker_restarts += 1
            log.warning(
                "rollout worker %d restarted: pid %d -> %d on node %s; its %s sampling of %d tasks ran on the new "
                "process (iteration %d, %d restarts so far)",
                w, old, info["pid"], info["node_id"], phase, len(info["task_index"]), self.iteration + 1,
                self.worker_restarts,
            )
        self.worker_pids[w], self.worker_nodes[w] = info["pid"], info["node_id"]

    def _worker_failed(self, w: int, exc: RayActorError, phase: str, num_tasks: int) -> int:
        """Handle worker ``w``'s failed call; return the worker to re-send it to."""
        self.worker_restarts += 1
        # ActorDiedError: gone for good; otherwise (ActorUnavailableError) Ray is restarting it, and
        # its next receipt shows the new process without counting it again (pid reset below).
        gone = isinstance(exc, ActorDiedError)
        if gone:  # gone for good (restarts used up, or max_restarts=0): replace it in its bundle
            self.workers[w] = self._new_worker(w)
            self._starting[w] = self.workers[w].node_info.remote()
        old_pid, node = self.worker_pids[w], self.worker_nodes[w]
        self.worker_pids[w] = None
        survivors = [i for i in range(len(self.workers)) if i != w and i not in self._starting]
        target = survivors[(w + 1) % len(survivors)] if survivors else w
        if target == w and not gone:
            time.sleep(0.5)  # Ray is restarting it; its calls are refused until then
        log.warning(
            "rollout worker %d (pid %s, node %s) failed during %s sampling (%s)%s; re-sampling its %d tasks on "
            "worker %d (iteration %d, %d restarts so far)",
            w, old_pid, node, phase, type(exc).__name__, ", replacing it" if gone else "", num_tasks, target,
            self.iteration + 1, self.worker_restarts,
        )
        return target

    def _is_learner_error(self, exc: RayActorError) -> bool:
        learner_id = self.learner._actor_id.hex() if self.learner is not None else None
        return getattr(exc, "actor_id", None) == learner_id

    # -- one meta-iteration --------------------------------------------------------------
    def train_iteration(self) -> dict[str, Any]:
        self._iteration_refs = []
        try:
            return self._train_iteration()
        except RayActorError as exc:
            if self._is_learner_error(exc):
                # Every call of this iteration fails with the learner's error: collect them all,
                # so the one-line message is not followed by Ray's "unhandled error" reports.
                _drain(self._iteration_refs)
                raise LearnerDiedError(self.iteration + 1, self.resume_command) from exc
            raise
        finally:
            self._iteration_refs = []

    def _train_iteration(self) -> dict[str, Any]:
        cfg, timers = self.cfg, {}
        start = t = time.perf_counter()
        tasks = sample_tasks(self.env, cfg.meta_batch_size, self.rng)
        seeds = self.rng.integers(0, 2**31 - 1, size=(2, cfg.meta_batch_size))
        # inner steps after the first sample with seeds of their own (a stream apart, so one-step runs are unchanged)
        extra_seeds = [np.random.default_rng([cfg.seed, self.iteration, j]).integers(0, 2**31 - 1, cfg.meta_batch_size)
                       for j in range(1, cfg.inner_steps)]
        self.last_nodes = set()
        timers["time/sample_pre"] = timers["time/adapt"] = 0.0

        params_ref, per_task = self.learner.get_theta.remote(), False
        self._iteration_refs.append(params_ref)
        for step in range(cfg.inner_steps):  # sample with θ'ⱼ, adapt to θ'ⱼ₊₁ (θ'₀ = θ)
            step_seeds = seeds[0] if step == 0 else extra_seeds[step - 1]
            pre_refs = self._sample(tasks, params_ref, per_task, step_seeds, "pre" if step == 0 else f"inner step {step + 1}")
            timers["time/sample_pre"] += time.perf_counter() - t
            t = time.perf_counter()
            params_ref, per_task = self.learner.adapt.remote(pre_refs, step), True
            self._iteration_refs.append(params_ref)
            ray.wait([params_ref], fetch_local=False)
            timers["time/adapt"] += time.perf_counter() - t
            t = time.perf_counter()
        adapted_ref = params_ref

        post_refs = self._sample(tasks, adapted_ref, True, seeds[1], "post")
        timers["time/sample_post"], t = time.perf_counter() - t, time.perf_counter()

        stats = ray.get(self.learner.meta_update.remote(post_refs))
        timers["time/meta_update"] = time.perf_counter() - t

        self.iteration += 1
        self.env_steps += int(stats.pop("env_steps_iteration"))
        metrics = {"iteration": self.iteration, **stats, "env_steps": self.env_steps,
                   "workers/restarts": self.worker_restarts, "workers/nodes": len(self.last_nodes),
                   "run/resumes": self.resumes,
                   "seconds": time.perf_counter() - start, **timers}
        metrics["outer/consecutive_non_finite"] = self._note_skip(metrics)
        self.metrics.write(metrics)
        if self.consecutive_non_finite >= cfg.max_consecutive_skips:
            raise self._diverged(metrics)
        if self.iteration % cfg.checkpoint_every == 0 or self.iteration == cfg.iterations:
            self.save()
        return metrics

    def _note_skip(self, metrics: dict[str, Any]) -> int:
        """Log a skipped meta-update; count non-finite skips in a row (a finite iteration resets it).

        Only non-finite skips count toward ``max_consecutive_skips``: a TRPO line search that
        finds no improving step inside the trust region is ordinary and says nothing about
        divergence.
        """
        reason = metrics.get("outer/skip_reason")
        if reason and metrics.get("outer/non_finite"):
            self.consecutive_non_finite += 1
            log.warning("iteration %d: meta-update skipped: %s (%d in a row; training stops at %d)", self.iteration,
                        reason, self.consecutive_non_finite, self.cfg.max_consecutive_skips)
        else:
            self.consecutive_non_finite = 0
            if reason:
                log.info("iteration %d: meta-update skipped: %s", self.iteration, reason)
        return self.consecutive_non_finite

    def _diverged(self, metrics: dict[str, Any]) -> TrainingDivergedError:
        n, last = self.consecutive_non_finite, self.iteration
        where = f"the last checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written"
        return TrainingDivergedError(
            f"training diverged: the meta-updates of iterations {last - n + 1}-{last} were all skipped for non-finite "
            f"values (last: {metrics.get('outer/skip_reason')}; limit max_consecutive_skips={self.cfg.max_consecutive_skips}). "
            f"θ and α keep their last finite values and {where}. Likely causes: inner_lr, meta_lr or max_kl too large, "
            f"an env returning NaN/inf, float32 overflow (try dtype: float64)"
        )

    def train(
        self,
        callback: Callable[[dict[str, Any]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Run meta-iterations until ``cfg.iterations``, or until ``should_stop()`` turns true.

        ``should_stop`` is checked between iterations (a signal handler's flag: the iteration in
        progress finishes first); a stopped run writes a checkpoint of its last completed
        iteration unless it already has one (or has completed none), and sets ``self.stopped``.
        """
        history = []
        self.stopped = False
        while self.iteration < self.cfg.iterations:
            if should_stop is not None and should_stop():
                self.stopped = True
                if self.iteration > 0 and self.checkpointed_iteration != self.iteration:
                    self.save()
                break
            metrics = self.train_iteration()
            history.append(metrics)
            if callback:
                callback(metrics)
        return history

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, directory: str | Path | None = None) -> Path:
        """Checkpoint the current state into ``directory`` (default: the run's ``checkpoints/``)."""
        state = ray.get(self.learner.state_dict.remote())
        state.update(
            iteration=self.iteration,
            env_steps=self.env_steps,
            worker_restarts=self.worker_restarts,
            resumes=self.resumes,
            config=self.cfg.to_dict_json(),
            rng_state=_rng_state_json(self.rng),
        )
        target = self.ckpt_dir if directory is None else Path(directory)
        path = save_checkpoint(target, self.iteration, state, self.cfg.keep_checkpoints)
        if directory is None:
            self.checkpointed_iteration, self.last_checkpoint = self.iteration, path
        return path

    def _restore(self) -> None:
        found = load_latest(self.ckpt_dir, quarantine=True)
        if found is None:
            log.warning("%s: no checkpoint to resume from; starting at iteration 0", self.ckpt_dir)
            self.metrics.truncate_after(0)  # rows of the earlier attempt would otherwise repeat
            return
        path, state = found
        self._load_state(state)
        self.resumes += 1
        self.checkpointed_iteration, self.last_checkpoint = self.iteration, path

    def restore(self, checkpoint: str | Path) -> Path:
        """Continue from ``checkpoint`` (a checkpoint file, or the latest one in a directory or run
        directory): θ, α, optimizer state, counters and the task sampler's RNG. Returns the file."""
        path = resolve_checkpoint(checkpoint)
        self._load_state(load_checkpoint(path))
        return path

    def _load_state(self, state: dict[str, Any]) -> None:
        ray.get(self.learner.load_state_dict.remote(state))
        self.iteration, self.env_steps = int(state["iteration"]), int(state["env_steps"])
        self.worker_restarts = int(state.get("worker_restarts", 0))
        self.resumes = int(state.get("resumes", 0))
        self.rng.bit_generator.state = _rng_state_from_json(state["rng_state"])
        self.metrics.truncate_after(self.iteration)

    def close(self) -> None:
        """Stop this trainer's actors and release its placement groups (never anything else)."""
        for actor in [*self.workers, self.learner]:
            if actor is not None:
                try:
                    ray.kill(actor)
                except Exception:  # already gone
                    pass
        self.workers, self.learner, self._starting = [], None, {}
        for pg in (self._rollout_pg, self._learner_pg):
            if pg is not None:
                try:
                    remove_placement_group(pg)
                except Exception:
                    pass
        self._rollout_pg = self._learner_pg = None
        self.metrics.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _swallow(ref: ray.ObjectRef) -> None:
    try:
        ray.get(ref, timeout=0)
    except Exception:
        pass


def _drain(refs: list[ray.ObjectRef], timeout: float = 10.0) -> None:
    """Wait briefly for ``refs`` to settle and fetch them, ignoring their errors."""
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=timeout, fetch_local=False)
    for ref in refs:
        _swallow(ref)


def _rng_state_json(rng: np.random.Generator) -> str:
    import json

    return json.dumps(rng.bit_generator.state)


def _rng_state_from_json(text: str) -> dict:
    import json

    return json.loads(text)
