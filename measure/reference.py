"""Published numbers beside ours: a reference table (CSV with columns model, videos,
object_acc, verb_acc, overall_acc, in %) next to the same cells of a run, each with our 95 %
cluster-bootstrap CI and whether the published number falls inside it.

The table's model labels name served models through `--reference-models label=served,...`;
by default "pretrained" is the run's base model and "finetuned" its one adapter. Its
`videos` column names our variants (plain, trajectory, ...).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.errors import DataError
from measure import stats

METRICS = {"object_acc": "object", "verb_acc": "verb", "overall_acc": "all"}
COLUMNS = ["reference", "model", "variant", "metric", "published", "ours", "ci_low", "ci_high", "n", "inside_ci"]
SHIPPED = Path(__file__).parent / "references"  # published tables that come with the project


def read(path: Path) -> pd.DataFrame:
    """A reference table; DataError naming the file and what is wrong with it."""
    try:
        ref = pd.read_csv(path, dtype={"model": str, "videos": str})
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable CSV ({type(e).__name__}: {e})") from None
    missing = sorted({"model", "videos", *METRICS} - set(ref.columns))
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; a reference table has model, videos, {', '.join(METRICS)}")
    for col in METRICS:
        bad = ref.index[pd.to_numeric(ref[col], errors="coerce").isna() & ref[col].notna()].tolist()
        if bad:
            raise DataError(f"{path}: row {bad[0] + 2}: {col} {ref.loc[bad[0], col]!r} is not a number (a percentage)")
    return ref


def model_names(ref: pd.DataFrame, parents: dict[str, str | None], given: dict[str, str] | None) -> dict[str, str]:
    """The reference table's model labels -> served models: as given, else pretrained/finetuned
    as the run's one base model and its one adapter, else a label that is itself a served model."""
    bases = [m for m, p in parents.items() if p is None]
    adapters = [m for m, p in parents.items() if p is not None]
    default = {"pretrained": bases[0] if len(bases) == 1 else None, "finetuned": adapters[0] if len(adapters) == 1 else None}
    out = {}
    for label in sorted(set(ref["model"].astype(str))):
        name = (given or {}).get(label) or default.get(label) or (label if label in parents else None)
        if name is None:
            raise DataError(f"reference model {label!r} names no served model ({sorted(parents)}); "
                            f"give --reference-models {label}=NAME")
        out[label] = name
    return out


def table(df: pd.DataFrame, ref: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """One row per published number: ours on the same model, variant and question type (errors
    left out, invalid replies wrong), its CI resampling videos, and whether it holds the
    published number. Cells the run did not ask stay empty."""
    scored = df[df["status"] != "error"]
    rows = []
    for r in ref.itertuples(index=False):
        model = names[str(r.model)]
        cell = scored[(scored["model"] == model) & (scored["variant"] == r.videos)]
        for col, qtype in METRICS.items():
            published = float(getattr(r, col))
            g = cell if qtype == "all" else cell[cell["type"] == qtype]
            row = {"reference": r.model, "model": model, "variant": r.videos, "metric": col, "published": published,
                   "n": len(g)}
            if len(g):
                low, high = stats.bootstrap_ci(g["correct"].to_numpy(dtype=float), g["video_id"])
                row |= {"ours": 100 * g["correct"].mean(), "ci_low": 100 * low, "ci_high": 100 * high,
                        "inside_ci": bool(100 * low <= published <= 100 * high)}
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)
