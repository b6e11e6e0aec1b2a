"""Whether the report's statistics keep their promises on data like the run's (`measure
calibrate`), and a check that could fail: simulated runs drawn from a model of the run that is
not the test's own randomisation, scored by the report's own code.

The model, fitted to each comparison's pairs (per video: its questions, how many of them the
two sides answer alike and how often right):

- a video's accuracy level, shared by its questions (correlated within a video): a random
  effect on the logit scale, its spread what the videos' accuracies vary beyond chance;
- a video's discordance (the share of its questions the sides answer differently): its mean the
  observed discordance, its spread again fitted beyond chance;
- the direction of a video's discordant answers: under the null toward either side alike
  (exchangeable); under the weak null skewed — a quarter of the videos lean 0.8 to side b,
  the rest 0.4 — so the mean difference is 0 but the sides are not exchangeable; planted,
  toward b so that the mean difference is the effect.

Each simulated run is scored as the report scores it (`measure.report.stats`: the exact
sign-flip test on per-video sums, the cluster bootstrap's interval, Holm within the report's
families, open questions included), vectorised over simulations through the same functions
the report calls on one. Pairings are simulated independently of each other (tests of one
family that share questions are in truth correlated, which lowers the family-wise rate): the
family-wise rate measured here errs high.

Broken procedures (`PROCEDURES`), to show the check can fail: a bootstrap that resamples
questions (ignoring videos), an unpaired test and interval, no correction within a family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from core.records import OPEN
from core.runfiles import CalibrationRecord
from core.runs import Run
from measure.report import opentables, stats
from measure.report.tables import accuracy_pairings, to_frame
from measure.score.open import verdicts as open_verdicts

N_SIMS = 1000
COVERAGE_FLOOR, FPR_CEILING, POWER_SHORTFALL = 93.0, 7.0, 15.0  # % and points: outside these, a promise is broken
WEAK_SHARE, WEAK_HIGH, WEAK_LOW = 0.25, 0.8, 0.4  # the weak null: a quarter lean to b, the rest to a, mean 0
PROCEDURES = ("report", "questions-bootstrap", "unpaired", "no-holm")


@dataclass(frozen=True)
class Part:
    """One comparison: a part (question type, or open category) of a pairing."""

    name: str
    rows: np.ndarray  # its rows among the pairing's
    seed: int


@dataclass(frozen=True)
class Group:
    """The comparisons of one pairing, sharing its pairs (simulated together)."""

    table: str
    labels: dict
    a: np.ndarray  # 0/1 per pair
    b: np.ndarray
    video: np.ndarray  # each pair's video, 0..k-1
    kind: np.ndarray  # each pair's type or category, 0..
    parts: list[Part]

    @property
    def family(self) -> str:
        return self.labels["family"]


def groups(run: Run) -> list[Group]:
    """The run's paired comparisons of closed and open questions, as the report pairs them."""
    df = to_frame(p for p in run.predictions if p.type != OPEN)
    found = accuracy_pairings(df, run.parents) if not df.empty else []
    of = open_verdicts(run.predictions, run.judgements)
    found += opentables.pairings(of, run.parents) if not of.empty else []
    return [g for g in map(_group, found) if g is not None]


def _group(pairing) -> Group | None:
    parts = list(pairing.parts())
    if not parts:
        return None
    everything = next(j for name, j, _ in parts if name == "all")
    ids = everything.reset_index()
    key = "question_id" if "question_id" in ids else ids.columns[0]
    position = {q: i for i, q in enumerate(ids[key])}
    kinds = {name: i for i, (name, _, _) in enumerate(parts) if name != "all"}
    kind = np.zeros(len(ids), int)
    for name, j, _ in parts:
        if name != "all":
            kind[[position[q] for q in j.reset_index()[key]]] = kinds[name]
    return Group(
        table=pairing.table,
        labels=pairing.labels,
        a=everything["correct_a"].to_numpy(dtype=float),
        b=everything["correct_b"].to_numpy(dtype=float),
        video=stats.cluster_codes(everything["video_id"].to_numpy()),
        kind=kind,
        parts=[Part(name, np.array([position[q] for q in j.reset_index()[key]]), seed) for name, j, seed in parts],
    )


@dataclass(frozen=True)
class Fit:
    """The model of one pairing's pairs (`module docstring`)."""

    right: np.ndarray  # per kind: P(right | answered alike)
    spread: float  # sd of the videos' accuracy level, logit scale
    discordance: np.ndarray  # per kind: the share of pairs answered differently
    shape: float | None  # Gamma shape of a video's discordance factor (mean 1); None: the same for every video


