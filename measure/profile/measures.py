"""The measures of a serving profile, each on a ready server: what was sent, how long it took,
what came back, and the server's memory; stored as measured (figures come later)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI

from core import serverinfo
from core.chat import completion, text
from core.urls import ServerUrl
from measure.ask.health import Sampler
from measure.profile.inputs import Prepared, edge_request, new

SETTLE_S = 1.0  # before reading memory after a burst: the server's buffers released
SAMPLE_S = 0.1  # memory sampling interval while an input kind is sent
REPEAT_SEED = 1234
FREE_TOKENS = 16  # the free-form replies of the repeatability check


@dataclass(frozen=True)
class Sent:
    """One request's outcome: the reply or the error (HTTP status, the server's message)."""

    seconds: float
    reply: str | None
    prompt_tokens: int | None = None
    status: int | None = None
    error: str | None = None


async def send(client: AsyncOpenAI, kwargs: dict[str, Any]) -> Sent:
    """One request, one attempt, timed."""
    start = time.perf_counter()
    try:
        r = await completion(client, kwargs)
    except openai.APIStatusError as e:
        message = e.body.get("message") if isinstance(e.body, dict) else None
        return Sent(time.perf_counter() - start, None, status=e.status_code, error=str(message or e)[:300])
    except openai.APIError as e:  # no HTTP answer: a timeout, a closed connection
        return Sent(time.perf_counter() - start, None, error=f"{type(e).__name__}: {e}"[:300])
    return Sent(time.perf_counter() - start, text(r), (r.get("usage") or {}).get("prompt_tokens"), status=200)


def rss(url: ServerUrl) -> int | None:
    """The server's process group's resident memory now (a server `serve run` started here)."""
    info = serverinfo.lookup(url, wait_s=0)
    return serverinfo.group_rss(info.pid) if info is not None else None


async def latency(
    client: AsyncOpenAI, url: ServerUrl, model: str, dtype: str, requests: dict[str, list[Prepared]], tick: Callable
) -> list[dict[str, Any]]:
    """Per input kind, one at a time: the first request (cold: the first of its kind this
    server sees), then the others (warm: other clips of the kind), with the server's peak memory
    while they ran."""
    rows = []
    for name, todo in requests.items():
        with Sampler([url], interval_s=SAMPLE_S) as sampler:
            sent = []
            for p in todo:
                sent.append(await send(client, new(p.kwargs, model=model)))
                tick()
        peak = sampler.peaks[url]
        rows.append(
            {
                "dtype": dtype,
                "kind": name,
                "frames": todo[0].kind.frames,
                "seeds": [p.seed for p in todo],
                "seconds": [s.seconds for s in sent],
                "replies": [s.reply for s in sent],
                "prompt_tokens": [s.prompt_tokens for s in sent],
                "errors": [s.error for s in sent if s.error],
                "peak_rss_bytes": peak,
            }
        )
    return rows


async def burst(client: AsyncOpenAI, kwargs: dict[str, Any], n: int, in_flight: int, tick: Callable) -> list[Sent]:
    """`n` new copies of a request, at most `in_flight` at a time."""
    gate = asyncio.Semaphore(in_flight)

    async def one() -> Sent:
        async with gate:
            out = await send(client, new(kwargs))
            tick()
            return out

    return await asyncio.gather(*(one() for _ in range(n)))


def requests_at(level: int, least: int) -> int:
    """Requests sent at `level` in flight: twice the level, at least `least`."""
    return max(least, 2 * level)


async def throughput(
    client: AsyncOpenAI, kwargs: dict[str, Any], levels: Sequence[int], least: int, tick: Callable
) -> list[dict[str, Any]]:
    """Per requests in flight: requests per second over a burst, and each request's latency."""
    rows = []
    for level in levels:
        start = time.perf_counter()
        sent = await burst(client, kwargs, requests_at(level, least), level, tick)
        rows.append(
            {
                "in_flight": level,
                "requests": len(sent),
                "seconds": time.perf_counter() - start,
                "latencies": [s.seconds for s in sent],
                "errors": sum(s.error is not None for s in sent),
            }
        )
    return rows


async def session(
    client: AsyncOpenAI, url: ServerUrl, kwargs: dict[str, Any], n: int, in_flight: int, tick: Callable
) -> dict[str, Any]:
    """The leak check: the server's memory before, after `n` requests and after `10 n`."""
    before = rss(url)
    first = await burst(client, kwargs, n, in_flight, tick)
    await asyncio.sleep(SETTLE_S)
    after_n = rss(url)
    rest = await burst(client, kwargs, 9 * n, in_flight, tick)
    await asyncio.sleep(SETTLE_S)
    return {
        "n": n,
        "in_flight": in_flight,
        "rss_before_bytes": before,
        "rss_after_n_bytes": after_n,
        "rss_after_10n_bytes": rss(url),
        "errors": sum(s.error is not None for s in [*first, *rest]),
    }


def free_form(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request without its choice constraint, a short free reply."""
    extra = {k: v for k, v in (kwargs.get("extra_body") or {}).items() if k != "structured_outputs"}
    return kwargs | {"extra_body": extra, "max_tokens": FREE_TOKENS, "logprobs": None, "top_logprobs": None}


async def repeats(client: AsyncOpenAI, kwargs: dict[str, Any], n: int, tick: Callable) -> dict[str, list]:
    """The same free-form request `n` times each: at temperature 0, at 0.7 with a seed, at 0.7
    without one (one at a time)."""
    base = free_form(kwargs)
    out: dict[str, list] = {}
    for name, changes in (
        ("temperature 0", {"temperature": 0.0}),
        (f"temperature 0.7, seed {REPEAT_SEED}", {"temperature": 0.7, "seed": REPEAT_SEED}),
        ("temperature 0.7, no seed", {"temperature": 0.7}),
    ):
        out[name] = []
        for _ in range(n):
            sent = await send(client, new(base, **changes))
            out[name].append(sent.reply if sent.error is None else f"error: {sent.error}")
            tick()
    return out


async def edges(
    client: AsyncOpenAI, url: ServerUrl, model: str, built: dict[str, Callable], alive: Callable, tick: Callable
) -> list[dict[str, Any]]:
    """Each edge input sent once, what happened, and whether the server still answers; once
    it does not, the rest are not sent (said so)."""
    rows: list[dict[str, Any]] = []
    for name, build in built.items():
        if rows and not rows[-1]["alive"]:
            rows.append({"input": name, "outcome": "not sent: the server had died", "alive": False})
            continue
        sent = await send(client, edge_request(model, *build()))
        if sent.error is None:
            outcome = f"answered: {sent.reply!r}"
        elif sent.status is None:
            outcome = f"no HTTP answer: {sent.error}"
        else:
            outcome = f"refused (HTTP {sent.status}): {sent.error}"
        rows.append(
            {"input": name, "outcome": outcome, "status": sent.status, "seconds": sent.seconds, "alive": alive(url)}
        )
        tick()
    return rows
