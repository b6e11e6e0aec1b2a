"""Transport: send guided-choice requests to vLLM servers, concurrently, with bounded retries,
while a process pool prepares each clip's media a bounded distance ahead (`measure.media`).
Scoring is `measure.score`; this module only asks and records."""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import httpx
import openai
from openai import AsyncOpenAI

from core.cli import option, parse_size
from core.defaults import FRAMES
from core.errors import UserError
from core.profiles import QWEN_VL, Profile
from core.records import OPEN, Key, Prediction, Question, key
from measure import media, prompt
from measure.media import Media, MediaSpec, Prepared, Sampling
from measure.prompt import AnswerFormat
from measure.score import score_choice, score_open
from measure.servers import ServerLost, Servers, ServerUnavailable

RETRYABLE = (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError, openai.RateLimitError)
MAX_TOKENS = 32  # a choice is a few tokens; the constraint ends the reply


class SetupError(UserError):
    """A run that cannot start (server unreachable, unknown model, ...): says what and where."""


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
class AskConfig:
    """How each request is made (the request options of `measure`)."""

    answer_format: AnswerFormat = option("text", "text (the choice strings) or letters (A-D, with probabilities).")
    timeout_s: float = option(120.0, "Seconds per request before a retry.", flags=("--timeout",))
    max_attempts: int = option(4, "Attempts per request (bounded exponential backoff).")
    media: Media = option("frames", "How a clip is sent to video models: frames (sampled, resized and JPEG-encoded "
                          "by the client; server needs --trust-request-mm-kwargs), data (the mp4 inline) or file "
                          "(file:// URLs; server needs --allowed-local-media-path).")
    client_frames: int = option(FRAMES, "Frames sampled by the client (--media frames, and image-only families).")
    frame_size: tuple[int, int] | None = option(None, "Frame size WxH for --media frames (default: what the model's "
                                                "processor makes of the clip); rounded by the processor when it is "
                                                "local.", parser=parse_size, metavar="WxH")
    frames: int | None = option(None, "--media data/file: frames the server samples per clip, sent per request "
                                "(server needs --trust-request-mm-kwargs). Default: the server's setting.")
    sampling: Sampling = option("centers", "--media frames: which frames are sent. centers: --client-frames evenly "
                                "spread (what training uses); uniform: np.linspace over the clip; processor: the "
                                "model's own video processor at its fps (what current vLLM samples); study: what vLLM "
                                "< 0.12 did with num_frames=--client-frames (uniform for longer clips, else the "
                                "processor's): the reference study's frames.")
    media_workers: int = option(max(1, (os.cpu_count() or 2) // 2), "Processes preparing clips ahead of the requests.")
    down_timeout_s: float = option(60.0, "Seconds with no server accepting connections before the run stops (exit 3); "
                                   "a server back sooner is used again.", flags=("--down-timeout",))
    open_max_tokens: int = option(64, "Open questions: longest free-form answer, in tokens.")
    backoff_s: float = 0.5  # doubles per attempt, capped at 8 s, with jitter
    profiles: dict[str, Profile] = field(default_factory=dict)  # served model -> request profile
    processors: dict[str, str | None] = field(default_factory=dict)  # served model -> its video processor (model dir)

    def profile(self, model: str) -> Profile:
        return self.profiles.get(model, QWEN_VL)

    @property
    def sends_media_io(self) -> bool:
        """Whether requests carry per-request media settings (the server must trust them): frames
        mode for a video model (`processors` lists them), or --frames."""
        return (self.media == "frames" and bool(self.processors)) or self.frames is not None

    def spec(self, item: "Item") -> MediaSpec | None:
        """What decides the media of an item (None: the blind control sends none)."""
        if item.clip is None:
            return None
        return MediaSpec(clip=item.clip, variant=item.variant, mode=self.media, video_as=self.profile(item.model).video_as,
                         frames=self.client_frames, frame_size=self.frame_size,
                         processor=self.processors.get(item.model), server_frames=self.frames,
                         sampling=self.sampling)


def list_models(base_url: str, api_key: str | None, timeout: float = 4.0) -> list[dict]:
    """`/v1/models` of one server; SetupError naming the URL if it does not answer."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"{base_url.rstrip('/')}/models", headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise SetupError(f"server {base_url} unreachable ({type(e).__name__}); start it with `sh scripts/serve.sh`") from None
    if r.status_code == 401:
        raise SetupError(f"server {base_url} refused the API key (HTTP 401); pass --api-key or set VLLM_API_KEY")
    if r.status_code != 200:
        raise SetupError(f"server {base_url} answered /models with HTTP {r.status_code}")
    return r.json()["data"]


def request(item: Item, cfg: AskConfig, prepared: Prepared | None) -> dict[str, Any]:
    """The chat-completion arguments for one item with its media: temperature 0, the reply
    constrained to the targets (`structured_outputs`, never the removed `guided_choice`),
    logprobs in letters mode, per-request media settings when the media has any."""
    open_ = item.question.type == OPEN  # free form: no constraint, a bounded answer
    targets = prompt.targets(item.question, cfg.answer_format)
    extra: dict[str, Any] = {} if open_ else {"structured_outputs": {"choice": targets}}
    if prepared is not None and prepared.media_io:
        extra["media_io_kwargs"] = {"video": prepared.media_io}
    letters = cfg.answer_format == "letters" and not open_
    parts = prepared.parts if prepared is not None else ()
    return dict(model=item.model, messages=prompt.messages(item.question, cfg.answer_format, parts), temperature=0.0,
                max_tokens=cfg.open_max_tokens if open_ else MAX_TOKENS, logprobs=letters or None,
                top_logprobs=len(targets) + 1 if letters else None, extra_body=extra, timeout=cfg.timeout_s)


def media_for(item: Item, cfg: AskConfig) -> Prepared | None:
    """An item's media prepared in this process (run_items uses its pool instead)."""
    spec = cfg.spec(item)
    return None if spec is None else media.prepare(spec)


def build(item: Item, cfg: AskConfig) -> dict[str, Any]:
    """The request measure sends for one item (media prepared in this process)."""
    return request(item, cfg, media_for(item, cfg))


def _top_logprobs(choice) -> dict[str, float] | None:
    content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
    return {t.token: t.logprob for t in content[0].top_logprobs} if content else None


def _base(item: Item) -> dict[str, Any]:
    q = item.question
    return dict(question_id=q.id, video_id=q.video_id, type=q.type, model=item.model, variant=item.variant,
                choices=list(q.choices), answer=q.answer, template=q.template, verb=q.verb, category=q.category,
                reversed_answer=q.reversed_answer)


def unreadable(item: Item, problem: BaseException | None = None) -> Prediction:
    """An item whose clip is missing or cannot be read: its own error, not the run's."""
    error = f"clip unreadable: {type(problem).__name__}: {problem}" if problem else "clip missing"
    return Prediction(**_base(item), reply=None, status="error", correct=False, error=error)


def refused(e: BaseException) -> bool:
    """The server did not accept the connection at all (down or restarting), as opposed to a
    dropped or slow one."""
    # openai's transport is its own httpx build (module httpx2): match the cause by name
    return isinstance(e, openai.APIConnectionError) and type(e.__cause__).__name__ == "ConnectError"


async def create(client: AsyncOpenAI, args: dict[str, Any], max_attempts: int, backoff_s: float,
                 lost_when_refused: bool = False) -> tuple[Any, int, str]:
    """One chat completion with bounded retries (exponential backoff with jitter, capped at
    8 s) on connection trouble, timeouts and 5xx; a 4xx is final. With `lost_when_refused`, a
    refused connection raises ServerLost instead (the caller asks another server). Returns
    (response or None, attempts made, the last error)."""
    error = ""
    for attempt in range(1, max_attempts + 1):
        try:
            return await client.chat.completions.create(**args), attempt, ""
        except RETRYABLE as e:
            if lost_when_refused and refused(e):
                raise ServerLost(str(e)) from None
            error = f"{type(e).__name__}: {e}"
            if attempt < max_attempts:
                await asyncio.sleep(min(8.0, backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random()))
        except openai.APIStatusError as e:  # 4xx: asking again will not help
            return None, attempt, f"HTTP {e.status_code}: {e.message}"
    return None, max_attempts, error


async def ask(client: AsyncOpenAI, item: Item, cfg: AskConfig, prepared: Prepared | None,
              lost_when_refused: bool = False) -> Prediction:
    """One question with its prepared media -> one Prediction; never raises for server trouble
    (status 'error'), except ServerLost when asked to (`create`)."""
    q = item.question
    base = _base(item)
    args = request(item, cfg, prepared)
    sent = dict(frame_indices=prepared.frame_indices, frame_size=prepared.frame_size) if prepared else {}
    targets = prompt.targets(q, cfg.answer_format)
    start = time.perf_counter()
    resp, attempt, error = await create(client, args, cfg.max_attempts, cfg.backoff_s, lost_when_refused)
    if resp is not None:
        choice = resp.choices[0]
        reply = (choice.message.content or "").strip()
        s = score_open(reply) if q.type == OPEN else score_choice(q, targets, reply, _top_logprobs(choice))
        return Prediction(**base, reply=s.picked if s.status == "ok" else reply, status=s.status, correct=s.correct,
                          probs=s.probs, latency_s=time.perf_counter() - start, attempts=attempt,
                          prompt_tokens=resp.usage.prompt_tokens if resp.usage else None, **sent)
    return Prediction(**base, reply=None, status="error", correct=False,
                      latency_s=time.perf_counter() - start, attempts=attempt, error=error, **sent)


async def run_items(
    items: list[Item],
    base_urls: list[str],
    api_key: str | None,
    cfg: AskConfig,
    concurrency: int,
    on_result: Callable[[Prediction], None],
    pool: Executor | None = None,
) -> None:
    """Send every item with at most `concurrency` in flight, each to the live server with the
    fewest requests in flight (`measure.servers`: a slow server gets fewer, a dead one is
    taken out and its items asked elsewhere, a revived one taken back; every prediction
    records its `server`); `on_result` sees each prediction as soon as it is known. Each clip's media is prepared
    once, in `pool` (default: a `media.worker_pool` started here), at most `2 * concurrency`
    items ahead of the requests (memory stays flat however many items there are);
    consecutive items with equal media share it. When no server has accepted a connection
    for `cfg.down_timeout_s`, stop with ServerUnavailable rather than record the rest as errors."""
    servers = Servers(base_urls, api_key, cfg.down_timeout_s)
    n_workers = max(1, min(concurrency, len(items)))
    queue: asyncio.Queue[tuple[Item, asyncio.Future | None] | None] = asyncio.Queue(maxsize=2 * concurrency)
    loop = asyncio.get_running_loop()
    own = contextlib.ExitStack()
    if pool is None:
        pool = own.enter_context(media.worker_pool(cfg.media_workers, cfg.processors.values()))

    async def produce() -> None:
        spec, pending = None, None
        for item in items:
            wanted = cfg.spec(item)
            if wanted is None or not wanted.clip.is_file():  # the blind control, or a missing clip
                await queue.put((item, None))
                continue
            if wanted != spec:
                spec, pending = wanted, loop.run_in_executor(pool, media.prepare, wanted)
            await queue.put((item, pending))
        for _ in range(n_workers):
            await queue.put(None)

    async def worker() -> None:
        while (entry := await queue.get()) is not None:
            item, pending = entry
            if item.clip is not None and pending is None:  # the clip is missing
                pred = unreadable(item)
            else:
                try:
                    prepared = await pending if pending is not None else None
                except Exception as e:  # an unreadable clip is this item's error, not the run's
                    pred = unreadable(item, e)
                else:
                    pred = await ask_somewhere(servers, item, cfg, prepared)
            on_result(pred)

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


async def ask_somewhere(servers: Servers, item: Item, cfg: AskConfig, prepared: Prepared | None) -> Prediction:
    """Ask on the live server with the fewest in flight; one that refuses the connection is
    taken out and the item asked again elsewhere (or once it is back)."""
    while True:
        e = await servers.take()
        try:
            return replace(await ask(e.client, item, cfg, prepared, lost_when_refused=True), server=e.url)
        except ServerLost:
            servers.lost(e)
        finally:
            servers.give(e)


PROBE_CHOICES = ["velvet-17", "quokka-42"]  # no model says either unconstrained


async def self_test(base_url: str, api_key: str | None, model: str, media_io: bool = False) -> str | None:
    """Check that the server enforces the choice constraint, before anything is asked: one
    request whose unconstrained reply would be no choice (it also warms the server up: the
    first request after a start is slow, once). A reply outside the choices is a SetupError
    (the server ignores `structured_outputs`, as vLLM did the reference study's
    `guided_choice`: free text must never be scored); so is a server refusing the
    per-request media settings `media_io` runs need. Other failures are returned, not
    raised: the run's own requests retry and record."""
    extra: dict[str, Any] = {"structured_outputs": {"choice": PROBE_CHOICES}}
    if media_io:
        extra["media_io_kwargs"] = {"video": {"fps": 1.0}}
    async with AsyncOpenAI(base_url=base_url, api_key=api_key or "EMPTY", max_retries=2) as client:
        try:
            resp = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Say hello in one sentence."}], temperature=0.0,
                max_tokens=16, logprobs=True, top_logprobs=2, extra_body=extra, timeout=120,
            )
        except openai.BadRequestError as e:
            if "trust-request-mm-kwargs" in str(e):
                raise SetupError(f"{base_url} refuses per-request media settings, which --media frames (and --frames) "
                                 "need: start it with --trust-request-mm-kwargs (serve does by default), or use "
                                 "--media data") from None
            return f"{type(e).__name__}: {e}"
        except openai.OpenAIError as e:
            return f"{type(e).__name__}: {e}"
    reply = (resp.choices[0].message.content or "").strip()
    if reply not in PROBE_CHOICES:
        raise SetupError(f"{base_url} ignores the choice constraint: asked to pick one of {PROBE_CHOICES} "
                         f"(`structured_outputs`), {model} replied {reply[:60]!r}. A vLLM that does not read "
                         "`structured_outputs` (older than 0.12, or one where the field changed) would have every "
                         "reply scored as free text, so the run does not start; serve it with the vLLM this project "
                         "installs (scripts/setup.sh)")
    return None