def fit(g: Group) -> Fit:
    """Method-of-moments estimates from the pairs: no spread is assumed where none shows."""
    kinds = range(g.kind.max() + 1)
    alike, differ = g.a == g.b, (g.a != g.b).astype(float)
    right = np.array([g.a[alike & (g.kind == k)].mean() if (alike & (g.kind == k)).any() else 0.5 for k in kinds])
    disc = np.array([differ[g.kind == k].mean() if (g.kind == k).any() else 0.0 for k in kinds])
    n_videos = g.video.max() + 1
    n_v = np.bincount(g.video, minlength=n_videos).astype(float)
    acc = np.bincount(g.video, weights=(g.a + g.b) / 2, minlength=n_videos) / n_v
    p = acc.mean()
    excess = acc.var() - np.mean(p * (1 - p) / (2 * n_v))
    spread = float(np.sqrt(max(0.0, excess)) / max(p * (1 - p), 0.05)) if n_videos > 1 else 0.0
    # a video's discordance as its expected share times a factor of mean 1 whose variance is
    # what the observed shares vary beyond chance
    expected = np.bincount(g.video, weights=disc[g.kind], minlength=n_videos) / n_v
    observed = np.bincount(g.video, weights=differ, minlength=n_videos) / n_v
    chance = np.mean(expected * (1 - expected) / n_v)
    extra = np.mean((observed - expected) ** 2) - chance
    shape = float(np.mean(expected) ** 2 / extra) if n_videos > 1 and extra > 1e-9 and expected.mean() > 0 else None
    return Fit(right.clip(0.02, 0.98), min(spread, 3.0), disc, None if shape is None else max(shape, 0.5))


