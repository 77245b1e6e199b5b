"""``metarl render``: a MuJoCo family's episode before and after adaptation, side by side, as a GIF.

Rendering runs in a subprocess: MuJoCo reads ``MUJOCO_GL`` once, at import, and this process may
already have imported it with another backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from test_export import fake_run  # tests/ is on sys.path (pytest's rootdir-less import)

REPO = Path(__file__).resolve().parents[1]
TASK = '{"velocity": 1.5}'


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def _cli(*argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "metarl.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=_env(**env),
    )


@lru_cache(maxsize=1)
def _cannot_render() -> str | None:
    """None where offscreen MuJoCo rendering works (metarl's choice of backend), else why not."""
    probe = "from metarl.render import check_gl, choose_gl_backend; choose_gl_backend(); check_gl()"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=_env())
    if proc.returncode == 0:
        return None
    return "offscreen MuJoCo rendering is unavailable here: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:200]


@pytest.fixture(scope="module")
def cheetah(tmp_path_factory):
    return fake_run(
        tmp_path_factory.mktemp("render") / "cheetah",
        env="metarl/HalfCheetahVel-v0",
        meta_batch_size=2,
        episodes_per_task=1,
        horizon=50,
    )  # a short horizon: offscreen rendering costs ~0.1 s a frame


def test_gif_shows_both_episodes_side_by_side(cheetah, tmp_path):
    reason = _cannot_render()
    if reason:
        pytest.skip(reason)
    import imageio.v3 as iio

    out = tmp_path / "cheetah.gif"
    proc = _cli(
        "render", str(cheetah), "--task", TASK, "--out", str(out), "--episodes", "1", "--width", "64", "--height", "48"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "51 frames" in proc.stderr and "after 1 inner step" in proc.stderr
    frames = iio.imread(out, index=None)
    assert frames.shape == (51, 48, 128, 3), "the run's horizon 50 + the reset frame; two 64-pixel panels"
    left, right = frames[:, 12:, :64].astype(float), frames[:, 12:, 64:].astype(float)  # below the captions
    assert frames.std() > 10, "not a blank video"
    assert np.abs(left[-1] - left[0]).mean() > 1, "the cheetah moves"
    assert np.abs(left[1:] - right[1:]).mean() > 0.5, "θ and the adapted θ' act differently"


def test_bad_input_is_one_line(cheetah, tmp_path, capsys):
    from metarl.cli import main

    for argv, fragment in [  # refused before any GL or env work: in this process
        (
            ["render", str(cheetah), "--task", TASK, "--out", str(tmp_path / "c.avi")],
            "use .gif or .mp4 (a video), or .png",
        ),
        (["render", str(cheetah), "--out", str(tmp_path / "c.png"), "--strip-frames", "0"], "use 1..32 frames"),
    ]:
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], lines
    nav = fake_run(tmp_path / "nav")
    for argv, fragment in [
        (["render", str(nav), "--goal", "0.1,0.1", "--out", str(tmp_path / "n.gif")], "not a MuJoCo family"),
        (["render", str(cheetah), "--task", '{"velocity": 9}', "--out", str(tmp_path / "c.gif")], "must lie in"),
    ]:
        if _cannot_render():
            break  # checked after the GL backend, which fails first here
        proc = _cli(*argv)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], proc.stderr[-2000:]
    proc = _cli("render", str(cheetah), "--task", TASK, "--out", str(tmp_path / "c.gif"), MUJOCO_GL="bogus")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "MUJOCO_GL=bogus" in lines[0], proc.stderr[-2000:]
    assert not list(tmp_path.glob("*.gif")) and not list(tmp_path.glob("*.avi"))
