"""`python -m measure`: score every served model x clip variant on a prepared dataset."""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from measure import client, report
from measure.client import AskConfig, Item, SetupError
from measure.store import PredictionStore
from prepare.schema import DataError, DataLayout, read_questions

app = typer.Typer(add_completion=False, help=__doc__)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def plan(
    layout: DataLayout, models: list[str], variants: list[str], split: str, limit: int | None
) -> list[Item]:
    """Every (question, model, variant) to ask, clip by clip, so a clip's questions go out together."""
    questions = [q for q in read_questions(layout.questions) if q.split == split]
    if limit is not None:
        questions = questions[:limit]
    if not questions:
        raise DataError(f"{layout.questions}: no questions in split {split!r}")
    items = [
        Item(q, m, v, layout.clip(v, q.video_id))
        for v in variants
        for q in sorted(questions, key=lambda q: (q.video_id, q.id))
        for m in models
    ]
    return sorted(items, key=lambda i: (i.variant, i.question.video_id, i.model, i.question.id))


def _server_info(base_url: str, models: list[dict]) -> dict:
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        version = httpx.get(f"{root}/version", timeout=4).json().get("version")
    except (httpx.HTTPError, ValueError):
        version = None
    return {"url": base_url, "version": version, "models": models}


@app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option(help="Prepared dataset directory.")] = Path("data/synthetic"),
    base_url: Annotated[Optional[list[str]], typer.Option(help="Server URL; repeat to spread requests over several.")] = None,
    api_key: Annotated[Optional[str], typer.Option(envvar="VLLM_API_KEY")] = None,
    models: Annotated[Optional[str], typer.Option(help="Comma-separated served models. Default: all the server lists.")] = None,
    variants: Annotated[Optional[str], typer.Option(help="Comma-separated clip variants. Default: all on disk.")] = None,
    split: Annotated[str, typer.Option(help="Question split to score.")] = "test",
    limit: Annotated[Optional[int], typer.Option(help="Only the first N questions.")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 32,
    answer_format: Annotated[str, typer.Option(help="text (the choice strings) or letters (A-D, with probabilities).")] = "text",
    frames: Annotated[Optional[int], typer.Option(help="Frames per clip, sent per request (server needs --trust-request-mm-kwargs).")] = None,
    run_id: Annotated[Optional[str], typer.Option(help="Run folder name; an existing run is resumed.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Resume this run id.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go.")] = Path("runs"),
    timeout: Annotated[float, typer.Option(help="Seconds per request before a retry.")] = 120.0,
) -> None:
    """Ask every question of the split, for every model x variant; print the accuracy table."""
    if ctx.invoked_subcommand is not None:
        return
    if answer_format not in ("text", "letters"):
        _fail(f"--answer-format must be text or letters, not {answer_format!r}")
    urls = base_url or ["http://127.0.0.1:8000/v1"]
    layout = DataLayout(data)
    try:
        served = [client.list_models(u, api_key) for u in urls]
        names = [m["id"] for m in served[0]]
        wanted = _csv(models) or names
        for u, listed in zip(urls, served):
            unknown = sorted(set(wanted) - {m["id"] for m in listed})
            if unknown:
                raise SetupError(f"{u} does not serve {unknown}; it serves {[m['id'] for m in listed]}")
        on_disk = layout.variants()
        chosen = _csv(variants) or on_disk
        missing = sorted(set(chosen) - set(on_disk))
        if missing or not chosen:
            raise DataError(f"{data}: no clips for variant(s) {missing or chosen}; on disk: {on_disk}")
        items = plan(layout, wanted, chosen, split, limit)
    except (SetupError, DataError) as e:
        _fail(str(e))

    rid = resume or run_id or f"{data.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    store = PredictionStore(runs_dir / rid)
    if resume and not store.path.is_file():
        _fail(f"nothing to resume: {store.path} does not exist")
    done = store.load()
    todo = [i for i in items if i.key not in done]
    cfg = AskConfig(answer_format=answer_format, timeout_s=timeout, frames=frames)  # type: ignore[arg-type]
    info = store.read_run() | {
        "run_id": rid,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in ctx.params.items()} | {"base_url": urls},
        "ask": asdict(cfg),
        "models": wanted,
        "variants": chosen,
        "dataset": {"path": str(data), "manifest_sha256": _sha256(layout.manifest)},
        "servers": [_server_info(u, m) for u, m in zip(urls, served)],
        "frames": {"per_request": frames, "server_wide": "set by `serve --frames`" if frames is None else None},
    }
    info.setdefault("started", _now())
    store.write_run(info)
    typer.echo(f"run {rid}: {len(items)} items ({len(done)} already done), {len(wanted)} model(s) x {len(chosen)} variant(s)", err=True)

    store.open()
    interrupted = False
    try:
        if todo:
            if answer_format == "letters":
                asyncio.run(client.warm_up(urls[0], api_key, wanted[0]))
            _send(todo, urls, api_key, cfg, concurrency, store)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        store.close()
    preds = store.load()
    store.write_run(info | {"ended": _now(), "complete": all(i.key in preds for i in items)})
    kept = {i.key for i in items}
    table = report.write_reports(store.run_dir, [p for k, p in preds.items() if k in kept])
    typer.echo(report.markdown(table))
    typer.echo(f"\npredictions: {store.path}", err=True)
    if interrupted:
        typer.secho(f"interrupted: answers so far are saved; finish with --resume {rid}", fg="yellow", err=True)
        raise typer.Exit(130)


def _send(todo: list[Item], urls: list[str], api_key: str | None, cfg: AskConfig, concurrency: int, store: PredictionStore) -> None:
    columns = (TextColumn("asking"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]} req/s"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("ask", total=len(todo), rate="-")

        def on_result(pred) -> None:
            store.append(pred)
            t = progress.tasks[task]
            elapsed = t.elapsed or 0.0
            progress.update(task, advance=1, rate=f"{(t.completed + 1) / elapsed:.1f}" if elapsed else "-")

        asyncio.run(client.run_items(todo, urls, api_key, cfg, concurrency, on_result))


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@app.command("report")
def report_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (or ids under runs/).")],
) -> None:
    """Recompute and print the reports of finished runs from their predictions alone."""
    for run in runs:
        run_dir = run if run.is_dir() else Path("runs") / run
        store = PredictionStore(run_dir)
        if not store.path.is_file():
            _fail(f"{store.path}: no predictions")
        typer.echo(f"## {run_dir.name}\n")
        typer.echo(report.markdown(report.write_reports(run_dir, store.load().values())) + "\n")


if __name__ == "__main__":
    sys.exit(app())
