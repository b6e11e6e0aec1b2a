"""A measure run's planning and bookkeeping: its options (one declaration, the CLI is built
from them), what to ask, what is already answered, and run.json."""
from __future__ import annotations

import asyncio
import datetime as dt
import time
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import httpx
import pandas as pd
from pydantic_core import to_jsonable_python
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from core import serverinfo
from core.cli import comma_list, group, option, pairs
from core.defaults import BASE_URL, DATASET, RUNS_ROOT
from core.errors import DataError
from core.files import sha256
from core.layout import DataLayout, RunLayout
from core.profiles import Profile, profile_for
from core.records import Prediction, load_questions
from core.runfiles import RunRecord, Session
from core.variants import BLIND
from measure import client, health, media, reference
from measure.client import AskConfig, Item, SetupError
from measure.store import PredictionStore


@dataclass
class RunOptions:
    """Every option of `python -m measure`."""

    data: Path = option(DATASET, "Prepared dataset directory.")
    base_url: list[str] = option(factory=lambda: [BASE_URL], help="Server URL; repeat to spread requests over several.",
                                 metavar="URL")
    api_key: str | None = option(None, "API key the server requires.", envvar="VLLM_API_KEY")
    models: Sequence[str] | None = option(None, "Comma-separated served models. Default: all the server lists.",
                                          parser=comma_list, metavar="NAME,...")
    variants: Sequence[str] | None = option(None, "Comma-separated clip variants. Default: all on disk.",
                                            parser=comma_list, metavar="NAME,...")
    split: str = option("test", "Question split to score.")
    limit: int | None = option(None, "Only the first N questions.")
    concurrency: int = option(32, "Requests in flight.")
    ask: AskConfig = group(AskConfig)
    reference: Path | None = option(None, "A published table to show beside ours (CSV: model, videos, object_acc, "
                                    "verb_acc, overall_acc; e.g. measure/references/visual_cues_qwen3_vl_2b.csv).")
    reference_models: dict[str, str] | None = option(None, "Its model labels as served models, e.g. pretrained=base,"
                                                     "finetuned=lora (default: pretrained = the base model, finetuned "
                                                     "= its one adapter).", parser=pairs, metavar="LABEL=NAME,...")
    run_id: str | None = option(None, "Run folder name; an existing run is resumed.")
    resume: str | None = option(None, "Resume this run id.")
    runs_dir: Path = option(RUNS_ROOT, "Where run folders go.")

    @property
    def urls(self) -> list[str]:
        return [u.rstrip("/") for u in self.base_url]


@dataclass
class Plan:
    """What one invocation asks: the checked setup and every item."""

    items: list[Item]
    models: list[str]
    variants: list[str]
    served: list[list[dict]]  # /v1/models per base URL
    rejected: list[str]  # bad question rows, file:line and reason
    cfg: AskConfig  # the request settings, with each served model's profile and video processor
    published: pd.DataFrame | None = None  # --reference, read
    published_models: dict[str, str] | None = None  # its model labels -> served models, resolved


def plan(layout: DataLayout, models: list[str], variants: list[str], split: str, limit: int | None,
         rejected: list[str] | None = None) -> list[Item]:
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


