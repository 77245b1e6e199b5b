"""Central learner: inner adaptation for every task and the meta-update of (θ, α).

A plain class; the trainer runs it as a Ray actor (with a GPU when there is one). It keeps
the pre-adaptation batch between ``adapt`` and ``meta_update`` so rollouts cross the object
store once.

Numerical faults never reach (θ, α): non-finite rollouts, advantages or adapted parameters
θ'ᵢ, and a non-finite loss, gradient, curvature or KL in the optimizer, skip the meta-update
(the post phase then samples with θ itself); parameters that come out of an update non-finite
are reverted. The metrics say why (``outer/skip_reason``) and whether it was a non-finite
fault (``outer/non_finite``), which the trainer counts toward ``max_consecutive_skips``.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

import numpy as np
import ray
import torch

from metarl.config import Config
from metarl.core.adaptation import adapt, expand_to_tasks
from metarl.core.alpha import Alpha
from metarl.core.batch import Batch, merge_rollouts
from metarl.core.meta_update import TRPO, Adam, MetaObjective, MetaOptimizer, MetaParameters, Reptile, UpdateResult
from metarl.core.policies import PolicySpec, init_params, to_numpy

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but this learner process sees no CUDA device")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def init_alpha(theta: dict[str, torch.Tensor], cfg: Config) -> Alpha:
    """α beside θ as the config asks (see :mod:`metarl.core.alpha`): learned by Meta-SGD, fixed otherwise."""
    return Alpha.create(theta, cfg.inner_lr, cfg.learns_alpha, **cfg.alpha.model_dump())


class Learner:
    def __init__(self, cfg: Config, spec: PolicySpec):
        threads = cfg.resources.learner_threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        self.cfg, self.spec = cfg, spec
        self.device = resolve_device(cfg.resources.device)
        self.dtype = DTYPES[cfg.resources.dtype]
        gen = torch.Generator().manual_seed(cfg.seed)
        theta = {k: v.to(self.device).requires_grad_() for k, v in init_params(spec, gen, self.dtype).items()}
        self.meta = MetaParameters(theta, init_alpha(theta, cfg))
        self.optimizer: MetaOptimizer
        if cfg.algorithm == "reptile":
            self.optimizer = Reptile(cfg.reptile.step_size, cfg.iterations if cfg.reptile.anneal else None)
        elif cfg.meta_optimizer == "trpo":
            self.optimizer = TRPO(**cfg.trpo.model_dump())
        else:
            self.optimizer = Adam(**cfg.adam.model_dump())
        self._pre: list[Batch] = []  # one batch per inner step of this iteration
        self._skip_reason = ""  # set by adapt when this iteration's meta-update must be skipped

    # -- phases -------------------------------------------------------------------------
    def get_theta(self) -> dict[str, np.ndarray]:
        return to_numpy(self.meta.theta)

    def _batch(self, parts: list) -> Batch:
        if any(type(p).__name__ == "ObjectRef" for p in parts):  # refs nested in a list are not auto-resolved
            parts = ray.get(list(parts))
        c = self.cfg.advantages
        return Batch.from_rollouts(
            merge_rollouts(parts),
            c.gamma,
            c.gae_lambda,
            c.normalize_advantages,
            self.dtype,
            self.device,
            c.loss_average,
            c.bootstrap_truncated,
        )

    def adapt(self, pre_parts: list, step: int = 0) -> dict[str, np.ndarray]:
        """Take the rollouts sampled with θ'ⱼ (θ'₀ = θ) and return every task's θ'ⱼ₊₁ ``(T, ...)``.

        Called once per inner step: with ``inner_steps: k`` the trainer samples k times before
        the post-adaptation phase, each time with the parameters this call returned.
        """
        if step == 0:  # a new iteration (an abandoned one's batches are dropped)
            self._pre, self._skip_reason = [], ""
            self._cpu_start = time.process_time()  # the learner idles between phases, so CPU time adds up its work
        elif step != len(self._pre):
            raise RuntimeError(f"adapt called for inner step {step + 1} after {len(self._pre)} steps")
        batch = self._batch(pre_parts)
        self._pre.append(batch)
        phase = "pre-adaptation" if step == 0 else f"inner step {step + 1}"
        self._skip_reason = self._skip_reason or _non_finite_batch(batch, phase)
        if not self._skip_reason:
            adapted = adapt(self.spec, self.meta.theta, self.meta.alpha_values(), self._pre, create_graph=False)
            if not all(bool(torch.isfinite(v).all()) for v in adapted.values()):
                self._skip_reason = "non-finite adapted parameters θ' (inner step)"
        if self._skip_reason:  # later phases sample with θ itself; meta_update skips the step
            theta = {k: v.detach() for k, v in self.meta.theta.items()}
            adapted = {k: v.contiguous() for k, v in expand_to_tasks(theta, batch.num_tasks).items()}
        return to_numpy(adapted)

    def meta_update(self, post_parts: list) -> dict[str, float]:
        """One meta-optimizer step on the post-adaptation rollouts; returns metrics."""
        if not self._pre:
            raise RuntimeError("meta_update called before adapt in this iteration")
        post = self._batch(post_parts)
        reason = self._skip_reason or _non_finite_batch(post, "post-adaptation")
        if reason:
            result = UpdateResult.skipped(reason, kl=float("nan"))
        else:
            objective = MetaObjective(self.spec, self._pre, post, self.cfg.first_order, self.cfg.meta_gradient)
            before, before_state = self.meta.get_flat(), _clone(self.optimizer.state_dict())
            result = self.optimizer.step(self.meta, objective)  # TRPO, Adam or Reptile: θ and α change in there
            if not bool(torch.isfinite(self.meta.get_flat()).all()):
                self.meta.set_flat(before)
                self.optimizer.load_state_dict(before_state)  # its moments may be poisoned too
                result = UpdateResult.skipped(
                    "non-finite parameters after the update (reverted)",
                    result.loss_before,
                    result.grad_norm,
                    float("nan"),
                    result.line_search_steps,
                )
        first = self._pre[0]
        metrics = {
            "return_pre": first.episode_returns().mean().item(),
            "return_post": post.episode_returns().mean().item(),
            **{f"return_step{j}": b.episode_returns().mean().item() for j, b in enumerate(self._pre[1:], start=1)},
            **success_metrics(self._pre, post),
            "env_steps_iteration": (sum(b.mask.sum() for b in self._pre) + post.mask.sum()).item(),
            # episodes the update saw (tasks x episodes per task): a lost or doubled slice shows here
            "episodes_pre": first.mask.shape[0] * first.mask.shape[1],
            "episodes_post": post.mask.shape[0] * post.mask.shape[1],
            **result.as_metrics(),
            **self.alpha_stats(),
        }
        metrics["outer/non_finite"] = float(result.non_finite)
        metrics["time/learner_cpu"] = time.process_time() - self._cpu_start
        if result.reason:
            metrics["outer/skip_reason"] = result.reason
        self._pre, self._skip_reason = [], ""
        return metrics

    def alpha_stats(self) -> dict[str, float]:
        return self.meta.alpha.stats()

    def peak_rss_mb(self) -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def device_name(self) -> str:
        return torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "theta": {k: v.detach().cpu() for k, v in self.meta.theta.items()},
            "alpha": self.meta.alpha.state_dict(),
        }
        optimizer = self.optimizer.state_dict()  # under named keys: adam, alpha_adam, updates
        if optimizer:
            state["optimizer"] = _to_cpu(optimizer)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            target = self.meta.theta
            for k, v in state["theta"].items():
                if k not in target or target[k].shape != v.shape:
                    raise ValueError(
                        f"checkpoint theta.{k} has shape {tuple(v.shape)}, the policy expects "
                        f"{tuple(target[k].shape) if k in target else 'no such parameter'}"
                    )
                target[k].copy_(v.to(target[k].device, target[k].dtype))
        self.meta.alpha.load_state_dict(state["alpha"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])


def success_metrics(pre: list[Batch], post: Batch) -> dict[str, float]:
    """Success rates beside the returns (``success_pre``, ``success_step{j}``, ``success_post``): the fraction
    of episodes with a successful step; nothing for a family without a success signal."""
    if post.success is None or any(b.success is None for b in pre):
        return {}
    out = {"success_pre": float(np.mean(pre[0].success)), "success_post": float(np.mean(post.success))}
    out.update({f"success_step{j}": float(np.mean(b.success)) for j, b in enumerate(pre[1:], start=1)})
    return out


def _non_finite_batch(batch: Batch, phase: str) -> str:
    """A skip reason naming the non-finite fields of ``batch``, or ``""``."""
    bad = [f for f in ("obs", "actions", "rewards", "advantages") if not bool(torch.isfinite(getattr(batch, f)).all())]
    return f"non-finite {phase} rollouts ({', '.join(bad)})" if bad else ""


def _clone(obj: Any) -> Any:
    """A copy of a state dict whose tensors do not change with the live ones."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    return obj


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
