"""One progress bar for every long step (prepare, measure, judge, the viewer's thumbnails,
interpret, train): on stderr, so stdout carries only results; one look; rich's own rate and
time left, from the progress it has seen."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class Rate(ProgressColumn):
    """Rich's measured speed of the task, in `unit` per second."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


Advance = Callable[..., None]  # advance(n=1, note="...")


@contextlib.contextmanager
def bar(label: str, total: int | None, unit: str = "it") -> Iterator[Advance]:
    """A progress bar on stderr while the block runs; yields `advance(n=1, note=None)`, where
    `note` replaces the text after the bar (a loss, say)."""
    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(unit),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(label, total=total, note="")

        def advance(n: int = 1, note: str | None = None, total: int | None = None) -> None:
            fields = {} if note is None else {"note": note}
            progress.update(task, advance=n, **fields, **({} if total is None else {"total": total}))

        yield advance


def only_ours() -> None:
    """The libraries' own bars off (transformers loading and saving weights, datasets writing
    parquet, the hub): a command shows one kind of bar, ours. Set before they are imported
    (the environment) and, where they already are, through their own switches."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
