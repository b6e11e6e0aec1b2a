"""Whether the report's statistics keep their promises on the run's own data (`measure
calibrate`): simulations that keep each comparison's questions, its videos (the clusters), the
number of questions per video and how many of a video's answers changed between the two sides,
and redraw only the direction of each video's change.

- Null: each video's summed difference keeps or flips its sign with probability 1/2 (the
  two sides swapped on all of its questions), so the true difference is 0. Measured: how often
  the paired test rejects at alpha (per comparison, and per Holm family: any test of the family,
  all of them null, with one swap per video and pairing shared by its question types), and how
  often the 95 % interval holds 0.
- Planted: a video's change points to side b with probability (1 + delta n / m) / 2, where m
  is the run's total of per-video |summed differences| over its n questions, so the expected
  difference is exactly delta (default: the comparison's reported MDE; larger than m / n it
  cannot be planted). Measured: power (rejections) beside the paired-binomial prediction of
  `measure power`, and how often the interval holds delta.

Tests and intervals are computed as the report computes them (`measure.report.stats`: the
same sign-flip distribution, exact up to EXACT_PERM differing videos, the same resamples of
videos and interval rule), vectorised over simulations: with the clusters' sizes fixed, one
permutation distribution and one set of resample counts serve every simulation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.records import OPEN
from core.runfiles import CalibrationRecord
from core.runs import Run
from measure.report import stats
from measure.report.tables import Pairing, accuracy_pairings, to_frame

N_SIMS = 1000


@dataclass(frozen=True)
class Design:
    """One comparison's clusters: per video with a question of it, |summed b − a| and questions."""

    magnitudes: np.ndarray
    sizes: np.ndarray
    videos: np.ndarray  # each cluster's column in its pairing's table of videos

    @property
    def n(self) -> int:
        return int(self.sizes.sum())


def design(joined: pd.DataFrame, video_ids: pd.Index) -> Design:
    """The clusters of a comparison's joined pairs (correct_a, correct_b, video_id)."""
    diff = joined["correct_b"].astype(float) - joined["correct_a"].astype(float)
    g = diff.groupby(joined["video_id"].to_numpy(), sort=True)
    sums = g.sum()
    return Design(np.abs(sums.to_numpy()), g.size().to_numpy(dtype=float), video_ids.get_indexer(sums.index))


