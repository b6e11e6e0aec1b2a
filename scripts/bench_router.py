"""Benchmark measure's routing at scales this machine cannot hold, by simulation: measure's own
router (`measure.ask.servers.Servers`: clip affinity with its slack, least-in-flight, ties in
turn, a refused server taken out and its items asked elsewhere, taken back by its own /health
probe) drives N simulated vLLM servers in virtual time, against round robin and a load-only
balancer (vLLM data parallel's rule: the least in flight, ties in turn, prefixes not looked at).

A simulated server shares its speed among the requests it holds (processor sharing); a request
costs a fixed overhead, its uncached prompt tokens (the clip's video tokens unless the server's
prefix cache holds that clip x model: least recently used, `--cache-clips` entries) and its
decoded tokens. Speeds differ by up to `--spread` either way; with `--loss`, one server is lost
(its requests refused) a third of the way in and back at two thirds, its cache empty.

Printed per N: throughput as a fraction of the ideal (every clip x model prefilled once, every
server busy), prefills per clip x model, and the smallest server's share of the items against
its fair share (its speed's share), for each rule. `--check SAVED` replays a real multi-server
run saved by `bench_scale.py --save` (its item order, its concurrency, its two servers at the
speeds their answers measured) and prints the split the simulation gives beside the real one.

Usage: .venv/bin/python scripts/bench_router.py [--servers 2,8,64] [--clips 100] [--loss]
       [--check DIR]
"""

from __future__ import annotations

import asyncio
import json
import random
import selectors
import sys
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core import cli  # noqa: E402
from core.cli import command, counts, option  # noqa: E402
from core.urls import ServerUrl  # noqa: E402
from measure.ask import servers as routing  # noqa: E402

# The service model, in a GPU server's terms: Qwen3-VL's video prompt is nearly all video tokens
# (8 frames: about 1,200) against tens of text tokens and a few decoded; prefill is cheap per
# token against decoding one token, a fixed cost per request covers the rest.
VIDEO_TOKENS, TEXT_TOKENS, OUT_TOKENS = 1200, 40, 4
OVERHEAD_S, PREFILL_S, DECODE_S = 0.004, 0.00004, 0.006


class Refused(ConnectionError):
    """The simulated server is down: the connection is refused."""


class _Jump(selectors.DefaultSelector):
    """A selector that never waits: with nothing ready it moves the virtual clock to the next
    timer instead."""

    clock: list[float]

    def select(self, timeout: float | None = None):
        events = super().select(0)
        if not events:
            if timeout is None:
                raise RuntimeError("the simulation stalled: nothing scheduled and nothing ready")
            self.clock[0] += timeout
        return events


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: sleeps and timers cost no wall-clock time."""

    def __init__(self) -> None:
        self.clock = [0.0]
        selector = _Jump()
        selector.clock = self.clock
        super().__init__(selector)

    def time(self) -> float:
        return self.clock[0]


@dataclass
class SimServer:
    speed: float  # work per second, shared by the requests it holds
    cache_clips: int
    cache: OrderedDict = field(default_factory=OrderedDict)
    active: dict[int, list] = field(default_factory=dict)  # request -> [work left, future]
    up: bool = True
    last: float = 0.0
    timer: asyncio.TimerHandle | None = None
    prefills: Counter = field(default_factory=Counter)
    served: int = 0

    def _advance(self, now: float) -> None:
        if self.active:
            done = (now - self.last) * self.speed / len(self.active)
            for entry in self.active.values():
                entry[0] -= done
        self.last = now

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.active:
            soonest = min(w for w, _ in self.active.values())
            self.timer = loop.call_at(self.last + max(0.0, soonest) * len(self.active) / self.speed, self._finish, loop)

    def _finish(self, loop: asyncio.AbstractEventLoop) -> None:
        self._advance(loop.time())
        for rid in [r for r, (w, _) in self.active.items() if w <= 1e-12]:
            _, fut = self.active.pop(rid)
            self.served += 1
            fut.set_result(None)
        self._schedule(loop)

    def cost(self, key: tuple) -> float:
        """The request's work: its video prefilled unless this server's cache holds the clip x model."""
        if key in self.cache:
            self.cache.move_to_end(key)
            uncached = TEXT_TOKENS
        else:
            self.cache[key] = True
            if len(self.cache) > self.cache_clips:
                self.cache.popitem(last=False)
            self.prefills[key] += 1
            uncached = VIDEO_TOKENS + TEXT_TOKENS
        return OVERHEAD_S + PREFILL_S * uncached + DECODE_S * OUT_TOKENS

    async def serve(self, key: tuple, rid: int) -> None:
        if not self.up:
            raise Refused
        loop = asyncio.get_running_loop()
        self._advance(loop.time())
        fut = loop.create_future()
        self.active[rid] = [self.cost(key), fut]
        self._schedule(loop)
        await fut

    def lose(self, loop: asyncio.AbstractEventLoop) -> None:
        """Down: every request it holds is refused, its cache is gone (a restart)."""
        self._advance(loop.time())
        self.up = False
        for _, fut in self.active.values():
            fut.set_exception(Refused())
        self.active.clear()
        self.cache.clear()
        self._schedule(loop)


class Health:
    """The router's /health probe against the simulated servers (`Servers.probe_forever(http)`)."""

    def __init__(self, sims: dict[str, SimServer]) -> None:
        self.sims = sims

    async def get(self, url: str) -> SimpleNamespace:
        if not self.sims[url].up:
            raise Refused
        return SimpleNamespace(status_code=200)


