"""Option groups shared by several commands, each declared once: where runs are, the
servers a run asks, one server (with the API key), and a run named on the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.cli import argument, group, option
from core.defaults import RUNS_ROOT
from core.layout import RunLayout
from core.urls import DEFAULT_URL, ServerUrl


def api_key_option() -> Any:
    return option(None, "API key the server requires.", envvar="VLLM_API_KEY", shown="none")


@dataclass(frozen=True)
class RunsDir:
    runs_dir: Path = option(RUNS_ROOT, "Where run folders are: a run id names a folder there.")

    def find(self, run: Path | str) -> RunLayout:
        return RunLayout.find(run, self.runs_dir)


@dataclass(frozen=True)
class Servers:
    """The servers a run asks."""

    base_url: list[ServerUrl] = option(
        factory=lambda: [DEFAULT_URL],
        help="Server URL, http://HOST:PORT[/v1]; repeat to spread requests over several.",
        parser=ServerUrl.parse,
        metavar="URL",
    )
    api_key: str | None = api_key_option()


@dataclass(frozen=True)
class Server:
    """One server (`None`: the command's default, which its help says)."""

    base_url: ServerUrl | None = option(
        None, "Server URL, http://HOST:PORT[/v1].", parser=ServerUrl.parse, metavar="URL", shown=str(DEFAULT_URL)
    )
    api_key: str | None = api_key_option()

    @property
    def url(self) -> ServerUrl:
        return self.base_url or DEFAULT_URL


@dataclass(frozen=True)
class OneRun:
    """A run named on the command line: a folder, or an id under --runs-dir."""

    run: Path = argument(help="The run (folder or id).")
    runs: RunsDir = group(RunsDir)

    @property
    def layout(self) -> RunLayout:
        return self.runs.find(self.run)
