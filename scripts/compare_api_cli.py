#!/usr/bin/env python3
"""Seconds per meta-iteration: ``metarl train`` (YAML/CLI path) vs the Python API, same config.

    python scripts/compare_api_cli.py [--pairs 3] [--iterations 6] [--set key=value ...] [--json]

Each run is a fresh process with its own local Ray (``--address local``); CLI and API runs
alternate in ABBA order, so a load trend on a shared machine hits both alike. Per-iteration
wall time is read from the run's own TensorBoard events: both paths write each iteration's
metrics from the same place at the end of ``Trainer.train_iteration``, so the gap between two
iterations' events is everything the driver does for one iteration (the iteration itself,
checkpoints, the progress bar or the API wrapper). Reported per path (medians over runs of
each run's median over the last ``iterations - 1`` iterations): that gap, the iteration's own
``seconds`` metric, and their difference, the driver's time outside ``train_iteration``, which
is where the two paths differ at all and which, unlike the gap, hardly moves with the load of
a shared machine. For the API also the time of starting the local Ray (the same in both paths),
of ``build_algo`` on it (config validation, learner and rollout actors) and of
``MetaAlgorithm.from_checkpoint`` (RLlib's route measured 6–15 s and 6–20 s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_CONFIG = "configs/navigation2d-metasgd-clip.yaml"  # the config its recorded numbers used
SMALL = ["meta_batch_size=10", "episodes_per_task=10", "policy.hidden_sizes=[32,32]"]


def event_times(tb_dir: Path, tag: str = "return_pre") -> list[float]:
    """Wall times of ``tag``'s events, by step (TFRecord files read with tensorboardX's protos)."""
    from tensorboardX.proto.event_pb2 import Event

    times: dict[int, float] = {}
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            if any(v.tag == tag for v in event.summary.value):
                times[event.step] = event.wall_time
    return [times[s] for s in sorted(times)]


def api_child(out: str, overrides: list[str]) -> None:
    """The API path: the same YAML + overrides through MetaSGDConfig, then train() N times."""
    import ray

    from metarl.api import MetaAlgorithm, MetaSGDConfig
    from metarl.config import Config
    from metarl.runtime.rollout_group import init_ray

    cfg = Config.load(BASE_CONFIG, overrides)
    values = cfg.to_dict()
    values.pop("algorithm")
    t = time.perf_counter()
    init_ray("local")  # as `metarl train --address local` does; the same in both paths
    ray_init_s = time.perf_counter() - t
    t = time.perf_counter()
    algo = MetaSGDConfig().update_from_dict(values).build_algo(out_dir=out)  # uses the Ray just started
    build_s = time.perf_counter() - t
    for _ in range(cfg.iterations):
        algo.train()
    path = algo.save_to_path()
    algo.stop()
    t = time.perf_counter()
    restored = MetaAlgorithm.from_checkpoint(path, out_dir=Path(out) / "restored")
    restore_s = time.perf_counter() - t
    restored.stop()
    ray.shutdown()
    print(json.dumps({"ray_init_s": ray_init_s, "build_s": build_s, "restore_s": restore_s}))


def run(path: str, out: Path, overrides: list[str]) -> dict:
    t = time.perf_counter()
    if path == "cli":
        cmd = [
            sys.executable,
            "-m",
            "metarl.cli",
            "train",
            BASE_CONFIG,
            "--set",
            *overrides,
            "--out",
            str(out),
            "--address",
            "local",
            "--quiet",
        ]
    else:
        cmd = [sys.executable, __file__, "--child", str(out), "--set", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{path} run failed:\n{proc.stderr[-3000:]}")
    total = time.perf_counter() - t
    times = event_times(out / "tensorboard")
    gaps = [b - a for a, b in zip(times, times[1:])]
    seconds = [json.loads(row)["seconds"] for row in (out / "metrics.jsonl").read_text().splitlines()[1:]]
    # gap i runs from iteration i's metrics to iteration i+1's: iteration i+1 itself (its `seconds`)
    # plus what the driver does around it (progress bar or API wrapper, metrics files)
    outside = [g - s for g, s in zip(gaps, seconds)]
    result = {
        "path": path,
        "wall_per_iteration_s": statistics.median(gaps),
        "seconds_metric_s": statistics.median(seconds),
        "outside_iteration_s": statistics.median(outside),
        "gaps_s": gaps,
        "process_s": total,
    }
    if path == "api":
        result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        api_child(args.child, args.set)
        return
    overrides = [*SMALL, f"iterations={args.iterations}", *args.set]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            for path in ("cli", "api") if i % 2 == 0 else ("api", "cli"):  # ABBA: a load trend hits both alike
                runs.append(run(path, Path(tmp) / f"{path}-{i}", overrides))
                print(f"{path} #{i}: {runs[-1]['wall_per_iteration_s']:.3f} s/iteration", file=sys.stderr)
    summary = {}
    for path in ("cli", "api"):
        mine = [r for r in runs if r["path"] == path]
        summary[path] = {
            k: statistics.median(r[k] for r in mine)
            for k in ("wall_per_iteration_s", "seconds_metric_s", "outside_iteration_s")
        }
        if path == "api":
            summary[path].update(
                {k: statistics.median(r[k] for r in mine) for k in ("ray_init_s", "build_s", "restore_s")}
            )
    cli, api = summary["cli"], summary["api"]
    summary["api_vs_cli_wall"] = api["wall_per_iteration_s"] / cli["wall_per_iteration_s"] - 1
    # load-robust: the extra driver time per iteration relative to a CLI iteration
    summary["api_extra_outside_iteration"] = (api["outside_iteration_s"] - cli["outside_iteration_s"]) / cli[
        "wall_per_iteration_s"
    ]
    summary["config"] = {"base": BASE_CONFIG, "set": overrides, "pairs": args.pairs}
    print(json.dumps({"summary": summary, "runs": runs}) if args.json else json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