class RoundRobin(routing.Servers):
    def _pick(self, live, home):
        self.turn += 1
        return live[self.turn % len(live)]


class LoadOnly(routing.Servers):
    """vLLM data parallel's balancer: the least in flight, ties in turn; prefixes not looked at."""

    def _pick(self, live, home):
        least = min(e.in_flight for e in live)
        tied = [e for e in live if e.in_flight == least]
        self.turn += 1
        return tied[self.turn % len(tied)]


RULES = {"measure": routing.Servers, "round robin": RoundRobin, "load only (vLLM DP)": LoadOnly}


@dataclass
class Outcome:
    seconds: float
    ideal_s: float
    prefills: float
    served: list[int]
    fair: list[float]  # each server's fair share of the items (its speed's share)

    @property
    def efficiency(self) -> float:
        return self.ideal_s / self.seconds

    def smallest_share(self, but_first: bool = False) -> float:
        """The smallest server's items over its fair share (the lost one, the first, left out)."""
        pairs = list(zip(self.served, self.fair))[1 if but_first else 0 :]
        return min(s / f for s, f in pairs if f > 0)


def workload(clips: int, models: int, seed: int) -> list[tuple]:
    """(clip, model) per item, in measure's order: a clip x model's questions together; 1 to 4
    questions a clip (2.5 on average, as the reference study's)."""
    rng = random.Random(seed)
    per_clip = [rng.choice((1, 2, 3, 4)) for _ in range(clips)]
    return [(c, m) for m in range(models) for c in range(clips) for _ in range(per_clip[c])]


def simulate(
    rule: type[routing.Servers], items: list[tuple], speeds: list[float], concurrency: int, cache_clips: int, loss: bool
) -> Outcome:
    keys = set(items)
    cost_one = OVERHEAD_S + PREFILL_S * TEXT_TOKENS + DECODE_S * OUT_TOKENS
    ideal_s = (len(items) * cost_one + len(keys) * PREFILL_S * VIDEO_TOKENS) / sum(speeds)
    loop = VirtualLoop()
    urls = [ServerUrl.parse(f"http://sim-{i}:8000/v1") for i in range(len(speeds))]
    sims = {u.health: SimServer(speed, cache_clips) for u, speed in zip(urls, speeds)}
    by_url = {u: sims[u.health] for u in urls}
    lost = (ideal_s / 3, 2 * ideal_s / 3) if loss else None
    with mock.patch.object(routing, "time", SimpleNamespace(monotonic=loop.time)):
        servers = rule(urls, None, down_timeout_s=3600, concurrency=concurrency, warn=lambda _: None)
        seconds = loop.run_until_complete(_drive(servers, by_url, items, sims, lost))
    loop.close()
    return Outcome(
        seconds=seconds,
        ideal_s=ideal_s,
        prefills=sum(sum(s.prefills.values()) for s in sims.values()) / len(keys),
        served=[s.served for s in sims.values()],
        fair=[len(items) * v / sum(speeds) for v in speeds],
    )


