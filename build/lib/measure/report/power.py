"""Before a run: can a dataset detect a given delta? Questions and videos needed per type,
from the paired-binomial sample size (`stats.pairs_needed`) times the design effect of
videos, under an assumed discordance or the one measured on a pilot run."""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, sqrt

import pandas as pd

from core.records import Question
from measure.report import stats
from measure.report.build import Report
from measure.report.tables import TYPES

COLUMNS = [
    "type",
    "comparison",
    "questions",
    "videos",
    "discordance",
    "deff",
    "mde",
    "questions_needed",
    "videos_needed",
    "enough",
]


@dataclass(frozen=True)
class Scenario:
    """One assumption about the two sides: how often they disagree, and how much a video's
    questions move together (the design effect)."""

    comparison: str
    discordance: float  # share of questions whose correctness differs between the two sides
    deff: float | None  # None: the worst case, every question of a video moves with the others
    type: str | None = None  # the question type it was measured on; None: every type


def _row(qtype: str, group: list[Question], s: Scenario, delta: float) -> dict:
    sizes = pd.Series([q.video_id for q in group]).value_counts()
    n, videos = len(group), len(sizes)
    deff = s.deff if s.deff is not None else float((sizes**2).sum() / n)  # all-or-nothing videos
    row = {
        "type": qtype,
        "comparison": s.comparison,
        "questions": n,
        "videos": videos,
        "discordance": 100 * s.discordance,
        "deff": deff,
        "mde": 100 * stats.mde(n, s.discordance) * sqrt(deff),
    }
    if delta <= s.discordance:
        needed = ceil(stats.pairs_needed(delta, s.discordance) * deff)
        row |= {
            "questions_needed": needed,
            "videos_needed": ceil(needed * videos / n),
            "enough": "yes" if n >= needed else "no",
        }
    else:  # only questions that change can move accuracy
        row |= {"questions_needed": float("nan"), "videos_needed": float("nan"), "enough": "no"}
    return row


def table(questions: list[Question], delta: float, scenarios: list[Scenario]) -> pd.DataFrame:
    """Per question type x scenario: the MDE (pts) at this size and what `delta` (a
    proportion) needs."""
    rows = []
    for qtype in TYPES:
        group = questions if qtype == "all" else [q for q in questions if q.type == qtype]
        if group:
            rows += [_row(qtype, group, s, delta) for s in scenarios if s.type in (None, qtype)]
    return pd.DataFrame(rows, columns=COLUMNS)


def assumed(discordance: float) -> list[Scenario]:
    """The two ends of clustering at an assumed discordance."""
    return [
        Scenario("independent questions", discordance, 1.0),
        Scenario("worst case: videos move as one", discordance, None),
    ]


def pilot(r: Report) -> list[Scenario]:
    """One scenario per comparison of a pilot run (cued − plain, adapter − base) and type,
    with the discordance and design effect measured on it."""
    rows = [(f"{c['variant']} vs plain, {c['model']}", c) for c in r.cued_vs_plain.to_dict("records")] + [
        (f"{c['adapter']} vs {c['base']}, {c['variant']}", c) for c in r.adapter_vs_base.to_dict("records")
    ]
    return [
        Scenario(label, (c["only_a"] + c["only_b"]) / c["n"], c["deff"], c["type"])
        for label, c in rows
        if c["only_a"] + c["only_b"] > 0
    ]