def check(opts: RunOptions) -> Plan:
    """The setup checked before anything is asked: dataset, servers, models, variants.
    Raises DataError or SetupError naming what is wrong."""
    layout = DataLayout(opts.data)
    if not layout.questions.is_file():
        raise DataError(f"{opts.data}: not a prepared dataset (no questions.jsonl); make one with `python -m prepare`")
    served = [client.list_models(u, opts.api_key) for u in opts.urls]
    wanted = list(opts.models or [m["id"] for m in served[0]])
    for u, listed in zip(opts.urls, served):
        unknown = sorted(set(wanted) - {m["id"] for m in listed})
        if unknown:
            raise SetupError(f"{u} does not serve {unknown}; it serves {[m['id'] for m in listed]}")
    on_disk = layout.variants()
    chosen = list(opts.variants or on_disk)
    missing = sorted(set(chosen) - set(on_disk))
    if missing or not chosen:
        raise DataError(f"{opts.data}: no clips for variant(s) {missing or chosen}; on disk: {on_disk}")
    published, names = None, None
    if opts.reference is not None:  # read and matched to the served models now, not after the asking
        published = reference.read(opts.reference)
        names = reference.model_names(published, {m["id"]: m.get("parent") for m in served[0]}, opts.reference_models)
    rejected: list[str] = []
    items = plan(layout, wanted, chosen, opts.split, opts.limit, rejected)
    return Plan(items, wanted, chosen, served, rejected, ask_config(opts.ask, served[0], wanted), published, names)


def roots_of(models: list[dict]) -> dict[str, str]:
    """Served model -> the model it runs on: its root, an adapter's base model's root."""
    roots = {m["id"]: m.get("root") or m["id"] for m in models}
    return {m["id"]: roots.get(m.get("parent") or "", roots[m["id"]]) for m in models}


def profiles_of(models: list[dict]) -> dict[str, Profile]:
    """Request profile per served model, from the model it runs on."""
    return {name: profile_for(root) for name, root in roots_of(models).items()}


def ask_config(cfg: AskConfig, listed: list[dict], wanted: list[str]) -> AskConfig:
    """`cfg` with each served model's profile and, for --media frames, the video processor that
    sizes its frames; SetupError when a video model has none and no --frame-size is given, or
    when --sampling asks a processor that a model lacks."""
    profiles = profiles_of(listed)
    processors: dict[str, str | None] = {}
    if cfg.media == "frames":
        roots = roots_of(listed)
        video = [m for m in wanted if profiles[m].video_as == "video"]
        processors = {m: media.find_processor(roots[m]) for m in video}
        lacking = [f"{m} ({roots[m]})" for m in video if processors[m] is None]
        if lacking and cfg.frame_size is None:
            raise SetupError(f"--media frames: no video processor found for {', '.join(lacking)} (not a local model "
                             "directory, nor in the Hugging Face cache); pass --frame-size WxH or use --media data")
        unsampled = [f"{m} ({roots[m]})" for m in wanted if processors.get(m) is None]
        if cfg.sampling in ("processor", "study") and unsampled:
            raise SetupError(f"--sampling {cfg.sampling} asks the model's video processor which frames to send, and "
                             f"{', '.join(unsampled)} has none here; use --sampling centers or uniform")
    return replace(cfg, profiles=profiles, processors=processors)


