"""Transport: send guided-choice requests to vLLM servers, concurrently, with bounded retries.
Scoring is `measure.score`; this module only asks and records."""
from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import openai
from openai import AsyncOpenAI

from core.cli import option
from core.defaults import FRAMES
from core.errors import UserError
from core.profiles import QWEN_VL, Profile
from core.records import Key, Prediction, Question, key
from measure import prompt
from measure.prompt import AnswerFormat, Media
from measure.score import score_choice

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
    frames: int | None = option(None, "Frames per clip, sent per request (server needs --trust-request-mm-kwargs).")
    media: Media = option("data", "data (base64 inline) or file (file:// URLs; server needs --allowed-local-media-path).")
    client_frames: int = option(FRAMES, "Frames sampled client-side for image-only model families (SmolVLM).")
    backoff_s: float = 0.5  # doubles per attempt, capped at 8 s, with jitter
    profiles: dict[str, Profile] = field(default_factory=dict)  # served model -> request profile

    def profile(self, model: str) -> Profile:
        return self.profiles.get(model, QWEN_VL)


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


def request(item: Item, cfg: AskConfig, media: list[dict]) -> dict[str, Any]:
    """The chat-completion arguments for one item whose media parts are `media`: temperature
    0, the reply constrained to the targets (`structured_outputs`, never the removed
    `guided_choice`), logprobs in letters mode, frames per request if asked."""
    targets = prompt.targets(item.question, cfg.answer_format)
    extra: dict[str, Any] = {"structured_outputs": {"choice": targets}}
    if cfg.frames is not None:
        extra["media_io_kwargs"] = {"video": {"min_frames": cfg.frames, "max_frames": cfg.frames}}
    letters = cfg.answer_format == "letters"
    return dict(model=item.model, messages=prompt.messages(item.question, cfg.answer_format, media), temperature=0.0,
                max_tokens=MAX_TOKENS, logprobs=letters or None, top_logprobs=len(targets) + 1 if letters else None,
                extra_body=extra, timeout=cfg.timeout_s)


def build(item: Item, cfg: AskConfig) -> tuple[dict[str, Any], list[int] | None]:
    """The request for one item and the frame indices it sends (client-sampled frames only).
    Raises whatever reading the clip raises."""
    media, frame_indices = prompt.media_parts(item.clip, item.variant, cfg.profile(item.model), cfg.media,
                                              cfg.client_frames)
    return request(item, cfg, media), frame_indices


def _top_logprobs(choice) -> dict[str, float] | None:
    content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
    return {t.token: t.logprob for t in content[0].top_logprobs} if content else None


async def ask(client: AsyncOpenAI, item: Item, cfg: AskConfig) -> Prediction:
    """One question -> one Prediction; never raises for server trouble (status 'error')."""
    q = item.question
    base = dict(question_id=q.id, video_id=q.video_id, type=q.type, model=item.model, variant=item.variant,
                choices=list(q.choices), answer=q.answer, template=q.template, verb=q.verb, category=q.category)
    if item.clip is not None and not item.clip.is_file():
        return Prediction(**base, reply=None, status="error", correct=False, error="clip missing")
    try:
        args, frame_indices = build(item, cfg)
    except Exception as e:  # an unreadable clip is this item's error, not the run's
        return Prediction(**base, reply=None, status="error", correct=False, error=f"clip unreadable: {type(e).__name__}: {e}")
    targets = prompt.targets(q, cfg.answer_format)
    error = ""
    start = time.perf_counter()
    for attempt in range(1, cfg.max_attempts + 1):
        try:
            resp = await client.chat.completions.create(**args)
        except RETRYABLE as e:
            error = f"{type(e).__name__}: {e}"
            if attempt < cfg.max_attempts:
                delay = min(8.0, cfg.backoff_s * 2 ** (attempt - 1))
                await asyncio.sleep(delay * (0.5 + random.random()))
            continue
        except openai.APIStatusError as e:  # 4xx: asking again will not help
            error = f"HTTP {e.status_code}: {e.message}"
            break
        choice = resp.choices[0]
        reply = (choice.message.content or "").strip()
        s = score_choice(q, targets, reply, _top_logprobs(choice))
        return Prediction(**base, reply=s.picked if s.status == "ok" else reply, status=s.status, correct=s.correct,
                          probs=s.probs, latency_s=time.perf_counter() - start, attempts=attempt,
                          frame_indices=frame_indices, prompt_tokens=resp.usage.prompt_tokens if resp.usage else None)
    return Prediction(**base, reply=None, status="error", correct=False,
                      latency_s=time.perf_counter() - start, attempts=attempt, error=error)


class ServerUnavailable(RuntimeError):
    """Every request fails to connect: the server is down. What was answered is kept."""


def _unreachable(pred: Prediction) -> bool:
    return pred.status == "error" and (pred.error or "").startswith("APIConnectionError")


async def run_items(
    items: list[Item],
    base_urls: list[str],
    api_key: str | None,
    cfg: AskConfig,
    concurrency: int,
    on_result: Callable[[Prediction], None],
) -> None:
    """Send every item with at most `concurrency` in flight, spread over the servers in turn;
    `on_result` sees each prediction as soon as it is known. When `max(8, concurrency)`
    items in a row fail to connect even after their retries, stop with ServerUnavailable
    rather than record the rest as errors (only requests in flight are dropped)."""
    clients = [
        AsyncOpenAI(base_url=u, api_key=api_key or "EMPTY", max_retries=0,
                    http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)))
        for u in base_urls
    ]
    queue = iter(items)
    pick = itertools.cycle(clients)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for item in queue:  # a shared iterator: each item is taken by exactly one worker
            pred = await ask(next(pick), item, cfg)
            on_result(pred)
            failures = failures + 1 if _unreachable(pred) else 0
            if failures >= max(8, concurrency):
                raise ServerUnavailable(f"{', '.join(base_urls)} stopped answering: {failures} requests in a row "
                                        f"failed to connect after {cfg.max_attempts} attempts each ({pred.error})")

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(concurrency, len(items)))):
                group.create_task(worker())
    except* ServerUnavailable as eg:
        raise eg.exceptions[0] from None
    finally:
        for c in clients:
            await c.close()


async def warm_up(base_url: str, api_key: str | None, model: str) -> str | None:
    """One tiny logprobs request: the first after a server start is slow, once. Best effort:
    returns what went wrong instead of raising (the run's own requests retry and record)."""
    async with AsyncOpenAI(base_url=base_url, api_key=api_key or "EMPTY", max_retries=2) as client:
        try:
            await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "A or B?"}], temperature=0.0, max_tokens=1,
                logprobs=True, top_logprobs=2, extra_body={"structured_outputs": {"choice": ["A", "B"]}}, timeout=120,
            )
        except openai.OpenAIError as e:
            return f"{type(e).__name__}: {e}"
    return None
