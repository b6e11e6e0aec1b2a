"""A measure run's planning and bookkeeping: its options (one declaration, the CLI is built
from them), what to ask, what is already answered, run.json, and the send loop that scores
each reply as it comes (`measure.score`) and appends it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from core import progress, reference, runfiles, serverinfo
from core.ask import AskConfig
from core.chat import list_models
from core.errors import DataError, SetupError, Unreachable
from core.files import sha256
from core.frames import NEEDS_PROCESSOR, FrameSpec
from core.layout import AdapterLayout, DataLayout, RunLayout
from core.profiles import Profile, profile_for
from core.records import Prediction, load_questions
from core.runfiles import DatasetRecord, ReferenceRecord, RunRecord, ServedModel, ServerRecord, Session, TrainArgs
from core.store import PredictionStore
from core.urls import ServerUrl
from core.variants import CUED, DESCRIBED, DRAWINGS, DRAWINGS_V1, named
from measure import score
from measure.ask import client, health, media
from measure.ask.client import Item, Reply
from measure.ask.framestore import FrameStore
from measure.ask.options import PER_SERVER, RunOptions
from measure.ask.servers import RANK_HEADER, Servers


@dataclass
class Plan:
    """What one invocation asks: the checked setup and every item."""

    items: list[Item]
    models: list[str]
    variants: list[str]
    served: list[list[dict]]  # /v1/models per base URL ([] for one down at start)
    rejected: list[str]  # bad question rows, file:line and reason
    cfg: AskConfig  # the request settings, with each served model's profile and video processor
    reference: ReferenceRecord | None = None  # --reference, read and matched to the served models
    warnings: list[str] | None = None  # recorded in run.json and shown in the report
    down: list[ServerUrl] = field(default_factory=list)  # unreachable at start: taken in once they answer
    drawings: dict[str, str] = field(default_factory=dict)  # cued variant -> the drawing of its clips
    ranks: dict[ServerUrl, int] = field(default_factory=dict)  # data-parallel engines behind each URL up at start

    def concurrency(self, opts: RunOptions) -> int:
        """Requests in flight, all servers together: --concurrency, else PER_SERVER for each
        server and each data-parallel engine behind one."""
        return opts.concurrency or PER_SERVER * sum(self.ranks.get(u, 1) for u in opts.urls)


def plan(
    layout: DataLayout,
    models: list[str],
    variants: list[str],
    split: str,
    limit: int | None,
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
    items = [Item(q, m, v, layout.asked_with(v, q.video_id)) for v in variants for q in questions for m in models]
    return sorted(items, key=lambda i: (i.variant, i.question.video_id, i.model, i.question.id))


def check(opts: RunOptions) -> Plan:
    """The setup checked before anything is asked: dataset, servers, models, variants, frames,
    the reference table. Raises DataError or SetupError naming what is wrong."""
    layout = DataLayout(opts.data)
    if not layout.questions.is_file():
        raise DataError(f"{opts.data}: not a prepared dataset (no questions.jsonl); make one with `python -m prepare`")
    check_frames(opts.ask)
    check_engine(opts)
    served, down = reachable(opts.urls, opts.servers.api_key)
    first = next(listed for listed in served if listed)
    wanted = list(opts.models or [m["id"] for m in first])
    for u, listed in zip(opts.urls, served):
        if not listed:
            continue
        unknown = sorted(set(wanted) - {m["id"] for m in listed})
        if unknown:
            raise SetupError(f"{u} does not serve {unknown}; it serves {[m['id'] for m in listed]}")
    on_disk = layout.variants()
    chosen = list(opts.variants or on_disk)
    missing = sorted(set(chosen) - set(on_disk))
    if missing or not chosen:
        raise DataError(f"{opts.data}: no clips for variant(s) {missing or chosen}; on disk: {on_disk}")
    drawings = drawings_of(layout, chosen)
    parents = {m["id"]: m.get("parent") for m in first}
    pub = opts.published
    ref = None if pub.reference is None else reference.record(pub.reference, parents, pub.reference_models)
    rejected: list[str] = []
    items = plan(layout, wanted, chosen, opts.split, opts.limit, rejected)
    cfg = ask_config(opts.ask, first, wanted)
    ranks = {u: serverinfo.engines(u, opts.servers.api_key) for u in dict.fromkeys(opts.urls) if u not in down}
    warnings = adapter_frames(first, wanted, cfg)
    return Plan(items, wanted, chosen, served, rejected, cfg, ref, warnings, down, drawings, ranks)


def drawings_of(layout: DataLayout, variants: list[str]) -> dict[str, str]:
    """The drawing of each cued variant's clips; DataError when a variant's clips were drawn as
    another variant is now named (a dataset of before v4, whose `trajectory` drew the path
    alone), or nothing says how they were drawn."""
    out = {}
    for v in (v for v in variants if v in CUED or v in DRAWINGS_V1):
        drawing = layout.drawing(v)
        if drawing is None:
            raise DataError(
                f"{layout.clips_dir(v)}: nothing records how these clips were drawn; prepare the dataset again"
            )
        if named(drawing) != v:
            raise DataError(
                f"{layout.clips_dir(v)}: drawn as `{named(drawing)}` ({DESCRIBED[drawing]}), not as `{v}` is drawn "
                f"now ({DESCRIBED.get(DRAWINGS.get(v, ''), 'a name no longer used')}): prepare the dataset again "
                "(its clips are drawn anew), or leave the variant out (--variants)"
            )
        out[v] = drawing
    return out


def same_drawings(earlier: RunRecord, drawings: dict[str, str]) -> None:
    """A run resumed on clips drawn as its earlier sessions' were; DataError naming the variant
    whose drawing changed (or a run of before v4, which recorded none)."""
    before = earlier.drawings
    if before is None and set(earlier.variants) & set(drawings):
        raise DataError(
            f"run {earlier.run_id} was asked before drawings were recorded (its cued clips may have been "
            "drawn otherwise): start a new run"
        )
    changed = sorted(v for v in drawings if v in (before or {}) and before[v] != drawings[v])
    if changed:
        v = changed[0]
        raise DataError(
            f"run {earlier.run_id} asked `{v}` on clips drawn as {before[v]}; the dataset's are now drawn as "
            f"{drawings[v]}: start a new run"
        )


def reachable(urls: list[ServerUrl], api_key: str | None) -> tuple[list[list[dict]], list[ServerUrl]]:
    """(/v1/models per URL, [] where it did not answer; the URLs that did not): a run starts
    with the servers that answer, Unreachable only when none does."""
    served, down = [], []
    for u in urls:
        try:
            served.append(list_models(u, api_key))
        except Unreachable as e:
            served.append([])
            down.append((u, e))
    if len(down) == 1 == len(urls):
        raise down[0][1]
    if len(down) == len(urls):
        names = ", ".join(str(u) for u, _ in down)
        raise Unreachable(f"no server answers: {names}; start one with `sh scripts/serve.sh`")
    return served, [u for u, _ in down]


def check_engine(opts: RunOptions) -> None:
    """`--engine ray` sends through one URL's HTTP stage and asks once per item."""
    if opts.engine != "ray":
        return
    if len(dict.fromkeys(opts.urls)) > 1:
        raise SetupError("--engine ray sends through one --base-url (Ray Data's HTTP stage); give one")
    if opts.ask.reasoning == "two-step":
        raise SetupError("--engine ray asks once per item: --reasoning two-step needs the default engine")


