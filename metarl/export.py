"""A trained (or task-adapted) policy as a self-contained PyTorch module: ``metarl export``.

metarl keeps a policy as a dict of tensors with weights stored ``(in, out)`` (so one
``addmm``/``baddbmm`` serves θ and a stack of per-task θ'ᵢ, see :mod:`metarl.core.policies`).
Users outside metarl want an ``nn.Module``: this module builds one (``nn.Linear`` layers,
weights transposed to ``(out, in)``) and saves it in a format that loads without metarl:

* ``.pt2``: a ``torch.export`` program (recommended; TorchScript is deprecated in torch 2.13)::

      policy = torch.export.load("policy.pt2").module()
      mean, log_std = policy(obs)          # Box actions; (logits,) for Discrete ones

* ``.pt``: TorchScript, for libtorch (C++) or older tooling: ``torch.jit.load("policy.pt")``.

``obs`` is a float tensor ``(batch, obs_dim)`` in the run's dtype (float32 unless the config
says ``dtype: float64``). The deterministic action is ``mean`` (Gaussian) or
``logits.argmax(-1)`` (categorical), as :func:`metarl.core.policies.mode`; the env's own action
bounds (e.g. Navigation2D's ``action_mode: clip``) are applied by the env, not the policy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from metarl.core.policies import Params, PolicySpec, forward, mode
from metarl.envs.task_env import Task

FORMATS = {".pt2": "torch.export", ".pt": "TorchScript"}
ACTIVATION_MODULES = {"relu": nn.ReLU, "tanh": nn.Tanh}


class GaussianPolicy(nn.Module):
    """``forward(obs) -> (mean, log_std)``: a diagonal Gaussian over Box actions."""

    def __init__(self, net: nn.Sequential, log_std: torch.Tensor):
        super().__init__()
        self.net = net
        self.log_std = nn.Parameter(log_std.detach().clone(), requires_grad=False)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.net(obs)
        return mean, self.log_std.expand_as(mean)


class CategoricalPolicy(nn.Module):
    """``forward(obs) -> (logits,)``: a categorical distribution over Discrete actions."""

    def __init__(self, net: nn.Sequential):
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.net(obs),)


def policy_module(spec: PolicySpec, params: Params) -> nn.Module:
    """The policy ``(spec, params)`` as an ``nn.Module`` giving :func:`metarl.core.policies.forward`'s outputs.

    ``params`` is one parameter set (θ, or one task's θ'), not a per-task stack.
    """
    layers: list[nn.Module] = []
    for i in range(spec.num_layers):
        weight, bias = params[f"layer{i}.weight"].detach(), params[f"layer{i}.bias"].detach()
        if weight.dim() != 2:
            raise ValueError(f"layer{i}.weight has shape {tuple(weight.shape)}; export one parameter set, not a stack")
        linear = nn.Linear(weight.shape[0], weight.shape[1], dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight.T)  # metarl stores (in, out); nn.Linear holds (out, in)
            linear.bias.copy_(bias)
        layers.append(linear)
        if i < spec.num_layers - 1:
            layers.append(ACTIVATION_MODULES[spec.activation]())
    net = nn.Sequential(*layers)
    module = GaussianPolicy(net, params["log_std"]) if spec.kind == "gaussian" else CategoricalPolicy(net)
    return module.eval().requires_grad_(False)


def save_policy(module: nn.Module, spec: PolicySpec, out: str | Path) -> Path:
    """Write ``module`` as ``.pt2`` (torch.export) or ``.pt`` (TorchScript), chosen by the extension."""
    out = Path(out)
    if out.suffix not in FORMATS:
        raise ValueError(f"--out {str(out)!r}: use .pt2 (torch.export) or .pt (TorchScript)")
    dtype = next(module.parameters()).dtype
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".pt2":
        example = torch.zeros(2, spec.obs_dim, dtype=dtype)
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, out)
    else:
        torch.jit.save(torch.jit.script(module), str(out))
    return out


def adapted_params(run, task: Task | list, steps: int, episodes: int | None = None, seed: int = 0) -> Params:
    """θ adapted to ``task`` with ``steps`` inner steps, exactly as ``metarl evaluate --seed seed`` adapts it.

    ``run`` is a :class:`metarl.runtime.evaluation.TrainedRun`; sampling runs in-process (same numbers as
    on Ray actors). ``task`` is a task dict or a goal's coordinates; ``steps`` 0 gives θ.
    """
    # lazy: metarl.runtime.evaluation imports Ray; import metarl.export (the policy modules) must not
    from metarl.runtime.evaluation import LocalSampler, adaptation_sweep, resolve_tasks

    tasks = resolve_tasks(run, [task], None, seed)
    if steps == 0:
        return {k: v.detach().clone() for k, v in run.theta.items()}
    sampler = LocalSampler(run)
    try:
        sweep = adaptation_sweep(
            run, tasks, steps, run.cfg.episodes_per_task if episodes is None else episodes, seed, sampler
        )
    finally:
        sampler.close()
    return {k: torch.from_numpy(np.array(v[0])) for k, v in sweep.params[steps].items()}


def export_params(
    run, task: Task | list | None, steps: int | None = None, episodes: int | None = None, seed: int = 0
) -> tuple[Params, int]:
    """What ``metarl export`` writes, in every format: ``(params, steps)``.

    θ itself without a task; with one, θ' after ``steps`` inner steps (default 1) as
    :func:`adapted_params`. Raises ``ValueError`` (one line) for steps without a task.
    """
    # lazy: metarl.runtime.evaluation imports Ray; import metarl.export (the policy modules) must not
    from metarl.runtime.evaluation import check_counts

    steps = (1 if task is not None else 0) if steps is None else steps
    check_counts(steps, episodes)
    if steps > 0 and task is None:
        raise ValueError(f"--steps {steps}: adapting needs the task to adapt to (--task JSON or --goal X,Y)")
    params = run.theta if task is None else adapted_params(run, task, steps, episodes, seed)
    return params, steps


@torch.no_grad()
def deterministic_action(spec: PolicySpec, params: Params, observation) -> np.ndarray:
    """The policy's most likely action for one observation, as the env takes it.

    The Gaussian's mean (a float vector) or the categorical's arg-max (an int); no noise, so
    the same observation always gives the same action (evaluation rollouts, videos, export checks).
    """
    dtype = next(iter(params.values())).dtype
    obs = torch.as_tensor(np.asarray(observation), dtype=dtype).reshape(1, spec.obs_dim)
    action = mode(spec, forward(spec, params, obs))[0].numpy()
    return action if spec.kind == "gaussian" else np.int64(action[0])
