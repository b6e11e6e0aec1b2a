"""Paired statistics for accuracy deltas, clustered by video.

The questions of one video share its clip, so they are not independent: confidence
intervals resample videos (a paired cluster bootstrap) and the test of a delta flips the
sign of whole per-video differences (a permutation test). The exact McNemar test stays as
the question-level view. Holm's step-down procedure corrects a report's many tests; the
minimum detectable effect (MDE) of a paired binomial says what a comparison could have
found at all. With one question per video every clustered number equals its question-level one.

Every number here is a function of the pairs as a set, never of their order: clusters are
numbered by sorted label, values summed in a sorted order, and each comparison draws from a
seed of its own, hashed from its name (`seed_for`), the same on every machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from math import fsum, sqrt
from statistics import NormalDist

import numpy as np
import pandas as pd

N_BOOT = 2000
N_PERM = 10_000
EXACT_PERM = 16  # at most this many videos with a non-zero difference: every sign pattern is enumerated
SEED = 0
CHUNK_DRAWS = 1 << 20
ALPHA = 0.05
POWER = 0.8
# With fewer videos whose answers changed, no sign-flip test reaches p < ALPHA (its smallest
# p is 2 / 2^k) and a resampled interval has too few distinct values to be trusted: 6.
MIN_CHANGED = next(k for k in range(1, 64) if 2.0 ** (1 - k) < ALPHA)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (only A right) and
    c (only B right): a binomial test of min(b, c) under p = 1/2, summed in log space
    (whole-number binomials grow with the pairs until a large run's report takes minutes)."""
    n = b + c
    if n == 0:
        return 1.0
    j = np.arange(1, min(b, c) + 1)
    log_terms = np.concatenate([[0.0], np.cumsum(np.log((n - j + 1) / j))]) - n * np.log(2)  # log C(n, k) / 2^n
    top = log_terms.max()
    return float(min(1.0, 2 * np.exp(top) * np.exp(log_terms - top).sum()))


def seed_for(*name: object) -> int:
    """A comparison's seed, from its name by a stable hash (never Python's `hash()`, which
    changes from one process to the next)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, name)).encode()).digest()[:8], "big")


def canonical(values: Sequence[float], groups: Sequence | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """`values` (and their cluster codes) in one order whatever order they came in: by
    cluster, then by value. Sums over them are then the same to the last bit."""
    values = np.asarray(values, dtype=float)
    if groups is None:
        return np.sort(values), None
    codes = cluster_codes(groups)
    if len(codes) != len(values):
        raise ValueError(f"{len(values)} values but {len(codes)} cluster labels")
    order = np.lexsort((values, codes))
    return values[order], codes[order]


def clusters(values: Sequence[float], groups: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums and sizes of `values`, ordered by (sum, size): what resampling and
    sign flips see depends on the clusters alone, not on their labels or order (so with one
    value per cluster it is the values themselves, sorted); every value is its own cluster
    when `groups` is None."""
    values, codes = canonical(values, groups)
    if codes is None:
        return values, np.ones(len(values))
    sums, sizes = np.bincount(codes, weights=values), np.bincount(codes).astype(float)
    order = np.lexsort((sizes, sums))
    return sums[order], sizes[order]


def cluster_codes(groups: Sequence) -> np.ndarray:
    """0, 1, 2, ... per distinct label, in the labels' sorted order."""
    labels = groups if isinstance(groups, (pd.Series, np.ndarray)) else np.asarray(groups)
    return pd.factorize(labels, sort=True)[0]


def mean(values: Sequence[float]) -> float:
    """The mean, exactly rounded (math.fsum): the same whatever the order of the values."""
    values = np.asarray(values, dtype=float)
    return fsum(values) / len(values) if len(values) else float("nan")