def check_frames(cfg: AskConfig) -> None:
    """The frame spec is valid, and every part of it applies to the --media chosen."""
    problems = cfg.frames.problems()
    if not cfg.client_samples and cfg.frames != FrameSpec(frames=cfg.frames.frames):
        problems.append(
            f"--sampling and --frame-size choose the frames the client sends (--media frames); with "
            f"--media {cfg.media} the server samples --frames frames itself"
        )
    if problems:
        raise SetupError("; ".join(problems))


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
    if cfg.client_samples:
        roots = roots_of(listed)
        video = [m for m in wanted if profiles[m].video_as == "video"]
        processors = {m: media.find_processor(roots[m]) for m in video}
        lacking = [f"{m} ({roots[m]})" for m in video if processors[m] is None]
        if lacking and cfg.frames.frame_size is None:
            raise SetupError(
                f"--media frames: no video processor found for {', '.join(lacking)} (not a local model "
                "directory, nor in the Hugging Face cache); pass --frame-size WxH or use --media data"
            )
        unsampled = [f"{m} ({roots[m]})" for m in wanted if processors.get(m) is None]
        if cfg.frames.sampling in NEEDS_PROCESSOR and unsampled:
            raise SetupError(
                f"--sampling {cfg.frames.sampling} asks the model's video processor which frames to send, "
                f"and {', '.join(unsampled)} has none here; use --sampling centers or uniform"
            )
    return replace(cfg, profiles=profiles, processors=processors)


def trained_frames(root: str | None) -> FrameSpec | None:
    """The frame spec an adapter was trained with, when its folder (as the server names it) is
    here and holds train_args.json."""
    if not root or not AdapterLayout(Path(root)).train_args.is_file():
        return None
    return runfiles.read(TrainArgs, AdapterLayout(Path(root)).train_args).frames


