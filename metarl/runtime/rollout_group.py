"""Where a run's actors go, and a group of rollout actors whose ``sample()`` survives their failures.

The trainer, evaluation (:class:`metarl.runtime.evaluation.RaySampler`), ``metarl benchmark`` (through
the trainer) and Ray Tune (:func:`metarl.tune.trial_layout`) all place and sample through here,
so there is one sampling path and one rule for the learner's GPU and bundle.

Placement: each rollout actor lives in a placement group of its own, one ``{CPU: resources.worker_cpus}``
bundle with the ``SPREAD`` strategy (Ray puts such groups on different nodes where the cluster has
room; those that fit are placed at the start, within :data:`PLACEMENT_TIMEOUT_S`); each gets a
slice of the meta-batch proportional to its share. When the nodes up at the start hold fewer
workers than ``resources.num_workers`` asks for (but at least one), the run starts with those, says so in
one line (:func:`short_of_workers`), and the other groups stay pending, which an autoscaler reads
as demand for nodes; a worker whose group is placed on an arriving node joins from the next
phase on (:meth:`RolloutGroup.active_workers`). Results do not depend on the number of workers.
One group per actor, not one group for all: a group with a bundle on a lost node stays
``RESCHEDULING`` until the bundle fits elsewhere, with the GCS retrying without pause (0.85 of a
core measured), and a group can only be removed whole, which would kill the surviving actors too.
A lost actor's own group is removed and a new one requested; while that one is pending (no cost to
the GCS) the others share its work. The learner gets its own one-bundle group (with a GPU when
``resources.device`` is ``cuda``, or ``auto`` and the cluster has one: :func:`learner_uses_gpu`). Requests
the cluster can never meet fail before anything starts (:func:`check_resources`,
:func:`check_placement`); a group that stays unplaced for :data:`PLACEMENT_TIMEOUT_S` fails with
what is free. Bundles reserved by someone else (a Tune trial's placement group:
:class:`ReservedBundles`) are used instead of groups of our own.

Failures: a rollout call is a pure function of its arguments (per-task noise seeds), so it may
run again anywhere. A worker process that dies mid-call is restarted by Ray and the call re-run
there (:data:`WORKER_MAX_RESTARTS` / :data:`WORKER_MAX_TASK_RETRIES`); the group notices the
new process id in the call's receipt, logs it and counts it in :attr:`RolloutGroup.restarts`.
A worker that is gone for good has its slice re-sent to a surviving worker and is replaced in
a new placement group. A worker whose **node** is gone is not left to Ray: Ray would restart it
in its bundle, which cannot be re-placed while the cluster is full, and its in-flight call would
wait for that restart forever. Every wait here polls (:data:`POLL_S`) and checks the nodes of
the workers (:meth:`RolloutGroup.drop_lost_workers`): a worker on a dead node is killed for
good, so its calls fail at once and are re-sent, and replaced; the run goes on with fewer
workers until the replacement starts (on a surviving node with room, or a node that arrives). A
failure that is not a worker's (the caller's ``fatal`` predicate: the learner that
produced the parameters died) is raised to the caller.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from metarl.core.policies import PolicySpec
from metarl.runtime import learner as learner_module
from metarl.runtime.actor_env import ACTOR_RUNTIME_ENV, quiet_local_ray_auth_notice
from metarl.runtime.signals import ray_processes_in_own_session
from metarl.runtime.watchdog import CallLimits
from metarl.runtime.workers import RolloutWorker

log = logging.getLogger(__name__)

PLACEMENT_TIMEOUT_S = 30.0  # a placement group still pending after this fails with what is free
READY_TIMEOUT_S = 120.0  # actors' start (imports, env construction)
WORKER_MAX_RESTARTS = 3  # Ray restarts a killed rollout process this often ...
WORKER_MAX_TASK_RETRIES = 3  # ... and re-runs its in-flight call there
POLL_S = 1.0  # a wait for rollouts or the learner looks at the cluster's nodes this often
_EPS = 1e-9


class ResourceError(RuntimeError):
    """The cluster can never satisfy what the config asks for."""


class WorkersUnavailableError(RuntimeError):
    """No rollout worker is left, and none could be started: the run cannot sample."""


@dataclass(frozen=True)
class ReservedBundles:
    """Bundles that someone else reserved for a run's actors (a Ray Tune trial's placement group).

    The learner then goes in bundle ``learner`` and rollout worker ``i`` in bundle
    ``workers[i]`` of ``group`` instead of placement groups of our own, and ``group`` is never
    removed here. ``None`` / an empty list: that actor asks for no resources (0 CPUs).
    """

    group: Any  # ray.util.placement_group.PlacementGroup
    learner: int | None
    workers: list[int]


def init_ray(address: str | None, **kwargs: Any) -> None:
    """Join ``address`` or start a local Ray whose processes a process-group signal does not reach.

    ``kwargs`` go to ``ray.init`` (e.g. ``num_cpus`` for a local Ray, ``logging_level``).
    """
    if not ray.is_initialized():
        options = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": True, **kwargs}
        with ray_processes_in_own_session(), quiet_local_ray_auth_notice(address):
            ray.init(address=address, **options)


# -- the learner's resources: one rule ------------------------------------------------------------
def learner_uses_gpu(device: str, cluster_gpus: float) -> bool:
    """``cuda``, or ``auto`` on a cluster with a GPU."""
    return device == "cuda" or (device == "auto" and cluster_gpus >= 1)


def learner_bundle(learner_cpus: float, gpu: bool) -> dict[str, float]:
    """The learner's bundle; empty when it asks for nothing (Ray refuses bundles of zero resources)."""
    return {k: v for k, v in (("CPU", float(learner_cpus)), ("GPU", 1.0 if gpu else 0.0)) if v > 0}


