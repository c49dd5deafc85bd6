"""Rank statistics of the proxy-rank experiment: Kendall's tau-b and a bootstrap interval (numpy only)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable corrected for, as ``scipy.stats.kendalltau``'s default); NaN when
    one variable is constant or fewer than two pairs are given."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"kendall_tau: x and y must be 1-d of the same length, got {a.shape} and {b.shape}")
    i, j = np.triu_indices(len(a), k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    n_a, n_b = np.count_nonzero(da), np.count_nonzero(db)
    if n_a == 0 or n_b == 0:
        return float("nan")
    return float(np.sum(da * db) / np.sqrt(float(n_a) * float(n_b)))


def bootstrap_interval(x: Sequence[float], y: Sequence[float], *, resamples: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`kendall_tau` over pairs drawn with replacement (resamples where one
    variable is constant are skipped)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(resamples):
        idx = rng.integers(0, len(a), len(a))
        t = kendall_tau(a[idx], b[idx])
        if not np.isnan(t):
            taus.append(t)
    if not taus:
        return float("nan"), float("nan")
    lo, hi = np.quantile(taus, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
