"""What a reader acts on, first: a run's summary in at most ten sentences, each read from the
report's own tables (the ledger for every count), so the summary, report.md and the viewer
say the same thing."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from core.runfiles import CalibrationRecord
from measure.report.ledger import counts
from measure.report.tables import CAUSAL_FAMILY, PRIMARY, points

WHERE = "Details: every test in comparisons.csv, every table in report.json, every answer in the viewer (index.html)."


def _range(values: pd.Series) -> str:
    lo, hi = values.min(), values.max()
    return f"{points(lo, sign=True)} pts" if lo == hi else f"{points(lo, sign=True)} to {points(hi, sign=True)} pts"


def _against_plain(table: pd.DataFrame, name: str) -> list[str]:
    """Per `name` (control or variant): its all-type delta vs plain over models, and how many survive Holm."""
    if table.empty or "p_holm" not in table:
        return []
    rows = table[table["type"] == "all"]
    out = []
    for key, g in rows.groupby(name, sort=True):
        out.append(f"{key} {_range(g['delta'])} ({int(g['survives_holm'].sum())} of {len(g)} models significant)")
    return out


def scope(df: pd.DataFrame, parents: Mapping[str, str | None]) -> str:
    """What was asked: questions, videos, models (adapters marked), variants, answers."""
    if df.empty:
        return "No closed question was answered."
    models = ", ".join(f"{m} (adapter on {parents[m]})" if parents.get(m) else m for m in sorted(df["model"].unique()))
    invalid = int((df["status"] == "invalid").sum())
    errors = int((df["status"] == "error").sum())
    return (
        f"{df['question_id'].nunique()} questions on {df['video_id'].nunique()} videos, models {models}, "
        f"{df['variant'].nunique()} variants: {len(df)} answers ({invalid} invalid, {errors} errors)."
    )


def primary_line(t: pd.DataFrame) -> str:
    """The primary family in one sentence: how many survive, and the strongest evidence."""
    p = t[t["family"] == PRIMARY]
    if p.empty:
        return "No primary comparison (cued vs plain, adapter vs base on plain clips) was asked."
    top = p.iloc[0]
    interval = f"[{points(top['ci_low'])}, {points(top['ci_high'])}]"
    said = f"{top['comparison']}: {points(top['delta'], sign=True)} {top['unit']} {interval}"
    return (
        f"Primary: {int(p['significant'].sum())} of {len(p)} comparisons significant after Holm; "
        f"the strongest evidence, {said}{f'; {top.caution}' if top['caution'] else ''}."
    )


def causal_line(t: pd.DataFrame) -> str | None:
    c = t[t["family"] == CAUSAL_FAMILY]
    if c.empty:
        return None
    return (
        f"Declared causal contrasts (a region's tokens removed inside the model vs as many random ones; on the "
        f"organism, its known effects): {int(c['significant'].sum())} of {len(c)} found (table above)."
    )


def extras(calibration: CalibrationRecord | None, published: pd.DataFrame) -> list[str]:
    """The calibration's verdict and the published numbers, a sentence each (when the run has them)."""
    out = []
    if calibration is not None:
        from measure.report.calibrate import verdict

        out.append(f"Calibration (measure calibrate): {verdict(calibration)}.")
    if not published.empty:
        asked = published.dropna(subset=["ours", "published"])
        out.append(
            f"Published numbers beside ours: {int(asked['inside_ci'].sum())} of {len(asked)} lie in our 95 % CI "
            "(section below)."
        )
    return out


def lines(
    t: pd.DataFrame, audit: pd.DataFrame, interventions: pd.DataFrame, warnings: list[str], extra: list[str]
) -> list[str]:
    """At most ten sentences: primary, known effects, controls, interventions, `extra` (attention
    sanity, calibration, published numbers), the other families, warnings, where to look."""
    out = [primary_line(t)]
    out += [x for x in [causal_line(t)] if x]
    if controls := _against_plain(audit, "control"):
        out.append(f"Controls vs plain (all questions): {'; '.join(controls)}.")
    if masked := _against_plain(interventions, "variant"):
        out.append(f"Interventions vs plain (all questions): {'; '.join(masked)}.")
    out += extra
    rest = {f: c for f, c in counts(t).items() if f not in (PRIMARY, CAUSAL_FAMILY)}
    if rest:
        said = ", ".join(f"{f} {a} of {n}" for f, (a, n) in rest.items())
        out.append(f"Other families, significant after Holm: {said} (the strongest of each below).")
    if warnings:
        out.append(f"{len(warnings)} warning(s), the first: {warnings[0].removeprefix('WARNING: ')}")
    return out[:9] + [WHERE]
