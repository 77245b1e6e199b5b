"""Confidence intervals of evaluation results: the one home of the Student-t interval that
``metarl evaluate``, ``metarl plot`` and the study tables (scripts/study.py) report."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import t as student_t


def ci95(values: np.ndarray) -> float | None:
    """Half-width of the 95 % Student-t confidence interval of the mean; None for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    return float(student_t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))


def mean_ci95(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 and the half-width of its 95 % Student-t interval, ignoring NaNs (NaN where
    fewer than 2 values are finite): the curves of runs of different lengths."""
    n = np.sum(np.isfinite(values), axis=0)
    mean = np.nanmean(values, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = np.nanstd(values, axis=0, ddof=1) / np.sqrt(n) if values.shape[0] > 1 else np.full_like(mean, np.nan)
        half = student_t.ppf(0.975, np.maximum(n - 1, 1)) * sem
    return mean, np.where(n >= 2, half, np.nan)
