"""`python -m measure`: score every served model x clip variant on a prepared dataset."""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from measure import client, report
from measure.client import AskConfig, Item, SetupError
from measure.store import PredictionStore
from prepare.schema import DataError, DataLayout, Prediction, load_questions
from prepare.variants import BLIND
from serve.profiles import Profile, profile_for

app = typer.Typer(add_completion=False, help=__doc__)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def plan(
    layout: DataLayout, models: list[str], variants: list[str], split: str, limit: int | None,
    rejected: list[str] | None = None,
) -> list[Item]:
    """Every (question, model, variant) to ask, clip by clip, so a clip's questions go out
    together. Bad question rows are left out; their messages go to `rejected`."""
    valid, bad = load_questions(layout.questions)
    if rejected is not None:
        rejected += bad
    questions = [q for q in valid if q.split == split]
    if limit is not None:
        questions = questions[:limit]
    if not questions:
        raise DataError(f"{layout.questions}: no questions in split {split!r}")
    items = [Item(q, m, v, None if v == BLIND else layout.clip(v, q.video_id))
             for v in variants for q in questions for m in models]
    return sorted(items, key=lambda i: (i.variant, i.question.video_id, i.model, i.question.id))


def _server_info(base_url: str, models: list[dict]) -> dict:
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        version = httpx.get(f"{root}/version", timeout=4).json().get("version")
    except (httpx.HTTPError, ValueError):
        version = None
    return {"url": base_url, "version": version, "models": models}


def profiles_of(models: list[dict]) -> dict[str, Profile]:
    """Request profile per served model, from its root (an adapter: its base model's root)."""
    roots = {m["id"]: m.get("root") or m["id"] for m in models}
    return {m["id"]: profile_for(roots.get(m.get("parent") or "", roots[m["id"]])) for m in models}


def parents_of(run_info: dict) -> dict[str, str | None]:
    """served model -> its base model (None for a base), from what the servers listed."""
    return {m["id"]: m.get("parent") for s in run_info.get("servers", []) for m in s.get("models", [])}


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
    media: Annotated[str, typer.Option(help="data (base64 inline) or file (file:// URLs; server needs --allowed-local-media-path).")] = "data",
    client_frames: Annotated[int, typer.Option(help="Frames sampled client-side for image-only model families (SmolVLM).")] = 8,
    run_id: Annotated[Optional[str], typer.Option(help="Run folder name; an existing run is resumed.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Resume this run id.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go.")] = Path("runs"),
    timeout: Annotated[float, typer.Option(help="Seconds per request before a retry.")] = 120.0,
    max_attempts: Annotated[int, typer.Option(help="Attempts per request (bounded exponential backoff).")] = 4,
) -> None:
    """Ask every question of the split, for every model x variant; print the reports."""
    if ctx.invoked_subcommand is not None:
        return
    if answer_format not in ("text", "letters"):
        _fail(f"--answer-format must be text or letters, not {answer_format!r}")
    if media not in ("data", "file"):
        _fail(f"--media must be data or file, not {media!r}")
    urls = [u.rstrip("/") for u in (base_url or ["http://127.0.0.1:8000/v1"])]
    layout = DataLayout(data)
    try:
        if not layout.questions.is_file():
            raise DataError(f"{data}: not a prepared dataset (no questions.jsonl); make one with `python -m prepare`")
        served = [client.list_models(u, api_key) for u in urls]
        wanted = _csv(models) or [m["id"] for m in served[0]]
        for u, listed in zip(urls, served):
            unknown = sorted(set(wanted) - {m["id"] for m in listed})
            if unknown:
                raise SetupError(f"{u} does not serve {unknown}; it serves {[m['id'] for m in listed]}")
        on_disk = layout.variants()
        chosen = _csv(variants) or on_disk
        missing = sorted(set(chosen) - set(on_disk))
        if missing or not chosen:
            raise DataError(f"{data}: no clips for variant(s) {missing or chosen}; on disk: {on_disk}")
        rejected: list[str] = []
        items = plan(layout, wanted, chosen, split, limit, rejected)
    except (SetupError, DataError) as e:
        _fail(str(e))
    for message in rejected:
        typer.secho(f"skipped question: {message}", fg="yellow", err=True)

    rid = resume or run_id or f"{data.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    store = PredictionStore(runs_dir / rid)
    if resume and not store.path.is_file():
        _fail(f"nothing to resume: {store.path} does not exist")
    done = store.load()
    retry = {i.key for i in items if i.key in done and done[i.key].status == "error"}
    store.drop(retry)  # asked again below; the file keeps one line per item
    todo = [i for i in items if i.key not in done or i.key in retry]
    cfg = AskConfig(answer_format=answer_format, timeout_s=timeout, max_attempts=max_attempts, frames=frames,  # type: ignore[arg-type]
                    media=media, profiles=profiles_of(served[0]), client_frames=client_frames)  # type: ignore[arg-type]
    info = store.read_run()
    info |= {
        "run_id": rid,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in ctx.params.items()} | {"base_url": urls},
        "ask": asdict(cfg),
        "models": wanted,
        "variants": chosen,
        "split": split,
        "rejected_questions": rejected,
        "dataset": {"path": str(data), "manifest_sha256": _sha256(layout.manifest)},
        "servers": [_server_info(u, m) for u, m in zip(urls, served)],
        "frames": {"per_request": frames, "server_wide": None if frames else "the server's setting (serve --frames, default 8); see prompt_tokens"},
        "sessions": info.get("sessions", []) + [{"started": _now(), "to_send": len(todo), "retried_errors": len(retry)}],
    }
    info.setdefault("started", info["sessions"][0]["started"])
    store.write_run(info)
    typer.echo(f"run {rid}: {len(items)} items, {len(items) - len(todo)} already done, {len(todo)} to send "
               f"({len(wanted)} model(s) x {len(chosen)} variant(s))", err=True)

    sent, send_s = 0, 0.0
    interrupted = False
    down: str | None = None
    store.open()
    try:
        if todo:
            problem = asyncio.run(client.warm_up(urls[0], api_key, wanted[0]))
            if problem:
                typer.secho(f"warning: warm-up request failed ({problem}); going on", fg="yellow", err=True)
            start = time.perf_counter()
            sent = _send(todo, urls, api_key, cfg, concurrency, store)
            send_s = time.perf_counter() - start
    except KeyboardInterrupt:
        interrupted = True
    except client.ServerUnavailable as e:
        down = str(e)
    finally:
        store.close()
    preds = store.load()
    info["sessions"][-1] |= {"ended": _now(), "answered": sent if not interrupted else None, "send_s": round(send_s, 3),
                             "req_per_s": round(sent / send_s, 2) if send_s else None}
    kept = [preds[i.key] for i in items if i.key in preds]
    n_err = sum(p.status == "error" for p in kept)
    store.write_run(info | {"ended": _now(), "complete": len(kept) == len(items) and n_err == 0})
    r = report.build(kept, parents_of(info))
    report.write(store.run_dir, r)
    typer.echo(report.render_markdown(r))
    for warning in r.warnings:
        typer.secho(warning, fg="yellow", bold=True, err=True)
    typer.echo(f"predictions: {store.path}; reports: {store.run_dir}/report.md", err=True)
    if interrupted:
        typer.secho(f"interrupted: {len(kept)} of {len(items)} answers are saved; finish with --resume {rid}", fg="yellow", err=True)
        raise typer.Exit(130)
    if down:
        typer.secho(f"error: {down}. {len(kept) - n_err} answers are saved; once the server is back, "
                    f"finish with --resume {rid}", fg="red", err=True)
        raise typer.Exit(3)
    if n_err:
        typer.secho(f"{n_err} item(s) ended as errors (kept apart, not counted wrong); ask them again with --resume {rid}",
                    fg="yellow", err=True)
        raise typer.Exit(1)


