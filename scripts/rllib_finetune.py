#!/usr/bin/env python3
"""Fine-tuning with RLlib PPO on held-out tasks, from four starting points (2D navigation, HalfCheetah, ...).

    python scripts/rllib_finetune.py run    --run RUN --out runs/rllib-finetune --tasks 20 --seeds 0-2
    python scripts/rllib_finetune.py report --out runs/rllib-finetune [--figure docs/figures/rllib_finetune.png]

Starting points, each a PPO ``DefaultPPOTorchRLModule`` of the run's policy shape (RLlib's own
critic, freshly initialised, on a separate encoder):

* ``theta``: the meta-learned θ of RUN (``metarl export RUN --format rllib``);
* ``adapted``: θ' after one metarl inner step on the task (``--goal G --steps 1``); its curve is
  shifted right by the adaptation's environment steps (``episodes_per_task`` × horizon);
* ``pretrained``: a policy trained with RLlib PPO on goals drawn afresh every episode from the
  task distribution (the MAML paper's "pretrained" baseline), ``--pretrain-iterations`` PPO
  iterations per seed, then fine-tuned like the others;
* ``scratch``: RLlib's default initialisation.

Each (start, seed, held-out goal) is one PPO run of ``--iterations`` iterations of
``--batch`` environment steps; its return at an iteration is the mean return of the episodes
sampled in that iteration (before that iteration's update). Held-out tasks: for 2D navigation
``heldout_goals`` of scripts/study.py (the paper study's; never training goals); for the locomotion
families the first ``--tasks`` of the MAML paper's 40 test goals (scripts/paper_numbers.py). Results go to
``OUT/results.jsonl`` (one row per PPO iteration); ``run`` skips runs already there, so a
stopped study continues. Sampling and learning run in this process (``num_env_runners=0``,
``num_learners=0``): one PPO run's cost is its own CPU time, comparable across starts.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
from study import ci95, fmt, heldout_goals, parse_seeds  # scripts/study.py, beside this script (on sys.path)

import metarl  # noqa: F401  (registers the metarl/ env ids)
from metarl.api import export_rllib
from metarl.export import export_params
from metarl.rllib import export_run, module_spec
from metarl.runtime.evaluation import load_run

STARTS = ("theta", "adapted", "pretrained", "scratch")
RANDOM_TASK_ENV = "metarl-study/RandomTask-v0"
PAPER_FAMILIES = {"metarl/HalfCheetahVel-v0": "HalfCheetahVel", "metarl/HalfCheetahDir-v0": "HalfCheetahDir"}
PAPER_FAMILIES.update({"metarl/AntVel-v0": "AntVel", "metarl/AntDir-v0": "AntDir"})


class RandomTask(gym.Wrapper):
    """A task env whose task is redrawn from the family's distribution at every reset.

    Only for the multi-task "pretrained" baseline: metarl's task envs never change task on
    reset (a meta-RL benchmark must not); this wrapper does so on purpose, visibly.
    """

    def reset(self, *, seed=None, options=None):
        # The start state does not depend on the task in these families (2D navigation starts at the
        # origin, locomotion from the model's pose), only the reward does: draw after the (seeded) reset.
        obs, info = super().reset(seed=seed, options=options)
        family = self.unwrapped
        family.set_task(family.sample_tasks(1, family.np_random)[0])
        return obs, {**info, "task": family.get_task()}


def make_random_task_env(family: str = "", horizon: int | None = None, **kwargs):
    return RandomTask(gym.make(family, max_episode_steps=horizon, **kwargs))


def heldout_tasks(run, n: int) -> list[dict]:
    """The study's held-out tasks: 2D navigation's held-out goals, or the MAML paper's test goals."""
    if run.cfg.env in PAPER_FAMILIES:
        from paper_numbers import test_tasks  # scripts/paper_numbers.py, beside this script

        tasks = test_tasks(PAPER_FAMILIES[run.cfg.env])
        if n > len(tasks):
            raise SystemExit(f"rllib_finetune.py: --tasks {n}: the paper has {len(tasks)} test goals for {run.cfg.env}")
        return tasks[:n]
    if "goal" not in run.env.unwrapped.get_task():
        raise SystemExit(f"rllib_finetune.py: no held-out task list for {run.cfg.env} (2D navigation or locomotion)")
    return [{"goal": g} for g in heldout_goals(n)]