def null_distribution(magnitudes: np.ndarray, seed: int) -> tuple[np.ndarray, bool]:
    """The sign-flip statistic |sum of signed magnitudes| over every sign pattern (exact) or
    over N_PERM seeded draws, sorted; and whether it is exact."""
    d = magnitudes[magnitudes != 0]
    k = len(d)
    if k <= stats.EXACT_PERM:
        signs = 1 - 2 * ((np.arange(2**k)[:, None] >> np.arange(k)) & 1)
        return np.sort(np.abs(signs @ d)), True
    rng = np.random.default_rng(seed)
    flips = np.unpackbits(np.frombuffer(rng.bytes(-(-stats.N_PERM * k // 8)), dtype=np.uint8), count=stats.N_PERM * k)
    return np.sort(np.abs(d.sum() - 2 * (flips.reshape(stats.N_PERM, k).astype(float) @ d))), False


def p_values(observed: np.ndarray, null: np.ndarray, exact: bool) -> np.ndarray:
    """The sign-flip p-value of each |summed difference| in `observed`, as `stats.sign_flip_p`."""
    hits = len(null) - np.searchsorted(null, np.abs(observed) - 1e-9, side="left")
    p = hits / len(null) if exact else (1 + hits) / (1 + len(null))
    return np.where(observed == 0, 1.0, p)


def resample_counts(k: int, seed: int) -> np.ndarray:
    """How often each of k clusters is drawn in each of N_BOOT resamples of videos."""
    draws = np.random.default_rng(seed).integers(0, k, size=(stats.N_BOOT, k))
    counts = np.zeros((stats.N_BOOT, k))
    np.add.at(counts, (np.arange(stats.N_BOOT)[:, None], draws), 1)
    return counts


def intervals(signed: np.ndarray, d: Design, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each simulation's 95 % interval of the mean difference (rows of per-cluster sums)."""
    means = (signed @ counts.T) / (counts @ d.sizes)
    return stats.interval_bounds(means, len(d.sizes))


@dataclass(frozen=True)
class Outcome:
    """What the simulations of one comparison gave (proportions of simulations)."""

    null_rejection: float
    null_coverage: float  # the interval holds 0
    planted: float | None  # the effect planted (a proportion); None: none can be
    power: float | None
    predicted_power: float | None
    coverage: float | None  # the interval holds the planted effect


def simulate(
    d: Design, null_signs: np.ndarray, effect: float | None, seed: int, deff: float, discordance: float
) -> tuple[Outcome, np.ndarray]:
    """A comparison's null and planted simulations; with the null p-values (for Holm)."""
    null, exact = null_distribution(d.magnitudes, seed)
    counts = resample_counts(len(d.sizes), seed)
    signed = null_signs * d.magnitudes
    p_null = p_values(signed.sum(axis=1), null, exact)
    low, high = intervals(signed, d, counts)
    m = d.magnitudes.sum()
    plantable = effect is not None and np.isfinite(effect) and 0 < effect * d.n <= m
    power = coverage = predicted = None
    if plantable:
        rng = np.random.default_rng(seed + 1)
        up = rng.random(null_signs.shape) < (1 + effect * d.n / m) / 2
        signed = np.where(up, 1.0, -1.0) * d.magnitudes
        p = p_values(signed.sum(axis=1), null, exact)
        lo, hi = intervals(signed, d, counts)
        power = float(np.mean(p < stats.ALPHA))
        coverage = float(np.mean((lo <= effect) & (effect <= hi)))
        predicted = stats.power_at(d.n / deff, discordance, effect)
    outcome = Outcome(
        null_rejection=float(np.mean(p_null < stats.ALPHA)),
        null_coverage=float(np.mean((low <= 0) & (0 <= high))),
        planted=effect if plantable else None,
        power=power,
        predicted_power=predicted,
        coverage=coverage,
    )
    return outcome, p_null


def familywise(p: np.ndarray) -> float:
    """Share of simulations (rows) in which Holm rejects any of the family's tests (columns)."""
    return float(np.mean((np.apply_along_axis(stats.holm, 1, p) < stats.ALPHA).any(axis=1))) if p.size else 0.0


def pairings(run: Run) -> list[Pairing]:
    """The paired accuracy comparisons of the run's report (closed questions)."""
    df = to_frame(p for p in run.predictions if p.type != OPEN)
    return accuracy_pairings(df, run.parents) if not df.empty else []


def calibrate(
    run: Run,
    sims: int = N_SIMS,
    effect: float | None = None,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
    chosen: list[Pairing] | None = None,
) -> CalibrationRecord:
    """Simulate every paired accuracy comparison of the run's report (`chosen`: its pairings,
    when already made; `effect` in points; None: each comparison's own MDE)."""
    rows, nulls = [], {}
    for pairing in pairings(run) if chosen is None else chosen:
        rows += _pairing_rows(pairing, sims, effect, seed, nulls)
        if progress:
            progress()
    return CalibrationRecord(
        sims=sims,
        seed=seed,
        effect=effect,
        alpha=stats.ALPHA,
        comparisons=rows,
        familywise={name: familywise(np.column_stack(ps)) for name, ps in sorted(nulls.items())},
        tests={name: len(ps) for name, ps in sorted(nulls.items())},
    )


def _pairing_rows(pairing: Pairing, sims: int, effect: float | None, seed: int, nulls: dict) -> list[dict]:
    """One pairing's comparisons (one per question type), sharing one swap per video."""
    joined = dict(pairing.by_type())
    if not joined:
        return []
    video_ids = pd.Index(sorted(set(joined["all"]["video_id"])))
    rng = np.random.default_rng(stats.seed_for("calibrate", seed, *sorted(pairing.labels.items())))
    swaps = np.where(rng.random((sims, len(video_ids))) < 0.5, 1.0, -1.0)
    rows = []
    for qtype, j in joined.items():
        d = design(j, video_ids)
        row = stats.paired(j["correct_a"], j["correct_b"], j["video_id"], seed=pairing.seed(qtype))
        planted = row.mde / 100 if effect is None else effect / 100
        discordance = (row.only_a + row.only_b) / row.n
        out, p_null = simulate(d, swaps[:, d.videos], planted, pairing.seed(qtype) ^ seed, row.deff, discordance)
        nulls.setdefault(pairing.labels["family"], []).append(p_null)
        rows.append(_row(pairing, qtype, row, d, out))
    return rows


def _row(pairing: Pairing, qtype: str, row: stats.Paired, d: Design, out: Outcome) -> dict:
    pct = {k: None if v is None else 100 * v for k, v in vars(out).items()}
    return {
        "comparison": comparison_label(pairing.labels, qtype),
        "table": pairing.table,
        "family": pairing.labels["family"],
        "type": qtype,
        "n": row.n,
        "videos": row.videos,
        "videos_changed": int((d.magnitudes != 0).sum()),
        "delta": row.delta,
        "mde": row.mde,
        **pct,
    }


def comparison_label(labels: dict, qtype: str) -> str:
    """A comparison in words, as its verdict line names it."""
    if "adapter" in labels:
        return f"{labels['adapter']} vs {labels['base']}, {labels['variant']}, {qtype}"
    other = labels.get("variant", labels.get("control"))
    return f"{other} vs plain, {qtype}, {labels['model']}"
