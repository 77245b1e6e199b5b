"""The study tables: statistics over seeds and goals from cached evaluation files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
# scripts/study.py lives outside the package (an experiment that imports metarl like a user): load it by path.
_spec = importlib.util.spec_from_file_location("study", REPO / "scripts" / "study.py")
study = importlib.util.module_from_spec(_spec)
sys.modules["study"] = study  # its dataclasses look their module up
_spec.loader.exec_module(study)


def _write_eval(runs, variant, seed, protocol, per_goal):
    path = study.eval_path(runs, variant, seed, protocol)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"per_task": [{"returns_by_step": list(map(float, col))} for col in per_goal.T]}))


def test_results_and_comparisons_match_scipy(tmp_path):
    protocol = study.Protocol("p", episodes=2, steps=1, num_goals=5)
    a, b = study.Variant("a", "x.yaml"), study.Variant("b", "x.yaml")
    rng = np.random.default_rng(0)
    data = {}
    for v, shift in ((a, 0.0), (b, 2.0)):
        for seed in range(3):
            per_goal = rng.normal(-20 + shift, 1.0, size=(2, 5))
            data[v.name, seed] = per_goal
            _write_eval(tmp_path, v, seed, protocol, per_goal)
    ra, rb = (study.load_results(tmp_path, v, [0, 1, 2], protocol) for v in (a, b))
    assert ra.seeds == [0, 1, 2]
    seed_means_b = np.array([data["b", s][1].mean() for s in range(3)])
    np.testing.assert_allclose(rb.seed_means(1), seed_means_b)
    half = stats.t.ppf(0.975, 2) * seed_means_b.std(ddof=1) / np.sqrt(3)
    assert study.ci95(seed_means_b) == pytest.approx(half)
    c = study.compare(rb, ra, 1)
    goal_b = np.mean([data["b", s][1] for s in range(3)], axis=0)
    goal_a = np.mean([data["a", s][1] for s in range(3)], axis=0)
    assert c["diff"] == pytest.approx(goal_b.mean() - goal_a.mean())
    assert c["p_goals"] == pytest.approx(stats.ttest_rel(goal_b, goal_a).pvalue)
    assert c["p_seeds"] == pytest.approx(stats.ttest_ind(seed_means_b, ra.seed_means(1), equal_var=False).pvalue)


def test_missing_evaluations_are_left_out_not_invented(tmp_path):
    protocol = study.Protocol("p", episodes=2, steps=1, num_goals=3)
    v = study.Variant("a", "x.yaml")
    _write_eval(tmp_path, v, 1, protocol, np.zeros((2, 3)))
    assert study.load_results(tmp_path, v, [0, 1, 2], protocol).seeds == [1]
    assert np.isnan(study.ci95(np.array([1.0])))


def test_heldout_goals_are_the_documented_ones():
    from pathlib import Path

    doc = json.loads((Path(study.ROOT) / "docs" / "figures" / "heldout_goals.json").read_text())
    goals = doc["goals"] if isinstance(doc, dict) else doc
    np.testing.assert_allclose(study.heldout_goals(40), goals, atol=5e-5)  # the file rounds to 4 decimals
    assert study.heldout_goals(600)[:40] == study.heldout_goals(40)


def test_training_window_is_each_variants_last_ten_iterations(tmp_path):
    v = study.Variant("short", "configs/navigation2d-maml.yaml", ("iterations=20",))
    run = study.run_dir(tmp_path, v, 0)
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-000020.pt").touch()  # marks the run complete
    rows = [{"iteration": i, "return_pre": -float(i), "return_post": float(i)} for i in range(1, 21)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = study.report(tmp_path, [v], [0], [])
    assert "| short (iterations 11–20) | 1 | -15.50 | 15.50 | 15.5 |" in text


def test_the_locomotion_protocol_draws_tasks_of_the_runs_family():
    p = study.PROTOCOLS["locomotion"]
    assert p.sampled_tasks and p.num_goals == 20 and p.episodes == 20 and p.steps == 3
    v = {x.name: x for x in study.STUDIES["locomotion"]}
    assert study.final_iteration(v["hc-vel"]) == 200 and study.final_iteration(v["hc-vel-boot"]) == 100


def test_report_compares_only_variants_evaluated_on_the_same_tasks(tmp_path):
    protocol = study.Protocol("p", episodes=2, steps=1, num_goals=2, sampled_tasks=True)
    variants = [study.Variant(n, "configs/navigation2d-maml.yaml") for n in ("dir", "vel", "vel-other")]
    tasks = {"dir": [{"direction": 1}, {"direction": -1}], "vel": [{"velocity": 0.5}, {"velocity": 1.5}]}
    tasks["vel-other"] = tasks["vel"]
    for v in variants:
        path = study.eval_path(tmp_path, v, 0, protocol)
        path.parent.mkdir(parents=True, exist_ok=True)
        per_task = [{"task": t, "returns_by_step": [-1.0, 0.0]} for t in tasks[v.name]]
        path.write_text(json.dumps({"per_task": per_task}))
    text = study.report(tmp_path, [variants[1], variants[2], variants[0]], [0], [protocol])
    assert "| vel-other − vel | 1 |" in text and "dir − vel" not in text


def test_every_study_variant_is_a_valid_config():
    """A typo in a variant's overrides (or an option that does not apply) fails here, not hours into a study."""
    for name, variants in study.STUDIES.items():
        for v in variants:
            assert study.final_iteration(v) >= 1, (name, v.name)


