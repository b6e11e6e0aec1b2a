"""Benchmark measure's scale-out over several servers, printing ratios from one run.

- prefix reuse with one server and with two (clip affinity: a clip's questions go where its
  prefix is): the share of prompt tokens served from vLLM's prefix cache (goal: two within 5
  points of one) and the video prefills per clip x model (1 at best);
- two servers / one server on the same machine: requests/s of measure's own sender
  (`measure.ask.client.run_items`) over two base URLs vs one. On a 2-core machine the two
  servers share the cores, so expect well under 2x; it is printed as measured.
- least-in-flight vs round robin when one server is slow (the fault proxy adding a fixed
  delay to every request it forwards): time for the same number of items, round robin
  dealing the items alternately to the two servers. Least-in-flight must finish sooner.

Each measurement gets its own synthetic dataset (its own seed, so its own clip bytes), so
vLLM's multimodal cache cannot serve one from another's work. The two datasets of each
comparison are cut to the same shape (as many clips with one, two, ... questions): the
cached share and the time depend on how many items there are and how many share a clip.

Usage: .venv/bin/python scripts/bench_scale.py [--videos 40] [--delay 2.0] [--concurrency 16]
       [--base-url URL --base-url URL]   (two running servers instead of starting two)
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_measure import SPLIT, fresh_seeds, make_dataset  # noqa: E402  (this folder is on sys.path)

from core import cli  # noqa: E402
from core.ask import AskConfig  # noqa: E402
from core.chat import list_models  # noqa: E402
from core.cli import command, option  # noqa: E402
from core.groups import api_key_option  # noqa: E402
from core.layout import DataLayout  # noqa: E402
from core.records import Prediction  # noqa: E402
from core.urls import ServerUrl  # noqa: E402
from core.variants import PLAIN  # noqa: E402
from measure.ask import media  # noqa: E402
from measure.ask.client import Item, Reply, run_items, self_test  # noqa: E402
from measure.ask.plan import ask_config, asked, plan  # noqa: E402
from measure.ask.servers import Servers  # noqa: E402
from measure.report.health import cached_share, prefills_per_clip  # noqa: E402
from serve.__main__ import poll_ready  # noqa: E402
from serve.command import free_port  # noqa: E402
from tests.faultproxy import FaultProxy  # noqa: E402


@contextlib.contextmanager
def two_servers(urls: list[ServerUrl]) -> Iterator[list[ServerUrl]]:
    """The two base URLs given, or two `serve run`s of the embedded default started here."""
    if urls:
        yield urls
        return
    procs, started = [], []
    try:
        for _ in range(2):
            port = free_port()
            started.append(ServerUrl.local(port))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "serve", "run", "--port", str(port)],
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for url, proc in zip(started, procs):
            poll_ready(url, 900, proc=proc)
        yield started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)


def items(root: Path, seed: int, videos: int, models: list[str]) -> list[Item]:
    """Every plain item of a synthetic dataset of its own (its own seed, so its own clip bytes)."""
    return plan(DataLayout(make_dataset(root, seed, videos)), models, [PLAIN], SPLIT, None)


def alike(a: list[Item], b: list[Item]) -> tuple[list[Item], list[Item]]:
    """`a` and `b` cut to the same shape: clips paired in order of question count, each pair
    cut to the smaller count."""
    pairs = [(qa, qb, min(len(qa), len(qb))) for qa, qb in zip(_by_clip(a), _by_clip(b))]
    keep_a = {q for qa, _, n in pairs for q in qa[:n]}
    keep_b = {q for _, qb, n in pairs for q in qb[:n]}
    return [i for i in a if i.question.id in keep_a], [i for i in b if i.question.id in keep_b]


def _by_clip(todo: list[Item]) -> list[list[str]]:
    """Each clip's question ids, clips with the most questions first."""
    clips: dict[str, dict[str, None]] = {}  # ordered sets: a question comes once per model
    for i in todo:
        clips.setdefault(i.question.video_id, {})[i.question.id] = None
    return sorted(map(list, clips.values()), key=len, reverse=True)


@dataclass
class Sent:
    """One measurement: its time and what was answered."""

    seconds: float
    preds: list[Prediction]

    @property
    def served(self) -> Counter[str]:
        """Items answered per server."""
        return Counter(p.server for p in self.preds)

    @property
    def rate(self) -> float:
        return len(self.preds) / self.seconds

    @property
    def cached(self) -> float:
        return cached_share(self.preds) or 0.0

    def __str__(self) -> str:
        return f"{self.rate:.1f} req/s, {self.cached:.1f} % cached, {prefills_per_clip(self.preds)} prefills/clip"


