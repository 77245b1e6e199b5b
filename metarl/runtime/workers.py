"""Rollout worker: a plain class, made a Ray actor by the trainer (``ray.remote(RolloutWorker)``)."""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np
import ray
import torch

from metarl.core.policies import PolicySpec, from_numpy
from metarl.envs.task_env import Task
from metarl.runtime.rollouts import VectorEnvs, sample_rollouts


class RolloutWorker:
    """Samples a slice of the meta-batch: K episodes for each of its tasks, in one vector env."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], spec: PolicySpec, horizon: int, worker_index: int = 0):
        torch.set_num_threads(1)  # tiny forwards: more threads only add contention
        self.vector_envs = VectorEnvs(env_id, env_kwargs)  # native form, or SyncVectorEnv copies kept between calls
        self.spec, self.horizon = spec, horizon
        self.worker_index = worker_index

    def sample(
        self,
        tasks: list[Task],
        task_index: np.ndarray,
        params: dict[str, np.ndarray],
        per_task_params: bool,
        episodes_per_task: int,
        seeds: list[int],
    ) -> dict[str, np.ndarray]:
        """Roll out ``tasks`` (global indices ``task_index``) with θ, or with each task's θ'ᵢ.

        ``params`` is the whole phase's broadcast (θ, or θ' stacked for *all* tasks of the
        meta-batch); this worker picks its own rows, so one object serves every worker.
        """
        if per_task_params:
            params = {k: v[task_index] for k, v in params.items()}
        vec_env = self.vector_envs.make(tasks, episodes_per_task, seeds)
        rollouts = sample_rollouts(vec_env, self.spec, from_numpy(params), self.horizon, seeds)
        rollouts["task_index"] = np.asarray(task_index)
        return rollouts

    def sample_with_info(self, *args: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``sample`` plus a small receipt, for calls made with ``num_returns=2``.

        The receipt says where the call ran (pid, node) and what it holds (task indices, episode
        count), so the driver can notice restarts and failures without fetching the rollouts,
        which go to the learner as their own object.
        """
        rollouts = self.sample(*args)
        info = {
            **self.node_info(),
            "worker_index": self.worker_index,
            "task_index": [int(i) for i in rollouts["task_index"]],
            "episodes": int(rollouts["mask"].shape[0] * rollouts["mask"].shape[1]),
        }
        return info, rollouts

    def node_info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id()}
