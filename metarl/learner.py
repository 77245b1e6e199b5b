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
import time
from typing import Any

import numpy as np
import torch

from metarl.adaptation import adapt, expand_to_tasks
from metarl.batch import Batch, merge_rollouts
from metarl.config import Config
from metarl.meta_update import TRPO, Adam, Reptile, MetaObjective, MetaParameters, UpdateResult
from metarl.policies import PolicySpec, init_params, to_numpy

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but this learner process sees no CUDA device")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def init_alpha(theta: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """α keyed like θ, each entry broadcastable against its parameter.

    Meta-SGD learns α at ``alpha_granularity``: per element (a full-size tensor per parameter),
    per layer (one scalar per parameter tensor) or one scalar shared by every entry (the same
    leaf tensor under every key). MAML and Reptile keep a fixed scalar.
    """
    if not cfg.learns_alpha:
        return {k: torch.tensor(cfg.inner_lr, dtype=v.dtype, device=v.device) for k, v in theta.items()}
    if cfg.alpha_granularity == "per_parameter":
        return {k: torch.full_like(v, cfg.inner_lr).requires_grad_() for k, v in theta.items()}
    if cfg.alpha_granularity == "per_layer":
        return {k: torch.tensor(cfg.inner_lr, dtype=v.dtype, device=v.device, requires_grad=True) for k, v in theta.items()}
    any_param = next(iter(theta.values()))
    shared = torch.tensor(cfg.inner_lr, dtype=any_param.dtype, device=any_param.device, requires_grad=True)
    return {k: shared for k in theta}


class Learner:
    def __init__(self, cfg: Config, spec: PolicySpec):
        threads = cfg.learner_threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        self.cfg, self.spec = cfg, spec
        self.device = resolve_device(cfg.device)
        self.dtype = DTYPES[cfg.dtype]
        gen = torch.Generator().manual_seed(cfg.seed)
        theta = {k: v.to(self.device).requires_grad_() for k, v in init_params(spec, gen, self.dtype).items()}
        self.meta = MetaParameters(theta, init_alpha(theta, cfg), cfg.learns_alpha)
        if cfg.algorithm == "reptile":
            self.optimizer = Reptile(cfg.reptile_step_size, cfg.iterations if cfg.reptile_anneal else None)
        elif cfg.meta_optimizer == "trpo":
            self.optimizer = TRPO(cfg.max_kl, cfg.cg_iters, cfg.cg_damping, cfg.ls_ratio, cfg.ls_max_steps, cfg.fisher_subsample)
        else:
            self.optimizer = Adam(cfg.meta_lr).bind(self.meta)
        self._pre: Batch | None = None
        self._skip_reason = ""  # set by adapt when this iteration's meta-update must be skipped

    # -- phases -------------------------------------------------------------------------
    def get_theta(self) -> dict[str, np.ndarray]:
        return to_numpy(self.meta.theta)

    def _batch(self, parts: list) -> Batch:
        if any(type(p).__name__ == "ObjectRef" for p in parts):  # refs nested in a list are not auto-resolved
            import ray

            parts = ray.get(list(parts))
        c = self.cfg
        return Batch.from_rollouts(merge_rollouts(parts), c.gamma, c.gae_lambda, c.normalize_advantages, self.dtype, self.device)

    def adapt(self, pre_parts: list) -> dict[str, np.ndarray]:
        """Fit baselines on the pre-adaptation rollouts and return every task's θ'ᵢ ``(T, ...)``."""
        self._cpu_start = time.process_time()  # the learner idles between phases, so CPU time adds up its work
        self._pre = self._batch(pre_parts)
        self._skip_reason = _non_finite_batch(self._pre, "pre-adaptation")
        if not self._skip_reason:
            adapted = adapt(self.spec, self.meta.theta, self.meta.alpha, self._pre, self.cfg.inner_steps, create_graph=False)
            if not all(bool(torch.isfinite(v).all()) for v in adapted.values()):
                self._skip_reason = "non-finite adapted parameters θ' (inner step)"
        if self._skip_reason:  # the post phase samples with θ itself; meta_update skips the step
            theta = {k: v.detach() for k, v in self.meta.theta.items()}
            adapted = {k: v.contiguous() for k, v in expand_to_tasks(theta, self._pre.num_tasks).items()}
        return to_numpy(adapted)

    def meta_update(self, post_parts: list) -> dict[str, float]:
        """One meta-optimizer step on the post-adaptation rollouts; returns metrics."""
        if self._pre is None:
            raise RuntimeError("meta_update called before adapt in this iteration")
        post = self._batch(post_parts)
        reason = self._skip_reason or _non_finite_batch(post, "post-adaptation")
        if reason:
            nan = float("nan")
            result = UpdateResult(nan, nan, nan, nan, False, 0, reason)
        else:
            objective = MetaObjective(self.spec, self._pre, post, self.cfg.inner_steps, self.cfg.first_order)
            before = self.meta.get_flat()
            result = self.optimizer.step(self.meta, objective)
            if not bool(torch.isfinite(self.meta.get_flat()).all()):
                self.meta.set_flat(before)
                if isinstance(self.optimizer, Adam):  # its moments may be poisoned too
                    self.optimizer.bind(self.meta)
                result = UpdateResult(result.loss_before, result.loss_before, float("nan"), result.grad_norm, False,
                                      result.line_search_steps, "non-finite parameters after the update (reverted)")
        metrics = {
            "return_pre": self._pre.episode_returns().mean().item(),
            "return_post": post.episode_returns().mean().item(),
            "env_steps_iteration": (self._pre.mask.sum() + post.mask.sum()).item(),
            # episodes the update saw (tasks x episodes per task): a lost or doubled slice shows here
            "episodes_pre": self._pre.mask.shape[0] * self._pre.mask.shape[1],
            "episodes_post": post.mask.shape[0] * post.mask.shape[1],
            **result.as_metrics(),
            **self.alpha_stats(),
        }
        metrics["outer/non_finite"] = float(result.non_finite)
        metrics["time/learner_cpu"] = time.process_time() - self._cpu_start
        if result.reason:
            metrics["outer/skip_reason"] = result.reason
        self._pre, self._skip_reason = None, ""
        return metrics

    def alpha_stats(self) -> dict[str, float]:
        if not self.cfg.learns_alpha:
            return {"alpha/mean": self.cfg.inner_lr}
        flat = torch.cat([a.detach().reshape(-1) for a in self.meta.alpha.values()])
        stats = {
            "alpha/mean": flat.mean().item(),
            "alpha/min": flat.min().item(),
            "alpha/max": flat.max().item(),
            "alpha/frac_negative": (flat < 0).double().mean().item(),
        }
        for name, a in self.meta.alpha.items():
            stats[f"alpha/{name}/mean"] = a.detach().mean().item()
        return stats

    def peak_rss_mb(self) -> float:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def device_name(self) -> str:
        return torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "theta": {k: v.detach().cpu() for k, v in self.meta.theta.items()},
            "alpha": {k: v.detach().cpu() for k, v in self.meta.alpha.items()},
        }
        if isinstance(self.optimizer, (Adam, Reptile)):
            state["optimizer"] = _to_cpu(self.optimizer.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for group in ("theta", "alpha"):
                target = getattr(self.meta, group)
                for k, v in state[group].items():
                    if k not in target or target[k].shape != v.shape:
                        raise ValueError(f"checkpoint {group}.{k} has shape {tuple(v.shape)}, the policy expects "
                                         f"{tuple(target[k].shape) if k in target else 'no such parameter'}")
                    target[k].copy_(v.to(target[k].device, target[k].dtype))
        if isinstance(self.optimizer, (Adam, Reptile)) and "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])


def _non_finite_batch(batch: Batch, phase: str) -> str:
    """A skip reason naming the non-finite fields of ``batch``, or ``""``."""
    bad = [f for f in ("obs", "actions", "rewards", "advantages") if not bool(torch.isfinite(getattr(batch, f)).all())]
    return f"non-finite {phase} rollouts ({', '.join(bad)})" if bad else ""


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