def _send(todo: list[Item], urls: list[str], api_key: str | None, cfg: AskConfig, concurrency: int, store: PredictionStore) -> int:
    columns = (TextColumn("asking"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]} req/s"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("ask", total=len(todo), rate="-")

        def on_result(pred: Prediction) -> None:
            store.append(pred)
            t = progress.tasks[task]
            rate = (t.completed + 1) / t.elapsed if t.elapsed else 0.0
            progress.update(task, advance=1, rate=f"{rate:.1f}")

        asyncio.run(client.run_items(todo, urls, api_key, cfg, concurrency, on_result))
        return int(progress.tasks[task].completed)


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _run_dir(run: Path) -> Path:
    run_dir = run if run.is_dir() else Path("runs") / run
    if not (run_dir / "predictions.jsonl").is_file():
        _fail(f"{run_dir}: no predictions.jsonl")
    return run_dir


@app.command("report")
def report_cmd(runs: Annotated[list[Path], typer.Argument(help="Run folders (or ids under runs/).")]) -> None:
    """Recompute a run's reports from its predictions alone (nothing is asked again)."""
    for run in runs:
        store = PredictionStore(_run_dir(run))
        r = report.build(store.load().values(), parents_of(store.read_run()))
        report.write(store.run_dir, r)
        typer.echo(f"# {store.run_dir.name}\n\n{report.render_markdown(r)}")


@app.command("compare")
def compare_cmd(
    run_a: Annotated[Path, typer.Argument(help="Run A (folder or id).")],
    run_b: Annotated[Path, typer.Argument(help="Run B (folder or id).")],
) -> None:
    """Run B − run A on the questions both scored (same model and variant names)."""
    a, b = PredictionStore(_run_dir(run_a)), PredictionStore(_run_dir(run_b))
    table = report.compare_runs(a.load().values(), b.load().values())
    if table.empty:
        _fail(f"{a.run_dir.name} and {b.run_dir.name} share no scored (question, model, variant)")
    typer.echo(f"# {b.run_dir.name} − {a.run_dir.name} (paired bootstrap 95 % CI, exact McNemar)\n")
    typer.echo(report.markdown(table))


if __name__ == "__main__":
    sys.exit(app())