def adapter_frames(listed: list[dict], wanted: list[str], cfg: AskConfig) -> list[str]:
    """A warning per adapter measured with other frames than it was trained on."""
    out = []
    for m in listed:
        spec = trained_frames(m.get("root")) if m["id"] in wanted and m.get("parent") else None
        if spec is not None and (not cfg.client_samples or spec != cfg.frames):
            out.append(
                f"WARNING: adapter {m['id']} was trained on {spec.describe()}; this run sends "
                f"{cfg.describe_frames().split(': ', 1)[1]}."
            )
    return out


def server_record(url: ServerUrl, models: list[dict]) -> ServerRecord:
    """What is known of a server: vLLM's version, its models and, when `serve run` started it
    on this machine, its arguments, start-up times and memory once ready."""
    try:
        version = httpx.get(url.version, timeout=4).json().get("version")
    except (httpx.HTTPError, ValueError):
        version = None
    listed = [ServedModel(m["id"], m.get("root"), m.get("parent"), m.get("max_model_len")) for m in models]
    return ServerRecord(str(url), version, listed, serverinfo.lookup(url))


# The client-side packages that shape what is sent (decoding, sampling, sizing, encoding frames),
# recorded beside each server's vLLM version.
CLIENT_PACKAGES = ("opencv-python-headless", "transformers", "numpy", "torch", "av", "decord", "pillow")


def client_packages() -> dict[str, str]:
    """The installed version of each of CLIENT_PACKAGES (absent ones left out)."""
    found = {}
    for name in CLIENT_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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
    store = PredictionStore(RunLayout(opts.runs.runs_dir / rid))
    if opts.resume and not store.path.is_file():
        raise DataError(f"nothing to resume: {store.path} does not exist")
    done = store.load()
    retry = {i.key for i in p.items if i.key in done and done[i.key].status == "error"}
    store.drop(retry)  # asked again below; the file keeps one line per item
    todo = [i for i in p.items if i.key not in done or i.key in retry]
    earlier = store.read_run()
    if earlier is not None:
        same_drawings(earlier, p.drawings)
    session = Session(started=now(), to_send=len(todo), retried_errors=len(retry))
    record = RunRecord(
        run_id=rid,
        started=earlier.started if earlier else session.started,
        dataset=DatasetRecord(str(opts.data), sha256(DataLayout(opts.data).manifest)),
        split=opts.split,
        models=p.models,
        variants=p.variants,
        ask=p.cfg,
        servers=[server_record(u, m) for u, m in zip(opts.urls, p.served)],
        limit=opts.limit,
        concurrency=p.concurrency(opts),
        reference=p.reference or (earlier.reference if earlier else None),
        sessions=(earlier.sessions if earlier else []) + [session],
        rejected_questions=p.rejected,
        judges=earlier.judges if earlier else [],
        warnings=p.warnings or [],
        client_packages=client_packages(),
        drawings=(earlier.drawings or {} if earlier else {}) | p.drawings,
    )
    store.write_run(record)
    return Opened(store, record, todo)


def asked(item: Item, reply: Reply) -> Prediction:
    """An item and what its server said, before scoring."""
    q = item.question
    return Prediction(
        question_id=q.id,
        video_id=q.video_id,
        type=q.type,
        model=item.model,
        variant=item.variant,
        choices=list(q.choices),
        answer=q.answer,
        reply=None,
        status="error",
        correct=False,
        latency_s=reply.latency_s,
        attempts=reply.attempts,
        error=reply.error,
        template=q.template,
        verb=q.verb,
        category=q.category,
        prompt_tokens=reply.prompt_tokens,
        cached_tokens=reply.cached_tokens,
        frame_indices=reply.frame_indices,
        frame_size=reply.frame_size,
        server=reply.server,
        reversed_answer=q.reversed_answer,
        text=reply.text,
        top_logprobs=reply.top_logprobs,
        subset=q.subset,
        reasoning=reply.reasoning,
    )


def send(
    todo: list[Item], servers: Servers, cfg: AskConfig, run: Opened, pool: media.Workers, frames: FrameStore | None
) -> int:
    """Ask every item with a progress bar, scoring and appending each reply as it comes (media
    prepared in `pool`, kept in `frames`); returns how many were answered, and counts in the
    session the clips prepared and read from the frame store."""
    store = run.store
    answered = 0
    with progress.bar("asking", len(todo), "req") as advance:

        def on_result(item: Item, reply: Reply) -> None:
            nonlocal answered
            store.append(score.scored(asked(item, reply), cfg.answer_format))
            answered += 1
            advance()

        clips = asyncio.run(client.run_items(todo, servers, cfg, on_result, pool, frames))
    session = run.record.sessions[-1]
    session.clips_prepared, session.clips_from_store = clips["prepared"], clips["from_store"]
    return answered


