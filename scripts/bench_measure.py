"""Benchmark `measure` against the real server (tiny model), printing ratios from one run.

- measure's throughput / the best throughput of a bare async client swept over concurrency
  (the server's capacity), both starting from decoded frames (the bare client's requests are
  built before its clock starts; measure's frames are put in its frame store first), the
  median of --repeats pairs on fresh clips: goal >= 0.95, the client is never the bottleneck;
- measure decoding its clips as it sends, and against a sequential one-request-at-a-time
  client (the reference's way);
- where the time goes: measure's CPU per request by stage, the server's API process and its
  engine core by stage (`stages`: py-spy samples, on a run of its own so the sampling does
  not touch the figures above);
- the concurrency from which the bare client is within 3 % of its best (measure's default,
  `measure.ask.options.PER_SERVER`, is chosen from it).

Every client gets its own synthetic dataset (its own seed, so its own clip bytes):
otherwise vLLM's multimodal cache would serve later clients from earlier ones' work.

Requests are built by `measure.ask.client.build`, the function measure itself uses, so the
benchmark sends exactly what measure sends.

Usage: .venv/bin/python scripts/bench_measure.py [--videos 450] [--sweep 16,32,64,128,256]
  [--repeats 3] [--base-url URL]   (`--help` lists the options)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import stages  # noqa: E402  (this folder is on sys.path)

from core import cli, serverinfo  # noqa: E402
from core.ask import AskConfig  # noqa: E402
from core.chat import completion, connect  # noqa: E402
from core.cli import command, group, option, positive_ints  # noqa: E402
from core.groups import Server  # noqa: E402
from core.layout import DataLayout  # noqa: E402
from core.records import read_questions  # noqa: E402
from core.urls import ServerUrl  # noqa: E402
from core.variants import PLAIN  # noqa: E402
from measure.ask import media  # noqa: E402
from measure.ask.client import Item, build, media_spec, self_test  # noqa: E402
from measure.ask.framestore import GB, FrameStore  # noqa: E402
from measure.ask.plan import ask_config, plan  # noqa: E402
from prepare.__main__ import app as prepare_app  # noqa: E402
from serve.__main__ import poll_ready  # noqa: E402
from serve.command import free_port  # noqa: E402

SPLIT = "train"


def fresh_seeds() -> Iterator[int]:
    """Seeds no earlier run of a benchmark used (from the clock): a long-lived server given
    with --base-url cannot serve their clips from its caches."""
    start = time.time_ns() // 1000 % 10**9 * 1000
    return iter(range(start, start + 1000))


def make_dataset(root: Path, seed: int, videos: int) -> Path:
    """A synthetic dataset of its own seed (plain clips)."""
    return make_variants(root, seed, videos, (PLAIN,))


def make_variants(root: Path, seed: int, videos: int, variants: Sequence[str], templates: str = "default") -> Path:
    """A synthetic dataset of its own seed and world (`templates`) with these clip variants,
    made by `prepare synthetic` in this process (quietly)."""
    out = root / f"seed{seed}"
    argv = ["synthetic", "--out", str(out), "--videos", str(videos), "--seed", str(seed)]
    argv += ["--variants", ",".join(variants), "--templates", templates]
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        code = cli.run(prepare_app, argv)
    if code:
        raise RuntimeError(f"prepare {' '.join(argv)} exited {code}: {said.getvalue()[-2000:]}")
    return out


def requests(data: Path, models: list[str], cfg: AskConfig) -> list[dict]:
    layout = DataLayout(data)
    qs = [q for q in read_questions(layout.questions) if q.split == SPLIT]
    return [
        build(Item(q, m, PLAIN, layout.clip(PLAIN, q.video_id)), cfg)
        for q in sorted(qs, key=lambda q: q.video_id)
        for m in models
    ]


STARTED = "a `serve run` of the embedded default started here"


@contextlib.contextmanager
def started(*runs: list[str]) -> Iterator[list[ServerUrl]]:
    """`serve run`s started here, each with its own extra options (the embedded default unless
    they name a model), ready before this yields and stopped afterwards."""
    procs, urls = [], []
    with contextlib.ExitStack() as logs:
        try:
            for extra in runs:
                port = free_port()
                urls.append(ServerUrl.local(port))
                log = logs.enter_context(tempfile.TemporaryFile())
                argv = [sys.executable, "-m", "serve", "run", "--port", str(port), *extra]
                procs.append((subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log), log))
            for url, (proc, log) in zip(urls, procs):
                ready(url, proc, log)
            yield urls
        finally:
            for proc, _ in procs:
                proc.terminate()
            for proc, _ in procs:
                proc.wait(60)


def ready(url: ServerUrl, proc: subprocess.Popen, log) -> None:
    """Wait for a server started here; if it exits first, say why (the last lines it wrote)."""
    try:
        poll_ready(url, 900, proc=proc)
    except RuntimeError as e:
        log.seek(0)
        said = log.read().decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{e}: {' / '.join(said)}") from None


@contextlib.contextmanager
def running_server(url: ServerUrl | None, model: Path | None = None) -> Iterator[tuple[ServerUrl, list[dict]]]:
    """(URL, its /v1/models) of the server at `url`, or of a `serve run` (of `model` alone, else
    the embedded default with its adapters) started here and stopped afterwards."""
    if url is not None:
        yield url, poll_ready(url, 600)
        return
    with started(["--model", str(model), "--adapters", ""] if model else []) as (url,):
        yield url, poll_ready(url, 60)


async def bare(url: ServerUrl, reqs: list[dict], concurrency: int) -> float:
    """A minimal concurrent client: requests/s, nothing stored."""
    async with connect(url, None, max_retries=0) as client:
        it = iter(reqs)

        async def worker() -> None:
            for r in it:
                await completion(client, r)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(reqs) / (time.perf_counter() - start)


def run_measure(url: ServerUrl, data: Path, runs: Path, run_id: str, *extra: str, where: bool = False) -> tuple:
    """(the run's last session from run.json, CPU s, where its time went) of one `python -m
    measure` process (`extra`: more of its options). `where`: the measure process (its media
    workers too) and the server's two processes (its API process, its engine core) sampled
    while it runs (`stages`), else []."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = [sys.executable, "-m", "measure", "--data", str(data), "--base-url", str(url), "--split", SPLIT]
    argv += ["--runs-dir", str(runs), "--run-id", run_id, *extra]
    with contextlib.ExitStack() as stack:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        samples = []
        if where:
            api = serverinfo.lookup(url).pid
            engine = next(p.pid for p in psutil.Process(api).children() if "EngineCore" in p.name())
            samples = [stack.enter_context(stages.sampled(pid, pid == proc.pid)) for pid in (proc.pid, api, engine)]
        said, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"measure exited {proc.returncode}: {said.decode(errors='replace')[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    session = json.loads((runs / run_id / "run.json").read_text())["sessions"][-1]
    return session, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), samples


def where_it_goes(url: ServerUrl, data: Path, runs: Path) -> tuple[dict, float, float, list[str]]:
    """One sampled measure run over `data` and its resume (0 requests: start-up only): (its
    session, its CPU s without start-up, start-up CPU s, where the time went: measure, the
    server's API process and its engine core, each by stage)."""
    session, cpu, (client, api, engine) = run_measure(url, data, runs, "sampled", where=True)
    idle, idle_cpu, _ = run_measure(url, data, runs, "sampled")
    assert idle["to_send"] == 0, idle
    n, own = session["answered"], cpu - idle_cpu
    return (
        session,
        own,
        idle_cpu,
        [
            stages.breakdown("where: measure", client, stages.MEASURE, n, own),
            stages.breakdown("where: server API process", api, stages.API, n),
            stages.breakdown("where: server engine core", engine, stages.ENGINE, n),
        ],
    )


@dataclass
class Bench:
    videos: int = option(450, "Synthetic videos per client (each its own dataset): about 1,500 requests.")
    sweep: tuple[int, ...] = option(
        (16, 32, 64, 128, 256), "Concurrencies of the bare client.", parser=positive_ints, metavar="N,..."
    )
    repeats: int = option(
        3, "Times measure and the best bare client run again (fresh clips): the ratio is their median."
    )
    server: Server = group(Server, shown={"base_url": STARTED})


app = cli.app(__doc__)


def stored(data: Path, models: list[str], cfg: AskConfig, pool: media.Workers) -> Path:
    """`data` with every clip's frames already in its frame store (measure's default store), so
    measure starts where the bare client's prebuilt requests start: frames decoded."""
    layout = DataLayout(data)
    warm(plan(layout, models, [PLAIN], SPLIT, None), cfg, FrameStore(layout.frame_store, 10 * GB), pool)
    return data


def warm(todo: list[Item], cfg: AskConfig, store: FrameStore, pool: media.Workers) -> None:
    """Every clip's media decoded into `store` before anything is timed."""
    specs = list(dict.fromkeys(s for i in todo if (s := media_spec(i, cfg)) is not None))
    list(pool.get().map(partial(media.decode, store=store), specs))


def rate(session: dict) -> float:
    return session["answered"] / session["send_s"]


@command(app, Bench)
def bench(args: Bench) -> None:
    """Measure against the best bare client and a sequential one, and where the time goes."""
    with running_server(args.server.base_url) as (url, listed), tempfile.TemporaryDirectory() as d:
        models = [m["id"] for m in listed]
        cfg = ask_config(AskConfig(), listed, models)  # measure's defaults, as measure resolves them
        root, seeds = Path(d), fresh_seeds()
        with media.Workers(cfg.media_workers, cfg.processors.values()) as pool:

            def fresh() -> Path:
                return make_dataset(root, next(seeds), args.videos)

            # Warm-up, as measure does: the first logprobs request after a start is slow, once.
            assert asyncio.run(self_test(url, None, models[0])) is None
            asyncio.run(bare(url, requests(make_dataset(root, next(seeds), 8), models, cfg)[:4], 1))
            sequential = asyncio.run(bare(url, requests(fresh(), models, cfg), 1))
            sweep = {c: asyncio.run(bare(url, requests(fresh(), models, cfg), c)) for c in args.sweep}
            best_c = max(sweep, key=sweep.get)
            knee = min(c for c in sweep if sweep[c] >= 0.97 * sweep[best_c])
            cold, _, _ = run_measure(url, fresh(), root / "runs", "cold")
            pairs = []  # (measure / the best bare client, measure's req/s), each on fresh clips
            for i in range(args.repeats):
                best = asyncio.run(bare(url, requests(fresh(), models, cfg), best_c))
                session, _, _ = run_measure(url, stored(fresh(), models, cfg, pool), root / "runs", f"warm{i}")
                pairs.append((rate(session) / best, rate(session)))
            data = stored(fresh(), models, cfg, pool)
            session, own_cpu, start_cpu, where = where_it_goes(url, data, root / "runs")
            n = session["answered"]
            assert n == len(requests(data, models, cfg))
            concurrency = json.loads((root / "runs" / "cold" / "run.json").read_text())["concurrency"]
    print(f"requests per client: {n} ({len(models)} models, split {SPLIT}, distinct clips per client)")
    print(
        f"sequential client: {sequential:.1f} req/s; bare client sweep: "
        + ", ".join(f"c={c}: {r:.1f}" for c, r in sweep.items())
        + f" req/s; within 3 % of the best from c={knee}"
    )
    print(f"measure, decoding its clips as it sends (concurrency {concurrency}): {rate(cold):.1f} req/s")
    print(
        f"measure, frames in its store as the bare client's are built (concurrency {concurrency}): "
        f"{statistics.median(r for _, r in pairs):.1f} req/s median of {args.repeats}; each repeat's ratio "
        + ", ".join(f"{x:.2f}" for x, _ in pairs)
    )
    print(f"measure / sequential client: {rate(cold) / sequential:.2f} (decoding its clips)")
    print(f"measure client CPU per request: {1000 * own_cpu / n:.2f} ms (start-up {start_cpu:.1f} s)")
    for line in where:
        print(line)
    print(f"measure / best bare client (c={best_c}): {statistics.median(x for x, _ in pairs):.2f} (goal >= 0.95)")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli.main(app)
