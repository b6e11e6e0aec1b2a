"""Reports computed from predictions.jsonl alone, so they can be redone without asking again."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import pandas as pd

from prepare.schema import Prediction, atomic_write

TABLE_COLUMNS = ["object_acc", "verb_acc", "overall_acc", "n", "invalid", "errors"]


def to_frame(predictions: Iterable[Prediction]) -> pd.DataFrame:
    return pd.DataFrame([asdict(p) for p in predictions])


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """model x variant -> accuracy (%) per question type and overall.

    Errors (no answer from the server) are left out of every denominator and counted apart;
    invalid replies count as wrong and are counted apart too. `n` is the scored rows.
    """
    rows = []
    if df.empty:
        return pd.DataFrame(columns=["model", "variant", *TABLE_COLUMNS]).set_index(["model", "variant"])
    for (model, variant), g in df.groupby(["model", "variant"], sort=True):
        scored = g[g["status"] != "error"]
        row = {"model": model, "variant": variant}
        for qtype in ("object", "verb"):
            s = scored[scored["type"] == qtype]
            row[f"{qtype}_acc"] = 100 * s["correct"].mean() if len(s) else float("nan")
        row["overall_acc"] = 100 * scored["correct"].mean() if len(scored) else float("nan")
        row["n"] = len(scored)
        row["invalid"] = int((g["status"] == "invalid").sum())
        row["errors"] = int((g["status"] == "error").sum())
        rows.append(row)
    table = pd.DataFrame(rows, columns=["model", "variant", *TABLE_COLUMNS])
    return table.set_index(["model", "variant"])


def markdown(table: pd.DataFrame) -> str:
    """The table as markdown, one row per model x variant, accuracies to 2 decimals."""
    return table.round(2).reset_index().to_markdown(index=False)


def write_reports(run_dir: Path, predictions: Iterable[Prediction]) -> pd.DataFrame:
    """Write report.md / report.csv / report.json into the run folder; return the table."""
    table = accuracy_table(to_frame(predictions))
    atomic_write(run_dir / "report.md", markdown(table) + "\n")
    atomic_write(run_dir / "report.csv", table.to_csv())
    atomic_write(run_dir / "report.json", table.reset_index().to_json(orient="records", indent=2))
    return table
