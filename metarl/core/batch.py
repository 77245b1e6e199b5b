"""One phase's rollouts for a meta-batch, as tensors on the learner's device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metarl.core.advantages import gae_advantages, step_weights
from metarl.core.options import AdvantageOptions

ROLLOUT_KEYS = ("obs", "actions", "rewards", "mask")
CUT_KEYS = ("last_obs", "truncated")  # where the horizon cut episodes (see ``sample_rollouts``)
SUCCESS_KEY = "success"  # (T, E) 1 where an episode succeeded, from families that report success


def task_success(rollouts: dict[str, np.ndarray]) -> np.ndarray | None:
    """``(T,)``: each task's fraction of successful episodes, or None for a family without success."""
    if SUCCESS_KEY not in rollouts:
        return None
    return np.asarray(rollouts[SUCCESS_KEY], dtype=np.float64).mean(axis=-1)


def merge_rollouts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-worker slices along the task axis, ordered by ``task_index``."""
    optional = (*CUT_KEYS, SUCCESS_KEY)
    keys = [*ROLLOUT_KEYS, "task_index", *(k for k in optional if all(k in p for p in parts))]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    order = np.argsort(merged["task_index"], kind="stable")
    return {k: v[order] for k, v in merged.items()}


@dataclass
class Batch:
    """Arrays are ``(T tasks, E episodes, H steps, ...)``; ``mask`` is 1 while an episode is alive.

    ``weights`` (each task's valid steps sum to 1) says how per-step quantities are averaged
    into a task's loss or KL: pooled over steps or per episode (:func:`~metarl.core.advantages.step_weights`).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    advantages: torch.Tensor
    weights: torch.Tensor
    success: np.ndarray | None = None  # (T,) fraction of successful episodes per task; None: no success signal

    @classmethod
    def from_rollouts(
        cls,
        rollouts: dict[str, np.ndarray],
        gamma: float = AdvantageOptions.gamma,
        gae_lambda: float = AdvantageOptions.gae_lambda,
        normalize: bool = AdvantageOptions.normalize_advantages,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        loss_average: str = AdvantageOptions.loss_average,
        bootstrap_truncated: bool = AdvantageOptions.bootstrap_truncated,
    ) -> Batch:
        """``bootstrap_truncated``: GAE bootstraps where the horizon cut an episode (needs the rollouts' cut keys)."""
        t = {k: torch.as_tensor(rollouts[k]).to(device=device, dtype=dtype) for k in ROLLOUT_KEYS}
        weights = step_weights(t["mask"], loss_average)
        cut = {}
        if bootstrap_truncated:
            if not all(k in rollouts for k in CUT_KEYS):
                raise ValueError("bootstrap_truncated needs rollouts with 'last_obs' and 'truncated'")
            cut = {k: torch.as_tensor(rollouts[k]).to(device=device, dtype=dtype) for k in CUT_KEYS}
        adv = gae_advantages(t["obs"], t["rewards"], t["mask"], gamma, gae_lambda, normalize, weights, **cut)
        return cls(t["obs"], t["actions"], t["rewards"], t["mask"], adv, weights, task_success(rollouts))

    def select(self, num_tasks: int) -> Batch:
        """The first ``num_tasks`` tasks (views, no copy)."""
        return Batch(
            *(getattr(self, f)[:num_tasks] for f in ("obs", "actions", "rewards", "mask", "advantages", "weights"))
        )

    def tasks(self, start: int, stop: int) -> Batch:
        """Tasks ``start:stop`` (views, no copy)."""
        return Batch(
            *(getattr(self, f)[start:stop] for f in ("obs", "actions", "rewards", "mask", "advantages", "weights"))
        )

    def task_mean(self, x: torch.Tensor) -> torch.Tensor:
        """``(T,)``: each task's weighted mean of a per-step quantity ``(T, E*H)``."""
        return (x * self.flat("weights")).sum(-1)

    @property
    def num_tasks(self) -> int:
        return self.obs.shape[0]

    def flat(self, name: str) -> torch.Tensor:
        """``(T, E*H, ...)``: episodes and steps merged into one row axis per task."""
        x = getattr(self, name)
        return x.flatten(1, 2)

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode, ``(T, E)``."""
        return (self.rewards * self.mask).sum(-1)
