"""Benchmark measure's scale-out over several servers as separate machines would see it,
printing figures from one run.

Servers started here are pinned to cores of their own (`serve run --cpus`: the process
group's CPU affinity and vLLM's OpenMP binding), as two machines would be: on a 2-core
machine, one core each, and the one-server baseline gets the same one core. Every dataset's
frames are decoded into a frame store before it is timed, so the client costs little.

- two servers / one server: requests/s of measure's own sender (`measure.ask.client.run_items`)
  over two base URLs vs one, as measured (goal >= 1.6x); beside it, as a diagnosis only, each
  server's CPU per request (the servers' process groups' CPU seconds, from /proc, per answer:
  side by side on one machine each spends more, for what its cores share); the sender's own
  CPU share; each server's share of the items (goal: none
  below 40 %); the share of prompt tokens served from vLLM's prefix cache (goal: two within 5
  points of one) and the video prefills per clip x model (goal 1.0): clip affinity at work;
- vLLM's own data parallel (`serve run --data-parallel-size 2`, each engine on its own core)
  behind one URL, measured the same way, against the two URLs;
- least-in-flight vs round robin when one server is slow (the fault proxy adding a fixed
  delay to every request it forwards): time for the same number of items, round robin
  dealing the items alternately to the two servers. Least-in-flight must finish sooner.

Each measurement gets its own synthetic dataset (its own seed, so its own clip bytes), so
vLLM's multimodal cache cannot serve one from another's work. The datasets of each
comparison are cut to the same shape (as many clips with one, two, ... questions): the
cached share and the time depend on how many items there are and how many share a clip.

Usage: .venv/bin/python scripts/bench_scale.py [--videos 40] [--delay 2.0] [--concurrency 16]
       [--no-data-parallel] [--base-url URL --base-url URL]   (two running servers instead of
       starting them: not pinned, and no data-parallel server)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_measure import SPLIT, fresh_seeds, make_dataset, started, warm  # noqa: E402  (this folder is on sys.path)
from bench_media import server_cpu_s  # noqa: E402

from core import cli, serverinfo  # noqa: E402
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
from measure.ask.framestore import GB, FrameStore  # noqa: E402
from measure.ask.plan import ask_config, asked, plan  # noqa: E402
from measure.ask.servers import Servers  # noqa: E402
from measure.report.health import cached_share, prefills_per_clip  # noqa: E402
from tests.faultproxy import FaultProxy  # noqa: E402


def halves() -> tuple[str, str]:
    """Two disjoint core lists of equal size from this process's cores (`--cpus` values)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        cli.fail("pinning two servers needs at least 2 cores")
    k = len(cores) // 2
    return ",".join(map(str, cores[:k])), ",".join(map(str, cores[k : 2 * k]))


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
    client_cpu: float = 0.0  # CPU seconds this process (measure's sender) used meanwhile
    server_cpu: float = 0.0  # CPU seconds the servers started here used meanwhile (0: not seen here)

    @property
    def served(self) -> Counter[str]:
        """Items answered per server."""
        return Counter(p.server for p in self.preds)

    @property
    def rate(self) -> float:
        return len(self.preds) / self.seconds

    @property
    def server_ms(self) -> float:
        """Milliseconds of the servers' CPU per answer (0: the servers were not seen here)."""
        return 1000 * self.server_cpu / len(self.preds)

    @property
    def cached(self) -> float:
        return cached_share(self.preds) or 0.0

    def __str__(self) -> str:
        cpu = f", servers {self.server_ms:.0f} ms CPU per request" if self.server_cpu else ""
        return (
            f"{self.rate:.1f} req/s, {self.cached:.1f} % cached, {prefills_per_clip(self.preds)} prefills/clip, "
            f"sender {100 * self.client_cpu / self.seconds:.0f} % of a core{cpu}"
        )


def send(todo: list[Item], urls: list[ServerUrl], cfg: AskConfig, concurrency: int, pool, store=None) -> Sent:
    """Measure's sender over `urls`."""
    preds: list[Prediction] = []

    def on_result(item: Item, reply: Reply) -> None:
        assert reply.text is not None, reply.error
        preds.append(asked(item, reply))

    ranks = {u: serverinfo.engines(u) for u in dict.fromkeys(urls)}  # data parallel: pinned by rank, as measure does
    servers = Servers(urls, None, cfg.down_timeout_s, concurrency, ranks=ranks)
    ports = [u.port for u in dict.fromkeys(urls)]
    start, cpu, served = time.perf_counter(), time.process_time(), sum(map(server_cpu_s, ports))
    asyncio.run(run_items(todo, servers, cfg, on_result, pool, store))
    used = sum(map(server_cpu_s, ports)) - served
    return Sent(time.perf_counter() - start, preds, time.process_time() - cpu, used)


