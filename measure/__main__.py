"""`python -m measure [OPTIONS]` asks every served model x clip variant of a prepared dataset
(no sub-command: the measurement itself); the sub-commands read runs already made."""

from __future__ import annotations

import webbrowser
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import typer

from core import cli, runs
from core import reference as references
from core.cli import argument, command, fail, group, main, option, warn
from core.groups import OneRun, RunsDir, Server
from core.layout import DataLayout
from core.records import OPEN, load_questions
from core.reference import ReferenceOptions
from measure.ask.options import RunOptions
from measure.profile.options import ProfileOptions

# Each command imports what it runs (the client, pandas, the viewer) when it runs, so `--help`
# and a bad option answer at once.
app = cli.app(__doc__)


@command(app, RunOptions, callback=True)
def run(opts: RunOptions) -> None:
    """Ask every question of the split, for every model x variant; print the report."""
    from measure import report
    from measure.ask.plan import check, execute, open_run
    from measure.report import render

    p = check(opts)
    for message in p.rejected:
        warn(f"skipped question: {message}")
    for message in p.warnings or []:
        warn(message)
    opened = open_run(opts, p)
    typer.echo(
        f"run {opened.rid}: {len(p.items)} items, {len(p.items) - len(opened.todo)} already done, "
        f"{len(opened.todo)} to send ({len(p.models)} model(s) x {len(p.variants)} variant(s))",
        err=True,
    )
    out = execute(opts, p, opened, warn)
    session = opened.record.sessions[-1]
    if session.clips_prepared is not None:
        where = f" ({out.frames.root})" if out.frames else ""
        typer.echo(
            f"clips: {session.clips_prepared} prepared, {session.clips_from_store} from the frame store{where}",
            err=True,
        )
    r = report.write(runs.load(opened.store.layout))
    typer.echo(render.summary_markdown(r))
    for w in r.warnings:
        typer.secho(w, fg="yellow", bold=True, err=True)
    typer.echo(f"predictions: {opened.store.path}; reports: {opened.store.layout.report_md}", err=True)
    if any(i.question.type == OPEN for i in p.items):
        typer.echo(f"open questions: judge them with `python -m measure judge {opened.store.layout.root}`", err=True)
    if out.interrupted:
        warn(f"interrupted: {len(out.kept)} of {len(p.items)} answers are saved; finish with --resume {opened.rid}")
        raise typer.Exit(130)
    if out.down:
        typer.secho(
            f"error: {out.down}. {len(out.kept) - out.errors} answers are saved; once the server is back, "
            f"finish with --resume {opened.rid}",
            fg="red",
            err=True,
        )
        raise typer.Exit(3)
    if out.errors:
        warn(
            f"{out.errors} item(s) ended as errors (kept apart, not counted wrong); ask them again with --resume "
            f"{opened.rid}"
        )
        raise typer.Exit(1)


@dataclass
class ReportOptions:
    runs: list[Path] = argument(help="Run folders (or ids under --runs-dir).")
    where: RunsDir = group(RunsDir)
    published: ReferenceOptions = group(ReferenceOptions, shown={"reference": "the run's own, if any"})


@command(app, ReportOptions, name="report")
def report_cmd(o: ReportOptions) -> None:
    """Recompute a run's reports from the run folder alone (nothing is asked again)."""
    from measure import report
    from measure.report import render

    for folder in o.runs:
        run = runs.load(o.where.find(folder))
        if o.published.reference is not None or o.published.reference_models is not None:
            set_reference(run, o.published.reference, o.published.reference_models)
        typer.echo(f"# {run.id}\n\n{render.summary_markdown(report.write(run))}")
        typer.echo(f"full report: {run.layout.report_md if run.layout else 'report.md'}", err=True)


def set_reference(run: runs.Run, table: Path | None, names: dict[str, str] | None) -> None:
    """Keep a (new) reference table in the run's record, so every later report shows it."""
    if run.record is None:
        fail(f"{run.id}: run.json missing: a reference table is kept there")
    source = table or (Path(run.reference.source) if run.reference else None)
    if source is None:
        fail(f"{run.id}: --reference-models without a reference table: give --reference")
    run.reference = references.record(source, run.parents, names or (run.reference.models if run.reference else None))
    run.record = replace(run.record, reference=run.reference)
    run.store.write_run(run.record)