def _server_info(base_url: str, models: list[dict]) -> dict:
    """What is known of a server: vLLM's version, its models and, when `serve run` started it
    on this machine, its arguments, start-up times and memory once ready."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        version = httpx.get(f"{root}/version", timeout=4).json().get("version")
    except (httpx.HTTPError, ValueError):
        version = None
    info = serverinfo.lookup(base_url)
    return {"url": base_url, "version": version, "models": models, "serve": asdict(info) if info else None}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Opened:
    """A run ready to send: its store, its record (this session appended) and what is left."""

    store: PredictionStore
    record: RunRecord
    todo: list[Item]

    @property
    def rid(self) -> str:
        return self.store.layout.id


def open_run(opts: RunOptions, p: Plan) -> Opened:
    """Create or resume the run folder: items already answered are not asked again, earlier
    errors are (their lines dropped so each item keeps one line); run.json gets this session."""
    rid = opts.resume or opts.run_id or f"{opts.data.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    store = PredictionStore(RunLayout(opts.runs_dir / rid))
    if opts.resume and not store.path.is_file():
        raise DataError(f"nothing to resume: {store.path} does not exist")
    done = store.load()
    retry = {i.key for i in p.items if i.key in done and done[i.key].status == "error"}
    store.drop(retry)  # asked again below; the file keeps one line per item
    todo = [i for i in p.items if i.key not in done or i.key in retry]
    earlier = store.read_run()
    session = Session(started=now(), to_send=len(todo), retried_errors=len(retry))
    sessions = (earlier.sessions if earlier else []) + [session]
    options = to_jsonable_python(opts, exclude={"ask", "api_key"}) | {"base_url": opts.urls}  # never the key
    cfg = p.cfg
    record = RunRecord(
        run_id=rid, started=earlier.started if earlier else session.started, config=options, ask=to_jsonable_python(cfg),
        models=p.models, variants=p.variants, split=opts.split, rejected_questions=p.rejected,
        dataset={"path": str(opts.data), "manifest_sha256": sha256(DataLayout(opts.data).manifest)},
        servers=[_server_info(u, m) for u, m in zip(opts.urls, p.served)],
        frames={"server_wide": None if cfg.media == "frames" or cfg.frames else  # the rest is in `ask`
                "the server's setting (serve --frames); see prompt_tokens"},
        sessions=sessions,
    )
    store.write_run(record)
    return Opened(store, record, todo)


def send(todo: list[Item], urls: list[str], api_key: str | None, cfg: AskConfig, concurrency: int,
         store: PredictionStore, pool: Executor) -> int:
    """Ask every item with a progress bar, appending each prediction as it comes (media
    prepared in `pool`); returns how many were answered."""
    columns = (TextColumn("asking"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]} req/s"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("ask", total=len(todo), rate="-")

        def on_result(pred: Prediction) -> None:
            store.append(pred)
            t = progress.tasks[task]
            rate = (t.completed + 1) / t.elapsed if t.elapsed else 0.0
            progress.update(task, advance=1, rate=f"{rate:.1f}")

        asyncio.run(client.run_items(todo, urls, api_key, cfg, concurrency, on_result, pool))
        return int(progress.tasks[task].completed)


@dataclass
class Outcome:
    """How a session ended: the predictions kept for the plan's items and why it stopped."""

    kept: list[Prediction]
    errors: int
    interrupted: bool
    down: str | None  # every server stopped answering: what was seen


def execute(opts: RunOptions, p: Plan, run: Opened, warn) -> Outcome:
    """Send what is left (after one warm-up request per server and once the media workers have
    started), then close the session in run.json. A server that refuses the per-request media
    settings the run needs is a SetupError before anything is asked or started."""
    sent, send_s = 0, 0.0
    interrupted, down = False, None
    run.store.open()
    try:
        if run.todo:
            for url in opts.urls:
                problem = asyncio.run(client.self_test(url, opts.api_key, p.models[0], p.cfg.sends_media_io))
                if problem:
                    warn(f"warning: self-test request to {url} failed ({problem}); going on")
            with media.worker_pool(p.cfg.media_workers, p.cfg.processors.values()) as pool, \
                    health.Sampler(opts.urls) as sampler:
                start = time.perf_counter()
                try:
                    sent = send(run.todo, opts.urls, opts.api_key, p.cfg, opts.concurrency, run.store, pool)
                finally:
                    send_s = time.perf_counter() - start
                    run.record.sessions[-1].health = sampler.result()
    except KeyboardInterrupt:
        interrupted = True
    except client.ServerUnavailable as e:
        down = str(e)
    finally:
        run.store.close()
    preds = run.store.load()
    kept = [preds[i.key] for i in p.items if i.key in preds]
    errors = sum(pr.status == "error" for pr in kept)
    s = run.record.sessions[-1]
    s.ended, s.answered, s.send_s = now(), None if interrupted else sent, round(send_s, 3)
    s.req_per_s = round(sent / send_s, 2) if send_s else None
    run.record.ended = now()
    run.record.complete = len(kept) == len(p.items) and errors == 0
    run.store.write_run(run.record)
    return Outcome(kept, errors, interrupted, down)
