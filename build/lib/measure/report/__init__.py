"""Reports: tables, statistics, verdicts, power, reference tables, rendering, plots and the
viewer, all computed from one `core.runs.Run`."""

from __future__ import annotations

from core.runs import Run
from measure.report.build import Report, build


def write(run: Run) -> Report:
    """Build a run's report and write every report file into its folder."""
    from measure.report import render

    assert run.layout is not None, "a run read from a folder"
    r = build(run)
    render.write(run.layout, r)
    return r


__all__ = ["Report", "build", "write"]