def simulate(g: Group, f: Fit, lean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(a, b): sims x pairs of 0/1 answers drawn from the model; `lean` (sims x videos) is each
    video's chance that a discordant pair is right on side b."""
    sims, k = lean.shape
    level = rng.normal(0, f.spread, (sims, k))[:, g.video]
    base = np.log(f.right / (1 - f.right))[g.kind]
    right = rng.random(level.shape) < 1 / (1 + np.exp(-(base + level)))
    factor = rng.gamma(f.shape, 1 / f.shape, (sims, k)) if f.shape else np.ones((sims, k))
    differ = rng.random(level.shape) < np.minimum(1.0, factor[:, g.video] * f.discordance[g.kind])
    to_b = rng.random(level.shape) < lean[:, g.video]
    a = np.where(differ, ~to_b, right).astype(float)
    b = np.where(differ, to_b, right).astype(float)
    return a, b


def leans(scenario: str, sims: int, k: int, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """Each video's chance that a discordant answer is right on side b: 1/2 (null), the weak
    null's skewed two values, or 1/2 + shift (planted)."""
    if scenario == "weak":
        return np.where(rng.random((sims, k)) < WEAK_SHARE, WEAK_HIGH, WEAK_LOW)
    return np.full((sims, k), 0.5 + shift)


def scored(a: np.ndarray, b: np.ndarray, video: np.ndarray, seed: int, procedure: str) -> tuple[np.ndarray, ...]:
    """(p, interval low, interval high) of each simulated comparison (rows), as `procedure`
    computes them: the report's own functions, or a broken procedure."""
    diff = b - a
    if procedure == "unpaired":
        n = diff.shape[1]
        pa, pb = a.mean(axis=1), b.mean(axis=1)
        pooled = (pa + pb) / 2
        z = (pb - pa) / np.sqrt(np.maximum(pooled * (1 - pooled) * 2 / n, 1e-12))
        half = NormalDist().inv_cdf(0.975) * np.sqrt((pa * (1 - pa) + pb * (1 - pb)) / n)
        p = np.where(pa == pb, 1.0, 2 * (1 - np.vectorize(NormalDist().cdf)(np.abs(z))))
        return p, pb - pa - half, pb - pa + half
    codes = stats.cluster_codes(video)
    k = codes.max() + 1
    member = np.zeros((len(codes), k))
    member[np.arange(len(codes)), codes] = 1.0
    sums, sizes = diff @ member, np.broadcast_to(member.sum(axis=0), (len(diff), k))
    p = stats.sign_flip_exact(sums)
    if procedure == "questions-bootstrap":
        sums, sizes = diff, np.ones_like(diff)
    low, high = stats.bootstrap_bounds(sums, np.ascontiguousarray(sizes), seed=seed)
    return p, low, high


@dataclass
class Tally:
    """Per family, each comparison's simulated p-values (sims x tests) under each null."""

    null: dict[str, list[np.ndarray]]
    weak: dict[str, list[np.ndarray]]


def calibrate(
    run: Run,
    sims: int = N_SIMS,
    effect: float | None = None,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
    chosen: list[Group] | None = None,
    procedure: str = "report",
) -> CalibrationRecord:
    """Simulate every paired comparison of the run's report (`chosen`: its groups, when already
    made; `effect` in points; None: each comparison's own MDE) under the null, the weak null
    and a planted effect, scored by `procedure` (the report's, or a broken one)."""
    if procedure not in PROCEDURES:
        raise ValueError(f"procedure {procedure!r}: one of {PROCEDURES}")
    rows, tally = [], Tally({}, {})
    for g in groups(run) if chosen is None else chosen:
        rows += _group_rows(g, sims, effect, seed, procedure, tally)
        if progress:
            progress()
    holm = (lambda p: p) if procedure == "no-holm" else stats.holm
    return CalibrationRecord(
        sims=sims,
        seed=seed,
        effect=effect,
        alpha=stats.ALPHA,
        comparisons=rows,
        familywise={name: familywise(np.column_stack(ps), holm) for name, ps in sorted(tally.null.items())},
        tests={name: len(ps) for name, ps in sorted(tally.null.items())},
        weak_familywise={name: familywise(np.column_stack(ps), holm) for name, ps in sorted(tally.weak.items())},
        procedure=procedure,
    )


def familywise(p: np.ndarray, holm: Callable[[np.ndarray], np.ndarray] = stats.holm) -> float:
    """Share of simulations (rows) in which any of the family's tests (columns) rejects after `holm`."""
    return float(np.mean((np.apply_along_axis(holm, 1, p) < stats.ALPHA).any(axis=1))) if p.size else 0.0


def _group_rows(g: Group, sims: int, effect: float | None, seed: int, procedure: str, tally: Tally) -> list[dict]:
    """One pairing's comparisons under the null, the weak null and the planted effect."""
    f = fit(g)
    k = g.video.max() + 1
    rng = np.random.default_rng(stats.seed_for("calibrate", seed, *sorted(g.labels.items())))
    drawn = {s: simulate(g, f, leans(s, sims, k, rng), rng) for s in ("null", "weak")}
    rows = []
    for part in g.parts:
        row = stats.paired(g.a[part.rows], g.b[part.rows], g.video[part.rows], seed=part.seed)
        out = {}
        for scenario, (a, b) in drawn.items():
            p, low, high = scored(a[:, part.rows], b[:, part.rows], g.video[part.rows], part.seed, procedure)
            getattr(tally, scenario).setdefault(g.family, []).append(p)
            out[f"{scenario}_rejection"] = 100 * float(np.mean(p < stats.ALPHA))
            out[f"{scenario}_coverage"] = 100 * float(np.mean((low <= 0) & (0 <= high)))
        out |= _planted(g, f, part, row, effect, sims, rng, procedure)
        rows.append(_row(g, part, row) | out)
    return rows


def _planted(g: Group, f: Fit, part: Part, row: stats.Paired, effect, sims, rng, procedure: str) -> dict:
    """Power and coverage at the planted effect (a part's own discordance bounds what can be)."""
    delta = row.mde / 100 if effect is None else effect / 100
    r = float(f.discordance[g.kind[part.rows]].mean())  # the part's discordance in the model
    none = {"planted": None, "power": None, "predicted_power": None, "coverage": None}
    if not (np.isfinite(delta) and 0 < delta <= r):
        return none
    k = g.video.max() + 1
    a, b = simulate(g, f, leans("planted", sims, k, rng, min(0.5, delta / (2 * r))), rng)
    p, low, high = scored(a[:, part.rows], b[:, part.rows], g.video[part.rows], part.seed, procedure)
    planted = np.mean(b[:, part.rows] - a[:, part.rows])  # what the model planted, over all simulations
    return {
        "planted": 100 * delta,
        "power": 100 * float(np.mean(p < stats.ALPHA)),
        "predicted_power": 100 * stats.power_at(row.n / row.deff, r, delta),
        "coverage": 100 * float(np.mean((low <= planted) & (planted <= high))),
    }


def _row(g: Group, part: Part, row: stats.Paired) -> dict:
    return {
        "comparison": comparison_label(g.labels, part.name),
        "table": g.table,
        "family": g.family,
        "type": part.name,
        "n": row.n,
        "videos": row.videos,
        "videos_changed": row.videos_changed,
        "delta": row.delta,
        "mde": row.mde,
    }


def comparison_label(labels: dict, part: str) -> str:
    """A comparison in words, as its verdict line names it."""
    judge = f", judged by {labels['judge']}" if "judge" in labels else ""
    if "adapter" in labels:
        return f"{labels['adapter']} vs {labels['base']}, {labels['variant']}, {part}{judge}"
    other = labels.get("variant", labels.get("control"))
    return f"{other} vs plain, {part}, {labels['model']}{judge}"


def margin(share: float, sims: int) -> float:
    """Two Monte Carlo standard errors (points) of a share (%) estimated from `sims` simulations."""
    return 200 * np.sqrt(share / 100 * (1 - share / 100) / sims)


def broken(c: CalibrationRecord) -> Iterator[str]:
    """Each promise the simulations found broken beyond their own Monte Carlo error, in words
    (nothing: every promise kept): a family-wise false-positive rate above FPR_CEILING, an
    interval holding the truth less than COVERAGE_FLOOR, power POWER_SHORTFALL points under its
    prediction (comparisons of at least MIN_CHANGED changed videos: fewer cannot be tested)."""
    t = pd.DataFrame(c.comparisons)
    trusted = t[t["videos_changed"] >= stats.MIN_CHANGED]
    fw = {**c.familywise, **{f"{k} (weak null)": v for k, v in c.weak_familywise.items()}}
    for name, rate in fw.items():
        if 100 * rate > FPR_CEILING + margin(FPR_CEILING, c.sims):
            yield f"family-wise false positives {100 * rate:.1f} % in {name} (more than {FPR_CEILING:g} %)"
    wrong = {
        "null_coverage": "under the null",
        "weak_coverage": "under the weak null",
        "coverage": "of the planted effect",
    }
    for col, what in wrong.items():
        low = trusted[trusted[col] < COVERAGE_FLOOR - margin(COVERAGE_FLOOR, c.sims)]
        if len(low):
            yield (
                f"95 % intervals {what} hold the truth as little as {low[col].min():.1f} % "
                f"({len(low)} comparison(s), e.g. {low.sort_values(col).iloc[0]['comparison']})"
            )
    planted = trusted[trusted["power"].notna()]
    short = planted[planted["power"] < planted["predicted_power"] - POWER_SHORTFALL - margin(80.0, c.sims)]
    if len(short):
        yield (
            f"power {short['power'].mean():.1f} % where {short['predicted_power'].mean():.1f} % is predicted "
            f"({len(short)} comparison(s))"
        )


def verdict(c: CalibrationRecord) -> str:
    """The calibration's outcome in one sentence."""
    found = list(broken(c))
    who = "the report's procedure" if c.procedure == "report" else f"the procedure `{c.procedure}`"
    if not found:
        return f"{who} keeps its promises on data like this run's: no test or interval fails its check"
    return f"{who} FAILS on data like this run's: " + "; ".join(found)


def mean_sd(x: pd.Series) -> str:
    return f"{x.mean():.1f} % (sd {x.std(ddof=0):.1f})" if len(x) else "n/a"


def summary(c: CalibrationRecord) -> list[str]:
    """The calibration in words: the model, false positives, coverage, power and the verdict."""
    t = pd.DataFrame(c.comparisons)
    planted = t[t["power"].notna()]
    effect = "each comparison's reported MDE" if c.effect is None else f"{c.effect:g} pts"
    fw = ", ".join(f"{name} {100 * v:.1f} % ({c.tests[name]} tests)" for name, v in c.familywise.items())
    weak = ", ".join(f"{name} {100 * v:.1f} %" for name, v in c.weak_familywise.items())
    if "weak_rejection" not in t:  # a calibration of before v4: its null was the test's own randomisation
        return [f"{c.sims} simulations ({c.procedure}); false positives mean {t['null_rejection'].mean():.1f} %"]
    lines = [
        verdict(c),
        f"{c.sims} simulated runs per comparison (seed {c.seed}) from a model fitted to each comparison "
        f"(per-video accuracy and discordance varying as observed, questions correlated within a video), "
        f"scored by {'the report' if c.procedure == 'report' else c.procedure}; {len(t)} comparisons",
        f"false positives at alpha {c.alpha:g} (null): mean {mean_sd(t['null_rejection'])}; family-wise: {fw}",
        f"false positives under the weak null (mean 0, not exchangeable): mean {mean_sd(t['weak_rejection'])}; "
        f"family-wise: {weak}",
        f"95 % intervals holding 0: null {t['null_coverage'].mean():.1f} %, "
        f"weak null {t['weak_coverage'].mean():.1f} %",
    ]
    if len(planted):
        lines.append(
            f"planted {effect} in {len(planted)} comparisons: coverage {planted['coverage'].mean():.1f} % "
            f"(lowest {planted['coverage'].min():.1f} %); power {planted['power'].mean():.1f} % vs predicted "
            f"{planted['predicted_power'].mean():.1f} %"
        )
    return lines
