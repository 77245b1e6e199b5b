"""The algorithm's settings and their defaults, as plain dataclasses (no torch, no pydantic).

Each class is the option set of one core object: :class:`~metarl.core.meta_update.TRPO`,
``Adam`` and ``Reptile`` inherit theirs, :class:`~metarl.core.policies.PolicySpec` and
:meth:`~metarl.core.alpha.Alpha.create` default to them, :meth:`~metarl.core.batch.Batch.from_rollouts`
takes :class:`AdvantageOptions`' fields. The config's sections (metarl/config.py) read their
defaults here, so the configuration depends on the core and never the reverse. This module imports
nothing, so ``metarl config`` reads the defaults without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

GRANULARITIES = ("scalar", "per_layer", "per_parameter")
PARAMETRIZATIONS = ("direct", "log")


@dataclass
class TRPOOptions:
    """TRPO on (θ, α): trust region, conjugate gradient, line search, and how α takes part."""

    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_ratio: float = 0.8
    ls_max_steps: int = 15
    fisher_subsample: float = 1.0
    alpha_update: str = "joint"  # joint, natural or adam
    alpha_max_kl: float = 0.01
    alpha_damping: float = 0.1
    alpha_lr: float = 0.01


@dataclass
class AdamOptions:
    lr: float = 1e-3


@dataclass
class ReptileOptions:
    step_size: float = 0.5


@dataclass(frozen=True)
class AlphaOptions:
    """How Meta-SGD's α is learned (:meth:`metarl.core.alpha.Alpha.create`)."""

    granularity: str = "per_parameter"  # one of GRANULARITIES
    parametrization: str = "direct"  # one of PARAMETRIZATIONS


@dataclass(frozen=True)
class PolicyOptions:
    """The policy network's shape (:class:`metarl.core.policies.PolicySpec`)."""

    hidden_sizes: tuple[int, ...] = (100, 100)
    activation: str = "relu"
    init_std: float = 1.0  # Gaussian policies only


@dataclass(frozen=True)
class AdvantageOptions:
    """Returns, advantages and loss averaging (:meth:`metarl.core.batch.Batch.from_rollouts`)."""

    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    loss_average: str = "steps"  # steps (pooled over valid steps) or episodes
    bootstrap_truncated: bool = False
