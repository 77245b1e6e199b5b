"""The learner watchdog: a learner call that takes far longer than it has been taking stops the run, in one line.

The limits scale with the call's recent durations (:class:`metarl.runtime.watchdog.CallLimits`), so a
learner that is slow, or slower each time, is never stopped; one that hangs is, with the call's
name, how long it was waited for, the newest checkpoint and the resume command.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import ray

import metarl.cli as cli
import metarl.runtime.learner as learner_mod
from metarl.config import Config
from metarl.runtime.learner import Learner
from metarl.runtime.metrics import read_metrics
from metarl.runtime.trainer import Trainer
from metarl.runtime.watchdog import WINDOW, CallLimits

TINY = dict(
    meta_batch_size=2,
    episodes_per_task=2,
    hidden_sizes=[8],
    learner_cpus=0.5,
    worker_cpus=0.5,
    learner_threads=1,
    num_workers=1,
    checkpoint_every=1,
)


def test_limits_scale_with_the_slowest_recent_call_and_never_go_below_the_floor():
    limits = CallLimits(factor=10, floor_s=60)
    assert limits.limit("meta_update") == 60  # a first call: the floor alone
    assert "the floor learner_timeout_min=60 s" in limits.explain("meta_update")
    limits.record("meta_update", 2.0)
    assert limits.limit("meta_update") == 60  # 10 x 2 s is under the floor
    limits.record("meta_update", 30.0)
    assert limits.limit("meta_update") == 300 and limits.limit("adapt") == 60  # per call
    assert limits.explain("meta_update") == "learner_timeout_factor=10 x its slowest recent 30 s"
    for _ in range(WINDOW):  # the slow call leaves the window: the limit follows the recent ones
        limits.record("meta_update", 7.0)
    assert limits.limit("meta_update") == 70
    assert CallLimits(factor=0, floor_s=60).limit("meta_update") is None  # 0: no limit


def test_rollout_limits_are_per_episode_and_scale_with_the_episodes_queued():
    """The rollout watchdog records seconds per episode: a slice twice as large (fewer workers share
    the meta-batch, or a re-sent slice queued behind another) may take twice as long."""
    limits = CallLimits(factor=10, floor_s=5, keys=("worker_timeout_factor", "worker_timeout_min"))
    assert limits.limit("rollout", scale=16) == 5 and "the floor worker_timeout_min=5 s" in limits.explain("rollout")
    limits.record("rollout", 0.1)  # 0.1 s per episode
    assert limits.limit("rollout", scale=4) == 5  # 10 x 0.4 s is under the floor
    assert limits.limit("rollout", scale=16) == pytest.approx(16) and limits.limit(
        "rollout", scale=32
    ) == pytest.approx(32)
    assert limits.explain("rollout", 32, "episode") == (
        "worker_timeout_factor=10 x its slowest recent 0.1 s per episode x 32 episodes"
    )


class _SlowLearner(Learner):
    """The real learner whose meta-update sleeps ``delays[k]`` s on its k-th call (runs as the Ray actor)."""

    delays: list[float] = []
    pid_file: str = ""

    def meta_update(self, post_parts):
        if self.pid_file:
            Path(self.pid_file).write_text(str(os.getpid()))
        self.calls = getattr(self, "calls", 0) + 1
        time.sleep(self.delays[min(self.calls, len(self.delays)) - 1])
        return super().meta_update(post_parts)


@pytest.fixture
def slow_learner(local_ray, monkeypatch):
    """The trainer's learner actor is a :class:`_SlowLearner` (its class travels by value: tests/ is not
    importable there)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(learner_mod, "Learner", _SlowLearner)
    yield _SlowLearner
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_slower_and_slower_learner_is_never_stopped(slow_learner, tmp_path, monkeypatch):
    """Each meta-update twice as slow as the one before: within 3 x the last one, so the run completes.

    A fixed limit of the floor (2.4 s) would have stopped the third call (3.2 s).
    """
    monkeypatch.setattr(slow_learner, "delays", [0.8, 1.6, 3.2])
    cfg = Config.from_dict({**TINY, "iterations": 3, "learner_timeout_factor": 3, "learner_timeout_min": 2.4})
    trainer = Trainer(cfg, tmp_path)
    try:
        history = trainer.train()
    finally:
        trainer.close()
    assert [m["iteration"] for m in history] == [1, 2, 3]
    assert history[-1]["time/meta_update"] > 3.2 > trainer.cfg.learner_timeout_min


def test_a_hung_learner_is_stopped_in_one_line_with_the_resume_command(slow_learner, tmp_path, monkeypatch, capsys):
    """The third meta-update never returns: `metarl train` stops after 3 x the slowest recent one, exit 1."""
    monkeypatch.setattr(slow_learner, "delays", [1.5, 1.5, 3600.0])
    monkeypatch.setattr(slow_learner, "pid_file", str(tmp_path / "learner.pid"))
    out = tmp_path / "run"
    address = ray.get_runtime_context().gcs_address
    sets = [
        f"{k}={v}".replace(" ", "")
        for k, v in {**TINY, "iterations": 5, "learner_timeout_factor": 3, "learner_timeout_min": 4}.items()
    ]
    start = time.monotonic()
    rc = cli.main(
        ["train", "configs/navigation2d-maml.yaml", "--quiet", "--out", str(out), "--address", address, "--set", *sets]
    )
    assert rc == 1 and time.monotonic() - start < 60
    last = capsys.readouterr().err.strip().splitlines()[-1]
    head, stopped, kept, resume = last.split("; ")
    assert head.startswith("metarl: error: learner call meta_update of iteration 3 did not return within ")
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [1, 2]
    slowest = max(r["time/meta_update"] for r in rows)  # >= 1.5 s: 3 x that is over the 4 s floor
    seconds = float(head.split("within ")[1].split(" s")[0])
    assert seconds == pytest.approx(3 * slowest, abs=1.0), head  # not the hour it would have slept
    assert "(limit: learner_timeout_factor=3 x its slowest recent " in head
    recent = float(head.split("slowest recent ")[1].split(" s)")[0])
    assert recent == pytest.approx(slowest, abs=0.3)  # the watchdog's own timing of the same calls
    assert stopped == "the learner was stopped"
    assert kept == f"newest checkpoint: {out / 'checkpoints' / 'checkpoint-000002.pt'}"
    assert resume.startswith("resume with: metarl train configs/navigation2d-maml.yaml --set ")
    assert resume.endswith(f"--out {out} --address {address} --resume")
    pid = int((tmp_path / "learner.pid").read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the hung learner's process was left running"
