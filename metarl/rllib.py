"""A metarl policy as an RLlib RLModule checkpoint: ``metarl export RUN --format rllib``.

RLlib's new API stack builds PPO's default module, ``DefaultPPOTorchRLModule``, from a model
config; with ``head_fcnet_hiddens=[]`` and ``free_log_std=True`` it is exactly metarl's Gaussian
policy (an MLP encoder, one linear layer to the mean, a state-independent log-std), and without
``free_log_std`` metarl's categorical one (the linear layer gives the logits). This module copies
θ (or one task's θ') into such a module and saves it with RLlib's ``save_to_path``, so RLlib
users continue from it with RLlib's own tools::

    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModule
    from metarl.runtime.evaluation import load_run
    from metarl.rllib import module_spec

    module = RLModule.from_checkpoint("policy-rllib")          # inference, or ...
    run = load_run("runs/nav")
    config = (
        PPOConfig()
        .environment("metarl/Navigation2D-v0", normalize_actions=False)   # metarl's raw actions
        .rl_module(rl_module_spec=module_spec(run.spec, run.env.observation_space, run.env.action_space,
                                              load_state_path="policy-rllib"))
    )
    algo = config.build_algo()                                 # PPO starts from the meta-learned policy

The value function is RLlib's own freshly initialised critic on a separate encoder
(``vf_share_layers=False``), so PPO's value loss does not move the policy's layers before the
policy loss does. RLlib clips the free log-std to ±``log_std_clip_param`` (20), far outside
any trained policy's range, so the distributions match. RLlib modules are float32: a
``dtype: float64`` run's weights are rounded to float32.

The checkpoint is RLlib's format: a directory of pickles (``module_state.pkl``,
``class_and_ctor_args.pkl``); loading it runs code, so it is for RLlib, not for exchanging
policies with people you do not trust (``.pt2`` from :mod:`metarl.export` is the safe format).

``ray.rllib`` is imported inside the functions: it is a heavy optional dependency that
``import metarl`` and ``metarl train`` never load.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from metarl.core.policies import Params, PolicySpec

FORMAT = "rllib"
CRITIC_SEED = 0  # the value network's initialisation: the same export gives the same checkpoint


def model_config(spec: PolicySpec) -> dict[str, Any]:
    """RLlib's ``DefaultModelConfig`` keys for metarl's policy shape (see the module docstring)."""
    if not spec.hidden_sizes:
        raise ValueError("hidden_sizes []: RLlib's MLP encoder needs at least one hidden layer to export to")
    return {
        "fcnet_hiddens": list(spec.hidden_sizes),
        "fcnet_activation": spec.activation,  # "relu"/"tanh": the same names and functions in RLlib
        "head_fcnet_hiddens": [],
        "free_log_std": spec.kind == "gaussian",
        "vf_share_layers": False,
    }


def module_spec(spec: PolicySpec, observation_space, action_space, load_state_path: str | Path | None = None):
    """The ``RLModuleSpec`` of PPO's default torch module for this policy (for ``config.rl_module``)."""
    # lazy: ray.rllib is heavy and optional: import metarl and metarl train never load it
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    return RLModuleSpec(
        module_class=DefaultPPOTorchRLModule,
        observation_space=observation_space,
        action_space=action_space,
        model_config=model_config(spec),
        load_state_path=None if load_state_path is None else str(load_state_path),
    )


def state_dict_for(spec: PolicySpec, params: Params) -> dict[str, torch.Tensor]:
    """metarl's ``layerI.weight (in, out)`` → the module's ``nn.Linear`` ``(out, in)`` names, float32."""
    hidden = len(spec.hidden_sizes)
    state = {}
    for i in range(spec.num_layers):
        weight, bias = params[f"layer{i}.weight"].detach(), params[f"layer{i}.bias"].detach()
        if weight.dim() != 2:
            raise ValueError(f"layer{i}.weight has shape {tuple(weight.shape)}; export one parameter set, not a stack")
        # the encoder's Sequential interleaves Linear and activation modules: Linear i is entry 2 i
        prefix = f"encoder.actor_encoder.net.mlp.{2 * i}" if i < hidden else "pi.net.mlp.0"
        state[f"{prefix}.weight"] = weight.T.float().contiguous()
        state[f"{prefix}.bias"] = bias.float().clone()
    if spec.kind == "gaussian":
        state["pi.log_std"] = params["log_std"].detach().float().clone()
    return state


def rl_module(spec: PolicySpec, params: Params, observation_space, action_space):
    """A ``DefaultPPOTorchRLModule`` whose action distribution is metarl's ``forward(spec, params)``."""
    with torch.random.fork_rng():
        torch.manual_seed(CRITIC_SEED)
        module = module_spec(spec, observation_space, action_space).build()
    state = state_dict_for(spec, params)
    own = module.state_dict()
    missing = sorted(set(state) - set(own))
    if missing:  # a different RLlib layout: fail loudly rather than export a half-copied policy
        raise RuntimeError(f"RLlib's DefaultPPOTorchRLModule has no {missing}; its layout changed")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise RuntimeError(f"{key}: RLlib expects {tuple(own[key].shape)}, metarl has {tuple(value.shape)}")
    module.load_state_dict({**own, **state})
    return module.eval()


def check_out(out: str | Path) -> Path:
    """``out`` must be a new (or empty) directory: an RLlib checkpoint is never written over another."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {str(out)!r} exists; give a new directory for the RLlib checkpoint")
    return out


def save_rl_module(module, out: str | Path) -> Path:
    """``module.save_to_path`` into a new directory ``out``, atomically (a temp dir renamed into place)."""
    out = check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # RLlib's save_to_path reads a relative path as a URI without a scheme (pyarrow refuses it)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)).absolute()
    try:
        module.save_to_path(str(tmp))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_run(run, params: Params, out: str | Path) -> Path:
    """``params`` of ``run`` (a :class:`metarl.runtime.evaluation.TrainedRun`) as an RLlib checkpoint at ``out``."""
    return save_rl_module(rl_module(run.spec, params, run.env.observation_space, run.env.action_space), out)