def round_robin(todo: list[Item], urls: list[ServerUrl], cfg: AskConfig, concurrency: int, pool, store=None) -> float:
    """Seconds when the items are dealt alternately, each server sent its share on its own."""

    async def both() -> None:
        half = max(1, concurrency // 2)
        await asyncio.gather(
            *(
                run_items(todo[i::2], Servers([u], None, cfg.down_timeout_s, half), cfg, lambda *_: None, pool, store)
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
    data_parallel: bool = option(True, "Also measure vLLM's data parallel (2 engines) behind one URL.")
    base_url: list[ServerUrl] = option(
        factory=list,
        help="A running server; give two (may be equal).",
        parser=ServerUrl.parse,
        metavar="URL",
        shown="two `serve run`s started here, each on half of the cores",
    )
    api_key: str | None = api_key_option()
    save: Path | None = option(
        None, "Write the two-server run's item order and split to DIR/router.json (bench_router.py --check)."
    )


app = cli.app(__doc__)


@dataclass
class Measured:
    """What one run of the benchmark measured."""

    items: int
    models: int
    one: Sent
    two: Sent
    urls: list[ServerUrl]
    slowed: int
    least: Sent
    slow_url: str
    round_robin_s: float
    later: list[Item]  # a dataset of the two servers' shape, for the data-parallel server
    spread: list[Item]  # the two servers' items, in the order sent
    dp: Sent | None = None
    engines: list[int] | None = None  # requests each data-parallel engine finished


@command(app, Bench)
def bench(args: Bench) -> None:
    """Two servers vs one on cores of their own, data parallel behind one URL, and
    least-in-flight vs round robin with one slowed."""
    if args.base_url and len(args.base_url) != 2:
        cli.fail("give --base-url twice, or not at all")
    cores = None if args.base_url else halves()
    with tempfile.TemporaryDirectory() as d:
        root, seeds = Path(d), fresh_seeds()
        store = FrameStore(root / "frames", 10 * GB)
        with contextlib.ExitStack() as stack:
            urls = args.base_url or stack.enter_context(started(*(["--cpus", c] for c in cores)))
            m = measure_pair(args, urls, root, seeds, store)
        if cores and args.data_parallel:
            with started(["--data-parallel-size", "2", "--cpus", ",".join(cores)]) as (url,):
                m.dp, m.engines = measure_one(args, url, m.later, store)
    show(m, args, pinned=cores)
    if args.save is not None:
        save(m, args, args.save)


def save(m: Measured, args: Bench, out: Path) -> None:
    """The two-server run as bench_router.py replays it: its items in the order sent, the
    concurrency, each server's speed (by Little's law, items in flight over mean latency: with
    the router keeping the servers' in-flight counts level, the inverse of its mean latency),
    each server's items and the prefills per clip x model."""
    out.mkdir(parents=True, exist_ok=True)
    urls = list(dict.fromkeys(m.urls))
    latency = [statistics.fmean(p.latency_s for p in m.two.preds if p.server == str(u) and p.latency_s) for u in urls]
    record = {
        "items": [[str(i.clip), i.model] for i in m.spread],
        "concurrency": args.concurrency,
        "speeds": [min(latency) / x for x in latency],
        "served": _shares(m.two, m.urls),
        "prefills": prefills_per_clip(m.two.preds),
    }
    (out / "router.json").write_text(json.dumps(record))


def measure_pair(args: Bench, urls: list[ServerUrl], root: Path, seeds, store: FrameStore) -> Measured:
    """One server, then both, on datasets of the same shape; then one slowed."""
    listed = list_models(urls[0], args.api_key)
    models = [x["id"] for x in listed]
    cfg = ask_config(AskConfig(), listed, models)
    for url in urls:
        assert asyncio.run(self_test(url, args.api_key, models[0])) is None
    with media.Workers(cfg.media_workers, cfg.processors.values()) as pool:

        def fresh() -> list[Item]:
            return items(root, next(seeds), args.videos, models)

        alone, spread = alike(fresh(), fresh())
        slowed, dealt = alike(fresh(), fresh())
        later, _ = alike(fresh(), spread)  # for the data-parallel server, started once these stop
        warm(alone + spread + slowed + dealt + later, cfg, store, pool)
        one = send(alone, urls[:1], cfg, args.concurrency, pool, store)
        two = send(spread, urls, cfg, args.concurrency, pool, store)
        with FaultProxy(urls[1].root, rate=1.0, modes=("stall",), stall_s=args.delay) as slow:
            mixed = [urls[0], ServerUrl.parse(slow.url)]
            least = send(slowed, mixed, cfg, args.concurrency, pool, store)
            rr_s = round_robin(dealt, mixed, cfg, args.concurrency, pool, store)
    return Measured(len(alone), len(models), one, two, urls, len(slowed), least, str(mixed[1]), rr_s, later, spread)


def measure_one(args: Bench, url: ServerUrl, todo: list[Item], store: FrameStore) -> tuple[Sent, list[int]]:
    """One URL (the data-parallel server) on its own dataset, its frames already in `store`;
    with the requests each of its engines finished meanwhile (vLLM's /metrics)."""
    listed = list_models(url, args.api_key)
    cfg = ask_config(AskConfig(), listed, [x["id"] for x in listed])
    assert asyncio.run(self_test(url, args.api_key, listed[0]["id"])) is None
    before = engine_counts(url)
    with media.Workers(cfg.media_workers, cfg.processors.values()) as pool:
        sent = send(todo, [url], cfg, args.concurrency, pool, store)
    after = engine_counts(url)
    return sent, [after[e] - before.get(e, 0) for e in sorted(after)]


def engine_counts(url: ServerUrl) -> Counter[str]:
    """Requests finished per engine, from the server's Prometheus metrics."""
    text = httpx.get(f"{url.root}/metrics", timeout=30).text
    counts: Counter[str] = Counter()
    for m in re.finditer(r"^vllm:request_success_total\{([^}]*)\} ([0-9.e+]+)$", text, re.M):
        engine = re.search(r'engine="([^"]*)"', m[1])
        counts[engine[1] if engine else "0"] += int(float(m[2]))
    return counts


def show(m: Measured, args: Bench, pinned: tuple[str, str] | None) -> None:
    where = (
        f"cores {pinned[0]} and {pinned[1]}, one each; the one server on cores {pinned[0]}"
        if pinned
        else ("the servers given (not pinned here)")
    )
    print(
        f"items: {m.items} with one server and with two, {m.slowed} with one slowed ({m.models} models, split "
        f"{SPLIT}, distinct clips each, each pair cut to the same shape); concurrency {args.concurrency}; {where}"
    )
    shares = _shares(m.two, m.urls)
    print(f"one server: {m.one}; two servers: {m.two} (items per server {'/'.join(map(str, shares))})")
    print(f"two servers / one: {m.two.rate / m.one.rate:.2f}x throughput, measured (goal >= 1.6)")
    if m.one.server_cpu and m.two.server_cpu:
        print(
            f"diagnosis: server CPU per request {m.two.server_ms:.0f} ms side by side, {m.one.server_ms:.0f} ms alone "
            "(what two servers on one machine's cores share, which separate machines would not)"
        )
    print(f"smallest server share: {100 * min(shares) / sum(shares):.1f} % of the items (goal >= 40)")
    print(
        f"prefills per clip x model: one server {prefills_per_clip(m.one.preds)}, two servers "
        f"{prefills_per_clip(m.two.preds)} (goal 1.0)"
    )
    if m.dp is not None:
        print(
            f"data parallel, 2 engines behind one URL: {m.dp} (items per engine {'/'.join(map(str, m.engines))}; "
            f"{m.dp.rate / m.two.rate:.2f}x the two URLs' throughput, {m.dp.cached - m.two.cached:+.1f} points "
            "of cached share)"
        )
    print(
        f"one server slowed by {args.delay:g} s per request: least-in-flight {m.least.seconds:.1f} s "
        f"(sent {m.least.served[m.slow_url]} of {m.slowed} to the slow one), round robin {m.round_robin_s:.1f} s"
    )
    print(f"round robin / least-in-flight time: {m.round_robin_s / m.least.seconds:.2f} (goal > 1)")
    print(
        f"cached prompt-token share: one server {m.one.cached:.1f} %, two servers {m.two.cached:.1f} % (goal: within 5)"
    )


def _shares(sent: Sent, urls: list[ServerUrl]) -> list[int]:
    return [sent.served[str(u)] for u in dict.fromkeys(urls)]


if __name__ == "__main__":
    cli.main(app)
