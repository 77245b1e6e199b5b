"""One phase's rollouts for a meta-batch, as tensors on the learner's device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metarl.advantages import gae_advantages

ROLLOUT_KEYS = ("obs", "actions", "rewards", "mask")


def merge_rollouts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-worker slices along the task axis, ordered by ``task_index``."""
    merged = {k: np.concatenate([p[k] for p in parts]) for k in (*ROLLOUT_KEYS, "task_index")}
    order = np.argsort(merged["task_index"], kind="stable")
    return {k: v[order] for k, v in merged.items()}


@dataclass
class Batch:
    """Arrays are ``(T tasks, E episodes, H steps, ...)``; ``mask`` is 1 while an episode is alive."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    advantages: torch.Tensor

    @classmethod
    def from_rollouts(
        cls, rollouts: dict[str, np.ndarray], gamma: float, gae_lambda: float, normalize: bool,
        dtype: torch.dtype, device: torch.device | str,
    ) -> "Batch":
        t = {k: torch.as_tensor(rollouts[k]).to(device=device, dtype=dtype) for k in ROLLOUT_KEYS}
        adv = gae_advantages(t["obs"], t["rewards"], t["mask"], gamma, gae_lambda, normalize)
        return cls(t["obs"], t["actions"], t["rewards"], t["mask"], adv)

    def select(self, num_tasks: int) -> "Batch":
        """The first ``num_tasks`` tasks (views, no copy)."""
        return Batch(*(getattr(self, f)[:num_tasks] for f in ("obs", "actions", "rewards", "mask", "advantages")))

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
