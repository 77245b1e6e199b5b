"""Gaussian MLP policy as a pure function of an explicit parameter dict.

The same ``forward`` evaluates the meta-parameters θ (shapes ``(in, out)``) and a stack of
per-task adapted parameters θ'ᵢ (shapes ``(num_tasks, in, out)``): leading dimensions of the
parameters broadcast against the leading task dimension of the observations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Params = dict[str, torch.Tensor]
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


@dataclass(frozen=True)
class PolicySpec:
    obs_dim: int
    act_dim: int
    hidden_sizes: tuple[int, ...] = (100, 100)
    activation: str = "relu"
    init_std: float = 1.0

    @property
    def num_layers(self) -> int:
        return len(self.hidden_sizes) + 1


def init_params(spec: PolicySpec, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
    """Xavier-uniform weights, zero biases, log-std = log(init_std) (as the MAML reimplementations)."""
    sizes = (spec.obs_dim, *spec.hidden_sizes, spec.act_dim)
    params: Params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = (torch.rand(fan_in, fan_out, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        params[f"layer{i}.weight"] = w.to(dtype)
        params[f"layer{i}.bias"] = torch.zeros(fan_out, dtype=dtype)
    params["log_std"] = torch.full((spec.act_dim,), math.log(spec.init_std), dtype=dtype)
    return params


def forward(spec: PolicySpec, params: Params, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-std of the action distribution.

    ``obs`` is ``(..., N, obs_dim)``; weights may carry the same leading dims as ``obs``
    (one parameter set per task) or none (shared θ).
    """
    act = ACTIVATIONS[spec.activation]
    h = obs
    last = spec.num_layers - 1
    for i in range(spec.num_layers):
        h = _affine(h, params[f"layer{i}.weight"], params[f"layer{i}.bias"])
        if i < last:
            h = act(h)
    log_std = params["log_std"].unsqueeze(-2).expand_as(h)
    return h, log_std


def _affine(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """h @ W + b with the bias fused into the matmul (one pass over the activations, not two)."""
    if weight.dim() == 2:  # shared parameters: one big matmul over all leading dims
        return torch.addmm(bias, h.reshape(-1, h.shape[-1]), weight).view(*h.shape[:-1], weight.shape[-1])
    if h.dim() == 3 and weight.dim() == 3:  # one parameter set per task
        return torch.baddbmm(bias.unsqueeze(-2), h, weight)
    return torch.matmul(h, weight) + bias.unsqueeze(-2)


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Log-density summed over action dimensions."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q) -> torch.Tensor:
    """KL(p || q) for diagonal Gaussians, summed over action dimensions."""
    var_p, var_q = torch.exp(2 * log_std_p), torch.exp(2 * log_std_q)
    kl = log_std_q - log_std_p + (var_p + (mean_p - mean_q).square()) / (2 * var_q) - 0.5
    return kl.sum(-1)


def to_numpy(params: Params) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in params.items()}


def from_numpy(arrays: dict, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Params:
    return {k: torch.tensor(v, device=device, dtype=dtype) for k, v in arrays.items()}  # copies: Ray hands out read-only arrays
