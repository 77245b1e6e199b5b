"""Command-line habits from Hydra, RLlib/Tune and Gymnasium users: dotted YAML-typed overrides, flags and
positionals in any order, ``metarl config``, ``--version``, task-typed goals, quiet progress, no Ray auth notice."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import pytest
import yaml

from metarl import __version__
from metarl.cli import Progress, build_parser, main
from metarl.config import Config, ConfigError, describe_keys
from metarl.runtime.evaluation import noise_seed, parse_goal, parse_task, resolve_tasks
from metarl.tune import grid_configs, parse_grid

REPO = Path(__file__).resolve().parents[1]
NAV = str(REPO / "configs/navigation2d-maml.yaml")


# -- overrides -------------------------------------------------------------------------------------
def test_dotted_override_reaches_into_env_kwargs_and_keeps_other_entries(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("env_kwargs: {action_mode: clip}\nmeta_batch_size: 4\nepisodes_per_task: 2\n")
    cfg = Config.load(path, ["env_kwargs.action_mode=scale", "inner_lr=1e-2"])
    assert cfg.env_kwargs == {"action_mode": "scale"} and cfg.inner_lr == 0.01
    with pytest.raises(ConfigError, match="did you mean 'env_kwargs.action_mode'"):
        Config.load(path, ["envkwargs.action_mode=scale"])
    with pytest.raises(ConfigError, match="inner_lr is float, not a mapping"):
        Config.load(path, ["inner_lr.x=1"])


def test_grid_values_are_typed_like_set_values():
    """``--grid inner_lr=1e-2,1e-1`` once failed with "expected float, got '1e-2'" while ``--set`` worked."""
    grid = parse_grid(["inner_lr=1e-2,1e-1", "env_kwargs.action_mode=clip,scale"])
    assert grid == {"inner_lr": [0.01, 0.1], "env_kwargs.action_mode": ["clip", "scale"]}
    base = Config.load(NAV).to_dict()
    points = [(c.inner_lr, c.env_kwargs["action_mode"]) for c in grid_configs(base, grid)]
    assert points == [(0.01, "clip"), (0.01, "scale"), (0.1, "clip"), (0.1, "scale")]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--set", "iterations=1", NAV],
        ["train", "--set", "iterations=1", "seed=3", NAV],
        ["train", NAV, "--set", "iterations=1", "--set", "seed=3"],
        ["train", "--set=iterations=1", "seed=3", NAV, "--quiet"],
    ],
)
def test_overrides_and_the_config_path_in_any_order(argv):
    args = build_parser().parse_args(argv)
    assert args.config == NAV
    assert args.set[0] == "iterations=1" and args.set[1:] in ([], ["seed=3"])


def test_goals_before_the_run_are_not_taken_for_the_run():
    args = build_parser().parse_args(["evaluate", "--goal", "0.3,-0.2", "-0.4,0.1", "runs/x", "--goal=1,2"])
    assert args.run == "runs/x" and args.goal == ["0.3,-0.2", "-0.4,0.1", "1,2"]


def _run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metarl.cli", *argv], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_config_command_prints_the_resolved_config():
    proc = _run_cli("config", "--set", "env_kwargs.action_mode=scale", "inner_lr=1e-2", NAV)
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed == Config.load(NAV, ["env_kwargs.action_mode=scale", "inner_lr=0.01"]).to_dict()
    assert printed["env_kwargs"] == {"action_mode": "scale"} and printed["algorithm"] == "maml"
    bad = _run_cli("config", NAV, "--set", "inner_lr=-1e400")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "inner_lr" in bad.stderr


def test_config_keys_lists_every_key_with_default_and_help(capsys):
    assert main(["config", "--keys"]) == 0
    out = capsys.readouterr().out
    defaults = yaml.safe_load(out)  # the comments are YAML comments: the text is a config of the defaults
    assert defaults == Config().to_dict()
    lines, comment_of, section = out.splitlines(), {}, ""
    for i, text in enumerate(lines):  # each key's line, named in its one spelling, and the comment above it
        if text.lstrip().startswith("#"):
            continue
        name, _, value = text.strip().partition(":")
        if not text.startswith(" "):
            section = name if not value else ""
        if value:
            comment_of[f"{section}.{name}" if text.startswith(" ") else name] = lines[i - 1]
    assert list(comment_of) == [row["key"] for row in describe_keys()]
    for row in describe_keys():
        assert comment_of[row["key"]].lstrip().startswith("# ") and row["help"] in comment_of[row["key"]]
    assert defaults["alpha"]["granularity"] == "per_parameter" and "scalar | per_layer | per_parameter" in out
    assert "\ntrpo:\n" in out and "\n  max_kl: 0.01\n" in out


def test_a_full_disk_is_one_line_and_exit_1(monkeypatch, capsys):
    import errno

    import metarl.cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/metrics.jsonl")

    monkeypatch.setattr(metarl.cli, "_config", full)
    assert main(["config", NAV]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0] and "runs/x/metrics.jsonl" in err[0] and "--resume" in err[0]


def test_version():
    proc = _run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"metarl {__version__}"


# -- tasks -----------------------------------------------------------------------------------------
def _family(env_id: str) -> SimpleNamespace:
    """What ``resolve_tasks`` reads of a run: its family's env and id."""
    return SimpleNamespace(env=gym.make(env_id), cfg=SimpleNamespace(env=env_id))


