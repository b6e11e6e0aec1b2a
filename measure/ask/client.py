"""Transport: send guided-choice requests to vLLM servers, concurrently, with bounded retries,
while a process pool prepares each clip's media a bounded distance ahead (`measure.ask.media`).
It returns what each server said (`Reply`) and nothing else: scoring is `measure.score`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import openai
from openai import AsyncOpenAI

from core import prompt
from core.ask import AskConfig
from core.chat import ServerLost, completion, connect, create, list_models, text
from core.errors import SetupError, Unreachable
from core.records import OPEN, Key, Question, key
from core.urls import ServerUrl
from measure.ask import media
from measure.ask.framestore import FrameStore
from measure.ask.media import MediaSpec, Prepared
from measure.ask.servers import Admit, Servers, ServerUnavailable

MAX_TOKENS = 32  # a choice is a few tokens; the constraint ends the reply


@dataclass(frozen=True)
class Item:
    """One request: a question, a served model, a clip variant (and its clip, if any)."""

    question: Question
    model: str
    variant: str
    clip: Path | None

    @property
    def key(self) -> Key:
        return key(self.question.id, self.model, self.variant)


@dataclass(frozen=True)
class Reply:
    """What a server said about one item (`text` None: it said nothing; `error` says why),
    and what was sent: the frames the client chose, if it did."""

    text: str | None
    top_logprobs: dict[str, float] | None = None  # the first reply token's alternatives (letters format)
    prompt_tokens: int | None = None  # what the server counted: shows the frames really sent
    cached_tokens: int | None = None  # of those, served from the prefix cache (serve turns the count on)
    latency_s: float | None = None
    attempts: int = 0
    error: str | None = None
    server: str | None = None  # base URL of the server that answered
    frame_indices: list[int] | None = None
    frame_size: list[int] | None = None
    reasoning: str | None = None  # a reasoning model's thinking, apart from its answer


THINK_FIRST = "Think it through first."  # the two-step ask's first turn ends with this
ANSWER_NOW = "Now answer."  # ... and its second turn asks for the answer


def media_spec(item: Item, cfg: AskConfig) -> MediaSpec | None:
    """What decides the media of an item (None: the blind control sends none)."""
    if item.clip is None:
        return None
    return MediaSpec(
        clip=item.clip,
        variant=item.variant,
        mode=cfg.media,
        video_as=cfg.profile(item.model).video_as,
        frames=cfg.frames,
        processor=cfg.processors.get(item.model),
    )


def request(
    item: Item, cfg: AskConfig, prepared: Prepared | None, thought: str | None = None, think: bool = False
) -> dict[str, Any]:
    """The chat-completion arguments for one item with its media: temperature 0, the reply
    constrained to the targets (`structured_outputs`, never the removed `guided_choice`),
    logprobs in letters mode, per-request media settings when the media has any. A reasoning
    model (`cfg.reasoning`): `server` adds vLLM's thinking budget before the constrained answer;
    `two-step` asks first for its thinking (`think`: free, capped), then for the answer with
    that `thought` in the conversation."""
    open_ = item.question.type == OPEN  # free form: no constraint, a bounded answer
    targets = prompt.targets(item.question.choices, cfg.answer_format)
    extra: dict[str, Any] = {} if open_ or think else {"structured_outputs": {"choice": targets}}
    if prepared is not None and prepared.media_io:
        extra["media_io_kwargs"] = {"video": prepared.media_io}
    letters = cfg.answer_format == "letters" and not open_ and not think
    parts = prepared.parts if prepared is not None else ()
    messages = prompt.messages(item.question, cfg.answer_format, parts)
    max_tokens = cfg.open_max_tokens if open_ else MAX_TOKENS
    reasoning = cfg.reasoning_of(item.model)
    if reasoning == "server":
        extra["thinking_token_budget"] = cfg.reasoning_tokens
        max_tokens += cfg.reasoning_tokens
    elif think:
        messages[-1]["content"][-1] = {"type": "text", "text": messages[-1]["content"][-1]["text"] + " " + THINK_FIRST}
        max_tokens = cfg.reasoning_tokens
    elif thought is not None:
        messages += [{"role": "assistant", "content": thought}, {"role": "user", "content": ANSWER_NOW}]
    return dict(
        model=item.model,
        messages=messages,
        temperature=0.0,
        max_tokens=max_tokens,
        logprobs=letters or None,
        top_logprobs=len(targets) + 1 if letters else None,
        extra_body=extra,
        timeout=cfg.timeout_s,
    )


def media_for(item: Item, cfg: AskConfig) -> Prepared | None:
    """An item's media prepared in this process (run_items uses its pool instead)."""
    spec = media_spec(item, cfg)
    return None if spec is None else media.prepare(spec)


def build(item: Item, cfg: AskConfig) -> dict[str, Any]:
    """The request measure sends for one item (media prepared in this process)."""
    return request(item, cfg, media_for(item, cfg))


