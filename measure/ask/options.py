"""The options of `python -m measure` (one declaration: the CLI is built from them), kept
apart from the machinery that runs them, so `--help` and a bad option answer at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.ask import AskConfig
from core.cli import group, names, option, run_name
from core.defaults import DATASET
from core.groups import RunsDir, Servers
from core.layout import DataLayout
from core.reference import ReferenceOptions
from core.urls import ServerUrl
from measure.ask.framestore import GB, FrameStore

# Requests in flight per server (each data-parallel engine counted) when --concurrency is not
# given: where bench_measure's sweep of a bare client stops gaining (docs/performance.md); the
# server's scheduler then always has a batch's worth waiting.
PER_SERVER = 64


@dataclass
class RunOptions:
    """Every option of `python -m measure` (run without a sub-command)."""

    data: Path = option(DATASET, "Prepared dataset directory.")
    servers: Servers = group(Servers)
    models: Sequence[str] | None = names("Comma-separated served models.", "every model the first server lists")
    variants: Sequence[str] | None = names("Comma-separated clip variants.", "every variant on disk")
    split: str = option("test", "Question split to score.")
    limit: int | None = option(None, "Only the first N questions.", shown="all")
    concurrency: int | None = option(
        None, "Requests in flight, all servers together.", shown=f"{PER_SERVER} per server and per data-parallel engine"
    )
    engine: Literal["client", "ray"] = option(
        "client",
        "How the plan is sent: measure's own client (several URLs, clip affinity, failover), or a Ray Data "
        "job whose LLM stage is Ray's (RAY_ADDRESS: a cluster; else a local Ray; one URL).",
    )
    ask: AskConfig = group(AskConfig)
    published: ReferenceOptions = group(ReferenceOptions)
    run_id: str | None = option(
        None,
        "The run folder's name. A run of that name that exists is continued, as --resume does.",
        shown="<dataset>-<date>-<time>",
        parser=run_name,
        metavar="ID",
    )
    resume: str | None = option(
        None, "Continue this run (it must exist).", shown="a new run", parser=run_name, metavar="ID"
    )
    runs: RunsDir = group(RunsDir)
    frame_store: Path | None = option(
        None,
        "Where the frames the client prepares are kept between runs (JPEG bytes per clip x frame spec x "
        "processor), so a later run over the same clips decodes none.",
        shown="<data>/frame-store",
    )
    frame_store_gb: float = option(10.0, "Largest size of the frame store (least recently used out); 0: no store.")

    @property
    def urls(self) -> list[ServerUrl]:
        return list(self.servers.base_url)

    @property
    def store(self) -> FrameStore | None:
        """The frame store this run uses (None: turned off)."""
        if self.frame_store_gb <= 0:
            return None
        return FrameStore(self.frame_store or DataLayout(self.data).frame_store, int(self.frame_store_gb * GB))
