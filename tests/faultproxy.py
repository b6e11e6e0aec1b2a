"""A fault-injecting HTTP proxy in front of the real vLLM server (loopback only).

At a seeded rate it answers 500 or 503, closes the connection mid-response, or stalls past
the client's timeout; every other request is forwarded (its JSON body rewritten, if asked). Used where a real server
cannot produce these faults on demand.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import Counter
from collections.abc import Callable

import aiohttp
from aiohttp import web

from core.urls import ServerUrl

MODES = ("http500", "http503", "cut", "stall")


def old_vllm(body: dict) -> dict:
    """A request as a vLLM that does not read `structured_outputs` sees it (a `rewrite`)."""
    return {k: v for k, v in body.items() if k != "structured_outputs"}


class FaultProxy:
    def __init__(
        self,
        upstream: str | ServerUrl,
        rate: float,
        seed: int = 0,
        stall_s: float = 6.0,
        modes=MODES,
        rewrite: Callable[[dict], dict] | None = None,
        port: int = 0,
    ):
        self.upstream = ServerUrl.parse(upstream).root
        self.rewrite = rewrite  # applied to every JSON request body (e.g. to play an older vLLM)
        self.rate, self.stall_s, self.modes = rate, stall_s, modes
        self.rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self.port = port  # 0: any free one
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return ServerUrl.local(self.port).root

    @property
    def base_url(self) -> str:
        """The proxy as a server to measure (its /v1)."""
        return ServerUrl.local(self.port).v1

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
        self._ready.set()
        await self._stop.wait()
        await self._session.close()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.rewrite is not None and request.method == "POST":
            body = json.dumps(self.rewrite(json.loads(body))).encode()
        inject = request.method == "POST" and self.rng.random() < self.rate
        mode = self.rng.choice(self.modes) if inject else None
        if mode:
            self.injected[mode] += 1
        if mode in ("http500", "http503"):
            return web.json_response({"error": {"message": f"injected {mode}"}}, status=int(mode[4:]))
        if mode == "stall":
            await asyncio.sleep(self.stall_s)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(
            request.method, self.upstream + request.rel_url.path_qs, data=body, headers=headers
        ) as up:
            payload = await up.read()
            self.forwarded += 1
            if mode == "cut":  # send the head and half the body, then drop the connection
                resp = web.StreamResponse(
                    status=up.status, headers={"Content-Type": "application/json", "Content-Length": str(len(payload))}
                )
                await resp.prepare(request)
                await resp.write(payload[: len(payload) // 2])
                request.transport.close()
                return resp
            return web.Response(body=payload, status=up.status, content_type="application/json")