def test_goals_are_typed_as_written_and_validated_by_the_family():
    assert parse_goal("2,3") == [2, 3] and all(type(g) is int for g in parse_goal("2,3"))
    assert parse_goal("0.3,-2e-1") == [0.3, -0.2]
    grid = _family("metarl/GridNavigation-v0")
    assert resolve_tasks(grid, [parse_goal("2,3")], None, 0) == [{"goal": [2, 3]}]
    with pytest.raises(ValueError, match="2 integers"):
        resolve_tasks(grid, [parse_goal("2.5,3")], None, 0)
    nav = _family("metarl/Navigation2D-v0")
    assert resolve_tasks(nav, [parse_goal("0,-0.5")], None, 0) == [{"goal": [0.0, -0.5]}]


def test_json_tasks_work_for_any_family():
    cheetah = _family("metarl/HalfCheetahVel-v0")
    assert resolve_tasks(cheetah, [parse_task('{"velocity": 1.5}')], None, 0) == [{"velocity": 1.5}]
    with pytest.raises(ValueError, match="must lie in"):
        resolve_tasks(cheetah, [parse_task('{"velocity": 9}')], None, 0)
    with pytest.raises(
        ValueError, match=re.escape("""tasks have no goal; give the task as JSON, e.g. --task '{"velocity": """)
    ):
        resolve_tasks(cheetah, [parse_goal("1.5")], None, 0)
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_task("{velocity: 1}")
    ant = _family("metarl/AntDir-v0")
    assert resolve_tasks(ant, [parse_task('{"direction": -1}')], None, 0) == [{"direction": -1}]


def test_noise_seed_follows_the_task_not_its_position():
    a, b = {"goal": [0.3, -0.2]}, {"goal": [-0.4, 0.1]}
    assert noise_seed(0, 1, a) == noise_seed(0, 1, dict(a))
    assert len({noise_seed(0, 1, a), noise_seed(0, 1, b), noise_seed(0, 2, a), noise_seed(1, 1, a)}) == 4
    assert noise_seed(0, 1, a, 0) == noise_seed(0, 1, a) != noise_seed(0, 1, a, 1) != noise_seed(0, 1, a, 2)


def test_repeated_tasks_get_independent_rollouts(tmp_path):
    """HalfCheetahDir has two tasks: 40 sampled tasks must be 40 samples, not 2 copied 20 times
    (until 2026-12-06 a repeated task got the same noise, hence the same rollouts)."""
    from test_export import fake_run

    from metarl.runtime.evaluation import evaluate, repeat_counts

    a, b = [0.3, -0.2], [-0.4, 0.1]
    assert repeat_counts([{"goal": a}, {"goal": b}, {"goal": a}, {"goal": a}, {"goal": b}]) == [0, 0, 1, 2, 1]
    run = fake_run(tmp_path / "run")
    report = evaluate(run, goals=[a, b, a], steps=1, episodes=2, seed=0, local=True)
    first, _, again = (t["returns_by_step"] for t in report["per_task"])
    assert first != again  # independent noise for the second copy
    alone = evaluate(run, goals=[a], steps=1, episodes=2, seed=0, local=True)
    assert alone["per_task"][0]["returns_by_step"] == first  # the first copy scores as the goal alone


# -- output ----------------------------------------------------------------------------------------
def test_progress_off_a_terminal_prints_periodic_plain_lines():
    stream = io.StringIO()  # not a TTY, as a pipe or a log file
    bar = Progress(25, 0, "metasgd", every=10, seconds=1e9, stream=stream)
    for i in range(25):
        bar.update({"return_pre": -float(i), "return_post": 1.0, "seconds": 0.5})
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split(":")[1].split()[-1] for line in lines] == ["10/25", "20/25", "25/25"]
    assert lines[-1].endswith("return pre -24.00, post 1.00, 0.50 s/it")


AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"
INIT = """
import os, ray
from metarl.runtime.trainer import init_ray
{start}
print("mode", os.environ.get("RAY_AUTH_MODE"))
ray.shutdown()
"""


@pytest.mark.parametrize("start, shown", [("init_ray(None)", False), ("ray.init(include_dashboard=False)", True)])
def test_the_embedded_ray_starts_with_authentication_but_without_its_notice(tmp_path, start, shown):
    """Ray 2.60 logs the notice for every new local cluster; metarl hides it there and keeps token auth on.
    The plain ``ray.init`` case shows the notice is real (if Ray drops it, this test says so)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    proc = subprocess.run(
        [sys.executable, "-c", INIT.format(start=start)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env={**env, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mode token" in proc.stdout
    assert (AUTH_NOTICE in proc.stderr) is shown, proc.stderr[-2000:]
