"""Talking to an OpenAI-compatible server (vLLM): its /v1/models, and one chat completion with
bounded retries. Asking (`measure.ask`) and judging (`measure.score.judge`) share it."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI

from core.errors import SetupError, Unreachable
from core.urls import ServerUrl

RETRYABLE = (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError, openai.RateLimitError)


class ServerLost(Exception):
    """A server refused the connection: it is down (or restarting)."""


def list_models(url: ServerUrl, api_key: str | None, timeout: float = 4.0) -> list[dict]:
    """`/v1/models` of one server; SetupError naming the URL if it does not answer."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(url.models, headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise Unreachable(
            f"server {url} unreachable ({type(e).__name__}); start it with `sh scripts/serve.sh`"
        ) from None
    if r.status_code == 401:
        raise SetupError(f"server {url} refused the API key (HTTP 401); pass --api-key or set VLLM_API_KEY")
    if r.status_code != 200:
        raise SetupError(f"server {url} answered /models with HTTP {r.status_code}")
    return r.json()["data"]


def connect(url: ServerUrl, api_key: str | None, **kwargs: Any) -> AsyncOpenAI:
    """An OpenAI client for one server on openai's aiohttp transport: it costs the sender less
    CPU a request than the default httpx one (docs/performance.md)."""
    return AsyncOpenAI(base_url=url.v1, api_key=api_key or "EMPTY", http_client=openai.DefaultAioHttpClient(), **kwargs)


def refused(e: BaseException) -> bool:
    """The server did not accept the connection at all (down or restarting), as opposed to a
    dropped or slow one."""
    # the transport's own error is the cause's cause (openai's aiohttp adapter maps a refused
    # connection to a ConnectTimeout): matched by name, as the adapter's httpx is its own build
    causes = [e.__cause__, getattr(e.__cause__, "__cause__", None)]
    return isinstance(e, openai.APIConnectionError) and any(
        type(c).__name__ in ("ConnectError", "ClientConnectorError") for c in causes
    )


async def completion(client: AsyncOpenAI, args: dict[str, Any]) -> dict[str, Any]:
    """One chat completion, `args` as `client.chat.completions.create` takes them, sent as they
    are and answered as JSON: openai's typed path walks every request's messages against its
    types and builds a model of every reply, which costs a sender more CPU than the HTTP."""
    body = {k: v for k, v in args.items() if k not in ("extra_body", "timeout")} | args.get("extra_body", {})
    options = {"timeout": args["timeout"]} if "timeout" in args else {}
    return await client.post("/chat/completions", body=body, cast_to=object, options=options)


def text(resp: dict[str, Any]) -> str:
    """A chat completion's reply text, as JSON (`completion`): empty when its message has none."""
    return (resp["choices"][0].get("message") or {}).get("content") or ""


async def create(
    client: AsyncOpenAI, args: dict[str, Any], max_attempts: int, backoff_s: float, lost_when_refused: bool = False
) -> tuple[dict[str, Any] | None, int, str]:
    """One chat completion (`completion`) with bounded retries (exponential backoff with
    jitter, capped at 8 s) on connection trouble, timeouts and 5xx; a 4xx is final. With
    `lost_when_refused`, a refused connection raises ServerLost instead (the caller asks another
    server). Returns (the reply as JSON or None, attempts made, the last error)."""
    error = ""
    for attempt in range(1, max_attempts + 1):
        try:
            return await completion(client, args), attempt, ""
        except RETRYABLE as e:
            if lost_when_refused and refused(e):
                raise ServerLost(str(e)) from None
            error = f"{type(e).__name__}: {e}"
            if attempt < max_attempts:
                await asyncio.sleep(min(8.0, backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random()))
        except openai.APIStatusError as e:  # 4xx: asking again will not help
            return None, attempt, f"HTTP {e.status_code}: {e.message}"
    return None, max_attempts, error
