"""The options of `python -m measure` (one declaration: the CLI is built from them), kept
apart from the machinery that runs them, so `--help` and a bad option answer at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.ask import AskConfig
from core.cli import group, names, option
from core.defaults import DATASET
from core.groups import RunsDir, Servers
from core.reference import ReferenceOptions
from core.urls import ServerUrl


@dataclass
class RunOptions:
    """Every option of `python -m measure` (run without a sub-command)."""

    data: Path = option(DATASET, "Prepared dataset directory.")
    servers: Servers = group(Servers)
    models: Sequence[str] | None = names("Comma-separated served models.", "every model the first server lists")
    variants: Sequence[str] | None = names("Comma-separated clip variants.", "every variant on disk")
    split: str = option("test", "Question split to score.")
    limit: int | None = option(None, "Only the first N questions.", shown="all")
    concurrency: int = option(32, "Requests in flight.")
    ask: AskConfig = group(AskConfig)
    published: ReferenceOptions = group(ReferenceOptions)
    run_id: str | None = option(
        None,
        "The run folder's name. A run of that name that exists is continued, as --resume does.",
        shown="<dataset>-<date>-<time>",
    )
    resume: str | None = option(None, "Continue this run (it must exist).", shown="a new run")
    runs: RunsDir = group(RunsDir)

    @property
    def urls(self) -> list[ServerUrl]:
        return list(self.servers.base_url)