def send_ray(todo: list[Item], opts: RunOptions, cfg: AskConfig, run: Opened, concurrency: int) -> int:
    """`--engine ray`: the items through a Ray Data job (`measure.ask.rayjob`), each reply scored
    and appended as it comes back; returns how many were answered."""
    from measure.ask import rayjob

    with progress.bar("asking (ray)", len(todo), "req") as advance:

        def on_result(item: Item, reply: Reply) -> None:
            run.store.append(score.scored(asked(item, reply), cfg.answer_format))
            advance()

        return rayjob.send(todo, opts.urls[0], cfg, opts.servers.api_key, concurrency, on_result)


@dataclass
class Outcome:
    """How a session ended: the predictions kept for the plan's items and why it stopped."""

    kept: list[Prediction]
    errors: int
    interrupted: bool
    down: str | None  # every server stopped answering: what was seen
    frames: FrameStore | None  # the frame store used, if any


def self_tests(opts: RunOptions, p: Plan, warn: Callable[[str], None]) -> None:
    """The choice-constraint self-test on every server up (SetupError when one ignores it);
    one down at start gets it when it is taken in."""
    if p.down:
        warn(
            f"warning: {', '.join(map(str, p.down))} unreachable; starting with "
            f"{', '.join(str(u) for u in opts.urls if u not in p.down)}, taking the rest in once they answer"
        )
    for url in (u for u in opts.urls if u not in p.down):
        problem = asyncio.run(
            client.self_test(url, opts.servers.api_key, p.models[0], p.cfg.sends_media_io, thinking_budget(p))
        )
        if problem:
            warn(f"warning: self-test request to {url} failed ({problem}); going on")


def thinking_budget(p: Plan) -> int | None:
    """The thinking budget the self-test gives the run's first model (a reasoning model asked
    through the server's parser), else None."""
    return p.cfg.reasoning_tokens if p.cfg.reasoning_of(p.models[0]) == "server" else None


def servers_of(opts: RunOptions, p: Plan, warn: Callable[[str], None]) -> Servers:
    """The run's servers: those down at start taken in once they answer and pass the self-test."""
    key = opts.servers.api_key
    admit = client.admission(p.models, key, p.cfg.sends_media_io, thinking_budget(p))
    for url, n in p.ranks.items():
        if n > 1:
            warn(f"{url}: {n} data-parallel engines; each clip's questions pinned to one ({RANK_HEADER})")
    return Servers(opts.urls, key, p.cfg.down_timeout_s, p.concurrency(opts), p.down, admit, warn, p.ranks)


def frame_store(opts: RunOptions, warn: Callable[[str], None]) -> FrameStore | None:
    """The run's frame store, if on and writable (else a warning: the run goes on without)."""
    store = opts.store
    if store is not None and (why := store.writable()):
        warn(f"warning: frame store {why}; going on without it")
        return None
    return store


def execute(opts: RunOptions, p: Plan, run: Opened, warn: Callable[[str], None]) -> Outcome:
    """Send what is left (after the self-test on every server, and once the media workers have
    started if any clip needs decoding: none start for a run the frame store serves), then
    close the session in run.json. A server that refuses the per-request media
    settings the run needs is a SetupError before anything is asked or started."""
    sent, send_s = 0, 0.0
    interrupted, down = False, None
    frames = frame_store(opts, warn) if p.cfg.client_samples else None
    run.store.open()
    try:
        if run.todo:
            self_tests(opts, p, warn)
            with (
                media.Workers(p.cfg.media_workers, p.cfg.processors.values()) as pool,
                health.Sampler(opts.urls) as sampler,
            ):
                specs = {spec for i in run.todo if (spec := client.media_spec(i, p.cfg)) is not None}
                if media.needs_decoding(specs, frames):
                    pool.get()  # started before the clock: a run's rate is its sending, not its start-up
                start = time.perf_counter()
                try:
                    if opts.engine == "ray":
                        sent = send_ray(run.todo, opts, p.cfg, run, p.concurrency(opts))
                    else:
                        sent = send(run.todo, servers_of(opts, p, warn), p.cfg, run, pool, frames)
                finally:
                    send_s = time.perf_counter() - start
                    run.record.sessions[-1].health = sampler.result()
    except KeyboardInterrupt:
        interrupted = True
    except client.ServerUnavailable as e:
        down = str(e)
    finally:
        run.store.close()
        if frames is not None:
            frames.trim()
    preds = run.store.load()
    kept = [preds[i.key] for i in p.items if i.key in preds]
    errors = sum(pr.status == "error" for pr in kept)
    s = run.record.sessions[-1]
    s.ended, s.answered, s.send_s = now(), None if interrupted else sent, round(send_s, 3)
    run.record.ended = now()
    run.record.complete = len(kept) == len(p.items) and errors == 0
    run.store.write_run(run.record)
    return Outcome(kept, errors, interrupted, down, frames)