def reply_from(
    resp: dict[str, Any], latency_s: float | None, attempts: int, thought: str | None, reasoning: str | None, sent: dict
) -> Reply:
    """A chat completion as JSON (the server's reply, from the openai client or Ray Data's HTTP
    stage) -> Reply: the answer, its top logprobs, prompt and cached tokens, and the thinking
    (the server's when it parses it, else the two-step ask's `thought`)."""
    choice = resp["choices"][0]
    message = choice.get("message") or {}
    content = (choice.get("logprobs") or {}).get("content")
    usage = resp.get("usage") or {}
    return Reply(
        text(resp),
        top_logprobs={t["token"]: t["logprob"] for t in content[0]["top_logprobs"]} if content else None,
        latency_s=latency_s,
        attempts=attempts,
        prompt_tokens=usage.get("prompt_tokens"),
        cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
        reasoning=(message.get("reasoning") or message.get("reasoning_content")) if reasoning == "server" else thought,
        **sent,
    )


def unreadable(problem: BaseException | None = None) -> Reply:
    """An item whose clip is missing or cannot be read: its own error, not the run's."""
    return Reply(None, error=f"clip unreadable: {type(problem).__name__}: {problem}" if problem else "clip missing")


async def ask(
    client: AsyncOpenAI, item: Item, cfg: AskConfig, prepared: Prepared | None, lost_when_refused: bool = False
) -> Reply:
    """One question with its prepared media -> what the server said (a reasoning model: its
    thinking apart, `cfg.reasoning`); never raises for server trouble (the Reply's `error`),
    except ServerLost when asked to (`create`)."""
    sent = dict(frame_indices=prepared.frame_indices, frame_size=prepared.frame_size) if prepared else {}
    start = time.perf_counter()
    thought, attempts = None, 0
    reasoning = cfg.reasoning_of(item.model)
    if reasoning == "two-step":
        first, attempts, error = await create(
            client, request(item, cfg, prepared, think=True), cfg.max_attempts, cfg.backoff_s, lost_when_refused
        )
        if first is None:
            return Reply(None, latency_s=time.perf_counter() - start, attempts=attempts, error=error, **sent)
        thought = text(first)
    resp, attempt, error = await create(
        client, request(item, cfg, prepared, thought), cfg.max_attempts, cfg.backoff_s, lost_when_refused
    )
    latency = time.perf_counter() - start
    if resp is None:
        return Reply(None, latency_s=latency, attempts=attempts + attempt, error=error, reasoning=thought, **sent)
    return reply_from(resp, latency, attempts + attempt, thought, reasoning, sent)


def prefix_of(item: Item) -> tuple[Path, str] | None:
    """What an item's prompt shares with its siblings: its clip as one model sees it (None:
    the blind control, no clip)."""
    return None if item.clip is None else (item.clip, item.model)


async def run_items(
    items: list[Item],
    servers: Servers,
    cfg: AskConfig,
    on_result: Callable[[Item, Reply], None],
    pool: media.Workers | None = None,
    store: FrameStore | None = None,
) -> Counter[str]:
    """Send every item with at most `servers.concurrency` in flight, in the given order (a
    clip's questions together: the engine then prefills each clip x model once and serves the
    rest from its prefix cache), each to a live server (`measure.ask.servers`: a clip's
    questions where its prefix is, a slow server gets fewer, a dead one is taken out and its
    items asked elsewhere, a revived one taken back; every prediction records its `server`);
    `on_result` sees each reply as soon as it is known. Each clip's media is prepared once, at
    most `2 * concurrency` items ahead of the requests (memory stays flat however many items
    there are): read from `store` in a thread, else decoded in `pool` (default: one of this
    call's own), whose processes start when the first clip needs decoding; consecutive items
    with equal media share it. When no server has accepted a connection for
    `cfg.down_timeout_s`, stop with ServerUnavailable rather than record the rest as errors.
    Decoded media is kept in and read from `store` (`measure.ask.framestore`); returns how
    many clips were prepared and how many came from the store."""
    clips: Counter[str] = Counter()
    n_workers = max(1, min(servers.concurrency, len(items)))
    queue: asyncio.Queue[tuple[Item, asyncio.Future | None] | None] = asyncio.Queue(maxsize=2 * servers.concurrency)
    loop = asyncio.get_running_loop()
    own = contextlib.ExitStack()
    if pool is None:
        pool = own.enter_context(media.Workers(cfg.media_workers, cfg.processors.values()))

    async def prepared(spec: MediaSpec) -> Prepared:
        if (done := await asyncio.to_thread(media.ready, spec, store)) is not None:
            return done
        workers = await asyncio.to_thread(pool.get)
        return await loop.run_in_executor(workers, media.decode, spec, store)

    async def produce() -> None:
        spec, pending = None, None
        for item in items:
            wanted = media_spec(item, cfg)
            if wanted is None or not wanted.clip.is_file():  # the blind control, or a missing clip
                await queue.put((item, None))
                continue
            if wanted != spec:
                spec, pending = wanted, asyncio.ensure_future(prepared(wanted))
                pending.add_done_callback(partial(_count, clips))
            await queue.put((item, pending))
        for _ in range(n_workers):
            await queue.put(None)

    async def worker() -> None:
        while (entry := await queue.get()) is not None:
            item, pending = entry
            on_result(item, await answer(servers, item, cfg, pending))

    prober = asyncio.create_task(servers.probe_forever())
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            for _ in range(n_workers):
                group.create_task(worker())
    except* ServerUnavailable as eg:
        raise eg.exceptions[0] from None
    finally:
        prober.cancel()
        own.close()
        await servers.close()
    return clips


