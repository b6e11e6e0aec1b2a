"""Published numbers to show beside a run's: a reference table (CSV with columns model,
videos, object_acc, verb_acc, overall_acc, in %), read once and kept in run.json.

The table's model labels name served models through `--reference-models label=served,...`;
by default "pretrained" is the run's one base model and "finetuned" its one adapter. Its
`videos` column names our variants (plain, trajectory, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.cli import option, pairs
from core.errors import DataError
from core.runfiles import ReferenceRecord, ReferenceRow

METRICS = {"object_acc": "object", "verb_acc": "verb", "overall_acc": "all"}
SHIPPED = Path(__file__).resolve().parents[1] / "measure" / "references"  # published tables that ship with the project


@dataclass(frozen=True)
class ReferenceOptions:
    """The options that choose a published table (measure, measure report)."""

    reference: Path | None = option(
        None,
        "A published table to show beside ours, kept in run.json (CSV: model, videos, object_acc, verb_acc, "
        "overall_acc; e.g. measure/references/visual_cues_qwen3_vl_2b.csv).",
        shown="none",
    )
    reference_models: dict[str, str] | None = option(
        None,
        "Its model labels as served models, e.g. pretrained=base,finetuned=lora.",
        parser=pairs,
        metavar="LABEL=NAME,...",
        shown="pretrained = the base model, finetuned = its one adapter",
    )


def read(path: Path) -> list[ReferenceRow]:
    """A reference table's rows; DataError naming the file and what is wrong with it."""
    import pandas as pd

    try:
        ref = pd.read_csv(path, dtype={"model": str, "videos": str})
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable CSV ({type(e).__name__}: {e})") from None
    missing = sorted({"model", "videos", *METRICS} - set(ref.columns))
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; a reference table has model, videos, {', '.join(METRICS)}"
        )
    for col in METRICS:
        bad = ref.index[pd.to_numeric(ref[col], errors="coerce").isna() & ref[col].notna()].tolist()
        if bad:
            raise DataError(f"{path}: row {bad[0] + 2}: {col} {ref.loc[bad[0], col]!r} is not a number (a percentage)")
    return [
        ReferenceRow(str(r["model"]), str(r["videos"]), *(_number(r[c]) for c in METRICS))
        for r in ref.to_dict("records")
    ]


def _number(value: object) -> float | None:
    return None if value != value or value is None else float(value)  # type: ignore[arg-type]  (NaN != NaN)


def model_names(
    rows: list[ReferenceRow], parents: dict[str, str | None], given: dict[str, str] | None
) -> dict[str, str]:
    """The table's model labels -> served models: as given, else pretrained/finetuned as the
    run's one base model and its one adapter, else a label that is itself a served model."""
    bases = [m for m, p in parents.items() if p is None]
    adapters = [m for m, p in parents.items() if p is not None]
    default = {
        "pretrained": bases[0] if len(bases) == 1 else None,
        "finetuned": adapters[0] if len(adapters) == 1 else None,
    }
    out = {}
    for label in sorted({r.model for r in rows}):
        name = (given or {}).get(label) or default.get(label) or (label if label in parents else None)
        if name is None:
            raise DataError(
                f"reference model {label!r} names no served model ({sorted(parents)}); "
                f"give --reference-models {label}=NAME"
            )
        out[label] = name
    return out


def record(path: Path, parents: dict[str, str | None], given: dict[str, str] | None) -> ReferenceRecord:
    """A reference table read and matched to a run's served models, as run.json keeps it."""
    rows = read(path)
    return ReferenceRecord(str(path), model_names(rows, parents, given), rows)


def resolved(ref: ReferenceRecord, parents: dict[str, str | None]) -> ReferenceRecord:
    """A run's reference with its rows: a run from before v3 kept only the CSV's path."""
    if ref.rows is not None:
        return ref
    return record(Path(ref.source), parents, ref.models or None)
