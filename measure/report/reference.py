"""Published numbers beside ours: each row of a run's reference table (`core.reference`,
kept in run.json) next to the same cell of the run, with our 95 % cluster-bootstrap CI and
whether the published number falls inside it. A published row on cued clips is shown only
beside clips drawn as the study drew them (`core.variants.STUDY_DRAWINGS`); otherwise a
note says why none is shown."""

from __future__ import annotations

import pandas as pd

from core.reference import METRICS
from core.runfiles import ReferenceRecord
from core.variants import CUED, DESCRIBED, STUDY_DRAWINGS
from measure.report import stats

COLUMNS = ["reference", "model", "variant", "metric", "published", "ours", "ci_low", "ci_high", "n", "inside_ci"]


def notes(ref: ReferenceRecord, drawings: dict[str, str]) -> list[str]:
    """Per published cued variant, what ours was drawn as: the study's cue, or why no row is shown."""
    out = []
    for videos in sorted({r.videos for r in ref.rows or [] if r.videos in CUED}):
        drawing = drawings.get(videos)
        if drawing in STUDY_DRAWINGS:
            out.append(f"Our `{videos}` clips: {DESCRIBED[drawing]}.")
            continue
        ours = "; ".join(f"`{v}`: {DESCRIBED[d]}" for v, d in sorted(drawings.items())) or "none"
        out.append(
            f"No published `{videos}` row is shown: this run has no `{videos}` clips drawn as the study drew "
            f"them (its cued clips: {ours})."
        )
    return out


def table(df: pd.DataFrame, ref: ReferenceRecord, drawings: dict[str, str]) -> pd.DataFrame:
    """One row per published number: ours on the same model, variant and question type (errors
    left out, invalid replies wrong), its CI resampling videos, and whether it holds the
    published number. Cells the run did not ask stay empty; a cued row whose clips the run did
    not draw as the study drew them is left out (`notes`)."""
    scored = df[df["status"] != "error"]
    rows = []
    for r in ref.rows or []:
        if r.videos in CUED and drawings.get(r.videos) not in STUDY_DRAWINGS:
            continue
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