def test_an_archive_reports_the_same_tables_as_the_runs(tmp_path):
    """``archive`` keeps what the report reads (training returns, per-goal evaluations) without checkpoints."""
    runs, dest = tmp_path / "runs", tmp_path / "archive"
    protocol = study.PROTOCOLS["two-steps"]
    v = study.Variant("short", "configs/navigation2d-maml.yaml", ("iterations=20",))
    rng = np.random.default_rng(1)
    for seed in (0, 1):
        run = study.run_dir(runs, v, seed)
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "checkpoint-000020.pt").touch()
        rows = [
            {
                "iteration": i,
                "return_pre": float(rng.normal(-40, 1)),
                "return_post": float(rng.normal(-12, 1)),
                "kl": 0.01,
            }
            for i in range(1, 21)
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        _write_eval(runs, v, seed, protocol, rng.normal(-20, 3, size=(3, 40)))
    unfinished = study.run_dir(runs, v, 2)
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "checkpoints" / "checkpoint-000010.pt").touch()
    written = study.archive(runs, [v], [0, 1, 2], dest)
    assert len(written) == 4 and not (dest / "short-seed2").exists()  # 2 summaries + 2 evaluations
    assert not list(dest.rglob("*.pt"))
    assert study.report(dest, [v], [0, 1, 2], [protocol]) == study.report(runs, [v], [0, 1, 2], [protocol])
    assert study.complete(study.run_dir(dest, v, 0), 20) and not study.complete(study.run_dir(dest, v, 0), 21)


def test_an_archive_of_peer_runs_loads_like_the_runs(tmp_path):
    peer, dest = tmp_path / "peer", tmp_path / "archive"
    rng = np.random.default_rng(2)
    for seed in (1, 2):
        (peer / f"seed{seed}" / "eval_seed1").mkdir(parents=True)
        np.savez(peer / f"seed{seed}" / "eval_seed1" / "results.npz", step_returns=rng.normal(-20, 3, (4, 40, 20)))
        rows = [f"{i},{rng.normal(-40):.4f},{rng.normal(-16):.4f},5.0" for i in range(1, 101)]
        (peer / f"seed{seed}" / "progress.csv").write_text(
            "iteration,return_pre,return_post,seconds\n" + "\n".join(rows) + "\n"
        )
    assert len(study.archive_peer(peer, [1, 2, 3], dest)) == 4
    (live, live_windows), (kept, kept_windows) = study.load_peer(peer, [1, 2, 3]), study.load_peer(dest, [1, 2, 3])
    assert kept.seeds == live.seeds == [1, 2] and kept_windows == live_windows
    np.testing.assert_array_equal(kept.goal_means(3), live.goal_means(3))
