"""Evaluation on new tasks: average return before and after each of K inner steps.

The papers' test protocol (MAML appendix table; Meta-SGD §4.3), for a trained (θ, α)::

    for each evaluation task Tᵢ (given goals, or freshly drawn from p(T)):
        φ⁰ᵢ = θ
        for j = 0 .. K:
            Dʲᵢ   ← E episodes of π_φʲᵢ on Tᵢ              rollout workers (Ray actors)
            Rʲᵢ   = mean undiscounted episode return of Dʲᵢ
            φʲ⁺¹ᵢ = φʲᵢ − sⱼ · α ∘ ∇φ L(Dʲᵢ; φʲᵢ)          if j < K; the checkpoint's own α, scale sⱼ
    report  meanᵢ Rʲᵢ  and a 95 % confidence interval over tasks (Student t), for j = 0 .. K

Every inner step adapts on *fresh* trajectories sampled with the previous step's
parameters, as training does with ``inner_steps: k``, so step 1 here is exactly training's
post-adaptation phase when ``inner_steps: 1``. Step j's size is ``scale_j · α`` (``--alpha-scales``;
the MAML paper's test script took the first step at the training step size and later ones at
half of it: ``--alpha-scales 1,0.5``). Advantages
use the run's own γ, GAE λ, baseline and normalisation (``Batch.from_rollouts``).

Determinism: tasks and action noise come from ``seed`` only, through a random stream
separate from training's (``SeedSequence(seed, spawn_key=(EVAL_STREAM, …))``), so sampled
evaluation goals are not the goals training drew with the same seed. Noise seeds are fixed
per (step, task), so results do not depend on the number of workers, on K (step j's numbers
are the same for every K ≥ j), or on whether sampling ran on Ray actors or in-process.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from metarl.config import Config
from metarl.core.adaptation import expand_to_tasks, inner_step
from metarl.core.batch import Batch, merge_rollouts
from metarl.core.policies import Params, PolicySpec, env_actions, forward, from_numpy, init_params, mode, to_numpy
from metarl.envs.task_env import Task, task_to_json
from metarl.envs.tasks import env_horizon, make_env, policy_spec, sample_tasks, task_splits
from metarl.runtime.checkpoint import load_checkpoint, resolve_checkpoint, run_config
from metarl.runtime.rollout_group import RolloutGroup, init_ray
from metarl.runtime.rollouts import VectorEnvs
from metarl.runtime.stats import ci95
from metarl.runtime.workers import RolloutWorker

EVAL_STREAM = 0x6576616C  # "eval": keeps evaluation's random stream apart from training's
DEFAULT_TASKS = 40  # MAML paper: 40 test goals
DEFAULT_STEPS = 3  # MAML paper's table reports 0..3 gradient steps


# -- a trained run, read from its directory ---------------------------------------------------
@dataclass
class TrainedRun:
    """What evaluation needs from a checkpoint: θ, α, the run's config and its policy/env."""

    checkpoint: Path
    cfg: Config
    spec: PolicySpec
    theta: Params
    alpha: Params
    iteration: int
    horizon: int
    env: Any  # a gym.Env of the run's family (for task checks and sampling new tasks)
    init: str = "run"  # "random": θ is a fresh initialisation (random_init), not the checkpoint's

    @property
    def run_dir(self) -> Path:
        """The run directory (``RUN/checkpoints/checkpoint-*.pt`` → ``RUN``)."""
        parent = self.checkpoint.parent
        return parent.parent if parent.name == "checkpoints" else parent

    @property
    def env_cls(self) -> type:
        return type(self.env.unwrapped)


def load_run(run_or_checkpoint: str | Path) -> TrainedRun:
    """A run directory (its latest checkpoint) or one checkpoint file."""
    path = resolve_checkpoint(run_or_checkpoint)
    state = load_checkpoint(path)
    cfg = run_config(path, state)  # a forged config, or θ/α that do not fit it: CheckpointError, one line
    env = make_env(cfg.env, cfg.env_kwargs)
    return TrainedRun(
        checkpoint=path,
        cfg=cfg,
        spec=policy_spec(cfg, env),
        theta=dict(state["theta"]),
        alpha=dict(state["alpha"]),
        iteration=int(state.get("iteration", 0)),
        horizon=env_horizon(env, cfg.horizon),
        env=env,
    )


