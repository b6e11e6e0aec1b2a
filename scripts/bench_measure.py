"""Benchmark `measure` against the real server (tiny model), printing ratios from one run.

- measure's throughput / the best throughput of a bare async client swept over
  concurrency (the server's capacity): goal >= 0.9, the client is never the bottleneck;
- measure's throughput / a sequential one-request-at-a-time client (the reference's way);
- measure's client CPU time per request.

Every client gets its own synthetic dataset (its own seed, so its own clip bytes):
otherwise vLLM's multimodal cache would serve later clients from earlier ones' work.

Requests are built by `measure.ask.client.build`, the function measure itself uses, so the
benchmark sends exactly what measure sends.

Usage: .venv/bin/python scripts/bench_measure.py [--videos 80] [--sweep 4,8,16,32,64] [--base-url URL]
(`--help` lists the options)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from openai import AsyncOpenAI  # noqa: E402

from core import cli  # noqa: E402
from core.ask import AskConfig  # noqa: E402
from core.cli import command, group, option, positive_ints  # noqa: E402
from core.groups import Server  # noqa: E402
from core.layout import DataLayout  # noqa: E402
from core.records import read_questions  # noqa: E402
from core.urls import ServerUrl  # noqa: E402
from core.variants import PLAIN  # noqa: E402
from measure.ask.client import Item, build, self_test  # noqa: E402
from measure.ask.plan import ask_config  # noqa: E402
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
    async with AsyncOpenAI(base_url=url.v1, api_key="EMPTY", max_retries=0) as client:
        it = iter(reqs)

        async def worker() -> None:
            for r in it:
                await client.chat.completions.create(**r)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(reqs) / (time.perf_counter() - start)


def run_measure(url: ServerUrl, data: Path, runs: Path, run_id: str, *extra: str) -> tuple[dict, float]:
    """(the run's last session from run.json, CPU s) of one `python -m measure` process
    (`extra`: more of its options)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "measure",
            "--data",
            str(data),
            "--base-url",
            str(url),
            "--split",
            SPLIT,
            "--runs-dir",
            str(runs),
            "--run-id",
            run_id,
            *extra,
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    session = json.loads((runs / run_id / "run.json").read_text())["sessions"][-1]
    return session, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@dataclass
class Bench:
    videos: int = option(80, "Synthetic videos per client (each its own dataset).")
    sweep: tuple[int, ...] = option(
        (4, 8, 16, 32, 64), "Concurrencies of the bare client.", parser=positive_ints, metavar="N,..."
    )
    server: Server = group(Server, shown={"base_url": STARTED})


app = cli.app(__doc__)


@command(app, Bench)
def bench(args: Bench) -> None:
    """Measure against the best bare client and a sequential one."""
    with running_server(args.server.base_url) as (url, listed):
        models = [m["id"] for m in listed]
        cfg = ask_config(AskConfig(), listed, models)  # measure's defaults, as measure resolves them
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            seeds = fresh_seeds()
            # Warm-up, as measure does: the first logprobs request after a start is slow, once.
            assert asyncio.run(self_test(url, None, models[0])) is None
            asyncio.run(bare(url, requests(make_dataset(root, next(seeds), 8), models, cfg)[:4], 1))
            seq_data = make_dataset(root, next(seeds), args.videos)
            seq_reqs = requests(seq_data, models, cfg)
            sequential = asyncio.run(bare(url, seq_reqs, 1))
            sweep = {
                c: asyncio.run(bare(url, requests(make_dataset(root, next(seeds), args.videos), models, cfg), c))
                for c in args.sweep
            }
            data = make_dataset(root, next(seeds), args.videos)
            n = len(requests(data, models, cfg))
            session, cpu = run_measure(url, data, root / "runs", "bench")
            idle, idle_cpu = run_measure(url, data, root / "runs", "bench")  # resume: 0 requests, start-up only
            assert session["answered"] == n and idle["to_send"] == 0
        best_c = max(sweep, key=sweep.get)
        rate = round(session["answered"] / session["send_s"], 2)
        print(f"requests per client: {n} ({len(models)} models, split {SPLIT}, distinct clips per client)")
        print(
            f"sequential client: {sequential:.1f} req/s; bare client sweep: "
            + ", ".join(f"c={c}: {r:.1f}" for c, r in sweep.items())
            + " req/s"
        )
        print(f"measure (concurrency 32): {rate:.1f} req/s (its sending phase, from run.json)")
        print(f"measure / best bare client (c={best_c}): {rate / sweep[best_c]:.2f} (goal >= 0.9)")
        print(f"measure / sequential client: {rate / sequential:.2f}")
        print(
            f"measure client CPU per request: {1000 * (cpu - idle_cpu) / n:.2f} ms "
            f"(process total {cpu:.1f} s, start-up {idle_cpu:.1f} s)"
        )


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli.main(app)
