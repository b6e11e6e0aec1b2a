"""`python -m measure`: score every served model x clip variant on a prepared dataset."""
from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated, Optional

import typer

from core.cli import command, fail, main, pairs
from core.defaults import BASE_URL, RUNS_ROOT
from core.layout import DataLayout, RunLayout
from core.records import OPEN, load_questions
from measure import judge as judge_mod
from measure import power, render, report, stats, view
from measure import reference as ref_mod
from measure.run import RunOptions, check, execute, open_run
from measure.store import PredictionStore, dataset, judgement_store

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
    r = report.build(out.kept, opened.record.parents(), run=opened.record, published=p.published,
                     published_models=p.published_models)
    render.write(opened.store.layout, r)
    typer.echo(render.render_markdown(r))
    for warning in r.warnings:
        typer.secho(warning, fg="yellow", bold=True, err=True)
    typer.echo(f"predictions: {opened.store.path}; reports: {opened.store.layout.report_md}", err=True)
    if any(i.question.type == OPEN for i in p.items):
        typer.echo(f"open questions: judge them with `python -m measure judge {opened.store.layout.root}`", err=True)
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
    reference: Annotated[Optional[Path], typer.Option(help="A published table to show beside ours (default: the "
                                                      "run's --reference).")] = None,
    reference_models: Annotated[Optional[str], typer.Option(help="Its model labels as served models, "
                                                            "LABEL=NAME,...")] = None,
) -> None:
    """Recompute a run's reports from its predictions alone (nothing is asked again)."""
    for run in runs:
        store = _store(run, runs_dir)
        record = store.read_run()
        config = record.config if record else {}
        table = reference or (Path(config["reference"]) if config.get("reference") else None)
        names = pairs(reference_models) if reference_models else config.get("reference_models")
        r = report.build(store.load().values(), record.parents() if record else {},
                         judgement_store(store.layout).load().values(), run=record,
                         published=None if table is None else ref_mod.read(table), published_models=names)
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
    typer.echo(f"# {b.layout.id} − {a.layout.id} (95 % CI resampling videos; p_mcnemar on questions, p_video "
               f"sign-flip on videos, p_holm over these {len(table)} tests)\n")
    typer.echo(render.markdown(table))


@app.command("power")
def power_cmd(
    data: Annotated[Path, typer.Option(help="A prepared dataset (data/NAME).")],
    delta: Annotated[float, typer.Option(help="The difference to detect, in accuracy points.")] = 3.0,
    discordance: Annotated[float, typer.Option(
        help="Assumed % of questions whose correctness differs between the two sides (--run measures it).")] = 20.0,
    run: Annotated[Path | None, typer.Option(
        help="A pilot run (folder or id): use the discordance and design effect measured on its comparisons.")] = None,
    split: Annotated[str, typer.Option(help="Question split to count.")] = "test",
    runs_dir: RunsDir = RUNS_ROOT,
) -> None:
    """How many questions and videos a paired comparison needs to detect DELTA points
    (two-sided alpha 0.05, power 80 %), and the smallest effect this dataset can detect."""
    if not 0 < delta <= 100 or not 0 < discordance <= 100:
        fail(f"--delta ({delta:g}) and --discordance ({discordance:g}) are percentages in (0, 100]")
    questions, rejected = load_questions(DataLayout(data).questions)
    questions = [q for q in questions if q.split == split]
    if not questions:
        fail(f"{DataLayout(data).questions}: no valid questions in split {split!r}")
    if run is not None:
        store = _store(run, runs_dir)
        scenarios = power.pilot(report.build(store.load().values(), _parents(store)))
        if not scenarios:
            fail(f"{store.layout.id}: no cued − plain or adapter − base comparison with a changed answer to measure")
        source = f"discordance and design effect measured on {store.layout.id}"
    else:
        scenarios = power.assumed(discordance / 100)
        source = f"assumed discordance {discordance:g} % (measure it on a pilot run with --run)"
    videos = len({q.video_id for q in questions})
    typer.echo(f"{data} ({split}): {len(questions)} questions on {videos} videos"
               + (f"; {len(rejected)} invalid row(s) skipped" if rejected else ""))
    typer.echo(f"To detect {delta:g} pts (two-sided alpha {stats.ALPHA:g}, power {stats.POWER:.0%}), {source}; "
               "mde: the smallest effect this many questions detect.\n")
    t = power.table(questions, delta / 100, scenarios)
    typer.echo(render.markdown(t))
    if t["questions_needed"].isna().any():
        typer.echo(f"\nquestions_needed n/a: {delta:g} pts is more than the discordance, and only questions whose "
                   "answer changes can move accuracy.")
    if t["mde"].isna().any():
        typer.echo("mde n/a: at this size and discordance no effect is detectable.")


