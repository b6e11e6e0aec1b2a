"""Published numbers beside ours: each row of a run's reference table (`core.reference`,
kept in run.json) next to the same cell of the run, with our 95 % cluster-bootstrap CI and
whether the published number falls inside it."""

from __future__ import annotations

import pandas as pd

from core.reference import METRICS
from core.runfiles import ReferenceRecord
from measure.report import stats

COLUMNS = ["reference", "model", "variant", "metric", "published", "ours", "ci_low", "ci_high", "n", "inside_ci"]


def table(df: pd.DataFrame, ref: ReferenceRecord) -> pd.DataFrame:
    """One row per published number: ours on the same model, variant and question type (errors
    left out, invalid replies wrong), its CI resampling videos, and whether it holds the
    published number. Cells the run did not ask stay empty."""
    scored = df[df["status"] != "error"]
    rows = []
    for r in ref.rows or []:
        model = ref.models[r.model]
        cell = scored[(scored["model"] == model) & (scored["variant"] == r.videos)]
        for col, qtype in METRICS.items():
            value = getattr(r, col)
            published = float("nan") if value is None else float(value)
            g = cell if qtype == "all" else cell[cell["type"] == qtype]
            row = {
                "reference": r.model,
                "model": model,
                "variant": r.videos,
                "metric": col,
                "published": published,
                "n": len(g),
            }
            if len(g):
                low, high = stats.bootstrap_ci(
                    g["correct"].to_numpy(dtype=float), g["video_id"], seed=stats.seed_for(r.model, model, col)
                )
                row |= {
                    "ours": 100 * g["correct"].mean(),
                    "ci_low": 100 * low,
                    "ci_high": 100 * high,
                    "inside_ci": bool(100 * low <= published <= 100 * high),
                }
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)