def ppo_config(run, seed: int, batch: int, env: str, env_config: dict, load_state_path: Path | None):
    """PPO on RLlib's new API stack, all in this process; lr and epochs chosen for small batches."""
    from ray.rllib.algorithms.ppo import PPOConfig

    return (
        PPOConfig()
        .environment(env, env_config=env_config, normalize_actions=False)  # the policy's raw actions, as metarl
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1)
        .learners(num_learners=0)
        .training(
            train_batch_size_per_learner=batch,
            minibatch_size=min(batch, 500),
            num_epochs=5,
            lr=3e-4,
            gamma=run.cfg.advantages.gamma,
            lambda_=0.97,
        )
        .rl_module(
            rl_module_spec=module_spec(
                run.spec, run.env.observation_space, run.env.action_space, load_state_path=load_state_path
            )
        )
        .debugging(seed=seed)
    )


def train_ppo(config, iterations: int):
    """Build PPO and run ``iterations`` iterations: ``(rows, algo)``, a row per iteration with the
    sampled episodes' mean return and the step count; the caller stops ``algo``."""
    algo = config.build_algo()
    try:
        rows = []
        for i in range(iterations):
            result = algo.train()
            runners = result["env_runners"]
            rows.append(
                {
                    "iteration": i + 1,
                    "env_steps": int(runners["num_env_steps_sampled_lifetime"]),
                    "return": float(runners.get("episode_return_mean", math.nan)),
                }
            )
        return rows, algo
    except BaseException:
        algo.stop()
        raise


def pretrain(run, out: Path, seed: int, iterations: int, batch: int) -> Path:
    """The multi-task PPO module for ``seed`` (trained once, reused for every goal): the learner's
    module, so its fine-tuning also starts from its trained critic, as RLlib's pretrain recipe does."""
    path = out / "init" / f"pretrained-seed{seed}"
    if path.exists():
        return path
    env_config = {"family": run.cfg.env, "horizon": run.horizon, **run.cfg.env_kwargs}
    rows, algo = train_ppo(ppo_config(run, seed, batch, RANDOM_TASK_ENV, env_config, None), iterations)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        algo.learner_group.foreach_learner(lambda learner: learner.module["default_policy"].save_to_path(str(tmp)))
        tmp.rename(path)
    finally:
        algo.stop()
    (out / "init" / f"pretrained-seed{seed}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def done_keys(results: Path) -> set[tuple[str, int, int]]:
    if not results.exists():
        return set()
    return {(r["start"], r["seed"], r["task_index"]) for r in map(json.loads, results.read_text().splitlines())}


def start_ray() -> None:
    """A local Ray for PPO's bookkeeping: RLlib needs one even with everything in-process. (Ray gives
    its raylet 30 s to register; on an overloaded machine start-up can fail: run the stage again, it
    continues. Retrying in-process leaked the failed attempt's processes, so this does not.)"""
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)


def run_study(args: argparse.Namespace) -> None:
    import ray

    run = load_run(args.run)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = done_keys(results)
    tasks = heldout_tasks(run, args.tasks)
    adapt_steps = run.cfg.episodes_per_task * run.horizon  # what one inner step samples (at most)
    gym.register(RANDOM_TASK_ENV, entry_point=make_random_task_env, max_episode_steps=run.horizon)
    (out / "study.json").write_text(
        json.dumps(
            {
                "run": str(run.checkpoint),
                "iteration": run.iteration,
                "tasks": args.tasks,
                "seeds": args.seeds,
                "iterations": args.iterations,
                "batch": args.batch,
                "pretrain_iterations": args.pretrain_iterations,
                "adapt_env_steps": adapt_steps,
                "env": run.cfg.env,
                "tasks_list": tasks,
            },
            indent=1,
        )
    )
    start_ray()
    try:
        theta = out / "init" / "theta"
        if not theta.exists():
            export_rllib(args.run, theta)
        for seed in args.seeds:
            for start in args.starts:
                init = {"theta": theta, "scratch": None}.get(start)
                if start == "pretrained":
                    init = pretrain(run, out, seed, args.pretrain_iterations, args.batch)
                for index, task in enumerate(tasks):
                    if (start, seed, index) in done:
                        continue
                    offset = 0
                    if start == "adapted":
                        init = out / "init" / f"adapted-seed{seed}-task{index}"
                        if not init.exists():
                            params, _ = export_params(run, task, 1, seed=seed)
                            export_run(run, params, init)
                        offset = adapt_steps
                    env_config = {**run.cfg.env_kwargs, "task": task}
                    rows, algo = train_ppo(
                        ppo_config(run, seed, args.batch, run.cfg.env, env_config, init), args.iterations
                    )
                    algo.stop()
                    with results.open("a") as f:
                        for row in rows:
                            f.write(
                                json.dumps(
                                    {
                                        "start": start,
                                        "seed": seed,
                                        "task_index": index,
                                        "task": task,
                                        **row,
                                        "env_steps": row["env_steps"] + offset,
                                    }
                                )
                                + "\n"
                            )
                    print(
                        f"{start} seed {seed} task {index}: returns {[round(r['return'], 1) for r in rows]}", flush=True
                    )
    finally:
        ray.shutdown()


