"""The servers of a run. Each request goes to a live server: a clip's questions to the server
that already holds the clip's prefix (its "home", where the first of them was sent) unless
that one has more than `slack` (a fair share of the concurrency) requests in flight above the
least busy; otherwise to the least busy, ties taken in turn. A server that refuses
connections is taken out (its items are asked again elsewhere, nothing is recorded for its
death), probed on /health with a doubling backoff, and taken back when it answers and passes
`admit` (the choice-constraint self-test): a server that fails it is never used. Servers
down at start begin taken out. Only when no server has answered for `down_timeout_s` does
the run stop (ServerUnavailable).

A URL behind which vLLM runs N data-parallel engines (`ranks`) is N endpoints, one per engine:
each request to one carries vLLM's `X-data-parallel-rank` header, so a clip's questions go to
the engine that holds its prefix by the same rule (vLLM's own balancer looks at load alone)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import httpx
from openai import AsyncOpenAI

from core.chat import connect
from core.urls import ServerUrl

PROBE_MIN_S = 0.5
PROBE_MAX_S = 15.0


class ServerUnavailable(RuntimeError):
    """No server answers: the run stops. What was answered is kept."""


RANK_HEADER = "X-data-parallel-rank"  # vLLM: the data-parallel engine that serves the request


@dataclass
class Endpoint:
    url: ServerUrl
    client: AsyncOpenAI
    rank: int | None = None  # the data-parallel engine behind `url` (None: the server's choice)
    in_flight: int = 0
    down_since: float | None = None
    probe_at: float = 0.0
    backoff_s: float = PROBE_MIN_S
    refused: str | None = None  # why it failed admission: never used again


Admit = Callable[[ServerUrl], Awaitable[str | None]]  # why a server answering /health must not be used


@dataclass
class Servers:
    urls: list[ServerUrl]
    api_key: str | None
    down_timeout_s: float
    concurrency: int  # requests in flight, all servers together
    down: list[ServerUrl] = field(default_factory=list)  # unreachable at start: taken in once they answer
    admit: Admit | None = None
    warn: Callable[[str], None] = print
    ranks: dict[ServerUrl, int] = field(default_factory=dict)  # data-parallel engines behind a URL (1 if absent)
    endpoints: list[Endpoint] = field(init=False)
    slack: int = field(init=False)  # in flight above the least busy before a clip's questions leave its home
    homes: dict[Hashable, Endpoint] = field(init=False, default_factory=dict)
    turn: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        # A whole fair share, at least 2: a clip leaves its home only for a server that is much
        # slower (a smaller slack sends a clip's questions elsewhere, where each prefills it again)
        self.endpoints = [
            Endpoint(u, self._client(u, rank), rank)
            for u in self.urls
            for rank in ([None] if self.ranks.get(u, 1) <= 1 else range(self.ranks[u]))
        ]
        self.slack = max(2, self.concurrency // len(self.endpoints))
        for e in self.endpoints:
            if e.url in self.down:
                self.lost(e)

    def _client(self, url: ServerUrl, rank: int | None) -> AsyncOpenAI:
        headers = {} if rank is None else {RANK_HEADER: str(rank)}
        return connect(url, self.api_key, max_retries=0, default_headers=headers)

    def _live(self) -> list[Endpoint]:
        return [e for e in self.endpoints if e.down_since is None]

    async def take(self, home: Hashable | None = None) -> Endpoint:
        """A live server for a request of the clip `home` names (see the module); waits while
        none is live, and raises ServerUnavailable after `down_timeout_s` of that."""
        while not (live := self._live()):
            if all(e.refused for e in self.endpoints):
                raise ServerUnavailable("; ".join(f"{e.url}: {e.refused}" for e in self.endpoints))
            last = max(e.down_since or 0.0 for e in self.endpoints)
            if time.monotonic() - last > self.down_timeout_s:
                raise ServerUnavailable(
                    f"{', '.join(map(str, self.urls))} stopped answering: no server accepted a connection "
                    f"for {self.down_timeout_s:g} s"
                )
            await asyncio.sleep(0.2)
        e = self._pick(live, home)
        e.in_flight += 1
        if home is not None:
            self.homes.setdefault(home, e)  # the first request of a clip prefills it there
        return e

    def _pick(self, live: list[Endpoint], home: Hashable | None) -> Endpoint:
        least = min(e.in_flight for e in live)
        held = self.homes.get(home)
        if held is not None and held.down_since is None and held.in_flight <= least + self.slack:
            return held
        tied = [e for e in live if e.in_flight == least]
        self.turn += 1
        return tied[self.turn % len(tied)]

    @staticmethod
    def give(e: Endpoint) -> None:
        e.in_flight -= 1

    def lost(self, e: Endpoint) -> None:
        """`e`'s server refused a connection: every engine behind its URL is down."""
        for same in (x for x in self.endpoints if x.url == e.url and x.down_since is None):
            same.down_since, same.probe_at, same.backoff_s = (
                time.monotonic(),
                time.monotonic() + PROBE_MIN_S,
                PROBE_MIN_S,
            )
            for home in [h for h, at in self.homes.items() if at is same]:  # a restart empties its cache
                del self.homes[home]

    async def probe_forever(self, http: httpx.AsyncClient | None = None) -> None:
        """Every down server's /health, each on its own backoff; taken back on HTTP 200 once
        admitted (through `http`, default a client of its own: a simulation passes its own)."""
        async with contextlib.AsyncExitStack() as own:
            http = http or await own.enter_async_context(httpx.AsyncClient(timeout=2.0))
            while True:
                now = time.monotonic()
                for e in self.endpoints:
                    if e.down_since is not None and not e.refused and e.probe_at <= now:
                        await self._probe(http, e)
                await asyncio.sleep(0.2)

    async def _probe(self, http: httpx.AsyncClient, e: Endpoint) -> None:
        try:
            ok = (await http.get(e.url.health)).status_code == 200
            problem = await self.admit(e.url) if ok and self.admit is not None else None
        except Exception:  # down, or up but not ready (its /v1 not answering, the self-test failing to run)
            ok, problem = False, None
        if problem:
            e.refused = problem
            self.warn(f"warning: {e.url} answers but is not used: {problem}")
        elif ok:
            e.down_since = None
        else:
            e.backoff_s = min(PROBE_MAX_S, 2 * e.backoff_s)
            e.probe_at = time.monotonic() + e.backoff_s

    async def close(self) -> None:
        for e in self.endpoints:
            await e.client.close()