def worker_bundles(num_workers: int, worker_cpus: float) -> list[dict[str, float]]:
    """One ``{CPU: worker_cpus}`` bundle per rollout worker; none for zero-CPU workers."""
    return [{"CPU": float(worker_cpus)}] * num_workers if worker_cpus > 0 else []


def cpus_needed(cfg) -> float:
    """CPUs that the learner and every rollout worker of ``cfg`` reserve together."""
    res = cfg.resources
    return res.learner_cpus + res.num_workers * res.worker_cpus


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


def spread_by_class(tasks: Sequence[Any], shares: Sequence[float]) -> list[np.ndarray]:
    """Task indices per worker: :func:`split_by_share`'s sizes, with each class spread over the workers.

    Tasks of a family with classes (Meta-World's ``env_name``) differ in cost: pick-place steps at
    half of reach's rate. Contiguous slices of a class-ordered meta-batch would give one worker all
    of the slow class and hold the phase; dealing the tasks class by class round the workers (in
    proportion to their shares) gives each worker its share of every class. Tasks without a class:
    the contiguous slices.
    """
    sizes = [len(s) for s in split_by_share(len(tasks), shares)]
    if not all(isinstance(t, dict) and "env_name" in t for t in tasks):
        return split_by_share(len(tasks), shares)
    order = sorted(range(len(tasks)), key=lambda i: (str(tasks[i]["env_name"]), i))
    out: list[list[int]] = [[] for _ in sizes]
    w = 0
    for i in order:  # round robin over the workers that still have room
        while len(out[w]) >= sizes[w]:
            w = (w + 1) % len(sizes)
        out[w].append(i)
        w = (w + 1) % len(sizes)
    return [np.asarray(sorted(o), dtype=int) for o in out]


def describe_nodes(nodes: Sequence[dict[str, float]]) -> str:
    parts = []
    for n in nodes:
        gpu = f", {n.get('GPU', 0):g} GPU" if n.get("GPU", 0) else ""
        parts.append(f"{n.get('CPU', 0):g} CPU{gpu}")
    return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}: " + "; ".join(parts)


def alive_nodes() -> list[dict[str, float]]:
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def alive_node_ids() -> set[str]:
    """Ids of the nodes the GCS counts as alive (one GCS call)."""
    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


