"""The algorithm, and nothing else: policies, α, inner adaptation, advantages, batches, the
meta-objective and its optimizers. torch and numpy only; importable with no other metarl layer
loaded (tests/test_layers.py). Defaults are plain dataclasses here; the config reads them.
"""
