"""A Report rendered: markdown for the terminal, and the run's report files (report.md,
report.csv, report.json, deltas.csv, templates.csv and the plots), each written atomically."""
from __future__ import annotations

import json

import pandas as pd

from core import runfiles
from core.files import atomic_write
from core.layout import RunLayout
from core.runfiles import ReportRecord
from measure.report import Report


def markdown(table: pd.DataFrame) -> str:
    """A table as markdown, numbers to 2 decimals (p-values to 4)."""
    if table.empty:
        return "(none)"
    t = table.reset_index() if table.index.names != [None] else table
    t = t.copy()
    for col in t.columns:
        if col == "p_mcnemar":
            t[col] = t[col].map(lambda p: f"{p:.4f}")
        elif pd.api.types.is_float_dtype(t[col]):
            t[col] = t[col].round(2)
    return t.to_markdown(index=False)


def render_markdown(r: Report) -> str:
    parts = [
        *(f"**{w}**\n\n" for w in r.warnings),
        "## Accuracy (%)\n", markdown(r.table),
        "\n\n## Shortcut audit: plain (a) vs controls (b) on the same questions\n", markdown(r.audit),
        "\n\n## Cued − plain on the questions the blind control gets wrong\n", markdown(r.cued_blind_wrong),
        "\n\n## Cued − plain (same questions; paired bootstrap 95 % CI, exact McNemar)\n", markdown(r.cued_vs_plain),
        "\n\n## Adapter − base (same questions)\n", markdown(r.adapter_vs_base),
        "\n\n## Largest gains and losses per template and per verb\n", markdown(r.moves),
        "\n\n## Answer position: accuracy by correct position, share of each predicted position (%)\n",
        markdown(r.positions), "\n",
    ]
    if not r.arrow.empty:
        parts += ["\n## Arrow of time (chance 50 %; temporal_kl: mean KL(forward || reversed), nats)\n", markdown(r.arrow), "\n"]
    return "".join(parts)


def _records(table: pd.DataFrame) -> list[dict]:
    return json.loads(table.to_json(orient="records"))


def record(r: Report) -> ReportRecord:
    """The report as report.json holds it: every table as a list of rows."""
    return ReportRecord(
        accuracy=_records(r.table.reset_index()), cued_vs_plain=_records(r.cued_vs_plain),
        adapter_vs_base=_records(r.adapter_vs_base), template_moves=_records(r.moves), positions=_records(r.positions),
        audit=_records(r.audit), cued_where_blind_fails=_records(r.cued_blind_wrong), arrow_of_time=_records(r.arrow),
        warnings=list(r.warnings),
    )


def write(layout: RunLayout, r: Report) -> None:
    """Every report file of a run, from the Report alone."""
    atomic_write(layout.report_md, render_markdown(r))
    atomic_write(layout.report_csv, r.table.to_csv())
    deltas = pd.concat([r.cued_vs_plain.assign(comparison="cued-plain"),
                        r.adapter_vs_base.assign(comparison="adapter-base")], ignore_index=True)
    atomic_write(layout.deltas_csv, deltas.to_csv(index=False))
    atomic_write(layout.templates_csv, r.templates.to_csv(index=False))
    runfiles.write(layout.report_json, record(r))
    if not r.table.empty:
        from measure import plots

        plots.accuracy_bars(layout.accuracy_png, r.table, r.cis)
        plots.forest(layout.deltas_png, r.cued_vs_plain, r.adapter_vs_base)
