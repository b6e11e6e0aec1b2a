"""What `serve run` knows about the vLLM server it started (one file per port on this machine)
so that `measure` can record it in run.json: the arguments, the start-up times from vLLM's
log, and the process group whose memory it can read. Written as vLLM starts, before its port
can answer, and again once it is ready: a client that sees the port answer finds the file."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from pydantic import TypeAdapter, ValidationError

from core.files import read_json, write_json
from core.urls import ServerUrl

# vLLM's own log lines, as of 0.32 (GPU runner / CPU worker / engine core)
LOG_TIMES = {
    "model_load_s": re.compile(r"Model loading took .*? and ([\d.]+) seconds"),
    "weights_load_s": re.compile(r"Loading weights took ([\d.]+) seconds"),
    "engine_init_s": re.compile(r"init engine .*? took ([\d.]+) s"),
}


@dataclass
class ServerInfo:
    """One server `serve run` started."""

    port: int
    pid: int  # vLLM's process, leader of its process group
    argv: list[str]  # the vLLM command line, API key masked
    started: str
    ready_s: float | None = None  # from start to /v1/models answering (None: not ready yet)
    rss_ready_bytes: int | None = None  # the process group's resident memory once ready
    times: dict[str, float] = field(default_factory=dict)  # LOG_TIMES found in vLLM's log
    batch_invariant: bool = False  # started with VLLM_BATCH_INVARIANT=1 (`serve run --batch-invariant`)


def log_times(line: str) -> dict[str, float]:
    """The start-up times a vLLM log line reports."""
    return {name: float(m.group(1)) for name, rx in LOG_TIMES.items() if (m := rx.search(line))}


def path_for(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"visual-cues-{os.getuid()}" / f"serve-{port}.json"


def write(info: ServerInfo) -> Path:
    path = path_for(info.port)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, asdict(info))
    return path


def is_local(url: ServerUrl) -> bool:
    """Whether a URL names a port on this machine (where `serve run` leaves its file)."""
    if not url.hostname or not url.port:
        return False
    try:
        return ipaddress.ip_address(url.hostname).is_loopback
    except ValueError:
        return url.hostname in ("localhost", socket.gethostname())


def lookup(url: ServerUrl, wait_s: float = 10.0) -> ServerInfo | None:
    """What `serve run` wrote for a server on this machine that is still running; None for
    a remote server or one started otherwise. A server that answers may not be recorded as
    ready yet (serve run reads its memory first): waited for, up to `wait_s`."""
    if not is_local(url) or url.port is None:
        return None
    deadline = time.monotonic() + wait_s
    while (info := _read(path_for(url.port))) is not None and info.ready_s is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return info


def _read(path: Path) -> ServerInfo | None:
    try:
        info = TypeAdapter(ServerInfo).validate_python(read_json(path))
    except (OSError, ValidationError, ValueError):
        return None
    return info if psutil.pid_exists(info.pid) else None


def group_rss(pgid: int) -> int:
    """Resident memory (bytes) of every process in a process group, read from /proc."""
    total = 0
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                total += p.memory_info().rss
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return total


ENGINE_LABEL = re.compile(r'^vllm:[a-z_]+\{[^}]*engine="([^"]+)"', re.M)


def engines(url: ServerUrl, api_key: str | None = None) -> int:
    """How many data-parallel engines answer behind `url`: its `--data-parallel-size` when
    `serve run` started it here, else the engines its Prometheus metrics label, else 1."""
    info = lookup(url, wait_s=0)
    if info is not None and "--data-parallel-size" in info.argv:
        return int(info.argv[info.argv.index("--data-parallel-size") + 1])
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        text = httpx.get(f"{url.root}/metrics", timeout=10, headers=headers).text
    except httpx.HTTPError:
        return 1
    return max(1, len(set(ENGINE_LABEL.findall(text))))