@dataclass
class CompareOptions:
    runs: list[Path] = argument(help="Two or more runs (folders or ids).")
    where: RunsDir = group(RunsDir)


@command(app, CompareOptions, name="compare")
def compare_cmd(o: CompareOptions) -> None:
    """Runs side by side: every run's models in one table (accuracy with CIs per variant and
    question type; open questions per subset and category), refused when the runs asked
    different questions; with two runs of the same models, also B − A on the same questions."""
    import pandas as pd

    from measure.report import opentables, render, tables
    from measure.score.open import verdicts as open_verdicts

    if len(o.runs) < 2:
        fail("compare needs two or more runs")
    loaded = [runs.load(o.where.find(r)) for r in o.runs]
    if len({run.id for run in loaded}) < len(loaded):
        fail(f"the runs must differ: {', '.join(run.id for run in loaded)}")
    asked = {run.id: tables.asked_questions(run.predictions) for run in loaded}
    shared = set.intersection(*asked.values())
    if any(q != shared for q in asked.values()):
        counts = ", ".join(f"{rid} {len(q)}" for rid, q in asked.items())
        fail(f"the runs asked different questions ({counts}; {len(shared)} shared): compare runs of the same questions")
    named = {}
    for run in loaded:
        of = open_verdicts(run.predictions, run.judgements)
        named[run.id] = (run.predictions, opentables.accuracy(of) if not of.empty else pd.DataFrame())
    typer.echo(
        f"# {' vs '.join(named)}: accuracy % [95 % CI, videos resampled] on the {len(shared)} questions they share\n"
    )
    typer.echo(render.markdown(tables.side_by_side(named)))
    if len(loaded) == 2 and set(loaded[0].record.models if loaded[0].record else []) & set(
        loaded[1].record.models if loaded[1].record else []
    ):
        paired(*loaded)


def paired(a: runs.Run, b: runs.Run) -> None:
    """Run B − run A on the questions both scored (same model and variant names, drawn alike)."""
    from measure.report import render, tables

    apart = drawn_apart(a, b)
    table = tables.compare_runs(*([p for p in run.predictions if p.variant not in apart] for run in (a, b)))
    if table.empty:
        fail(f"{a.id} and {b.id} share no scored (question, model, variant) drawn alike")
    for v, (da, db) in sorted(apart.items()):
        typer.echo(f"`{v}` left out: its clips were drawn as {da} in {a.id} and as {db} in {b.id}.", err=True)
    typer.echo(
        f"\n# {b.id} − {a.id} (95 % CI resampling videos; p_mcnemar on questions, p_video sign-flip on videos, "
        f"p_holm over these {len(table)} tests)\n"
    )
    typer.echo(render.markdown(table))
    served = {run.id: run.record.serving() if run.record else "unknown (no run.json)" for run in (a, b)}
    if len(set(served.values())) > 1:
        typer.echo(
            "\nServed differently: "
            + "; ".join(f"{rid}: {how}" for rid, how in served.items())
            + ". Outside batch invariance an answer can change with its batch and with prefix-cache hits, "
            "so part of a difference may be the serving, not the model."
        )


def drawn_apart(a: runs.Run, b: runs.Run) -> dict[str, tuple[str, str]]:
    """The variants two runs share whose clips were drawn differently: variant -> (a's, b's)."""
    da, db = (run.record.drawings or {} if run.record else {} for run in (a, b))
    return {v: (da[v], db[v]) for v in set(da) & set(db) if da[v] != db[v]}


@dataclass
class PowerOptions:
    data: Path = option(help="A prepared dataset (data/NAME).")
    delta: float = option(3.0, "The difference to detect, in accuracy points.")
    discordance: float = option(
        20.0, "Assumed % of questions whose correctness differs between the two sides (--run measures it)."
    )
    run: Path | None = option(
        None,
        "A pilot run (folder or id): use the discordance and design effect measured on its comparisons.",
        shown="none: the assumed --discordance",
    )
    split: str = option("test", "Question split to count.")
    where: RunsDir = group(RunsDir)