# -- tasks and seeds ------------------------------------------------------------------------------
def parse_goal(text: str) -> list[int | float]:
    """``"0.3,-0.2"`` → ``[0.3, -0.2]``, ``"2,3"`` → ``[2, 3]``: numbers typed as written, so the
    family's ``set_task`` decides (GridNavigation wants integer cells, Navigation2D takes either).
    Raises ``ValueError`` with a one-line message."""
    values: list[int | float] = []
    for part in text.split(","):
        part = part.strip()
        try:
            values.append(int(part) if re.fullmatch(r"[-+]?\d+", part) else float(part))
        except ValueError:
            raise ValueError(f"--goal {text!r}: expected comma-separated numbers, e.g. --goal 0.3,-0.2") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"--goal {text!r}: coordinates must be finite numbers")
    return values


def parse_task(text: str) -> Task:
    """``--task '{"velocity": 1.5}'`` → a task dict (any family; its ``set_task`` validates it)."""
    try:
        task = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--task {text[:80]!r}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(task, dict):
        raise ValueError(f"--task {text[:80]!r}: a task is a JSON object, e.g. --task '{{\"goal\": [0.3, -0.2]}}'")
    return task


def default_split(run: TrainedRun) -> str:
    """Meta-testing draws from the family's held-out ``test`` split where it has one (Meta-World), else ``train``."""
    return "test" if "test" in task_splits(run.env) else "train"


def resolve_tasks(
    run: TrainedRun,
    goals: Sequence[Sequence[float] | Task] | None,
    num_tasks: int | None,
    seed: int,
    split: str | None = None,
) -> list[Task]:
    """The given tasks, or ``num_tasks`` fresh draws from ``split`` (default :func:`default_split`).

    A given task is a dict of the family (``{"velocity": 1.5}``) or a goal's coordinates
    (``[0.3, -0.2]`` → ``{"goal": [0.3, -0.2]}``); each is validated and normalised by the
    family's own ``set_task`` / ``get_task``.
    """
    if goals:
        if num_tasks is not None:
            raise ValueError("give either --goal/--task (explicit tasks) or --tasks N (sampled tasks), not both")
        unwrapped = run.env.unwrapped
        tasks = []
        for goal in goals:
            if isinstance(goal, dict):
                task = goal
            elif "goal" in unwrapped.get_task():
                task = {"goal": list(goal)}
            else:
                raise ValueError(
                    f"--goal {','.join(map(str, goal))}: {run.cfg.env} tasks have no goal; give the task "
                    f"as JSON, e.g. --task '{json.dumps(unwrapped.get_task())}'"
                )
            unwrapped.set_task(task)  # ValueError names the task and the rule
            tasks.append(unwrapped.get_task())
        return tasks
    n = DEFAULT_TASKS if num_tasks is None else num_tasks
    if n < 1:
        raise ValueError(f"--tasks must be >= 1, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(EVAL_STREAM, 0)))
    return sample_tasks(run.env, n, rng, split or default_split(run))


def noise_seed(seed: int, step: int, task: Task | int, repeat: int = 0) -> int:
    """Action-noise seed for (inner step, task): independent of K, T and the worker split.

    Given the task itself, the seed depends on what the task is, not where it is listed, so a
    goal scores the same in any list. ``repeat`` counts earlier copies of the same task in the
    list (:func:`repeat_counts`): each copy gets its own noise, so a family with few distinct
    tasks (HalfCheetahDir's two directions) is measured on independent samples, not on two
    samples copied 20 times each. (An ``int`` is the older per-position key, kept for callers
    that pass an index.)
    """
    if isinstance(task, dict):
        digest = hashlib.sha256(task_to_json(task).encode()).digest()
        key = (EVAL_STREAM, 2, step, *np.frombuffer(digest[:16], dtype=np.uint32).tolist())
        key = key + (repeat,) if repeat else key  # the first copy keeps the key every earlier report used
    else:
        key = (EVAL_STREAM, 1, step, int(task))
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1)[0] >> 1)


def repeat_counts(tasks: Sequence[Task]) -> list[int]:
    """For each task, how many identical tasks come before it in the list (0 for the first copy)."""
    seen: dict[str, int] = {}
    counts = []
    for task in tasks:
        key = task_to_json(task)
        counts.append(seen.get(key, 0))
        seen[key] = counts[-1] + 1
    return counts


