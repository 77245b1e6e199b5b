"""Videos of a MuJoCo family's policy before and after adaptation, side by side: ``metarl render``.

``--out`` ending in ``.png`` writes a frame strip instead: a row of frames of each episode, evenly
spaced over it, before adaptation above after (for papers and docs, where a GIF does not print).
Without ``--task`` the task is one draw from the family's evaluation split (Meta-World: the
benchmark's held-out test tasks), as ``metarl evaluate --seed S`` draws it.

Each panel is one deterministic (mean-action) episode on the task, rendered offscreen by
MuJoCo through Gymnasium (``render_mode="rgb_array"``): the left panel with θ, the right with θ'
after K inner steps, adapted exactly as ``metarl evaluate --seed S`` adapts (in-process).
Offscreen rendering needs an OpenGL backend without a display: ``MUJOCO_GL=egl`` (NVIDIA or
Mesa EGL) or ``osmesa`` (Mesa's software renderer); without a display metarl chooses ``egl``
unless ``MUJOCO_GL`` says otherwise. ``.gif`` is written with Pillow, ``.mp4`` needs
imageio's FFmpeg plugin (``pip install imageio-ffmpeg``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.core.policies import Params
from metarl.envs.task_env import Task
from metarl.export import adapted_params, deterministic_action
from metarl.runtime.evaluation import resolve_tasks

VIDEO_FORMATS = (".gif", ".mp4")
STRIP_FORMAT = ".png"


class RenderUnavailable(RuntimeError):
    """Offscreen MuJoCo rendering does not work on this machine (no usable OpenGL backend)."""


def choose_gl_backend() -> str:
    """``MUJOCO_GL`` as set, else ``egl`` when there is no display (MuJoCo's default, GLFW, needs one).

    Call before anything imports ``mujoco``: it reads the variable once, at import.
    """
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"
    return os.environ.get("MUJOCO_GL", "glfw")


def check_gl(width: int = 16, height: int = 16) -> None:
    """Make and free one offscreen OpenGL context, so a machine that cannot render fails here in one
    line (:class:`RenderUnavailable`) instead of deep inside env construction."""
    try:
        # lazy: MuJoCo reads MUJOCO_GL when imported: only after choose_gl_backend
        import mujoco

        context = mujoco.GLContext(width, height)
        context.make_current()
        context.free()
    except Exception as exc:  # RuntimeError for a bad MUJOCO_GL, the backend's own errors otherwise
        raise _unavailable(exc) from None


def _unavailable(exc: Exception) -> RenderUnavailable:
    backend = os.environ.get("MUJOCO_GL", "glfw")
    detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
    return RenderUnavailable(
        f"offscreen MuJoCo rendering failed with MUJOCO_GL={backend} ({type(exc).__name__}"
        f"{': ' + detail if detail else ''}); it needs EGL (MUJOCO_GL=egl, NVIDIA or Mesa libEGL) or OSMesa "
        "(MUJOCO_GL=osmesa, libosmesa6)"
    )


def check_video_path(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (*VIDEO_FORMATS, STRIP_FORMAT):
        raise ValueError(f"--out {str(out)!r}: use .gif or .mp4 (a video), or .png (a frame strip)")
    if out.suffix.lower() == ".mp4":
        if importlib.util.find_spec("imageio_ffmpeg") is None and importlib.util.find_spec("av") is None:
            raise ValueError(
                f"--out {str(out)!r}: .mp4 needs imageio's FFmpeg plugin (pip install imageio-ffmpeg); or write a .gif"
            )
    return out


def make_render_env(run, width: int, height: int):
    """The run's env with offscreen rendering; ``ValueError`` for a family MuJoCo does not draw."""
    # lazy: MuJoCo reads MUJOCO_GL when imported: only after choose_gl_backend
    import gymnasium as gym
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    if not (issubclass(run.env_cls, MujocoEnv) or getattr(run.env_cls, "renders_mujoco", False)):
        raise ValueError(
            f"render: {run.cfg.env} is not a MuJoCo family; videos are for the locomotion families "
            "(use `metarl plot trajectories` for 2D navigation)"
        )
    return gym.make(
        run.cfg.env,
        render_mode="rgb_array",
        width=width,
        height=height,
        max_episode_steps=run.horizon,
        **run.cfg.env_kwargs,
    )


@torch.no_grad()
def episode_frames(run, env, task: Task, params: Params, seed: int) -> tuple[list[np.ndarray], float, bool | None]:
    """One mean-action episode of ``params`` on ``task``: its frames, undiscounted return, and whether
    it succeeded (any step's ``info["success"]``; None for families that report no success)."""
    env.unwrapped.set_task(task)
    obs, _ = env.reset(seed=seed)
    frames, total, success = [_frame(env)], 0.0, None
    for _ in range(run.horizon):
        obs, reward, terminated, truncated, info = env.step(deterministic_action(run.spec, params, obs))
        total += float(reward)
        if "success" in info:
            success = bool(success) or bool(info["success"])
        frames.append(_frame(env))
        if terminated or truncated:
            break
    return frames, total, success


def _caption(what: str, total: float, success: bool | None) -> str:
    outcome = "" if success is None else (", success" if success else ", no success")
    return f"{what}: return {total:.1f}{outcome}"


def _frame(env) -> np.ndarray:
    try:
        return np.asarray(env.render())
    except Exception as exc:  # the GL backend's own error types (EGLError, GLFWError, ...)
        raise _unavailable(exc) from None


def side_by_side(left: list[np.ndarray], right: list[np.ndarray], labels: tuple[str, str]) -> list[np.ndarray]:
    """Frames of two episodes next to each other, each captioned; the shorter one holds its last frame."""
    # lazy: video-only dependencies (Pillow, imageio)
    from PIL import Image, ImageDraw

    n = max(len(left), len(right))
    out = []
    for i in range(n):
        a, b = left[min(i, len(left) - 1)], right[min(i, len(right) - 1)]
        image = Image.fromarray(np.concatenate([a, b], axis=1))
        draw = ImageDraw.Draw(image)
        for x, label in zip((4, a.shape[1] + 4), labels):
            draw.text((x, 4), label, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
        out.append(np.asarray(image))
    return out


def frame_strip(before: list[np.ndarray], after: list[np.ndarray], labels: tuple[str, str], count: int) -> np.ndarray:
    """One image: ``count`` frames of each episode, evenly spaced from its first to its last, in a row
    each (before above after), each row captioned and each frame numbered with its step."""
    # lazy: image-only dependency (Pillow)
    from PIL import Image, ImageDraw

    rows = []
    for frames, label in zip((before, after), labels):
        picks = np.unique(np.linspace(0, len(frames) - 1, count).round().astype(int))
        picks = np.concatenate([picks, np.full(count - len(picks), picks[-1])])  # a short episode holds its end
        image = Image.fromarray(np.concatenate([frames[i] for i in picks], axis=1))
        draw = ImageDraw.Draw(image)
        width = frames[0].shape[1]
        draw.text((4, 4), label, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
        for j, i in enumerate(picks):
            draw.text(
                (j * width + 4, frames[0].shape[0] - 14),
                f"step {i}",
                fill=(255, 255, 255),
                stroke_width=1,
                stroke_fill=(0, 0, 0),
            )
        rows.append(np.asarray(image))
    return np.concatenate(rows, axis=0)


def write_video(frames: list[np.ndarray], out: Path, fps: float) -> Path:
    # lazy: video-only dependencies (Pillow, imageio)
    import imageio.v3 as iio

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".gif":
        iio.imwrite(out, np.stack(frames), duration=1000.0 / fps, loop=0)
    else:
        iio.imwrite(out, np.stack(frames), fps=fps)
    return out


def render_adaptation(
    run,
    task: Task | list | None,
    out: str | Path,
    steps: int = 1,
    episodes: int | None = None,
    seed: int = 0,
    width: int = 320,
    height: int = 240,
    strip_frames: int = 6,
) -> dict[str, Any]:
    """Write ``out`` (GIF or MP4, or a PNG frame strip): θ's episode on ``task`` beside θ' after
    ``steps`` inner steps. ``task=None`` draws one from the evaluation split with ``seed``.

    Returns the task, the two episodes' returns and the frame count.
    """
    out = check_video_path(out)
    env = make_render_env(run, width, height)
    try:
        (task,) = resolve_tasks(run, None if task is None else [task], 1 if task is None else None, seed)
        before, before_return, before_success = episode_frames(run, env, task, run.theta, seed)
        after_params = adapted_params(run, task, steps, episodes, seed)
        after, after_return, after_success = episode_frames(run, env, task, after_params, seed)
        fps = float(env.metadata.get("render_fps") or 30)
    finally:
        env.close()
    step_word = "step" if steps == 1 else "steps"
    labels = (
        _caption("before adaptation", before_return, before_success),
        _caption(f"after {steps} {step_word}", after_return, after_success),
    )
    if out.suffix.lower() == STRIP_FORMAT:
        # lazy: image-only dependency (imageio)
        import imageio.v3 as iio

        out.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(out, frame_strip(before, after, labels, strip_frames))
        frame_count = strip_frames
    else:
        frames = side_by_side(before, after, labels)
        write_video(frames, out, fps)
        frame_count = len(frames)
    return {
        "out": str(out),
        "task": task,
        "return_before": before_return,
        "return_after": after_return,
        "success_before": before_success,
        "success_after": after_success,
        "frames": frame_count,
    }