def complete_seeds(rows: list[dict], tasks: int) -> list[int]:
    """Seeds with every start on every goal: a study still running reports only those (a part-done seed
    would mix goals between starts and turn the interval over seeds into one over goal subsets)."""
    have = {(r["seed"], r["start"], r["task_index"]) for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    return [s for s in seeds if all((s, start, t) in have for start in STARTS for t in range(tasks))]


def curves(rows: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """Per start: env steps and per-seed mean return (over goals) at each PPO iteration."""
    out = {}
    for start in STARTS:
        mine = [r for r in rows if r["start"] == start]
        if not mine:
            continue
        seeds = sorted({r["seed"] for r in mine})
        iterations = sorted({r["iteration"] for r in mine})
        per_seed = np.array(
            [
                [np.mean([r["return"] for r in mine if r["seed"] == s and r["iteration"] == i]) for i in iterations]
                for s in seeds
            ]
        )
        steps = np.array([np.mean([r["env_steps"] for r in mine if r["iteration"] == i]) for i in iterations])
        tasks = len({r["task_index"] for r in mine})
        out[start] = {"steps": steps, "per_seed": per_seed, "seeds": len(seeds), "tasks": tasks}
    return out


def report(args: argparse.Namespace) -> None:
    study = json.loads((args.out / "study.json").read_text())
    rows = [json.loads(line) for line in (args.out / "results.jsonl").read_text().splitlines()]
    seeds = complete_seeds(rows, study["tasks"])
    if not seeds:
        raise SystemExit(f"rllib_finetune.py: no seed in {args.out} has finished every start on every goal yet")
    data = curves([r for r in rows if r["seed"] in seeds])
    print(
        f"RLlib PPO fine-tuning on held-out goals from {study['run']} (metarl iteration {study['iteration']}); "
        f"mean return over goals, ± 95 % t-interval over seeds; complete seeds {seeds} of {study['seeds']}\n"
    )
    first = next(iter(data.values()))
    header = ["start", "goals × seeds", *[f"PPO iter {i + 1}" for i in range(first["per_seed"].shape[1])]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for start, d in data.items():
        cells = [
            fmt(float(np.mean(d["per_seed"][:, i])), ci95(d["per_seed"][:, i])) + f" ({int(d['steps'][i])} steps)"
            for i in range(d["per_seed"].shape[1])
        ]
        print(f"| {start} | {d['tasks']} × {d['seeds']} | " + " | ".join(cells) + " |")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for start, d in data.items():
            mean = d["per_seed"].mean(0)
            half = np.array([ci95(d["per_seed"][:, i]) for i in range(len(mean))])
            ax.plot(d["steps"], mean, marker="o", label=start)
            if np.isfinite(half).all():
                ax.fill_between(d["steps"], mean - half, mean + half, alpha=0.2)
        ax.set_xlabel("env steps on the held-out goal ('adapted': from metarl's adaptation)")
        ax.set_ylabel("mean episode return")
        family = study.get("env", "metarl/Navigation2D-v0").removeprefix("metarl/").removesuffix("-v0")
        ax.set_title(f"RLlib PPO fine-tuning, {family} ({len(seeds)} seed(s) x {study['tasks']} tasks)")
        ax.legend()
        fig.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=100)
        print(f"\nwrote {args.figure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("run", "report"))
    parser.add_argument("--out", type=Path, required=True, help="study directory")
    parser.add_argument("--run", help="metarl run directory or checkpoint (stage run)")
    parser.add_argument("--tasks", type=int, default=20, help="held-out goals (default 20)")
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2], help="e.g. 0-2")
    parser.add_argument("--starts", type=lambda s: s.split(","), default=list(STARTS), help=",".join(STARTS))
    parser.add_argument("--iterations", type=int, default=10, help="PPO iterations per goal (default 10)")
    parser.add_argument("--batch", type=int, default=2000, help="env steps per PPO iteration (default 2000)")
    parser.add_argument("--pretrain-iterations", type=int, default=50, help="PPO iterations of the pretrained policy")
    parser.add_argument("--figure", type=Path, help="report: also plot return vs env steps here")
    args = parser.parse_args()
    if args.stage == "run":
        if not args.run:
            parser.error("run needs --run RUN")
        bad = sorted(set(args.starts) - set(STARTS))
        if bad:
            parser.error(f"--starts {','.join(bad)}: allowed are {','.join(STARTS)}")
        run_study(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
