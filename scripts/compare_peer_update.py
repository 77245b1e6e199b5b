#!/usr/bin/env python3
"""Piece-by-piece comparison of one MAML-TRPO update: metarl vs tristandeleu/pytorch-maml-rl.

Both implementations get the *same* rollouts (sampled by metarl's Navigation2D vector env from a
policy with the given std, so that some episodes reach their goal and end early) and the same
initial weights; the script prints how far apart they are at each piece: advantages (baseline,
GAE, normalisation), the inner step θ', and the TRPO step of θ (surrogate, KL, conjugate
gradient, line search). It runs for each of metarl's ``loss_average`` settings.

The peer's source comes from the peer harness (../shared/peers/pytorch-maml-rl/setup.sh, which
extracts and patches it); nothing of it is copied here::

    python scripts/compare_peer_update.py --peer-src ~/.cache/metarl-peer/src --std 0.3

Measured output: docs/results.md ("Where metarl and pytorch-maml-rl differed").
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
NAMES = {
    "layer0.weight": "layer1.weight",
    "layer0.bias": "layer1.bias",
    "layer1.weight": "layer2.weight",
    "layer1.bias": "layer2.bias",
    "layer2.weight": "mu.weight",
    "layer2.bias": "mu.bias",
    "log_std": "sigma",
}


def import_peer(src: Path):
    sys.path.insert(0, str(src))
    sys.modules["maml_rl.samplers"] = types.SimpleNamespace(MultiTaskSampler=None)  # gym-only; not needed here
    from maml_rl.baseline import LinearFeatureBaseline
    from maml_rl.episode import BatchEpisodes
    from maml_rl.metalearners.maml_trpo import MAMLTRPO
    from maml_rl.policies.normal_mlp import NormalMLPPolicy

    return types.SimpleNamespace(
        BatchEpisodes=BatchEpisodes,
        LinearFeatureBaseline=LinearFeatureBaseline,
        MAMLTRPO=MAMLTRPO,
        NormalMLPPolicy=NormalMLPPolicy,
    )


def peer_episodes(peer, roll: dict, i: int, episodes: int):
    """Task i of metarl's rollout arrays as the peer's BatchEpisodes (time-major, advantages computed)."""
    ep = peer.BatchEpisodes(episodes, gamma=0.99)
    mask = roll["mask"][i]
    lengths = mask.sum(-1).astype(int)
    horizon = int(lengths.max())
    ep._lengths = list(lengths)
    time_major = lambda x: torch.as_tensor(np.ascontiguousarray(np.swapaxes(x, 0, 1)[:horizon]))  # noqa: E731
    ep._observations = time_major(roll["obs"][i] * mask[..., None])
    ep._actions = time_major(roll["actions"][i] * mask[..., None])
    ep._rewards = time_major(roll["rewards"][i])
    baseline = peer.LinearFeatureBaseline(roll["obs"].shape[-1])
    baseline.fit(ep)
    ep.compute_advantages(baseline, gae_lambda=1.0, normalize=True)
    return ep


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def compare(peer, std: float, num_tasks: int, episodes: int, average: str, seed: int) -> None:
    from metarl.core.adaptation import adapt
    from metarl.core.alpha import Alpha
    from metarl.core.batch import Batch
    from metarl.core.meta_update import TRPO, MetaObjective, MetaParameters
    from metarl.core.policies import PolicySpec, init_params
    from metarl.envs.navigation_2d import Navigation2DVectorEnv
    from metarl.runtime.rollouts import sample_rollouts

    spec = PolicySpec(2, 2, (64, 64), "tanh", 1.0)
    theta = init_params(spec, torch.Generator().manual_seed(seed))
    theta["log_std"] = torch.full((2,), math.log(std))
    policy = peer.NormalMLPPolicy(2, 2, (64, 64), torch.tanh, init_std=1.0)
    with torch.no_grad():
        for k, pk in NAMES.items():
            dict(policy.named_parameters())[pk].copy_(theta[k].T if theta[k].dim() == 2 else theta[k])
    rng = np.random.default_rng(seed)
    tasks = [{"goal": list(g)} for g in rng.uniform(-0.5, 0.5, (num_tasks, 2))]
    pre = sample_rollouts(Navigation2DVectorEnv(tasks, episodes, "clip"), spec, theta, 100, list(range(num_tasks)))
    pre_batch = Batch.from_rollouts(pre, 0.99, 1.0, True, torch.float32, "cpu", average)
    alpha = {k: torch.tensor(0.1) for k in theta}
    adapted = adapt(
        spec, {k: v.clone().requires_grad_() for k, v in theta.items()}, alpha, [pre_batch], create_graph=False
    )
    adapted = {k: v.detach().contiguous() for k, v in adapted.items()}
    post = sample_rollouts(
        Navigation2DVectorEnv(tasks, episodes, "clip"), spec, adapted, 100, list(range(100, 100 + num_tasks))
    )
    pre_peer = [peer_episodes(peer, pre, i, episodes) for i in range(num_tasks)]
    post_peer = [peer_episodes(peer, post, i, episodes) for i in range(num_tasks)]
    ended = float((pre["mask"][..., -1] == 0).mean())

    adv = max(
        float((pre_batch.advantages[i].T[: pre_peer[i].advantages.shape[0]] - pre_peer[i].advantages).abs().max())
        for i in range(num_tasks)
    )
    inner = []
    from maml_rl.utils.reinforcement_learning import reinforce_loss

    for i in range(num_tasks):
        p = policy.update_params(reinforce_loss(policy, pre_peer[i]), step_size=0.1, first_order=True)
        mine = torch.cat([(adapted[k][i] - theta[k]).reshape(-1) for k in NAMES])
        theirs = torch.cat(
            [((p[pk].T if p[pk].dim() == 2 else p[pk]).detach() - theta[k]).reshape(-1) for k, pk in NAMES.items()]
        )
        inner.append(rel(mine, theirs))

    meta = MetaParameters({k: v.clone().requires_grad_() for k, v in theta.items()}, Alpha(alpha, learned=False))
    post_batch = Batch.from_rollouts(post, 0.99, 1.0, True, torch.float32, "cpu", average)
    mine = TRPO(0.01, 10, 1e-5, 0.8, 15).step(meta, MetaObjective(spec, [pre_batch], post_batch, False))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # the peer gathers its coroutines on the current loop

    def done(x):
        f = loop.create_future()
        f.set_result(x)
        return f

    learner = peer.MAMLTRPO(policy, fast_lr=0.1, first_order=False)
    learner._event_loop = loop
    logs = learner.step(
        [[done(e) for e in pre_peer]],
        [done(e) for e in post_peer],
        max_kl=0.01,
        cg_iters=10,
        cg_damping=1e-5,
        ls_max_steps=15,
        ls_backtrack_ratio=0.8,
    )
    params = dict(policy.named_parameters())
    step_mine = torch.cat([(meta.theta[k].detach() - theta[k]).reshape(-1) for k in NAMES])
    step_peer = torch.cat(
        [
            ((params[pk].T if params[pk].dim() == 2 else params[pk]).detach() - theta[k]).reshape(-1)
            for k, pk in NAMES.items()
        ]
    )
    print(
        f"loss_average={average:8s} episodes ended early {ended:.1%} | advantages max|Δ| {adv:.3g} | "
        f"inner step rel. Δ max over tasks {max(inner):.3g} | TRPO step rel. Δ {rel(step_mine, step_peer):.3g} "
        f"(KL metarl {mine.kl:.5f}, peer {float(np.mean(logs.get('kl_after', [float('nan')]))):.5f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--peer-src", type=Path, required=True, help="the peer's patched source tree (setup.sh's PEER_SRC)"
    )
    parser.add_argument("--std", type=float, default=0.3, help="policy std: smaller → more episodes reach the goal")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    peer = import_peer(args.peer_src)
    for average in ("episodes", "steps"):
        compare(peer, args.std, args.tasks, args.episodes, average, args.seed)


if __name__ == "__main__":
    main()