def resampled_means(sums: np.ndarray, sizes: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The mean over all questions of each resample; `draws` holds one row of cluster
    indices per resample."""
    return sums[draws].sum(axis=1) / sizes[draws].sum(axis=1)


def bootstrap_ci(
    values: Sequence[float], groups: Sequence | None = None, n_boot: int = N_BOOT, seed: int = SEED, level: float = 0.95
) -> tuple[float, float]:
    """Percentile CI of the mean of `values`, resampling whole clusters (`groups`, e.g.
    video ids; single values when None) with a seeded RNG."""
    sums, sizes = clusters(values, groups)
    if len(sums) == 0:
        return (float("nan"), float("nan"))
    low, high = bootstrap_bounds(sums[None], sizes[None], n_boot, seed, level)
    return float(low[0]), float(high[0])


def bootstrap_bounds(
    sums: np.ndarray, sizes: np.ndarray, n_boot: int = N_BOOT, seed: int = SEED, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """The interval of the mean for each row of per-cluster `sums` (rows: datasets of the same
    k clusters, e.g. a run and its simulations; `sizes` per row), by one set of seeded
    resamples of clusters: each row's clusters taken in order of (sum, size), so what a row's
    interval is depends on its clusters alone, not on their labels or order. The report's
    interval is this function's on one row (`bootstrap_ci`)."""
    order = np.lexsort((sizes, sums), axis=-1)
    sums, sizes = np.take_along_axis(sums, order, -1), np.take_along_axis(sizes, order, -1)
    k = sums.shape[-1]
    rng = np.random.default_rng(seed)
    # Drawn in chunks of about a million indices: the same draws as one (n_boot, k) array,
    # without its n_boot x k memory (160 MB at k = 10,000).
    chunk = max(1, CHUNK_DRAWS // k)
    means = []
    for i in range(0, n_boot, chunk):
        draws = rng.integers(0, k, size=(min(chunk, n_boot - i), k))
        counts = np.zeros((len(draws), k))
        np.add.at(counts, (np.arange(len(draws))[:, None], draws), 1.0)
        means.append((sums @ counts.T) / (sizes @ counts.T))
    return interval_bounds(np.concatenate(means, axis=-1), k, level)


def interval_bounds(means: np.ndarray, k: int, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The interval's bounds from resampled means (last axis) of k clusters: Hesterberg's
    (2015) expanded percentile interval, the percentiles at a tail `expanded_tail(k, level)`
    instead of (1 - level) / 2, so that with few clusters it is as wide as a t interval would be."""
    tail = expanded_tail(k, level)
    return np.quantile(means, tail, axis=-1), np.quantile(means, 1 - tail, axis=-1)


@lru_cache
def expanded_tail(k: int, level: float = 0.95) -> float:
    """The tail share whose normal quantile is sqrt(k / (k - 1)) t_{k-1}, the t quantile of the
    level (k - 1 degrees of freedom): the bootstrap's variance is too small by (k - 1) / k, and
    a mean of few clusters needs t, not z. The plain percentile tail, (1 - level) / 2, with
    many clusters; 0 (the range of the resampled means) with fewer than 2."""
    if k < 2:
        return 0.0
    z = sqrt(k / (k - 1)) * t_quantile((1 + level) / 2, k - 1)
    return 1 - NormalDist().cdf(z)


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (p > 1/2), by bisection on its distribution function (mpmath's
    regularized incomplete beta)."""
    import mpmath

    def cdf(t: float) -> float:
        return 1 - 0.5 * float(mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True))

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def sign_flip_p(
    diffs: Sequence[float], groups: Sequence | None = None, n_perm: int = N_PERM, seed: int = SEED
) -> float:
    """Two-sided paired permutation test of a zero mean difference: under the null, A and B
    are exchangeable within a cluster, so each cluster's summed difference keeps or flips
    its sign. Exact when the sums are whole numbers (0/1 outcomes: `sign_flip_exact`) or at
    most EXACT_PERM are not 0; else `n_perm` seeded draws with p = (1 + hits) / (1 + n_perm).
    With one question per cluster this is the exact sign test, i.e. McNemar's."""
    sums, _ = clusters(diffs, groups)
    d = sums[sums != 0]
    k = len(d)
    if k == 0:
        return 1.0
    if np.array_equal(d, np.round(d)):
        return float(sign_flip_exact(d[None])[0])
    observed = abs(d.sum()) - 1e-9
    if k <= EXACT_PERM:
        signs = 1 - 2 * ((np.arange(2**k)[:, None] >> np.arange(k)) & 1)
        return float((np.abs(signs @ d) >= observed).mean())
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_DRAWS // k)
    total, hits = d.sum(), 0
    for i in range(0, n_perm, chunk):
        rows = min(chunk, n_perm - i)
        # Random bits (far cheaper to draw than integers): a set bit flips that video's sign.
        flips = np.unpackbits(np.frombuffer(rng.bytes(-(-rows * k // 8)), dtype=np.uint8), count=rows * k)
        hits += int((np.abs(total - 2 * (flips.reshape(rows, k).astype(float) @ d)) >= observed).sum())
    return (1 + hits) / (1 + n_perm)


def sign_flip_exact(sums: np.ndarray) -> np.ndarray:
    """The exact sign-flip p-value of each row of whole-number cluster sums (rows: datasets of
    the same clusters, e.g. a run and its simulations): the chance that flipping each cluster's
    sign at random gives a total at least as far from 0 as the row's. Only how many clusters
    have each |sum| matters, so a row's null distribution is a convolution of binomials,
    computed once per pattern of counts."""
    sums = np.rint(sums).astype(np.int64)
    observed = np.abs(sums.sum(axis=-1))
    out = np.ones(len(sums))
    for row, values in enumerate(np.abs(sums)):
        pattern = tuple((int(m), int(c)) for m, c in enumerate(np.bincount(values)) if m and c)
        if pattern:
            out[row] = _flip_tail(pattern, int(observed[row]))
    return out


@lru_cache(maxsize=65536)
def _flip_tail(pattern: tuple[tuple[int, int], ...], observed: int) -> float:
    """P(|sum of s_i m_i| >= observed) with fair random signs s_i, for `pattern`: (magnitude m,
    how many clusters have it), by convolving each magnitude's scaled binomial."""
    pmf = np.ones(1)
    for m, c in pattern:
        x = np.arange(1, c + 1)
        log = np.concatenate([[0.0], np.cumsum(np.log((c - x + 1) / x))]) - c * np.log(2)  # log C(c, j) / 2^c
        spaced = np.zeros(2 * m * c + 1)
        spaced[:: 2 * m] = np.exp(log)  # total m (2j - c) for j of c flipped up
        pmf = np.convolve(pmf, spaced)
    half = (len(pmf) - 1) // 2
    values = np.abs(np.arange(len(pmf)) - half)
    return float(min(1.0, pmf[values >= observed].sum()))


def changed(diffs: Sequence[float], groups: Sequence | None = None) -> int:
    """Clusters whose summed difference is not 0."""
    return int((clusters(diffs, groups)[0] != 0).sum())


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the input order: the
    i-th smallest p times (m - i + 1), made non-decreasing, capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def _z(alpha: float, power: float) -> tuple[float, float]:
    return NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)


def mde(n: int, discordance: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest difference |p_B - p_A| (a proportion) that a two-sided paired test at
    `alpha` finds with probability `power` on n question pairs of which a share
    `discordance` disagree: Connor's (1987) normal approximation for McNemar's test,
    sqrt(n) D = z_a sqrt(psi) + z_b sqrt(psi - D^2), solved for D in closed form. NaN when
    nothing disagrees or n is too small for any difference to be detectable."""
    za, zb = _z(alpha, power)
    if discordance <= 0 or n - za**2 + zb**2 <= 0:
        return float("nan")
    d = sqrt(discordance) * (za * sqrt(n) + zb * sqrt(n - za**2 + zb**2)) / (n + zb**2)
    return d if d <= discordance else float("nan")  # |p_B - p_A| cannot exceed the discordance


def power_at(n: float, discordance: float, delta: float, alpha: float = ALPHA) -> float:
    """The power of a two-sided paired test at `alpha` to find a difference `delta` (a
    proportion) on n question pairs (divided by the design effect, for clusters) of which a
    share `discordance` disagree: Connor's (1987) formula, as `mde` and `pairs_needed`."""
    if not 0 < delta <= discordance:
        return float("nan")
    za = NormalDist().inv_cdf(1 - alpha / 2)
    return NormalDist().cdf((sqrt(n) * delta - za * sqrt(discordance)) / sqrt(discordance - delta**2))


def pairs_needed(delta: float, discordance: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Question pairs needed to detect a difference `delta` (a proportion) with the given
    discordance (Connor 1987): n = (z_a sqrt(psi) + z_b sqrt(psi - delta^2))^2 / delta^2."""
    if not 0 < delta <= discordance <= 1:
        raise ValueError(
            f"a difference of {100 * delta:g} points needs a discordance of at least as much "
            f"(got {100 * discordance:g} %): only questions that change can move the accuracy"
        )
    za, zb = _z(alpha, power)
    return (za * sqrt(discordance) + zb * sqrt(discordance - delta**2)) ** 2 / delta**2


def design_effect(diffs: Sequence[float], groups: Sequence) -> float:
    """Variance of the mean difference with clusters (cluster-robust) over its variance with
    independent questions; 1 with one question per cluster, at least 1 as used here (a
    smaller estimate is noise and would shrink the MDE)."""
    d, _ = canonical(diffs, groups)
    n = len(d)
    sums, sizes = clusters(diffs, groups)
    k = len(sums)
    if n < 2 or k < 2:
        return 1.0
    m = mean(d)
    v_iid = fsum((d - m) ** 2) / (n - 1) / n
    v_cluster = k / (k - 1) * fsum((sums - sizes * m) ** 2) / n**2
    return max(1.0, v_cluster / v_iid) if v_iid > 0 else 1.0


@dataclass(frozen=True)
class Paired:
    """B − A on the same questions, in accuracy points (0-100). The CI resamples videos;
    p_mcnemar tests questions, p_video flips per-video differences; mde is clustered."""

    n: int
    videos: int
    videos_changed: int  # videos whose summed difference is not 0
    acc_a: float
    acc_b: float
    delta: float
    ci_low: float
    ci_high: float
    only_a: int  # A right, B wrong
    only_b: int  # B right, A wrong
    p_mcnemar: float
    p_video: float
    mde: float
    deff: float  # design effect of videos: variance with clusters / without

    def as_dict(self) -> dict:
        return asdict(self)


def paired(
    a: Sequence[float], b: Sequence[float], groups: Sequence | None = None, n_boot: int = N_BOOT, seed: int = SEED
) -> Paired:
    """Paired comparison of two 0/1 correctness vectors over the same questions, clustered
    by `groups` (video ids; every question its own video when None)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    diff = b - a
    groups = cluster_codes(groups) if groups is not None else None
    low, high = bootstrap_ci(diff, groups, n_boot, seed)
    only_a = int(((a == 1) & (b == 0)).sum())
    only_b = int(((a == 0) & (b == 1)).sum())
    n = len(a)
    nan = float("nan")
    deff = design_effect(diff, groups) if groups is not None else 1.0
    return Paired(
        n=n,
        videos=int(groups.max()) + 1 if groups is not None and n else n,
        videos_changed=changed(diff, groups),
        acc_a=100 * mean(a),
        acc_b=100 * mean(b),
        delta=100 * mean(diff),
        ci_low=100 * low,
        ci_high=100 * high,
        only_a=only_a,
        only_b=only_b,
        p_mcnemar=mcnemar_exact(only_a, only_b),
        p_video=sign_flip_p(diff, groups, seed=seed),
        mde=100 * mde(n, (only_a + only_b) / n) * sqrt(deff) if n else nan,
        deff=deff,
    )


@dataclass(frozen=True)
class PairedMean:
    """B − A of a measured quantity (not a proportion) on the same items: mean difference, its
    CI resampling videos, the sign-flip test on per-video summed differences."""

    n: int
    videos: int
    videos_changed: int
    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    p_video: float

    def as_dict(self) -> dict:
        return asdict(self)


def paired_mean(a: Sequence[float], b: Sequence[float], groups: Sequence, seed: int = SEED) -> PairedMean:
    """Paired comparison of two measurements of the same items, clustered by `groups`."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    codes = cluster_codes(groups)
    diff = b - a
    low, high = bootstrap_ci(diff, codes, seed=seed)
    n = len(diff)
    return PairedMean(
        n,
        int(codes.max()) + 1 if n else 0,
        changed(diff, codes),
        mean(a),
        mean(b),
        mean(diff),
        low,
        high,
        sign_flip_p(diff, codes, seed=seed),
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