def check_placement(
    nodes: Sequence[dict[str, float]],
    learner_cpus: float,
    learner_gpu: bool,
    num_workers: int,
    worker_cpus: float,
    allow_fewer: bool = False,
) -> int:
    """How many of ``num_workers`` rollout workers fit on ``nodes`` beside the learner; raise :class:`ResourceError`
    when the learner does not, or fewer workers than ``num_workers`` (``allow_fewer``: than one) do.

    ``nodes`` are the total resources of each node. Each actor's resources must come from one
    node; with two kinds of request this is decided exactly: some node holds the learner, and
    every node holds ``floor(free CPUs / worker_cpus)`` workers.
    """
    cpus = [float(n.get("CPU", 0)) for n in nodes]
    gpus = [float(n.get("GPU", 0)) for n in nodes]
    where = describe_nodes(nodes)
    hosts = [k for k in range(len(nodes)) if cpus[k] + _EPS >= learner_cpus and (not learner_gpu or gpus[k] >= 1)]
    if not hosts:
        if learner_gpu:
            raise ResourceError(
                f"GPU: the learner asks for 1 GPU and {learner_cpus:g} CPUs on one node; no node has both "
                f"({where}). Set resources.device: cpu or lower resources.learner_cpus."
            )
        raise ResourceError(
            f"CPU: the learner asks for resources.learner_cpus={learner_cpus:g} CPUs on one node; the largest node "
            f"has {max(cpus, default=0):g} ({where}). Lower resources.learner_cpus."
        )
    if worker_cpus <= 0:
        return num_workers
    if worker_cpus > max(cpus) + _EPS:
        raise ResourceError(
            f"CPU: each rollout worker asks for resources.worker_cpus={worker_cpus:g} CPUs on one node; the largest "
            f"node has {max(cpus):g} ({where}). Lower resources.worker_cpus."
        )

    def fit(c: float) -> int:
        return max(0, math.floor((c + _EPS) / worker_cpus))

    best = max(fit(cpus[k] - learner_cpus) + sum(fit(cpus[j]) for j in range(len(nodes)) if j != k) for k in hosts)
    if best < (1 if allow_fewer else num_workers):
        raise ResourceError(
            f"CPU: {num_workers} rollout workers x {worker_cpus:g} CPUs (plus the learner's {learner_cpus:g}) do not "
            f"fit on the cluster's nodes, which hold at most {best} such workers beside the learner ({where}); a "
            f"worker's CPUs must come from one node. Lower resources.num_workers or resources.worker_cpus."
        )
    return min(best, num_workers)


def check_resources(cfg, allow_fewer: bool = False) -> tuple[bool, int]:
    """Fail fast on requests the cluster can never meet; return whether the learner gets a GPU and how many
    rollout workers fit on the nodes up now (``allow_fewer``: at least one; else all ``resources.num_workers``)."""
    total, res = ray.cluster_resources(), cfg.resources
    gpus = total.get("GPU", 0)
    use_gpu = learner_uses_gpu(res.device, gpus)
    if use_gpu and gpus < 1:
        raise ResourceError(
            f"GPU: resources.device: cuda asks for 1 GPU for the learner; the Ray cluster has {gpus:g} GPUs"
        )
    needed = cpus_needed(cfg) if not allow_fewer else res.learner_cpus + min(res.num_workers, 1) * res.worker_cpus
    if needed > total.get("CPU", 0) + _EPS:
        raise ResourceError(
            f"CPU: the learner ({res.learner_cpus:g}) and {res.num_workers} rollout workers "
            f"({res.worker_cpus:g} each) ask for {cpus_needed(cfg):g} CPUs; the Ray cluster has "
            f"{total.get('CPU', 0):g}. Lower resources.num_workers or resources.worker_cpus."
        )
    fit = check_placement(alive_nodes(), res.learner_cpus, use_gpu, res.num_workers, res.worker_cpus, allow_fewer)
    return use_gpu, fit


def short_of_workers(cfg, fit: int) -> str:
    """The one line that says a run starts with fewer rollout workers than asked, and when the rest come."""
    free, res = ray.available_resources().get("CPU", 0), cfg.resources
    return (
        f"resources.num_workers={res.num_workers}: the cluster has room for {fit} rollout "
        f"worker{'s' if fit != 1 else ''} now (resources.worker_cpus={res.worker_cpus:g} each, on one node; "
        f"{describe_nodes(alive_nodes())}, {free:g} CPUs free); starting with {fit}, the other "
        f"{res.num_workers - fit} join as nodes with room arrive (results "
        "do not depend on the number of workers)"
    )


def _group_name(what: str) -> str:
    return f"metarl-{what.split()[0]}-{uuid.uuid4().hex[:8]}"


def _unplaced(what: str, description: str) -> ResourceError:
    free = ray.available_resources()
    return ResourceError(
        f"placement: the {what} ({description}) was not placed within {PLACEMENT_TIMEOUT_S:g} s; the cluster has "
        f"{free.get('CPU', 0):g} CPUs and {free.get('GPU', 0):g} GPUs free ({describe_nodes(alive_nodes())} in "
        f"total). Other jobs may hold them."
    )