async def _drive(servers, by_url, items, sims, lost: tuple[float, float] | None) -> float:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    for rid, key in enumerate(items):
        queue.put_nowait((rid, key))
    done = asyncio.Event()
    left = [len(items)]

    async def worker() -> None:
        while not queue.empty():
            rid, key = queue.get_nowait()
            while True:  # measure's ask_somewhere: a refused server is taken out, the item asked again
                e = await servers.take(key)
                try:
                    await by_url[e.url].serve(key, rid)
                    break
                except Refused:
                    servers.lost(e)
                finally:
                    servers.give(e)
            left[0] -= 1
            if not left[0]:
                done.set()

    prober = asyncio.ensure_future(servers.probe_forever(Health(sims)))
    workers = [asyncio.ensure_future(worker()) for _ in range(servers.concurrency)]
    if lost is not None:  # the first server: down at lost[0], answering again at lost[1]
        first = next(iter(by_url.values()))
        loop.call_at(lost[0], first.lose, loop)
        loop.call_at(lost[1], setattr, first, "up", True)
    await done.wait()
    seconds = loop.time()
    prober.cancel()
    for w in workers:
        w.cancel()
    await servers.close()
    return seconds


def speeds_for(n: int, spread: float, seed: int) -> list[float]:
    rng = random.Random(seed + n)
    return [1.0 + rng.uniform(-spread, spread) for _ in range(n)]


@dataclass
class Bench:
    servers: tuple[int, ...] = option(
        (2, 8, 64), "Simulated servers, one table row group each.", parser=counts, metavar="N,..."
    )
    clips: int = option(100, "Clips per server.")
    models: int = option(2, "Models a clip is asked of.")
    depth: int = option(16, "Requests in flight per server (measure --concurrency / servers).")
    spread: float = option(0.3, "Server speeds differ by up to this share either way.")
    cache_clips: int = option(64, "Clips x models a server's prefix cache holds.")
    loss: bool = option(False, "Lose one server a third of the way in, back at two thirds.")
    seed: int = option(0, "Workload and speeds.")
    check: Path | None = option(None, "Replay a run saved by bench_scale.py --save (DIR) instead.", metavar="DIR")


app = cli.app(__doc__)


@command(app, Bench)
def bench(args: Bench) -> None:
    """The router at N simulated servers against round robin and a load-only balancer."""
    if args.check is not None:
        return check(args.check)
    print(
        f"simulated: {args.clips} clips x {args.models} models per server (1-4 questions a clip), concurrency "
        f"{args.depth} per server, speeds within ±{100 * args.spread:.0f} %, prefix cache {args.cache_clips} "
        f"clips x models a server"
        + (", one server lost a third of the way in and back at two thirds (its share left out)" if args.loss else "")
    )
    print("servers | rule | throughput / ideal | prefills per clip x model | smallest share / fair")
    for n in args.servers:
        items = workload(args.clips * n, args.models, args.seed)
        speeds = speeds_for(n, args.spread, args.seed)
        for name, rule in RULES.items():
            o = simulate(rule, items, speeds, args.depth * n, args.cache_clips, args.loss)
            print(f"{n} | {name} | {o.efficiency:.3f} | {o.prefills:.3f} | {o.smallest_share(args.loss):.3f}")


def check(saved: Path) -> None:
    """A real run saved by bench_scale.py --save, replayed: the split the simulation gives on its
    item order, beside the split the real servers made."""
    run = json.loads((saved / "router.json").read_text())
    items = [tuple(k) for k in run["items"]]
    o = simulate(routing.Servers, items, run["speeds"], run["concurrency"], 10_000, False)
    print(
        f"replayed {len(items)} items over {len(run['speeds'])} servers (concurrency {run['concurrency']}): "
        f"simulated split {'/'.join(map(str, o.served))}, real split {'/'.join(map(str, run['served']))}; "
        f"prefills per clip x model simulated {o.prefills:.3f}, real {run['prefills']}"
    )


if __name__ == "__main__":
    cli.main(app)