# -- samplers: the same RolloutWorker, on Ray actors or in-process ----------------------------
class RaySampler:
    """Rollouts on the trainer's :class:`~metarl.runtime.rollout_group.RolloutGroup`: one call per worker
    per phase, a failed worker's slice re-sent, a dead worker replaced."""

    def __init__(self, run: TrainedRun, num_tasks: int, num_workers: int | None = None):
        cfg, res = run.cfg, run.cfg.resources
        n = min(num_workers or res.num_workers, num_tasks)
        if res.worker_cpus > 0:  # a training config sized for a cluster must not hang a laptop
            free = ray.available_resources().get("CPU", 0.0)
            n = min(n, max(1, int(free // res.worker_cpus)))
        self.group = RolloutGroup(cfg.env, cfg.env_kwargs, run.spec, run.horizon, n, res.worker_cpus)
        self.steps = 0  # phases sampled so far, to name them in log messages

    def sample(
        self, tasks: list[Task], params: dict[str, np.ndarray], per_task: bool, episodes: int, seeds: Sequence[int]
    ) -> dict[str, np.ndarray]:
        refs = self.group.sample(tasks, ray.put(params), per_task, seeds, episodes, f"evaluation step {self.steps}")
        self.steps += 1
        return merge_rollouts(ray.get(refs))

    def close(self) -> None:
        self.group.close()


class LocalSampler:
    """The same ``RolloutWorker`` called in this process (no Ray); gives RaySampler's numbers."""

    def __init__(self, run: TrainedRun):
        threads = torch.get_num_threads()
        self.worker = RolloutWorker(run.cfg.env, run.cfg.env_kwargs, run.spec, run.horizon)
        torch.set_num_threads(threads)  # the worker pins 1 thread, meant for its own actor process

    def sample(
        self, tasks: list[Task], params: dict[str, np.ndarray], per_task: bool, episodes: int, seeds: Sequence[int]
    ) -> dict[str, np.ndarray]:
        part = self.worker.sample(tasks, np.arange(len(tasks)), params, per_task, episodes, [int(s) for s in seeds])
        return merge_rollouts([part])

    def close(self) -> None:
        pass


def random_init(run: TrainedRun, seed: int | None = None) -> TrainedRun:
    """The run with θ replaced by a fresh initialisation of its policy, iteration 0.

    The MAML paper's "random initialisation" baseline: the same network and inner steps, no
    meta-training. With ``seed=None`` it is the θ this run's training started from (the learner
    initialises from the run's seed the same way), so run s of a study gives baseline s. Its α is
    the run's initial one (``inner_lr``), since a learned α belongs to the θ it was learned with;
    ``--step-sizes`` sets it explicitly.
    """
    dtype = next(iter(run.theta.values())).dtype
    seed = run.cfg.seed if seed is None else seed
    theta = init_params(run.spec, torch.Generator().manual_seed(seed), dtype)
    alpha = {k: torch.full_like(v, run.cfg.inner_lr) for k, v in run.alpha.items()}
    return replace(run, theta=theta, alpha=alpha, iteration=0, init="random")


def with_unit_alpha(run: TrainedRun) -> TrainedRun:
    """The run with α = 1, so that step-size scales are absolute step sizes (``--step-sizes``).

    Dividing by ``inner_lr`` instead would fail for the pretrained baseline, which trains with
    ``inner_lr: 0`` (θ' = θ: plain multi-task TRPO) and is adapted at test time with ``--step-sizes``.
    """
    return replace(run, alpha={k: torch.ones_like(v) for k, v in run.alpha.items()})


def parse_step_sizes(text: str) -> list[float]:
    """``"0.5,0.25"`` → ``[0.5, 0.25]``: positive finite numbers, one per inner step (the last repeats)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{text!r}: expected comma-separated positive numbers, e.g. 1,0.5,0.5") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{text!r}: step sizes must be positive finite numbers, e.g. 1,0.5,0.5")
    return values


def step_scales(
    run: TrainedRun,
    steps: int,
    alpha_scales: Sequence[float] | None = None,
    step_sizes: Sequence[float] | None = None,
) -> list[float]:
    """The multiplier on the run's α for inner steps 1..K (the last given value repeats).

    ``alpha_scales`` multiply the run's own α (fixed or learned); ``step_sizes`` are absolute
    step sizes, which only a run with one fixed scalar α (MAML, Reptile) can take. The MAML
    paper's test protocol (cbfinn/maml_rl ``test_maml_point.py``: the first VPG step at the
    training step size 0.5, later ones at 0.25) is ``alpha_scales = 1, 0.5``.
    """
    if alpha_scales is not None and step_sizes is not None:
        raise ValueError("give either --step-sizes (absolute, fixed-α runs) or --alpha-scales (multipliers), not both")
    if step_sizes is not None:
        if run.cfg.learns_alpha and run.init != "random":
            raise ValueError(
                f"--step-sizes: this {run.cfg.algorithm} run learned α per parameter; scale it with "
                "--alpha-scales instead (e.g. --alpha-scales 1,0.5)"
            )
        alpha_scales = step_sizes  # multipliers on a unit α: see with_unit_alpha
    scales = list(alpha_scales) if alpha_scales else [1.0]
    if not all(math.isfinite(v) and v > 0 for v in scales):
        raise ValueError(f"step-size scales must be positive finite numbers, got {scales}")
    return [scales[min(j, len(scales) - 1)] for j in range(steps)]


def check_counts(steps: int, episodes: int | None) -> None:
    if steps < 0:
        raise ValueError(f"--steps must be >= 0, got {steps}")
    if episodes is not None and episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")


@dataclass
class Sweep:
    """Per-task results of adapting for 0..K steps."""

    tasks: list[Task]
    returns: np.ndarray  # (K+1, T): mean episode return of task i with the parameters after j steps
    params: list[dict[str, np.ndarray]]  # K+1 per-task stacks (T, …); params[0] is θ repeated
    scales: list[float]  # multiplier on α for steps 1..K
    mean_action_returns: np.ndarray | None = None  # (K+1, T): return of the noiseless (mean/arg-max) policy
    success: np.ndarray | None = None  # (K+1, T): fraction of task i's episodes that succeeded (families with success)


def adaptation_sweep(
    run: TrainedRun,
    tasks: list[Task],
    steps: int,
    episodes: int,
    seed: int,
    sampler,
    scales: Sequence[float] | None = None,
    deterministic: bool = False,
) -> Sweep:
    """Sample with θ, adapt one step, sample with φ¹, adapt from φ¹ on that batch, … (K steps).

    Step j uses ``scales[j-1] · α`` (all 1 by default). With ``deterministic`` the return of
    the mean action (no exploration noise) is measured too, after every step.
    """
    check_counts(steps, episodes)
    scales = [1.0] * steps if scales is None else list(scales)
    if len(scales) != steps:
        raise ValueError(f"{len(scales)} step-size scales for {steps} inner steps")
    adv, T = run.cfg.advantages, len(tasks)
    dtype = next(iter(run.theta.values())).dtype
    params = {k: v.contiguous() for k, v in expand_to_tasks(run.theta, T).items()}
    returns, stacks, mean_returns, success = [], [], [], []
    repeats = repeat_counts(tasks)
    for j in range(steps + 1):
        stack = to_numpy(params)
        stacks.append(stack)
        if deterministic:
            mean_returns.append(mean_action_returns(run, tasks, stack))
        seeds = [noise_seed(seed, j, task, r) for task, r in zip(tasks, repeats)]  # by content and copy
        rollouts = sampler.sample(tasks, stack, True, episodes, seeds)
        batch = Batch.from_rollouts(
            rollouts,
            adv.gamma,
            adv.gae_lambda,
            adv.normalize_advantages,
            dtype,
            "cpu",
            adv.loss_average,
            adv.bootstrap_truncated,
        )
        returns.append(batch.episode_returns().mean(-1).double().numpy())
        success.append(batch.success)
        if j < steps:
            params = inner_step(run.spec, params, run.alpha, batch, scales[j])
    has_success = all(x is not None for x in success)
    return Sweep(
        tasks,
        np.stack(returns),
        stacks,
        scales,
        np.stack(mean_returns) if deterministic else None,
        np.stack(success) if has_success else None,
    )


def evaluate(
    run_or_checkpoint: str | Path | TrainedRun,
    goals: Sequence[Sequence[float]] | None = None,
    num_tasks: int | None = None,
    steps: int = DEFAULT_STEPS,
    episodes: int | None = None,
    seed: int = 0,
    address: str | None = None,
    local: bool = False,
    num_workers: int | None = None,
    alpha_scales: Sequence[float] | None = None,
    step_sizes: Sequence[float] | None = None,
    deterministic: bool = False,
    init: str = "run",
    split: str | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint; returns the JSON-ready report (see the module docstring).

    Sampling runs on RolloutWorker Ray actors: on the Ray already initialised in this
    process, else on ``address`` (None = a new local Ray). ``local=True`` samples in-process
    instead (same numbers). ``episodes`` defaults to the run's ``episodes_per_task``.
    ``alpha_scales`` / ``step_sizes`` set the inner step size per step (:func:`step_scales`);
    ``deterministic`` adds the mean-action return after each step. ``init="random"`` replaces θ
    by a fresh initialisation (:func:`random_init`): the MAML paper's random-initialisation baseline.
    ``split``: where sampled tasks come from (default: the held-out ``test`` split where the family has one).
    """
    run = run_or_checkpoint if isinstance(run_or_checkpoint, TrainedRun) else load_run(run_or_checkpoint)
    if init == "random":
        run = random_init(run)
    elif init != "run":
        raise ValueError(f"--init {init!r}: expected run (the checkpoint's θ) or random (a fresh initialisation)")
    episodes = run.cfg.episodes_per_task if episodes is None else episodes
    check_counts(steps, episodes)
    scales = step_scales(run, steps, alpha_scales, step_sizes)
    if step_sizes is not None:
        run = with_unit_alpha(run)
    split = split or default_split(run)
    tasks = resolve_tasks(run, goals, num_tasks, seed, split)
    if local:
        sampler = LocalSampler(run)
    else:
        init_ray(address)
        sampler = RaySampler(run, len(tasks), num_workers)
    try:
        sweep = adaptation_sweep(run, tasks, steps, episodes, seed, sampler, scales, deterministic)
    finally:
        sampler.close()
    return report(run, sweep, episodes, seed, split if not goals else "given")


def success_report(sweep: Sweep) -> dict[str, Any]:
    """Success rates after 0..K steps, overall and per class (tasks with ``env_name``), with 95 % intervals over
    tasks (Student t, as for returns; a rate's interval may reach past 0 or 1)."""
    if sweep.success is None:
        return {}
    out: dict[str, Any] = {
        "success_by_step": [float(x) for x in sweep.success.mean(axis=1)],
        "success_ci95_by_step": [ci95(r) for r in sweep.success],
    }
    classes: dict[str, list[int]] = {}
    for i, task in enumerate(sweep.tasks):
        if isinstance(task, dict) and "env_name" in task:
            classes.setdefault(str(task["env_name"]), []).append(i)
    if classes:
        out["by_class"] = {
            name: {
                "num_tasks": len(idx),
                "success_by_step": [float(x) for x in sweep.success[:, idx].mean(axis=1)],
                "success_ci95_by_step": [ci95(r) for r in sweep.success[:, idx]],
                "returns_by_step": [float(x) for x in sweep.returns[:, idx].mean(axis=1)],
                "ci95_by_step": [ci95(r) for r in sweep.returns[:, idx]],
            }
            for name, idx in sorted(classes.items())
        }
    return out


def report(run: TrainedRun, sweep: Sweep, episodes: int, seed: int, split: str = "train") -> dict[str, Any]:
    returns = sweep.returns
    alpha_mean = float(np.mean([float(a.float().mean()) for a in run.alpha.values()]))
    extra: dict[str, Any] = {}
    if sweep.mean_action_returns is not None:
        extra = {
            "mean_action_returns_by_step": [float(x) for x in sweep.mean_action_returns.mean(axis=1)],
            "mean_action_ci95_by_step": [ci95(r) for r in sweep.mean_action_returns],
        }
    out = {
        "checkpoint": str(run.checkpoint),
        "iteration": run.iteration,
        "algorithm": run.cfg.algorithm,
        "env": run.cfg.env,
        "num_tasks": len(sweep.tasks),
        "episodes": episodes,
        "steps": returns.shape[0] - 1,
        "seed": seed,
        "split": split,
        "init": run.init,
        # the protocol: α multiplier per step, and the resulting mean step size
        "protocol": {
            "alpha_scales": sweep.scales,
            "mean_step_size_by_step": [alpha_mean * s for s in sweep.scales],
            "fresh_rollouts_per_step": True,
            "loss_average": run.cfg.advantages.loss_average,
        },
        "returns_by_step": [float(x) for x in returns.mean(axis=1)],
        "ci95_by_step": [ci95(r) for r in returns],
        **extra,
        **success_report(sweep),
        "per_task": [
            {
                "task": task,
                "returns_by_step": [float(x) for x in returns[:, i]],
                **({"success_by_step": [float(x) for x in sweep.success[:, i]]} if sweep.success is not None else {}),
                **(
                    {"mean_action_returns_by_step": [float(x) for x in sweep.mean_action_returns[:, i]]}
                    if sweep.mean_action_returns is not None
                    else {}
                ),
            }
            for i, task in enumerate(sweep.tasks)
        ],
    }
    return out


def format_report(result: dict[str, Any]) -> str:
    """A small human-readable table of a report."""
    lines = [
        f"{result['checkpoint']} ({result['algorithm']}, iteration {result['iteration']}): "
        f"{result['num_tasks']} {result.get('split', 'train')} tasks x {result['episodes']} episodes, "
        f"seed {result['seed']}",
        f"α scale per step: {', '.join(f'{x:g}' for x in result['protocol']['alpha_scales']) or 'n/a'}",
        f"{'inner steps':>11}  {'mean return':>12}  {'95% CI':>10}"
        + (f"  {'mean action':>12}" if "mean_action_returns_by_step" in result else ""),
    ]
    for j, (mean, ci) in enumerate(zip(result["returns_by_step"], result["ci95_by_step"])):
        line = f"{j:>11}  {mean:>12.2f}  {'n/a' if ci is None else f'± {ci:.2f}':>10}"
        if "mean_action_returns_by_step" in result:
            line += f"  {result['mean_action_returns_by_step'][j]:>12.2f}"
        if "success_by_step" in result:
            sci = result["success_ci95_by_step"][j]
            line += f"  success {100 * result['success_by_step'][j]:5.1f} %" + (
                "" if sci is None else f" ± {100 * sci:.1f}"
            )
        lines.append(line)
    for name, row in result.get("by_class", {}).items():
        rates = ", ".join(f"{100 * x:.0f} %" for x in row["success_by_step"])
        lines.append(f"  {name} ({row['num_tasks']} tasks): success after 0..K steps {rates}")
    return "\n".join(lines)


# -- deterministic trajectories for plots ------------------------------------------------------------
@torch.no_grad()
def mean_action_rollout(run: TrainedRun, tasks: list[Task], params: dict[str, np.ndarray]):
    """One noiseless episode per task (mean / arg-max action) with the per-task stack ``params`` ``(T, …)``.

    Returns ``(paths, returns)``: each task's observations ``(n+1, obs)`` from the reset to termination
    or the horizon, and its undiscounted return ``(T,)``.
    """
    T = len(tasks)
    vec = VectorEnvs(run.cfg.env, run.cfg.env_kwargs).make(tasks, 1, list(range(T)))
    policy = from_numpy(params)
    obs = vec.reset()
    path = [obs[:, 0].copy()]
    alive, lengths, total = np.ones(T, dtype=bool), np.full(T, run.horizon), np.zeros(T)
    for t in range(run.horizon):
        action = mode(run.spec, forward(run.spec, policy, torch.from_numpy(obs.reshape(T, 1, -1))))
        obs, reward, terminated = vec.step(env_actions(run.spec, action.numpy()))
        path.append(obs[:, 0].copy())
        total += np.asarray(reward)[:, 0] * alive
        done = alive & np.asarray(terminated)[:, 0]
        lengths[done] = t + 1
        alive &= ~done
        if not alive.any():
            break
    paths = np.stack(path, axis=1)
    return [paths[i, : lengths[i] + 1] for i in range(T)], total


def mean_action_returns(run: TrainedRun, tasks: list[Task], params: dict[str, np.ndarray]) -> np.ndarray:
    """``(T,)``: undiscounted return of one noiseless episode per task."""
    return mean_action_rollout(run, tasks, params)[1]


def mean_action_paths(run: TrainedRun, tasks: list[Task], params: dict[str, np.ndarray]) -> list[np.ndarray]:
    """One noiseless rollout per task: observations ``(n+1, obs)`` from the reset to termination or the horizon."""
    return mean_action_rollout(run, tasks, params)[0]