def place(bundles: list[dict[str, float]], strategy: str, what: str):
    """A placement group of ``bundles``, placed within :data:`PLACEMENT_TIMEOUT_S` or a :class:`ResourceError`."""
    pg = placement_group(bundles, strategy=strategy, name=_group_name(what))
    if not pg.wait(timeout_seconds=PLACEMENT_TIMEOUT_S):
        remove_placement_group(pg)
        raise _unplaced(what, f"{len(bundles)} x {bundles[0]}, {strategy}")
    return pg


def place_each(bundle: dict[str, float], n: int, what: str, need: int | None = None) -> tuple[list, set[int]]:
    """``n`` one-bundle ``SPREAD`` groups and the indices of those placed: at least ``need`` (default all ``n``)
    within :data:`PLACEMENT_TIMEOUT_S`, or a :class:`ResourceError`. The others stay pending (no cost to the
    GCS; an autoscaler sees them as demand) until a node with room arrives."""
    need = n if need is None else need
    groups = [placement_group([bundle], strategy="SPREAD", name=_group_name(what)) for _ in range(n)]
    placed: set[int] = set()
    deadline = time.monotonic() + PLACEMENT_TIMEOUT_S
    while True:
        placed |= {i for i, pg in enumerate(groups) if i not in placed and _placed(pg)}
        if len(placed) >= need or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if len(placed) < need:
        for pg in groups:
            remove_quietly(pg)
        raise _unplaced(what, f"{n} x {bundle}, one group per worker, SPREAD")
    return groups, placed


def _placed(pg) -> bool:
    try:
        return ray.util.placement_group_table(pg).get("state") == "CREATED"
    except Exception:  # removed meanwhile
        return False


def remove_quietly(pg) -> None:
    if pg is not None:
        try:
            remove_placement_group(pg)
        except Exception:  # already removed, or Ray is gone
            pass


def kill_quietly(actor) -> None:
    if actor is not None:
        try:
            ray.kill(actor)
        except Exception:  # already gone
            pass


def start_learner(cfg, spec: PolicySpec, use_gpu: bool, reserved: ReservedBundles | None = None):
    """Start the learner actor in its own bundle; returns ``(actor, placement group or None)``."""
    bundle = learner_bundle(cfg.resources.learner_cpus, use_gpu)
    options: dict[str, Any] = {}
    pg = None
    if reserved is not None:  # bundles reserved for us (a Tune trial): no group of our own
        if reserved.learner is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(reserved.group, reserved.learner)
    elif bundle:
        pg = place([bundle], "PACK", "learner placement group")
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(pg, 0)
    actor = (
        # the module's Learner at call time, not at import: tests swap in slow or NaN learners
        ray.remote(learner_module.Learner)
        .options(
            num_cpus=cfg.resources.learner_cpus,
            num_gpus=1 if use_gpu else 0,
            max_restarts=0,
            runtime_env=ACTOR_RUNTIME_ENV,
            **options,
        )
        .remote(cfg, spec)
    )
    return actor, pg


def start_actors(
    cfg, spec: PolicySpec, horizon: int, reserved: ReservedBundles | None, fatal: Callable[[RayActorError], bool]
) -> tuple[Any, Any, RolloutGroup]:
    """The learner and the rollout group, ready: ``(learner, its placement group or None, group)``.

    Bundles reserved by Tune are all there; otherwise start with the workers that fit now and let
    the others join when nodes with room arrive (cluster.yaml's autoscaler adds them). The learner
    first: it may need the one node with a GPU. ``fatal`` tells the group which actor errors are
    the learner's (they end the run instead of costing a worker).
    """
    use_gpu, fit = check_resources(cfg, allow_fewer=reserved is None)
    if fit < cfg.resources.num_workers:
        log.warning(short_of_workers(cfg, fit))
    learner, pg = start_learner(cfg, spec, use_gpu, reserved)
    rollouts = None
    try:
        limits = CallLimits(
            cfg.worker_timeout_factor, cfg.worker_timeout_min, ("worker_timeout_factor", "worker_timeout_min")
        )
        rollouts = RolloutGroup(
            cfg.env,
            cfg.env_kwargs,
            spec,
            horizon,
            cfg.resources.num_workers,
            cfg.resources.worker_cpus,
            reserved,
            fatal=fatal,
            placeable=fit,
            limits=limits,
        )
        rollouts.wait_ready([learner.__ray_ready__.remote()])
    except BaseException:
        if rollouts is not None:
            rollouts.close()
        kill_quietly(learner)
        remove_quietly(pg)
        raise
    return learner, pg, rollouts