def send(todo: list[Item], urls: list[ServerUrl], cfg: AskConfig, concurrency: int, pool) -> Sent:
    """Measure's sender over `urls`."""
    preds: list[Prediction] = []

    def on_result(item: Item, reply: Reply) -> None:
        assert reply.text is not None, reply.error
        preds.append(asked(item, reply))

    servers = Servers(urls, None, cfg.down_timeout_s, concurrency)
    start = time.perf_counter()
    asyncio.run(run_items(todo, servers, cfg, on_result, pool))
    return Sent(time.perf_counter() - start, preds)


def round_robin(todo: list[Item], urls: list[ServerUrl], cfg: AskConfig, concurrency: int, pool) -> float:
    """Seconds when the items are dealt alternately, each server sent its share on its own."""

    async def both() -> None:
        half = max(1, concurrency // 2)
        await asyncio.gather(
            *(
                run_items(todo[i::2], Servers([u], None, cfg.down_timeout_s, half), cfg, lambda *_: None, pool)
                for i, u in enumerate(urls)
            )
        )

    start = time.perf_counter()
    asyncio.run(both())
    return time.perf_counter() - start


@dataclass
class Bench:
    videos: int = option(40, "Synthetic videos per measurement (each its own dataset).")
    delay: float = option(2.0, "Seconds the proxy adds to each request of the slow server.")
    concurrency: int = option(16, "Requests in flight.")
    base_url: list[ServerUrl] = option(
        factory=list,
        help="A running server; give two (may be equal).",
        parser=ServerUrl.parse,
        metavar="URL",
        shown="two `serve run`s started here",
    )
    api_key: str | None = api_key_option()


app = cli.app(__doc__)


@command(app, Bench)
def bench(args: Bench) -> None:
    """Two servers vs one, and least-in-flight vs round robin with one slowed."""
    if args.base_url and len(args.base_url) != 2:
        cli.fail("give --base-url twice, or not at all")
    with two_servers(args.base_url) as urls, tempfile.TemporaryDirectory() as d:
        root, seeds = Path(d), fresh_seeds()
        listed = list_models(urls[0], args.api_key)
        models = [m["id"] for m in listed]
        cfg = ask_config(AskConfig(), listed, models)
        for url in urls:
            assert asyncio.run(self_test(url, args.api_key, models[0])) is None
        with media.Workers(cfg.media_workers, cfg.processors.values()) as pool:
            pool.get()  # started before anything is timed

            def fresh() -> list[Item]:
                return items(root, next(seeds), args.videos, models)

            alone, spread = alike(fresh(), fresh())
            one = send(alone, urls[:1], cfg, args.concurrency, pool)
            two = send(spread, urls, cfg, args.concurrency, pool)
            slowed, dealt = alike(fresh(), fresh())
            with FaultProxy(urls[1].root, rate=1.0, modes=("stall",), stall_s=args.delay) as slow:
                mixed = [urls[0], ServerUrl.parse(slow.url)]
                least = send(slowed, mixed, cfg, args.concurrency, pool)
                rr_s = round_robin(dealt, mixed, cfg, args.concurrency, pool)
    print(
        f"items: {len(alone)} with one server and with two, {len(slowed)} with one slowed, each way "
        f"({len(models)} models, split {SPLIT}, distinct clips each, each pair cut to the same shape); "
        f"concurrency {args.concurrency}"
    )
    print(f"one server: {one}; two servers: {two} (split {_split(two, urls)})")
    print(f"two servers / one: {two.rate / one.rate:.2f}x throughput (same machine: they share its cores)")
    print(
        f"one server slowed by {args.delay:g} s per request: least-in-flight {least.seconds:.1f} s "
        f"(sent {least.served[str(mixed[1])]} of {len(slowed)} to the slow one), round robin {rr_s:.1f} s"
    )
    print(f"round robin / least-in-flight time: {rr_s / least.seconds:.2f} (goal > 1)")
    print(f"cached prompt-token share: one server {one.cached:.1f} %, two servers {two.cached:.1f} % (goal: within 5)")


def _split(sent: Sent, urls: list[ServerUrl]) -> str:
    return "/".join(str(sent.served[str(u)]) for u in dict.fromkeys(urls))


if __name__ == "__main__":
    cli.main(app)
