"""The servers of a run: each request goes to the live server with the fewest requests in
flight; a server that refuses connections is taken out (its items are asked again
elsewhere, nothing is recorded for its death), probed on /health with a doubling backoff,
and taken back when it answers. Only when no server has answered for `down_timeout_s`
does the run stop (ServerUnavailable)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
from openai import AsyncOpenAI

from core.urls import ServerUrl

PROBE_MIN_S = 0.5
PROBE_MAX_S = 15.0


class ServerUnavailable(RuntimeError):
    """No server answers: the run stops. What was answered is kept."""


class ServerLost(Exception):
    """A server refused the connection: it is down (or restarting)."""


@dataclass
class Endpoint:
    url: ServerUrl
    client: AsyncOpenAI
    in_flight: int = 0
    down_since: float | None = None
    probe_at: float = 0.0
    backoff_s: float = PROBE_MIN_S
    taken_out: int = 0  # how often this run took it out


@dataclass
class Servers:
    urls: list[ServerUrl]
    api_key: str | None
    down_timeout_s: float
    endpoints: list[Endpoint] = field(init=False)

    def __post_init__(self) -> None:
        self.endpoints = [
            Endpoint(u, AsyncOpenAI(base_url=u.v1, api_key=self.api_key or "EMPTY", max_retries=0)) for u in self.urls
        ]

    def _live(self) -> list[Endpoint]:
        return [e for e in self.endpoints if e.down_since is None]

    async def take(self) -> Endpoint:
        """The live server with the fewest requests in flight (ties: the first listed); waits
        while none is live, and raises ServerUnavailable after `down_timeout_s` of that."""
        while not (live := self._live()):
            last = max(e.down_since or 0.0 for e in self.endpoints)
            if time.monotonic() - last > self.down_timeout_s:
                raise ServerUnavailable(
                    f"{', '.join(map(str, self.urls))} stopped answering: no server accepted a connection "
                    f"for {self.down_timeout_s:g} s"
                )
            await asyncio.sleep(0.2)
        e = min(live, key=lambda x: x.in_flight)
        e.in_flight += 1
        return e

    @staticmethod
    def give(e: Endpoint) -> None:
        e.in_flight -= 1

    @staticmethod
    def lost(e: Endpoint) -> None:
        if e.down_since is None:
            e.down_since, e.probe_at, e.backoff_s = time.monotonic(), time.monotonic() + PROBE_MIN_S, PROBE_MIN_S
            e.taken_out += 1

    async def probe_forever(self) -> None:
        """Every down server's /health, each on its own backoff; taken back on HTTP 200."""
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                now = time.monotonic()
                for e in self.endpoints:
                    if e.down_since is None or e.probe_at > now:
                        continue
                    try:
                        ok = (await http.get(e.url.health)).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if ok:
                        e.down_since = None
                    else:
                        e.backoff_s = min(PROBE_MAX_S, 2 * e.backoff_s)
                        e.probe_at = time.monotonic() + e.backoff_s
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        for e in self.endpoints:
            await e.client.close()