@command(app, PowerOptions, name="power")
def power_cmd(o: PowerOptions) -> None:
    """How many questions and videos a paired comparison needs to detect DELTA points
    (two-sided alpha 0.05, power 80 %), and the smallest effect this dataset can detect."""
    from measure import report
    from measure.report import power, render, stats

    if not 0 < o.delta <= 100 or not 0 < o.discordance <= 100:
        fail(f"--delta ({o.delta:g}) and --discordance ({o.discordance:g}) are percentages in (0, 100]")
    questions, rejected = load_questions(DataLayout(o.data).questions)
    questions = [q for q in questions if q.split == o.split]
    if not questions:
        fail(f"{DataLayout(o.data).questions}: no valid questions in split {o.split!r}")
    if o.run is not None:
        pilot = runs.load(o.where.find(o.run))
        scenarios = power.pilot(report.build(pilot))
        if not scenarios:
            fail(f"{pilot.id}: no cued − plain or adapter − base comparison with a changed answer to measure")
        source = f"discordance and design effect measured on {pilot.id}"
    else:
        scenarios = power.assumed(o.discordance / 100)
        source = f"assumed discordance {o.discordance:g} % (measure it on a pilot run with --run)"
    videos = len({q.video_id for q in questions})
    typer.echo(
        f"{o.data} ({o.split}): {len(questions)} questions on {videos} videos"
        + (f"; {len(rejected)} invalid row(s) skipped" if rejected else "")
    )
    typer.echo(
        f"To detect {o.delta:g} pts (two-sided alpha {stats.ALPHA:g}, power {stats.POWER:.0%}), {source}; "
        "mde: the smallest effect this many questions detect.\n"
    )
    t = power.table(questions, o.delta / 100, scenarios)
    typer.echo(render.markdown(t))
    if t["questions_needed"].isna().any():
        typer.echo(
            f"\nquestions_needed n/a: {o.delta:g} pts is more than the discordance, and only questions whose "
            "answer changes can move accuracy."
        )
    if t["mde"].isna().any():
        typer.echo("mde n/a: at this size and discordance no effect is detectable.")


@dataclass
class CalibrateOptions:
    target: OneRun = group(OneRun)
    sims: int = option(1000, "Simulations per comparison.")
    effect: float | None = option(
        None, "The effect to plant in every comparison, in accuracy points.", shown="each comparison's reported MDE"
    )
    seed: int = option(0, "Seed of the simulations.")


@command(app, CalibrateOptions, name="calibrate")
def calibrate_cmd(o: CalibrateOptions) -> None:
    """Simulate runs like this one (a model fitted to each comparison: per-video accuracy and
    discordance as observed) with no difference, with a mean-zero but skewed one and with a
    planted one, and score each as the report does: the tests' false-positive rate (per
    comparison and per Holm family), power beside its prediction, and how often the 95 %
    intervals hold the truth. Writes calibration.json and the report's Calibration section."""
    from core import progress, runfiles
    from measure import report
    from measure.report import calibrate, render

    if o.sims < 1 or (o.effect is not None and not 0 < o.effect <= 100):
        fail(f"--sims ({o.sims}) must be at least 1 and --effect ({o.effect}) in (0, 100] points")
    run = runs.load(o.target.layout)
    chosen = calibrate.groups(run)
    with progress.bar("calibrating", len(chosen), "pairings") as advance:
        run.calibration = calibrate.calibrate(run, o.sims, o.effect, o.seed, advance, chosen)
    if not run.calibration.comparisons:
        fail(f"{run.id}: no paired comparison to calibrate")
    runfiles.write(run.layout.calibration, run.calibration)
    r = report.write(run)
    typer.echo(render.calibration_markdown(r))
    typer.echo(f"calibration: {run.layout.calibration}; reports: {run.layout.report_md}", err=True)


