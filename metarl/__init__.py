"""metarl: distributed gradient-based meta-RL (MAML, Meta-SGD) on Ray.

Data flow, module by module: config → tasks → policies → rollouts / workers → advantages →
adaptation → meta_update → learner → trainer → checkpoint → metrics → evaluation → plots.
"""

__version__ = "0.1.0"
