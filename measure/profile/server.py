"""A server of one model in one dtype, started with `serve run` and stopped with its group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from core import serverinfo
from core.errors import SetupError
from core.procs import die_with_parent, wait_group_gone
from core.serverinfo import ServerInfo
from core.urls import ServerUrl


@dataclass(frozen=True)
class Started:
    """A ready server: where it answers, what `serve run` recorded, the model it names."""

    url: ServerUrl
    info: ServerInfo
    name: str  # the served model's id
    root: str  # its path (or hub id), as vLLM lists it
    proc: subprocess.Popen


def launch(model: str, dtype: str, port: int, frames: int, log: Path) -> subprocess.Popen:
    """`python -m serve run` for `model` in `dtype`, allowing `frames` images per prompt, in a
    session of its own (stopped as a group), stopped if this process dies."""
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = ["--model", model, "--port", str(port), "--dtype", dtype, "--frames", str(frames)]
    me = os.getpid()
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "serve", "run", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: die_with_parent(me),
        )


def wait_ready(proc: subprocess.Popen, url: ServerUrl, log: Path, timeout: float) -> ServerInfo:
    """What `serve run` recorded once the server is ready; SetupError with the log's end if it
    exits or times out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-5:]
            raise SetupError(
                f"serve run exited with code {proc.returncode} before it was ready ({log}):\n" + "\n".join(tail)
            )
        info = serverinfo.lookup(url, wait_s=0)
        if info is not None and info.ready_s is not None:
            return info
        time.sleep(0.5)
    stop(proc)
    raise SetupError(f"{url} not ready after {timeout:.0f} s ({log})")


def stop(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the server's group (serve run stops vLLM), SIGKILL after `grace` seconds; return
    once none of the group is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    wait_group_gone(proc.pid)


@contextlib.contextmanager
def started(model: str, dtype: str, port: int, frames: int, log: Path, timeout: float = 900) -> Iterator[Started]:
    """A ready server for the block, stopped after it however the block ends."""
    url = ServerUrl.local(port)
    proc = launch(model, dtype, port, frames, log)
    try:
        info = wait_ready(proc, url, log, timeout)
        listed = httpx.get(url.models, timeout=10).json()["data"]
        base = next(m for m in listed if not m.get("parent"))
        yield Started(url, info, base["id"], base.get("root") or base["id"], proc)
    finally:
        stop(proc)


def answers(url: ServerUrl, timeout: float = 10) -> bool:
    """Whether the server still lists its models."""
    try:
        return httpx.get(url.models, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False