@dataclass
class JudgeOptions:
    target: OneRun = group(OneRun)
    judge_model: str | None = option(
        None,
        "Served model that judges, or exact-match (normalised exact match: no model).",
        shown="the run's base model",
    )
    server: Server = group(Server, shown={"base_url": "the run's first server"})
    judge_format: Literal["auto", "schema", "text"] = option(
        "auto",
        "How the judge replies: schema (JSON schema, `response_format`), text (parsed from 'yes 4'), or auto "
        "(the schema, read as text where the server ignores it, text from the first refusal on).",
    )
    concurrency: int = option(16, "Judge calls in flight.")
    data: Path | None = option(
        None, "The dataset, when run.json's path no longer points to it.", shown="the run's dataset"
    )


@command(app, JudgeOptions, name="judge")
def judge_cmd(o: JudgeOptions) -> None:
    """Judge the run's open-question answers (yes/no and a 0-5 score through a JSON schema),
    append them to judgements.jsonl, and rewrite the reports; judge errors are asked again."""
    from measure import report
    from measure.report import render
    from measure.score import judge as judging

    run = runs.load(o.target.layout, data=o.data)
    done = judging.judge_run(run, o.judge_model, o.server.base_url, o.server.api_key, o.concurrency, o.judge_format)
    if done.unjudgeable:
        warn(f"{done.unjudgeable} prediction(s) not judged: their question is not in {run.data}")
    r = report.write(run)
    typer.echo(render.markdown(r.open_accuracy))
    typer.echo(
        f"judge {done.judge} at {done.url or 'no server'}: {done.asked} judged; judgements: {run.layout.judgements}; "
        f"reports: {run.layout.report_md}",
        err=True,
    )
    if done.failed:
        warn(f"{done.failed} judge error(s): counted apart (never a no); ask them again with the same command")
        raise typer.Exit(1)


@dataclass
class ViewOptions:
    target: OneRun = group(OneRun)
    run_b: Path | None = argument(None, "A second run: adds the fixed / regressed buckets.")
    data: Path | None = option(
        None,
        "The dataset, when run.json's path no longer points to it (question text and clips).",
        shown="the run's dataset",
    )
    open_page: bool = option(False, "Open the page in the default browser.", flags=("--open",))


@command(app, ViewOptions, name="view")
def view_cmd(o: ViewOptions) -> None:
    """Write runs/<id>/index.html: the run as one static page (overview, samples, frames sent)."""
    from core import progress
    from measure.report import view

    a = view.load(o.target.layout, o.target.runs.runs_dir, o.data)
    b = view.load(o.target.runs.find(o.run_b), o.target.runs.runs_dir, o.data) if o.run_b is not None else None
    if a.data is None:
        warn(f"{a.id}: its dataset is not found (give --data): no question text, every clip missing")
    with progress.bar("thumbnails", None, "clips") as advance:  # stdout: the page's path
        page = view.write(a, b, lambda n, total: advance(total=total))
    typer.echo(page)
    if o.open_page:
        webbrowser.open(page.resolve().as_uri())


@command(app, ProfileOptions, name="profile")
def profile_cmd(o: ProfileOptions) -> None:
    """A model's serving profile, on servers it starts (the SmolVLM2 test plan's phases 3-4): time to
    ready, latency by input kind, memory, throughput, a leak check, dtypes, repeatability, edge
    inputs; profile.json, profile.md (targets met / not met) and plots."""
    from measure.profile import run as profiling

    if problems := o.problems():
        fail("; ".join(problems))
    profiling.profile(o, typer.echo)
    typer.echo(f"profile: {o.out / 'profile.md'} (from {o.out / 'profile.json'})", err=True)


@command(app, OneRun, name="rescore")
def rescore_cmd(o: OneRun) -> None:
    """Score every stored reply of a run again with the current scorer (no server), then
    rewrite its reports; a second rescore changes nothing."""
    from measure import report
    from measure.score.rescore import rescore

    run = runs.load(o.layout)
    done = rescore(run)
    report.write(run)
    typer.echo(
        f"{run.id}: {done.rows} predictions rescored, {done.changed} changed ({done.flipped} changed "
        f"correctness); reports: {run.layout.report_md}"
    )


if __name__ == "__main__":
    main(app)