@app.command("judge")
def judge_cmd(
    run: Annotated[Path, typer.Argument(help="The run (folder or id).")],
    judge_model: Annotated[str | None, typer.Option(help="Served model that judges. Default: the run's base model.")] = None,
    judge_url: Annotated[str | None, typer.Option(help="Server of the judge. Default: the run's first server.")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key of the judge's server.", envvar="VLLM_API_KEY")] = None,
    concurrency: Annotated[int, typer.Option(help="Judge calls in flight.")] = 16,
    data: Annotated[Path | None, typer.Option(help="The dataset, when run.json's path no longer points to it.")] = None,
    runs_dir: RunsDir = RUNS_ROOT,
) -> None:
    """Judge the run's open-question answers (yes/no and a 0-5 score through a JSON schema),
    append them to judgements.jsonl, and rewrite the reports; judge errors are asked again."""
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from measure.client import list_models

    store = _store(run, runs_dir)
    record = store.read_run()
    if record is None:
        fail(f"{store.layout.run_json}: missing (the judge needs the run's servers and dataset)")
    predictions = list(store.load().values())
    if not any(p.type == OPEN for p in predictions):
        fail(f"{store.layout.id}: no open questions to judge")
    parents = record.parents()
    judge = judge_model or next((m for m in record.models if parents.get(m) is None), None)
    urls = record.config.get("base_url") or []
    url = (judge_url or (urls if isinstance(urls, str) else urls[0] if urls else BASE_URL)).rstrip("/")
    if judge is None:
        fail(f"{store.layout.id}: no base model among {record.models}; give --judge-model")
    served = [m["id"] for m in list_models(url, api_key)]
    if judge not in served:
        fail(f"judge {judge!r} is not served at {url} (it serves {', '.join(served)})")
    found = dataset(record, data)
    if found is None:
        fail(f"{store.layout.id}: its dataset {record.dataset.get('path')!r} is not found (the judge needs the "
             "questions); give --data")
    layout = DataLayout(found)
    questions = {q.id: q for q in load_questions(layout.questions)[0]}
    jstore = judgement_store(store.layout)
    pending = judge_mod.todo(predictions, jstore.load(), judge)
    items = [(p, questions[p.question_id]) for p in pending if p.question_id in questions]
    lost = len(pending) - len(items)
    if lost:
        _warn(f"{lost} prediction(s) not judged: their question is not in {layout.questions}")
    cfg = judge_mod.JudgeConfig(judge)
    if all(j["judge"] != judge for j in record.judges):
        record.judges.append(cfg.record(url))
        store.write_run(record)
    jstore.drop({(*p.key, judge) for p, _ in items})  # earlier judge errors: asked again, one line each
    typer.echo(f"judge {judge} at {url}: {len(items)} to judge", err=True)
    failed = 0
    columns = (TextColumn("judging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    jstore.open()
    try:
        with Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task("judge", total=len(items))

            def on_result(j) -> None:
                nonlocal failed
                jstore.append(j)
                failed += j.status != "ok"
                progress.advance(task)

            asyncio.run(judge_mod.judge_all(items, url, api_key, cfg, concurrency, on_result))
    finally:
        jstore.close()
    r = report.build(predictions, parents, jstore.load().values(), run=record)
    render.write(store.layout, r)
    typer.echo(render.markdown(r.open_accuracy))
    typer.echo(f"judgements: {jstore.path}; reports: {store.layout.report_md}", err=True)
    if failed:
        _warn(f"{failed} judge error(s): counted apart (never a no); ask them again with the same command")
        raise typer.Exit(1)


@app.command("view")
def view_cmd(
    run: Annotated[Path, typer.Argument(help="The run (folder or id).")],
    run_b: Annotated[Path | None, typer.Argument(help="A second run: adds the fixed / regressed buckets.")] = None,
    data: Annotated[Path | None, typer.Option(
        help="The dataset, when run.json's path no longer points to it (question text and clips).")] = None,
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
    runs_dir: RunsDir = RUNS_ROOT,
) -> None:
    """Write runs/<id>/index.html: the run as one static page (overview, samples, frames sent)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    a = view.load(RunLayout.find(run, runs_dir), data)
    b = view.load(RunLayout.find(run_b, runs_dir), data) if run_b is not None else None
    if a.data is None:
        _warn(f"{a.layout.id}: its dataset is not found (give --data): no question text, every clip missing")
    columns = (TextColumn("thumbnails"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:  # stdout: the page's path
        task = progress.add_task("thumbs", total=None)
        page = view.write(a, b, lambda n, total: progress.update(task, completed=n, total=total))
    typer.echo(page)
    if open_page:
        webbrowser.open(page.resolve().as_uri())


if __name__ == "__main__":
    main(app)