def _count(clips: Counter[str], done: asyncio.Future) -> None:
    if not done.cancelled() and done.exception() is None:
        clips["from_store" if done.result().from_store else "prepared"] += 1


async def answer(servers: Servers, item: Item, cfg: AskConfig, pending: asyncio.Future | None) -> Reply:
    """An item's reply once its media is ready; a missing or unreadable clip is this item's
    error, not the run's."""
    if item.clip is not None and pending is None:
        return unreadable()
    try:
        prepared = await pending if pending is not None else None
    except Exception as e:
        return unreadable(e)
    return await ask_somewhere(servers, item, cfg, prepared)


async def ask_somewhere(servers: Servers, item: Item, cfg: AskConfig, prepared: Prepared | None) -> Reply:
    """Ask on the server `Servers.take` picks for the item's clip; one that refuses the
    connection is taken out and the item asked again elsewhere (or once it is back)."""
    home = prefix_of(item)
    while True:
        e = await servers.take(home)
        try:
            return replace(await ask(e.client, item, cfg, prepared, lost_when_refused=True), server=str(e.url))
        except ServerLost:
            servers.lost(e)
        finally:
            servers.give(e)


PROBE_CHOICES = ["velvet-17", "quokka-42"]  # no model says either unconstrained


async def self_test(
    url: ServerUrl, api_key: str | None, model: str, media_io: bool = False, thinking: int | None = None
) -> str | None:
    """Check that the server enforces the choice constraint, before anything is asked: one
    request whose unconstrained reply would be no choice (it also warms the server up: the
    first request after a start is slow, once). A reply outside the choices is a SetupError
    (the server ignores `structured_outputs`, as vLLM did the reference study's
    `guided_choice`: free text must never be scored); so is a server refusing the
    per-request media settings `media_io` runs need. Other failures are returned, not
    raised: the run's own requests retry and record. A reasoning model asked with the server's
    thinking budget (`thinking` tokens) answers after its thinking."""
    extra: dict[str, Any] = {"structured_outputs": {"choice": PROBE_CHOICES}}
    if media_io:
        extra["media_io_kwargs"] = {"video": {"fps": 1.0}}
    if thinking is not None:
        extra["thinking_token_budget"] = thinking
    async with connect(url, api_key, max_retries=2) as client:
        try:
            resp = await completion(
                client,
                dict(
                    model=model,
                    messages=[{"role": "user", "content": "Say hello in one sentence."}],
                    temperature=0.0,
                    max_tokens=16 + (thinking or 0),
                    logprobs=True,
                    top_logprobs=2,
                    extra_body=extra,
                    timeout=120,
                ),
            )
        except openai.BadRequestError as e:
            if "trust-request-mm-kwargs" in str(e):
                raise SetupError(
                    f"{url} refuses per-request media settings, which measure sends with every clip "
                    "(the frames and their timestamps, or the frame count): start it with "
                    "--trust-request-mm-kwargs (serve does by default)"
                ) from None
            return f"{type(e).__name__}: {e}"
        except openai.OpenAIError as e:
            return f"{type(e).__name__}: {e}"
    reply = text(resp).strip()
    if reply not in PROBE_CHOICES:
        raise SetupError(
            f"{url} ignores the choice constraint: asked to pick one of {PROBE_CHOICES} "
            f"(`structured_outputs`), {model} replied {reply[:60]!r}. A vLLM that does not read "
            "`structured_outputs` (older than 0.12, or one where the field changed) would have every "
            "reply scored as free text, so the run does not start; serve it with the vLLM this project "
            "installs (scripts/setup.sh)"
        )
    return None


def admission(models: list[str], api_key: str | None, media_io: bool, thinking: int | None = None) -> Admit:
    """`Servers.admit` for a run: a server answering /health again is used only if it serves
    every model of the run and passes the self-test (returns why never; raises: not yet)."""

    async def admit(url: ServerUrl) -> str | None:
        try:
            listed = await asyncio.to_thread(list_models, url, api_key)
            problem = await self_test(url, api_key, models[0], media_io, thinking)
        except Unreachable:
            raise
        except SetupError as e:
            return str(e)
        missing = sorted(set(models) - {m["id"] for m in listed})
        if missing:
            return f"it does not serve {missing}"
        if problem:
            raise ConnectionError(problem)  # not ready yet: probed again later
        return None

    return admit
