"""Benchmark measure's scale-out over several servers, printing ratios from one run.

- two servers / one server on the same machine: requests/s of measure's own sender
  (`measure.client.run_items`) over two base URLs vs one. On a 2-core machine the two
  servers share the cores, so expect well under 2x; it is printed as measured.
- least-in-flight vs round robin when one server is slow (the fault proxy adding a fixed
  delay to every request it forwards): time for the same number of items, round robin
  dealing the items alternately to the two servers. Least-in-flight must finish sooner.

Each measurement gets its own synthetic dataset (its own seed, so its own clip bytes), so
vLLM's multimodal cache cannot serve one from another's work.

Usage: .venv/bin/python scripts/bench_scale.py [--videos 40] [--delay 2.0] [--concurrency 16]
       [--base-url URL --base-url URL]   (two running servers instead of starting two)
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.layout import DataLayout  # noqa: E402
from core.variants import PLAIN  # noqa: E402
from measure import media  # noqa: E402
from measure.client import AskConfig, Item, list_models, run_items, self_test  # noqa: E402
from measure.run import ask_config, plan  # noqa: E402
from serve.__main__ import poll_ready  # noqa: E402
from serve.command import free_port  # noqa: E402
from tests.faultproxy import FaultProxy  # noqa: E402

SPLIT = "train"


@contextlib.contextmanager
def two_servers(urls: list[str] | None) -> Iterator[list[str]]:
    """The two base URLs given, or two `serve run`s of the embedded default started here."""
    if urls:
        yield urls
        return
    procs, started = [], []
    try:
        for _ in range(2):
            port = free_port()
            started.append(f"http://127.0.0.1:{port}/v1")
            procs.append(subprocess.Popen([sys.executable, "-m", "serve", "run", "--port", str(port)], cwd=REPO,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for url, proc in zip(started, procs):
            poll_ready(url, 900, proc=proc)
        yield started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)


def items(root: Path, seed: int, videos: int, models: list[str]) -> list[Item]:
    out = root / f"seed{seed}"
    subprocess.run([sys.executable, "-m", "prepare", "synthetic", "--out", str(out), "--videos", str(videos),
                    "--seed", str(seed), "--variants", PLAIN], cwd=REPO, check=True, capture_output=True)
    return plan(DataLayout(out), models, [PLAIN], SPLIT, None)


def send(todo: list[Item], urls: list[str], cfg: AskConfig, concurrency: int, pool) -> tuple[float, Counter]:
    """(seconds, items answered per server) for measure's sender over `urls`."""
    served: Counter[str] = Counter()

    def on_result(p) -> None:
        assert p.status == "ok", p.error
        served[p.server] += 1

    start = time.perf_counter()
    asyncio.run(run_items(todo, urls, None, cfg, concurrency, on_result, pool))
    return time.perf_counter() - start, served


def round_robin(todo: list[Item], urls: list[str], cfg: AskConfig, concurrency: int, pool) -> float:
    """Seconds when the items are dealt alternately, each server sent its share on its own."""
    async def both() -> None:
        await asyncio.gather(*(run_items(todo[i::2], [u], None, cfg, max(1, concurrency // 2), lambda p: None, pool)
                               for i, u in enumerate(urls)))

    start = time.perf_counter()
    asyncio.run(both())
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--delay", type=float, default=2.0, help="Seconds the proxy adds to each request of the slow server.")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--base-url", action="append", default=None, help="A running server; give two (may be equal).")
    args = ap.parse_args()
    if args.base_url and len(args.base_url) != 2:
        ap.error("give --base-url twice, or not at all")
    with two_servers(args.base_url) as urls, tempfile.TemporaryDirectory() as d:
        root, seeds = Path(d), iter(range(300, 400))
        listed = list_models(urls[0], None)
        models = [m["id"] for m in listed]
        cfg = ask_config(AskConfig(), listed, models)
        for url in urls:
            assert asyncio.run(self_test(url, None, models[0])) is None
        with media.worker_pool(cfg.media_workers, cfg.processors.values()) as pool:
            one_s, _ = send(warm := items(root, next(seeds), args.videos, models), urls[:1], cfg, args.concurrency, pool)
            two_s, two_served = send(items(root, next(seeds), args.videos, models), urls, cfg, args.concurrency, pool)
            n = len(warm)
            with FaultProxy(urls[1].removesuffix("/v1"), rate=1.0, modes=("stall",), stall_s=args.delay) as slow:
                mixed = [urls[0], slow.url + "/v1"]
                least_s, least_served = send(items(root, next(seeds), args.videos, models), mixed, cfg, args.concurrency,
                                             pool)
                rr_s = round_robin(items(root, next(seeds), args.videos, models), mixed, cfg, args.concurrency, pool)
    print(f"items per measurement: {n} ({len(models)} models, split {SPLIT}, distinct clips each); "
          f"concurrency {args.concurrency}")
    print(f"one server: {n / one_s:.1f} req/s; two servers: {n / two_s:.1f} req/s "
          f"(split {two_served[urls[0]]}/{two_served[urls[1]]})")
    print(f"two servers / one: {one_s / two_s:.2f}x throughput (same machine: they share its cores)")
    print(f"one server slowed by {args.delay:g} s per request: least-in-flight {least_s:.1f} s "
          f"(sent {least_served[mixed[1]]} of {n} to the slow one), round robin {rr_s:.1f} s")
    print(f"round robin / least-in-flight time: {rr_s / least_s:.2f} (goal > 1)")


if __name__ == "__main__":
    main()
