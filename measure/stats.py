"""Paired statistics for accuracy deltas: bootstrap CIs and the exact McNemar test."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from math import comb

import numpy as np

N_BOOT = 2000
SEED = 0
CHUNK_DRAWS = 1 << 20


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (only A right) and
    c (only B right): a binomial test of min(b, c) under p = 1/2."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_ci(values: np.ndarray, n_boot: int = N_BOOT, seed: int = SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the mean of `values`, resampled with a seeded RNG."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    # Drawn in chunks of about a million indices: the same draws as one (n_boot, n) array,
    # without its n_boot x n memory (160 MB at n = 10,000).
    chunk = max(1, CHUNK_DRAWS // len(values))
    means = np.concatenate([values[rng.integers(0, len(values), size=(min(chunk, n_boot - i), len(values)))].mean(axis=1)
                            for i in range(0, n_boot, chunk)])
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


@dataclass(frozen=True)
class Paired:
    """B − A on the same questions, in accuracy points (0-100)."""

    n: int
    acc_a: float
    acc_b: float
    delta: float
    ci_low: float
    ci_high: float
    only_a: int  # A right, B wrong
    only_b: int  # B right, A wrong
    p_mcnemar: float

    def as_dict(self) -> dict:
        return asdict(self)


def paired(a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, seed: int = SEED) -> Paired:
    """Paired comparison of two 0/1 correctness vectors over the same questions."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    low, high = bootstrap_ci(b - a, n_boot, seed)
    only_a = int(((a == 1) & (b == 0)).sum())
    only_b = int(((a == 0) & (b == 1)).sum())
    nan = float("nan")
    return Paired(
        n=len(a),
        acc_a=100 * a.mean() if len(a) else nan,
        acc_b=100 * b.mean() if len(b) else nan,
        delta=100 * (b - a).mean() if len(a) else nan,
        ci_low=100 * low,
        ci_high=100 * high,
        only_a=only_a,
        only_b=only_b,
        p_mcnemar=mcnemar_exact(only_a, only_b),
    )


def f1(truth: list[str], predicted: list[str | None], positive: str) -> float:
    """F1 of one class: 2PR / (P + R); 0 when the class is never predicted correctly."""
    tp = sum(t == positive and p == positive for t, p in zip(truth, predicted))
    fp = sum(t != positive and p == positive for t, p in zip(truth, predicted))
    fn = sum(t == positive and p != positive for t, p in zip(truth, predicted))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def kl(p: dict[str, float], q: dict[str, float], eps: float = 1e-9) -> float:
    """KL(p || q) in nats over the keys of p (both clipped away from zero)."""
    return float(sum(pv * np.log(max(pv, eps) / max(q.get(k, 0.0), eps)) for k, pv in p.items() if pv > 0))
