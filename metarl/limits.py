"""Caps on command-line sizes, checked before Ray starts or a file is read (one line, exit 2).

The config's own sizes are checked by :meth:`metarl.config.Config.validate` (steps per phase,
policy parameters, inner steps, an estimate of the learner's memory). These are the flags of
``metarl evaluate`` and ``metarl plot``; the values are far above any published protocol
(MAML: 40 tasks, 20 episodes, 3 steps; figures at 100-300 dpi).
"""

from __future__ import annotations

MAX_EVAL_TASKS = 10_000
MAX_EVAL_STEPS = 100
MAX_EVAL_EPISODES = 10_000  # per task and step
MAX_EVAL_TOTAL_EPISODES = 10**6  # tasks x episodes x (steps + 1)
MAX_DPI = 1200


def check_evaluation(tasks: int | None, steps: int | None, episodes: int | None) -> None:
    """Refuse sizes that would run for days or exhaust memory, naming the flag."""
    for flag, value, cap in (
        ("--tasks", tasks, MAX_EVAL_TASKS),
        ("--steps", steps, MAX_EVAL_STEPS),
        ("--episodes", episodes, MAX_EVAL_EPISODES),
    ):
        if value is not None and value > cap:
            raise ValueError(f"{flag} {value} is more than {cap:,} (a documented cap, see docs/reliability.md)")
    total = (tasks or 40) * (episodes or 20) * ((3 if steps is None else steps) + 1)
    if total > MAX_EVAL_TOTAL_EPISODES:
        raise ValueError(
            f"--tasks x --episodes x (--steps + 1) = {total:,} episodes is more than "
            f"{MAX_EVAL_TOTAL_EPISODES:,}; lower one of them"
        )


def check_dpi(dpi: int) -> None:
    if not 1 <= dpi <= MAX_DPI:
        raise ValueError(
            f"--dpi {dpi}: must be between 1 and {MAX_DPI} (a 10-inch figure at {MAX_DPI} dpi is "
            f"already {10 * MAX_DPI:,} pixels wide)"
        )


def check_seed(seed: int) -> None:
    """``--seed`` seeds numpy's SeedSequence, which takes only integers >= 0."""
    if seed < 0:
        raise ValueError(f"--seed {seed}: must be an integer >= 0 (it seeds the sampled tasks and the action noise)")
