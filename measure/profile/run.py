"""`measure profile`, model by model: a server in the first dtype for every measure, then one
per other dtype for latency and answers; profile.json rewritten after each model (nothing
measured is lost), profile.md and the plots from it."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from core import progress, runfiles
from core.ask import AskConfig
from core.chat import connect, list_models
from core.defaults import FRAMES
from core.layout import ProfileLayout
from core.runfiles import ProfiledModel, ProfileRecord
from measure.ask.plan import ask_config, now
from measure.profile import figures, inputs, measures, render, server
from measure.profile.options import ProfileOptions

LEAST_REQUESTS = 8  # per throughput level, at least
SESSION_IN_FLIGHT = 8
TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(o: ProfileOptions) -> dict[str, Any]:
    return {
        "dtypes": list(o.dtypes),
        "video_frames": list(o.video_frames),
        "in_flight": list(o.in_flight),
        "warm": o.warm,
        "session": o.session,
        "repeats": o.repeats,
        "throughput_frames": FRAMES,
        "least_requests": LEAST_REQUESTS,
        "session_in_flight": SESSION_IN_FLIGHT,
        "clip_size": "x".join(map(str, inputs.SIZE)),
    }


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / figures.GIB, 1)}


def ready_of(s: server.Started) -> dict[str, Any]:
    """What `serve run` recorded of the start, and the server's vLLM version."""
    version = httpx.get(s.url.version, timeout=10).json().get("version")
    return {
        "ready_s": s.info.ready_s,
        "times": s.info.times,
        "rss_ready_bytes": s.info.rss_ready_bytes,
        "vllm": version,
    }


def requests_of(
    s: server.Started, o: ProfileOptions, clips: Path
) -> tuple[str, dict[str, list[inputs.Prepared]], dict[str, Any]]:
    """(the model's family, per input kind its cold and warm requests, the throughput request):
    built as `measure` builds them for this server's model."""
    cfg = ask_config(AskConfig(), list_models(s.url, None), [s.name])
    todo = {
        k.name: [inputs.prepared(k, seed, s.name, cfg, clips) for seed in range(1 + o.warm)]
        for k in inputs.kinds(list(o.video_frames))
    }
    base = inputs.prepared(inputs.Kind(f"video-{FRAMES}", FRAMES), 0, s.name, cfg, clips)
    return cfg.profile(s.name).name, todo, base.kwargs


def total_requests(o: ProfileOptions) -> int:
    kinds = (2 + len(o.video_frames)) * (1 + o.warm)
    burst = sum(measures.requests_at(level, LEAST_REQUESTS) for level in o.in_flight)
    return kinds * len(o.dtypes) + burst + 10 * o.session + 3 * o.repeats + len(inputs.edges("video", 1))


async def first_dtype(s: server.Started, o: ProfileOptions, todo: dict, base: dict, tick: Callable) -> dict[str, Any]:
    """Every measure on the server of the first dtype."""
    client = connect(s.url, None, max_retries=0, timeout=TIMEOUT_S)
    async with client:
        return {
            "latency": await measures.latency(client, s.url, s.name, o.dtypes[0], todo, tick),
            "throughput": await measures.throughput(client, base, o.in_flight, LEAST_REQUESTS, tick),
            "session": await measures.session(client, s.url, base, o.session, SESSION_IN_FLIGHT, tick),
            "repeats": await measures.repeats(client, base, o.repeats, tick),
            "edges": await measures.edges(client, s.url, s.name, inputs.edges(*edge_settings(s)), server.answers, tick),
        }


def edge_settings(s: server.Started) -> tuple[str, int]:
    """(how the model takes a video, its context length) as the server lists it."""
    from core.profiles import profile_for

    listed = list_models(s.url, None)
    length = next(m.get("max_model_len") for m in listed if m["id"] == s.name)
    return profile_for(s.root).video_as, int(length)


async def other_dtype(s: server.Started, dtype: str, todo: dict, tick: Callable) -> list[dict[str, Any]]:
    client = connect(s.url, None, max_retries=0, timeout=TIMEOUT_S)
    async with client:
        return await measures.latency(client, s.url, s.name, dtype, todo, tick)


def profile_model(model: str, o: ProfileOptions, layout: ProfileLayout, tick: Callable) -> ProfiledModel:
    """One model's profile: its servers started and stopped here."""
    start = time.monotonic()
    port = o.port or free_port()
    frames = max(o.video_frames)
    ready: dict[str, dict[str, Any]] = {}
    label = Path(model).name or model
    with tempfile.TemporaryDirectory(prefix="profile-clips-") as clips:
        with server.started(model, o.dtypes[0], port, frames, layout.server_log(label, o.dtypes[0])) as s:
            ready[o.dtypes[0]] = ready_of(s)
            family, todo, base = requests_of(s, o, Path(clips))
            found = asyncio.run(first_dtype(s, o, todo, base, tick))
        for dtype in o.dtypes[1:]:
            with server.started(model, dtype, port, frames, layout.server_log(label, dtype)) as s:
                ready[dtype] = ready_of(s)
                found["latency"] += asyncio.run(other_dtype(s, dtype, todo, tick))
    return ProfiledModel(
        model=model, family=family, dtypes=list(o.dtypes), ready=ready, seconds=time.monotonic() - start, **found
    )


def profile(o: ProfileOptions, say: Callable[[str], None]) -> ProfileRecord:
    """Every model profiled, the record written after each; profile.md and the plots at the end."""
    layout = ProfileLayout(o.out)
    record = ProfileRecord(
        started=now(),
        settings=settings(o),
        machine=machine(),
        models=[],
        targets=figures.read_targets(o.targets) if o.targets else [],
    )
    layout.root.mkdir(parents=True, exist_ok=True)
    for model in o.models:
        with progress.bar(f"profiling {Path(model).name or model}", total_requests(o), "requests") as tick:
            record.models.append(profile_model(model, o, layout, lambda: tick()))
        runfiles.write(layout.json, record)
        say(render.headline(record.models[-1]))
    render.write(record, layout)
    return record


def rewrite(layout: ProfileLayout) -> Path:
    """profile.md and the plots again, from profile.json alone."""
    return render.write(runfiles.read(ProfileRecord, layout.json), layout)
