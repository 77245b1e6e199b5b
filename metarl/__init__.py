"""metarl: distributed gradient-based meta-RL (MAML, Meta-SGD) on Ray.

Data flow, module by module: config → tasks → policies → rollouts / workers → advantages →
adaptation → meta_update → learner → trainer → checkpoint → metrics → evaluation → plots.

The task families are ``metarl.envs`` (the repository's top-level ``envs/`` folder; ``metarl/envs`` links
to it, so a checkout and an install import the same package). Importing ``metarl`` registers them with
Gymnasium: ``import metarl; gymnasium.make("metarl/Navigation2D-v0")``, and makes ``tune.Tuner("metarl/MetaSGD")``
and ``"metarl/MAML"`` work without importing Ray Tune itself (:mod:`metarl.tune_names`).
"""

__version__ = "0.1.0"

from metarl import (
    envs,  # noqa: E402,F401  (registers the metarl/... Gymnasium ids)
    tune_names,  # noqa: E402
)

tune_names.install()
