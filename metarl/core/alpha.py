"""The inner step size α, beside θ: one object for its shape, parametrisation, values and statistics.

MAML's α is one fixed number; Meta-SGD's α is learned with θ (Li et al. 2017), at a granularity
(one value, one per parameter tensor, or one per element as in the paper) and a parametrisation:

* ``direct``: the learned leaf *is* α; it may change sign (the paper's Meta-SGD);
* ``log``: α = s · exp(ρ) with the learned leaf ρ and the sign s fixed at initialisation, so a
  meta-update changes α by a *relative* amount and TRPO's conjugate gradient sees coordinates
  scaled like α itself.

Everything else in metarl reads α through :meth:`Alpha.values` (a dict keyed like θ whose tensors
broadcast against θ's), and the meta-optimizer updates :meth:`Alpha.leaves`. Checkpoints hold the
*values*, so a run is evaluated the same way whatever its parametrisation.
"""

from __future__ import annotations

import torch

from metarl.core.options import GRANULARITIES, PARAMETRIZATIONS, AlphaOptions

Params = dict[str, torch.Tensor]


class Alpha:
    """α keyed like θ. ``learned=False`` is MAML's fixed scalar (no leaves)."""

    def __init__(self, values: Params, learned: bool, parametrization: str = "direct", shared: bool = False):
        """``values``: α per θ key (broadcastable); ``shared``: every key holds the same single scalar."""
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"alpha parametrization {parametrization!r} is not one of {PARAMETRIZATIONS}")
        self.learned, self.parametrization, self.shared = learned, parametrization, shared
        self._keys = list(values)
        first = values[self._keys[0]]
        unique = {"*": first} if shared else dict(values)
        if parametrization == "log":
            if any(bool((v == 0).any()) for v in unique.values()):
                raise ValueError("alpha parametrization 'log' needs a non-zero initial α (its sign is kept)")
            self._sign = {k: torch.sign(v).detach() for k, v in unique.items()}
            raw = {k: v.detach().abs().log() for k, v in unique.items()}
        else:
            self._sign = {}
            raw = {k: v.detach().clone() for k, v in unique.items()}
        self._raw = {k: v.requires_grad_(learned) for k, v in raw.items()}

    @classmethod
    def create(
        cls,
        theta: Params,
        init: float,
        learned: bool,
        granularity: str = AlphaOptions.granularity,
        parametrization: str = AlphaOptions.parametrization,
    ) -> Alpha:
        """α = ``init`` everywhere, at ``granularity`` when learned (a fixed scalar otherwise)."""
        if granularity not in GRANULARITIES:
            raise ValueError(f"alpha granularity {granularity!r} is not one of {GRANULARITIES}")
        like = next(iter(theta.values()))
        scalar = lambda: torch.tensor(init, dtype=like.dtype, device=like.device)  # noqa: E731
        if learned and granularity == "per_parameter":
            values = {k: torch.full_like(v, init) for k, v in theta.items()}
        elif learned and granularity == "per_layer":
            values = {k: scalar() for k in theta}
        else:
            shared = scalar()
            return cls({k: shared for k in theta}, learned, parametrization, shared=True)
        return cls(values, learned, parametrization)

    # -- what the algorithm uses -----------------------------------------------------------
    def values(self) -> Params:
        """α per θ key, differentiable in the leaves (recomputed each call under ``log``)."""
        if self.parametrization == "log":
            unique = {k: self._sign[k] * self._raw[k].exp() for k in self._raw}
        else:
            unique = self._raw
        return {k: unique["*"] if self.shared else unique[k] for k in self._keys}

    def leaves(self) -> list[torch.Tensor]:
        """The tensors the meta-optimizer updates (none for a fixed α)."""
        return list(self._raw.values()) if self.learned else []

    def flat(self) -> torch.Tensor:
        """The learned leaves as one detached vector (empty for a fixed α)."""
        leaves = self.leaves()
        if not leaves:
            return torch.zeros(
                0, dtype=self._raw[next(iter(self._raw))].dtype, device=self._raw[next(iter(self._raw))].device
            )
        return torch.cat([v.detach().reshape(-1) for v in leaves])

    @torch.no_grad()
    def assign(self, flat: torch.Tensor) -> None:
        """Set the learned leaves from a flat vector in :meth:`leaves` order: the meta-optimizers' update of α."""
        i = 0
        for leaf in self.leaves():
            leaf.copy_(flat[i : i + leaf.numel()].view_as(leaf))
            i += leaf.numel()
        if i != flat.numel():
            raise ValueError(f"alpha.assign: {flat.numel()} values for {i} learned entries")

    def num_learned(self) -> int:
        return sum(v.numel() for v in self.leaves())

    # -- reporting and state -----------------------------------------------------------------
    @torch.no_grad()
    def stats(self, fixed_value: float | None = None) -> dict[str, float]:
        """Metrics: mean/min/max/spread, share of negative entries, and each layer's mean and std."""
        values = self.values()
        if not self.learned:
            return {"alpha/mean": float(next(iter(values.values())))}
        unique = {"*": values[self._keys[0]]} if self.shared else values
        flat = torch.cat([a.reshape(-1) for a in unique.values()])
        stats = {
            "alpha/mean": flat.mean().item(),
            "alpha/std": flat.std().item() if flat.numel() > 1 else 0.0,
            "alpha/min": flat.min().item(),
            "alpha/max": flat.max().item(),
            "alpha/frac_negative": (flat < 0).double().mean().item(),
        }
        for name, a in values.items():
            stats[f"alpha/{name}/mean"] = a.mean().item()
            if a.numel() > 1:
                stats[f"alpha/{name}/std"] = a.std().item()
        return stats

    def state_dict(self) -> Params:
        """α's values keyed like θ (detached, on the CPU): what checkpoints store."""
        return {k: v.detach().cpu().clone() for k, v in self.values().items()}

    @torch.no_grad()
    def load_state_dict(self, values: Params) -> None:
        """Set α from stored values (any parametrisation); shapes must match."""
        for k in self._keys:
            if k not in values:
                raise ValueError(f"checkpoint alpha has no entry {k!r}")
        unique = {"*": values[self._keys[0]]} if self.shared else {k: values[k] for k in self._keys}
        for k, v in unique.items():
            target = self._raw[k]
            v = torch.as_tensor(v).to(target.device, target.dtype)
            if v.shape != target.shape:
                raise ValueError(
                    f"checkpoint alpha.{k} has shape {tuple(v.shape)}, the policy expects {tuple(target.shape)}"
                )
            if self.parametrization == "log":
                if bool((v == 0).any()):
                    raise ValueError(f"checkpoint alpha.{k} has zero entries, which parametrization 'log' cannot hold")
                self._sign[k] = torch.sign(v)
                target.copy_(v.abs().log())
            else:
                target.copy_(v)
