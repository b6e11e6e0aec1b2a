"""`python -m measure`: score every served model x clip variant on a prepared dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.cli import command, fail, main
from core.defaults import RUNS_ROOT
from core.layout import RunLayout
from measure import render, report
from measure.run import RunOptions, check, execute, open_run
from measure.store import PredictionStore

app = typer.Typer(add_completion=False, help=__doc__)
RunsDir = Annotated[Path, typer.Option(help="Where run ids are looked up.")]


def _warn(message: str) -> None:
    typer.secho(message, fg="yellow", err=True)


@command(app, RunOptions, callback=True)
def run(opts: RunOptions) -> None:
    """Ask every question of the split, for every model x variant; print the reports."""
    p = check(opts)
    for message in p.rejected:
        _warn(f"skipped question: {message}")
    opened = open_run(opts, p)
    typer.echo(f"run {opened.rid}: {len(p.items)} items, {len(p.items) - len(opened.todo)} already done, "
               f"{len(opened.todo)} to send ({len(p.models)} model(s) x {len(p.variants)} variant(s))", err=True)
    out = execute(opts, p, opened, _warn)
    r = report.build(out.kept, opened.record.parents())
    render.write(opened.store.layout, r)
    typer.echo(render.render_markdown(r))
    for warning in r.warnings:
        typer.secho(warning, fg="yellow", bold=True, err=True)
    typer.echo(f"predictions: {opened.store.path}; reports: {opened.store.layout.report_md}", err=True)
    if out.interrupted:
        _warn(f"interrupted: {len(out.kept)} of {len(p.items)} answers are saved; finish with --resume {opened.rid}")
        raise typer.Exit(130)
    if out.down:
        typer.secho(f"error: {out.down}. {len(out.kept) - out.errors} answers are saved; once the server is back, "
                    f"finish with --resume {opened.rid}", fg="red", err=True)
        raise typer.Exit(3)
    if out.errors:
        _warn(f"{out.errors} item(s) ended as errors (kept apart, not counted wrong); ask them again with --resume {opened.rid}")
        raise typer.Exit(1)


def _store(run: Path, runs_dir: Path) -> PredictionStore:
    layout = RunLayout.find(run, runs_dir)
    if not layout.predictions.is_file():
        fail(f"{layout.root}: no predictions.jsonl")
    return PredictionStore(layout)


def _parents(store: PredictionStore) -> dict[str, str | None]:
    record = store.read_run()
    return record.parents() if record else {}


@app.command("report")
def report_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (or ids under --runs-dir).")],
    runs_dir: RunsDir = RUNS_ROOT,
) -> None:
    """Recompute a run's reports from its predictions alone (nothing is asked again)."""
    for run in runs:
        store = _store(run, runs_dir)
        r = report.build(store.load().values(), _parents(store))
        render.write(store.layout, r)
        typer.echo(f"# {store.layout.id}\n\n{render.render_markdown(r)}")


@app.command("compare")
def compare_cmd(
    run_a: Annotated[Path, typer.Argument(help="Run A (folder or id).")],
    run_b: Annotated[Path, typer.Argument(help="Run B (folder or id).")],
    runs_dir: RunsDir = RUNS_ROOT,
) -> None:
    """Run B − run A on the questions both scored (same model and variant names)."""
    a, b = _store(run_a, runs_dir), _store(run_b, runs_dir)
    table = report.compare_runs(a.load().values(), b.load().values())
    if table.empty:
        fail(f"{a.layout.id} and {b.layout.id} share no scored (question, model, variant)")
    typer.echo(f"# {b.layout.id} − {a.layout.id} (paired bootstrap 95 % CI, exact McNemar)\n")
    typer.echo(render.markdown(table))


if __name__ == "__main__":
    main(app)
