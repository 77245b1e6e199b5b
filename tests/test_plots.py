"""Figures rendered to files and checked as images: size, not blank, and what is drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from metarl.cli import main
from metarl.config import OLD_FLAT_KEYS, Config, dotted_items, set_dotted
from metarl.plots import (
    CURVE_GID,
    TRAJECTORY_GID,
    alpha_figure,
    alpha_layers_figure,
    curves_figure,
    group_runs,
    save_figure,
    trajectories_figure,
)
from metarl.runtime.trainer import Trainer

TINY = dict(iterations=2, meta_batch_size=4, episodes_per_task=4, policy={"hidden_sizes": [8]}, checkpoint_every=1)
GOALS = [[0.3, -0.2], [-0.4, 0.1]]
DPI = 50


@pytest.fixture(scope="module")
def runs(local_ray, tmp_path_factory):
    """Two tiny runs (Meta-SGD and MAML), trained once for the module on the shared local Ray."""
    out = {}
    for algorithm in ("metasgd", "maml"):
        out[algorithm] = tmp_path_factory.mktemp(f"run-{algorithm}")
        trainer = Trainer(Config.from_dict({**TINY, "algorithm": algorithm}), out[algorithm])
        try:
            trainer.train()
        finally:
            trainer.close()
    return out


def _check_png(path, fig):
    image = imread(path)
    width, height = fig.get_size_inches() * fig.dpi
    assert image.shape[:2] == (round(height), round(width))
    assert image[..., :3].var() > 1e-3, "blank image"


def _lines(fig, gid):
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == gid]


def test_trajectories(runs, tmp_path):
    steps = 2
    fig = trajectories_figure([runs["metasgd"], runs["maml"]], GOALS, steps=steps, episodes=3, seed=1, dpi=DPI)
    lines = _lines(fig, TRAJECTORY_GID)
    assert len(lines) == 2 * len(GOALS) * (steps + 1)
    assert all(np.allclose(line.get_xydata()[0], 0) for line in lines), "every path starts at the origin"
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "(metasgd): pre-update" in legend and "(maml): after 2 steps" in legend and "goal" in legend
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["goal (0.30, -0.20)", "goal (-0.40, 0.10)"]
    _check_png(save_figure(fig, tmp_path / "trajectories.png"), fig)

    again = trajectories_figure([runs["metasgd"], runs["maml"]], GOALS, steps=steps, episodes=3, seed=1, dpi=DPI)
    for a, b in zip(lines, _lines(again, TRAJECTORY_GID)):
        np.testing.assert_array_equal(a.get_xydata(), b.get_xydata())


def _fake_seed(run, dest, seed, shift, flat=False, **changes):
    """A copy of ``run`` as if trained with another seed (config.yaml + metrics.jsonl only); changed keys are
    dotted with ``__`` (``resources__num_workers=2``). ``flat``: config.yaml as versions before the sections
    wrote it (``num_workers: 2``)."""
    dest.mkdir(parents=True)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for key, value in {"seed": seed, **changes}.items():
        set_dotted(cfg, key.replace("__", "."), value)
    if flat:
        old_name = {nested: old for old, nested in OLD_FLAT_KEYS.items()}
        cfg = {old_name.get(k, k): v for k, v in dotted_items(cfg).items()}
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [{**r, "return_pre": r["return_pre"] + shift, "return_post": r["return_post"] + shift} for r in rows]
    (dest / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dest


def test_curves_aggregate_seeds(runs, tmp_path):
    seed1 = _fake_seed(runs["metasgd"], tmp_path / "seed1", 1, shift=4.0)
    members = [runs["metasgd"], seed1, runs["maml"]]
    assert group_runs(members) == [[runs["metasgd"], seed1], [runs["maml"]]]
    fig = curves_figure(members, dpi=DPI)
    curves = _lines(fig, CURVE_GID)
    assert len(curves) == 2 * 2, "before/after for each of the two configs"
    rows = [json.loads(line) for line in (runs["metasgd"] / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(curves[1].get_ydata(), [r["return_post"] + 2.0 for r in rows], rtol=1e-6)
    assert len(fig.axes[0].collections) == 2, "a band for each phase of the two-seed group only"
    assert curves[0].get_label() == "metasgd (2 seeds)" and curves[2].get_label() == "maml (1 seed)"
    _check_png(save_figure(fig, tmp_path / "curves.png"), fig)


def test_curves_smooth_each_seed_by_a_trailing_mean(runs, tmp_path):
    rows = [json.loads(line) for line in (runs["metasgd"] / "metrics.jsonl").read_text().splitlines()]
    post = np.array([r["return_post"] for r in rows])
    fig = curves_figure([runs["metasgd"]], dpi=DPI, smooth=2)
    expected = [post[max(0, i - 1) : i + 1].mean() for i in range(len(post))]
    np.testing.assert_allclose(_lines(fig, CURVE_GID)[1].get_ydata(), expected, rtol=1e-6)
    assert "trailing mean of 2" in fig.axes[0].get_title()
    assert len(post) >= 2 and not np.allclose(expected, post)  # the smoothing did something
    with pytest.raises(ValueError, match="--smooth 0"):
        curves_figure([runs["metasgd"]], smooth=0)


def test_curves_read_sweep_folders_group_execution_keys_and_draw_a_t_interval(runs, tmp_path):
    """A Tune-like sweep folder: trials found recursively, seeds that differ only in resources (one of them an
    old run whose config.yaml is flat) grouped, a legend naming only the key that differs, a 95 % Student-t
    band, env-steps axis."""
    base, trial = runs["metasgd"], "MetaRLTrainable_1a2b3_{:05d}_{}_inner_lr={},seed={}_2025-01-01_00-00-00"
    sweep = tmp_path / "sweep-lr"
    s0 = _fake_seed(base, sweep / trial.format(0, 0, 0.1, 0), 0, 0.0, resources__learner_threads=0)
    s1 = _fake_seed(
        base, sweep / trial.format(1, 1, 0.1, 1), 1, 4.0, flat=True, resources__learner_threads=1, num_workers=2
    )
    assert "num_workers" in yaml.safe_load((s1 / "config.yaml").read_text())
    other = _fake_seed(base, sweep / trial.format(2, 2, 0.05, 0), 0, 1.0, inner_lr=0.05)
    (s0 / "checkpoint_000001").mkdir()  # Tune's checkpoint folders hold no run
    groups = group_runs([sweep])
    assert groups == [[s0, s1], [other]]
    fig = curves_figure([sweep], dpi=DPI)
    curves = _lines(fig, CURVE_GID)
    assert [c.get_label() for c in curves[::2]] == ["inner_lr=0.1 (2 seeds)", "inner_lr=0.05 (1 seed)"]
    rows = [json.loads(line) for line in (base / "metrics.jsonl").read_text().splitlines()]
    band = fig.axes[0].collections[1].get_paths()[0].vertices  # after adaptation, 2-seed group
    # seeds v and v + 4: mean v + 2, sem 2, t(0.975, df=1) = 12.7062
    np.testing.assert_allclose(band[:, 1].max(), max(r["return_post"] for r in rows) + 2.0 + 2 * 12.7062, rtol=1e-4)
    steps = curves_figure([sweep], x="env_steps", dpi=DPI)
    np.testing.assert_array_equal(_lines(steps, CURVE_GID)[0].get_xdata(), [r["env_steps"] for r in rows])
    assert steps.axes[0].get_xlabel() == "environment steps"
    _check_png(save_figure(fig, tmp_path / "sweep.png"), fig)


def test_alpha_histograms_spread_a_layer_with_an_outlier():
    """10,000 α near 0.1 and one at 50: on a full-range axis all but one land in one bin; here they spread."""
    rng = np.random.default_rng(0)
    layer = np.append(rng.normal(0.1, 0.005, 10_000), 50.0)
    fig = alpha_layers_figure({"layer0": layer, "log_std": np.array([0.1, -0.02])}, "α", initial=0.1, dpi=DPI)
    ax = fig.axes[0]
    counts = [p.get_height() for p in ax.patches]
    assert sum(c > 0 for c in counts) >= 8 and max(counts) < 0.5 * layer.size
    assert "outside, in the edge bins" in ax.get_title() and ax.get_xlim()[1] < 1.0


def test_alpha(runs, tmp_path):
    fig = alpha_figure(runs["metasgd"], dpi=DPI)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert [t.split(":")[0] for t in titles] == ["layer0", "layer1", "log_std"]
    assert all("% negative" in t for t in titles)
    assert sum(len(ax.patches) for ax in fig.axes) > 0
    _check_png(save_figure(fig, tmp_path / "alpha.png"), fig)


def test_vector_formats_and_cli(runs, tmp_path, capsys):
    fig = alpha_figure(runs["metasgd"], dpi=DPI)
    assert save_figure(fig, tmp_path / "a.svg").read_text().lstrip().startswith("<?xml")
    assert save_figure(fig, tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")
    assert main(["plot", "curves", str(runs["maml"]), "--out", str(tmp_path / "c.png"), "--dpi", str(DPI)]) == 0
    assert imread(tmp_path / "c.png").shape[1] == round(7.5 * DPI)
    assert (
        main(
            [
                "plot",
                "trajectories",
                str(runs["maml"]),
                "--goal=-0.3,0.2",
                "--steps",
                "1",
                "--episodes",
                "2",
                "--out",
                str(tmp_path / "t.png"),
                "--dpi",
                str(DPI),
            ]
        )
        == 0
    )
    capsys.readouterr()
    for argv, fragment in [
        (["plot", "alpha", str(runs["maml"]), "--out", str(tmp_path / "x.gif")], "unsupported format"),
        (["plot", "curves", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")], "not a run directory"),
        (["plot", "curves", str(tmp_path), "--out", str(tmp_path / "x.png")], "no run directory (metrics.jsonl)"),
        (["plot", "alpha", str(runs["maml"]), "--out", str(tmp_path / "x.png")], "learns no α"),
        (["plot", "trajectories", str(runs["maml"]), "--goal", "0.1", "--out", str(tmp_path / "x.png")], "shape (2,)"),
        (["plot", "alpha", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")], "no checkpoint found"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