def _swallow(ref: ray.ObjectRef) -> None:
    try:
        ray.get(ref, timeout=0)
    except Exception:
        pass


def drain(refs: list[ray.ObjectRef], timeout: float = 10.0) -> None:
    """Wait briefly for ``refs`` to settle and fetch them, ignoring their errors."""
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=timeout, fetch_local=False)
    for ref in refs:
        _swallow(ref)


# -- the rollout actors ---------------------------------------------------------------------------
@dataclass
class _Call:
    """One rollout call in flight: its slice, its worker (index and actor), and what the watchdog needs."""

    slice: int
    worker: int
    actor: Any
    data_ref: ray.ObjectRef
    attempt: int
    started: float  # time.monotonic() at submission
    episodes: int  # episodes queued on the worker up to and including this call's


class RolloutGroup:
    """``num_workers`` :class:`~metarl.runtime.workers.RolloutWorker` actors and one fault-tolerant ``sample()``.

    ``reserved``: bundles someone else holds for the workers (:class:`ReservedBundles`);
    otherwise each worker gets a one-bundle placement group of its own (none for zero-CPU workers).
    ``placeable``: how many of them the cluster has room for now (default: all). The others are
    started in groups that stay pending until a node with room arrives (an autoscaler sees them
    as demand), and join :meth:`active_workers` from then on, as a lost worker's replacement does.
    ``fatal(exc)``: a failed call for which this is true is not a worker's failure and is raised.
    ``limits``: how long a rollout call may take (per episode, :class:`~metarl.runtime.watchdog.CallLimits`)
    before its worker is taken for hung, killed and replaced, and the call re-sent.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        spec: PolicySpec,
        horizon: int,
        num_workers: int,
        worker_cpus: float,
        reserved: ReservedBundles | None = None,
        fatal: Callable[[RayActorError], bool] | None = None,
        placeable: int | None = None,
        limits: CallLimits | None = None,
    ):
        self._args = (env_id, env_kwargs, spec, horizon)
        self.limits = limits  # the rollout watchdog (None: wait as long as a call takes)
        self.worker_cpus = worker_cpus
        self.reserved = reserved
        self.fatal = fatal or (lambda exc: False)
        # Set before anything can fail, so close() can clean up.
        self.placement_groups: list[Any] = []  # worker i's own one-bundle group (none: reserved or zero-CPU)
        self.workers: list[Any] = []
        self.worker_pids: list[int | None] = [None] * num_workers  # last seen process id of each actor
        self.worker_nodes: list[str | None] = [None] * num_workers  # ... and the node it ran on
        self.restarts = 0  # restarted or replaced rollout processes (the owner may restore it from a checkpoint)
        self.lost_nodes: set[str] = set()  # nodes that died under a rollout worker
        self.used_nodes: set[str] = set()  # nodes that returned rollouts (the owner clears it when it likes)
        self.used_workers: set[int] = set()  # ... and the workers that did (cleared with it)
        self._starting: dict[int, ray.ObjectRef] = {}  # actors waiting for room or starting: index -> node_info ref
        bundles = worker_bundles(num_workers, worker_cpus)
        try:
            placed = set(range(num_workers))
            if bundles and reserved is None:
                self.placement_groups, placed = place_each(
                    bundles[0], num_workers, "rollout placement group", need=placeable
                )
            for i in range(num_workers):
                self.workers.append(self._new_worker(i))
                if i not in placed:  # no room yet: it joins once a node with room has come and it has started
                    self._starting[i] = self.workers[i].node_info.remote()
        except BaseException:
            self.close()
            raise

    def new_iteration(self) -> None:
        """Forget which nodes and workers returned rollouts: :meth:`counts` are per iteration."""
        self.used_nodes.clear()
        self.used_workers.clear()

    def counts(self) -> dict[str, int]:
        """Worker restarts so far; the nodes and workers that returned this iteration's rollouts."""
        return {
            "workers/restarts": self.restarts,
            "workers/nodes": len(self.used_nodes),
            "workers/active": len(self.used_workers),
        }

    def wait_ready(self, others: Sequence[ray.ObjectRef] = ()) -> None:
        """Wait until every placed worker (and ``others``, e.g. the learner's ``__ray_ready__``) has started."""
        ready = [i for i in range(len(self.workers)) if i not in self._starting]
        refs = [self.workers[i].node_info.remote() for i in ready]
        try:
            infos = ray.get([*others, *refs], timeout=READY_TIMEOUT_S)[len(others) :]
        except GetTimeoutError:
            what = "the learner and rollout actors" if others else "the rollout actors"
            raise RuntimeError(f"{what} did not start within {READY_TIMEOUT_S:g} s") from None
        for i, info in zip(ready, infos):
            self.worker_pids[i], self.worker_nodes[i] = info["pid"], info["node_id"]
        log.info("rollout workers on nodes %s", self.worker_nodes)

    # -- the actors and their placement ----------------------------------------------------------
    def _new_worker(self, i: int):
        """Rollout actor ``i``: in its reserved bundle, its own placement group, or anywhere (zero CPUs)."""
        if self.reserved is not None and self.reserved.workers:
            strategy: Any = PlacementGroupSchedulingStrategy(self.reserved.group, self.reserved.workers[i])
        elif self.placement_groups:
            strategy = PlacementGroupSchedulingStrategy(self.placement_groups[i], placement_group_bundle_index=0)
        else:
            strategy = "SPREAD"
        # Rollout calls are pure functions of their arguments, so Ray may re-run them on a
        # restarted actor: a killed worker costs time, never episodes.
        return (
            ray.remote(RolloutWorker)
            .options(
                num_cpus=self.worker_cpus,
                max_restarts=WORKER_MAX_RESTARTS,
                max_task_retries=WORKER_MAX_TASK_RETRIES,
                runtime_env=ACTOR_RUNTIME_ENV,
                scheduling_strategy=strategy,
            )
            .remote(*self._args, i)
        )

    def _replace(self, i: int) -> None:
        """Kill worker ``i`` for good and start a new actor in a new placement group of its own.

        A new group, because the old one's bundle may be on a lost node, where it can never be
        re-placed while the cluster is full. The new group waits (at no cost) until a node has
        room; the actor joins in :meth:`active_workers` once it has started.
        """
        kill_quietly(self.workers[i])  # ray.kill: no restart; its calls fail with ActorDiedError at once
        if self.placement_groups:
            remove_quietly(self.placement_groups[i])
            self.placement_groups[i] = placement_group(
                worker_bundles(1, self.worker_cpus), strategy="SPREAD", name=_group_name("rollout")
            )
        self.workers[i] = self._new_worker(i)
        self._starting[i] = self.workers[i].node_info.remote()
        self.worker_pids[i] = self.worker_nodes[i] = None

    def _rescheduling(self, i: int) -> bool:
        """Whether worker ``i``'s own placement group lost its node (Ray is trying to re-place it)."""
        if not self.placement_groups:
            return False
        try:
            return ray.util.placement_group_table(self.placement_groups[i]).get("state") == "RESCHEDULING"
        except Exception:  # removed meanwhile
            return False

    def drop_lost_workers(self) -> list[int]:
        """Replace every worker whose node has died; return their indices.

        Ray would restart such a worker in its old bundle, which waits for room that a full
        cluster does not have, and its calls would wait with it, forever. Killed for good
        instead, its calls fail at once (the callers re-send them) and a replacement is started
        (:meth:`_replace`). A replacement still starting whose group lost its node is replaced again.
        """
        placed = [i for i, node in enumerate(self.worker_nodes) if node is not None and i not in self._starting]
        alive = alive_node_ids() if placed else set()
        lost = [i for i in placed if self.worker_nodes[i] not in alive]
        lost += [i for i in self._starting if self._rescheduling(i)]
        for i in lost:
            pid, node = self.worker_pids[i], self.worker_nodes[i]
            self.restarts += 1
            if node is not None:
                self.lost_nodes.add(node)
            self._replace(i)
            log.warning(
                "rollout worker %d (pid %s) lost with its node %s; replacing it on a node with %g CPUs free, the "
                "others take its tasks until then (%d restarts so far)",
                i,
                pid,
                node or "(still starting)",
                self.worker_cpus,
                self.restarts,
            )
        return lost

    def _admit_started(self) -> None:
        """Replacements that have started join; one that failed to start is replaced again."""
        for i, ref in list(self._starting.items()):
            ready, _ = ray.wait([ref], timeout=0)
            if not ready:
                continue
            try:
                info = ray.get(ref)
            except RayActorError:
                self._replace(i)
                continue
            del self._starting[i]
            self.worker_pids[i], self.worker_nodes[i] = info["pid"], info["node_id"]
            log.info("rollout worker %d started: pid %d on node %s", i, info["pid"], info["node_id"])

    def active_workers(self) -> list[int]:
        """Workers that can take calls (lost ones replaced first); a replacement joins once it has started.

        With none left, waits up to :data:`READY_TIMEOUT_S` for a replacement, then raises
        :class:`WorkersUnavailableError`.
        """
        self.drop_lost_workers()
        self._admit_started()
        active = [i for i in range(len(self.workers)) if i not in self._starting]
        if active:
            return active
        ready, _ = ray.wait(list(self._starting.values()), num_returns=1, timeout=READY_TIMEOUT_S)
        if not ready:
            free = ray.available_resources().get("CPU", 0)
            raise WorkersUnavailableError(
                f"no rollout worker is left and none could be started within {READY_TIMEOUT_S:g} s (each needs "
                f"resources.worker_cpus={self.worker_cpus:g} CPUs on one node; the cluster has {free:g} CPUs free, "
                f"{describe_nodes(alive_nodes())})"
            )
        return self.active_workers()

    # -- sampling ------------------------------------------------------------------------------------
    def sample(
        self,
        tasks: list,
        params_ref: ray.ObjectRef,
        per_task: bool,
        seeds: Sequence[int],
        episodes: int,
        phase: str,
        iteration: int | None = None,
        calls: list[ray.ObjectRef] | None = None,
    ) -> list[ray.ObjectRef]:
        """Roll out ``tasks`` with ``episodes`` episodes each, one call per worker; returns rollout references.

        ``params_ref`` is θ (``per_task`` False) or the stack of every task's θ'ᵢ. Each call has
        two results: a small receipt, which this method reads, and the rollouts, which only
        their consumer fetches (in slice order; ``merge_rollouts`` puts them in task order: a family with classes has
        its classes spread over the slices, :func:`spread_by_class`). A
        call whose worker died, or whose worker's node died, is re-sent to another worker.
        ``phase`` and ``iteration`` only name the call in log messages; every call's references
        are appended to ``calls``.
        """
        active = self.active_workers()
        shares = [self.worker_cpus or 1.0] * len(active)
        slices = spread_by_class(tasks, shares)
        pending: dict[ray.ObjectRef, _Call] = {}
        results: dict[int, tuple[dict, ray.ObjectRef]] = {}
        where = "" if iteration is None else f"iteration {iteration}, "

        def submit(s: int, w: int, attempt: int) -> None:
            idx, actor = slices[s], self.workers[w]
            info_ref, data_ref = actor.sample_with_info.options(num_returns=2).remote(
                [tasks[i] for i in idx],
                idx,
                params_ref,
                per_task,
                episodes,
                [int(seeds[i]) for i in idx],
            )
            # A worker runs its calls one after another: this one waits for those already queued there.
            queued = sum(c.episodes for c in pending.values() if c.worker == w) + len(idx) * episodes
            pending[info_ref] = _Call(s, w, actor, data_ref, attempt, time.monotonic(), queued)
            if calls is not None:
                calls.extend([info_ref, data_ref])

        for s, w in enumerate(active):
            if len(slices[s]):
                submit(s, w, 0)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            if not ready:  # a lost node's or a hung worker is killed: its calls fail now and are re-sent below
                self.drop_lost_workers()
                self._give_up_hung(pending.values(), phase, where)
                continue
            call = pending.pop(ready[0])
            s, w = call.slice, call.worker
            try:
                info = ray.get(ready[0])
            except RayActorError as exc:
                if self.fatal(exc):
                    raise
                _swallow(call.data_ref)  # the same error; fetched so Ray does not report it as unhandled
                if call.attempt >= 2 * len(self.workers) + 2:
                    raise RuntimeError(
                        f"rollout slice of tasks {slices[s].tolist()} failed {call.attempt + 1} times"
                    ) from exc
                submit(s, self._worker_failed(w, call.actor, exc, phase, len(slices[s]), where), call.attempt + 1)
                continue
            if self.limits is not None:
                self.limits.record("rollout", (time.monotonic() - call.started) / call.episodes)
            self._note_receipt(w, info, phase, where)
            results[s] = (info, call.data_ref)

        # Every task exactly once, with every episode: nothing lost, nothing counted twice.
        covered = sorted(i for info, _ in results.values() for i in info["task_index"])
        total = sum(info["episodes"] for info, _ in results.values())
        if covered != list(range(len(tasks))) or total != len(tasks) * episodes:
            raise RuntimeError(
                f"{phase} rollouts cover tasks {covered} with {total} episodes; expected "
                f"{len(tasks)} tasks x {episodes}"
            )
        self.used_nodes.update(info["node_id"] for info, _ in results.values())
        return [results[s][1] for s in sorted(results)]

    def _give_up_hung(self, calls: Iterable[_Call], phase: str, where: str) -> None:
        """Kill and replace each worker whose call has run past its limit (:attr:`limits`).

        Its calls then fail at once and are re-sent to the others, as a lost node's are: a hung
        worker (alive, not answering) costs time, never episodes, and never the run.
        """
        if self.limits is None:
            return
        now = time.monotonic()
        for call in list(calls):
            w = call.worker
            limit = self.limits.limit("rollout", scale=call.episodes)
            if call.actor is not self.workers[w] or limit is None or now - call.started <= limit:
                continue  # already replaced (its node died, or another of its calls was given up), or in time
            pid, node = self.worker_pids[w], self.worker_nodes[w]
            self.restarts += 1
            self._replace(w)
            log.warning(
                "rollout worker %d (pid %s, node %s) did not return its %s sampling within %.3g s (limit: %s); it "
                "was killed and is being replaced, its tasks are re-sampled on the others (%s%d restarts so far)",
                w,
                pid,
                node,
                phase,
                now - call.started,
                self.limits.explain("rollout", call.episodes, "episode"),
                where,
                self.restarts,
            )

    def _note_receipt(self, w: int, info: dict, phase: str, where: str) -> None:
        """Record where worker ``w``'s call ran; a new process id means Ray restarted it."""
        old = self.worker_pids[w]
        if old is not None and info["pid"] != old:
            self.restarts += 1
            log.warning(
                "rollout worker %d restarted: pid %d -> %d on node %s; its %s sampling of %d tasks ran on the new "
                "process (%s%d restarts so far)",
                w,
                old,
                info["pid"],
                info["node_id"],
                phase,
                len(info["task_index"]),
                where,
                self.restarts,
            )
        self.worker_pids[w], self.worker_nodes[w] = info["pid"], info["node_id"]
        self.used_workers.add(w)

    def _worker_failed(self, w: int, actor: Any, exc: RayActorError, phase: str, num_tasks: int, where: str) -> int:
        """Handle the failed call of worker ``w`` (the actor ``actor``); return the worker to re-send it to."""
        old_pid, node = self.worker_pids[w], self.worker_nodes[w]
        # ActorDiedError: gone for good; otherwise (ActorUnavailableError) Ray is restarting it, and
        # its next receipt shows the new process without counting it again (pid reset below).
        gone = isinstance(exc, ActorDiedError)
        replaced = actor is not self.workers[w]  # drop_lost_workers already replaced it: its node died
        if not replaced:
            self.restarts += 1
            if gone:  # restarts used up, or max_restarts=0: replace it
                self._replace(w)
            self.worker_pids[w] = None
        survivors = [i for i in range(len(self.workers)) if i != w and i not in self._starting]
        if not survivors and (gone or replaced):
            survivors = self.active_workers()  # waits for a replacement to start (or raises)
        target = survivors[(w + 1) % len(survivors)] if survivors else w
        if target == w and not (gone or replaced):
            time.sleep(0.5)  # Ray is restarting it; its calls are refused until then
        what = (
            "it was lost or hung and is being replaced" if replaced else "replacing it" if gone else "Ray restarts it"
        )
        log.warning(
            "rollout worker %d (pid %s, node %s) failed during %s sampling (%s; %s); re-sampling its %d tasks on "
            "worker %d (%s%d restarts so far)",
            w,
            old_pid,
            node,
            phase,
            type(exc).__name__,
            what,
            num_tasks,
            target,
            where,
            self.restarts,
        )
        return target

    def close(self) -> None:
        """Stop this group's actors and release its placement groups (never reserved ones)."""
        for actor in self.workers:
            kill_quietly(actor)
        self.workers, self._starting = [], {}
        for pg in self.placement_groups:
            remove_quietly(pg)
        self.placement_groups = []
