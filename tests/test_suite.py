"""The suite itself: without the shared SSV2 sample its tests skip, saying why, and error nowhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from core.procs import marked
from tests.conftest import REPO


@pytest.mark.slow
def test_without_the_shared_sample_its_tests_skip_with_the_reason(tmp_path):
    missing = tmp_path / "no-sample"
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "sample", "-p", "no:randomly", "tests"],
        cwd=REPO,
        env=dict(os.environ, VISUAL_CUES_SAMPLE=str(missing)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0 and "error" not in summary and "failed" not in summary and "passed" not in summary, (
        r.stdout[-3000:]
    )
    assert int(summary.split(" skipped")[0].split()[-1]) >= 15 and f"{missing} is missing" in r.stdout


def _collected(*args: str) -> set[str]:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", *args, "tests/test_bench.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return {line for line in r.stdout.splitlines() if "::" in line}


@pytest.mark.slow
def test_the_two_runs_of_test_sh_split_the_suite_between_them():
    """`--phase shared` (run on two workers) and `--phase alone` (the benchmarks whose figures
    are time ratios, run by themselves) are disjoint and together the whole suite."""
    shared, alone, every = _collected("--phase", "shared"), _collected("--phase", "alone"), _collected()
    assert shared and alone and not shared & alone and shared | alone == every
    assert "tests/test_bench.py::test_bench_scale_runs_small" in alone
    assert "tests/test_bench.py::test_bench_report_runs_small" in shared  # its figure is no time


CHILD = """
import time
import pytest
from tests.conftest import launch_server, stop_server
from serve.command import free_port

@pytest.fixture(scope="session")
def launched(tiny, tmp_path_factory):
    argv = ["--model", str(tiny.model), "--port", str(free_port()), "--executor", "mp"]  # a worker process too
    proc = launch_server(argv, tmp_path_factory.mktemp("s") / "log")
    print("SERVE", proc.pid, flush=True)
    yield proc
    stop_server(proc)

def test_waits(launched):
    time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_suite_told_to_stop_leaves_no_server_behind(how, tmp_path):
    """A suite stopped by SIGTERM (as CI or a supervisor stops it) or Ctrl-C tears its fixtures
    down: the `serve run` it started, and the vLLM processes under it, are gone."""
    (tmp_path / "test_child.py").write_text(CHILD)
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "tests.conftest",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_child.py"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    serve = int(next(line for line in child.stdout if line.startswith("SERVE")).split()[1])
    deadline = time.monotonic() + 120
    while not psutil.Process(serve).children(recursive=True) and time.monotonic() < deadline:
        time.sleep(0.2)  # serve run has started vLLM
    started = [psutil.Process(serve), *psutil.Process(serve).children(recursive=True)]
    assert len(started) > 1, "serve run started no vLLM"
    child.send_signal(how)
    child.wait(120)
    _, alive = psutil.wait_procs(started, timeout=60)
    assert not alive, f"left behind after {how.name}: {[p.cmdline()[:3] for p in alive]}"


INTERRUPTED = """
import pathlib
from tests.conftest import in_process

def test_a():
    print("WAITING", flush=True)
    in_process(["serve", "wait", "--base-url", "http://127.0.0.1:9/v1", "--timeout", "300"])

def test_b():
    pathlib.Path(__file__).with_name("went-on").write_text("the suite went on")
"""


@pytest.mark.slow
def test_a_suite_told_to_stop_during_an_in_process_command_stops(tmp_path):
    """SIGTERM while a test runs a command in-process (the command line turns the interrupt
    into exit 130): the suite stops there, it does not count the command as done and go on."""
    (tmp_path / "test_child.py").write_text(INTERRUPTED)
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "tests.conftest", "-p", "no:randomly"]
        + ["-p", "no:cacheprovider", str(tmp_path / "test_child.py")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    next(line for line in child.stdout if "WAITING" in line)
    time.sleep(1)  # inside `serve wait`, polling a port nobody serves
    child.send_signal(signal.SIGTERM)
    out = child.communicate(timeout=60)[0]
    assert child.returncode != 0 and not (tmp_path / "went-on").exists(), out[-2000:]


SERVED = """
import subprocess
import sys
import pytest
from tests.conftest import launch_server, stop_server
from serve.command import free_port

@pytest.fixture(scope="session")
def launched(tiny, tmp_path_factory):
    argv = ["--model", str(tiny.model), "--port", str(free_port()), "--executor", "mp"]  # a worker process too
    proc = launch_server(argv, tmp_path_factory.mktemp("s") / "log")
    yield proc
    stop_server(proc)
    # a process that ends seconds after the suite (as an engine freeing its memory can), out of
    # the suite's process tree
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(4)"], start_new_session=True)

@pytest.mark.alone  # in test.sh's last pytest run: nothing after it hides what it leaves
def test_served(launched):
    assert launched.poll() is None
"""


@pytest.mark.slow
def test_test_sh_returns_only_when_every_process_it_started_is_gone(tmp_path):
    """`scripts/test.sh` on a suite whose session server (serve run, vLLM and its worker) is torn
    down as the suite ends, and which leaves a process that ends a few seconds later: right
    after test.sh returns, no process it started is left."""
    (tmp_path / "test_child.py").write_text(SERVED)
    mark = f"suite-check-{os.getpid()}-{time.monotonic_ns()}"
    env = dict(os.environ, TEST_WORKERS="1", VISUAL_CUES_SESSION=mark)
    r = subprocess.run(
        ["sh", "scripts/test.sh", "-q", "-p", "tests.conftest", "-p", "no:randomly", "-p", "no:cacheprovider"]
        + [str(tmp_path / "test_child.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    left = [" ".join(psutil.Process(pid).cmdline()[:4]) for pid in marked(mark) if psutil.pid_exists(pid)]
    assert left == [], "left running when scripts/test.sh returned"
