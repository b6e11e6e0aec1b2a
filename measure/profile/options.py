"""The options of `python -m measure profile` (kept apart from what runs them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.cli import comma_list, counts, option
from core.defaults import RUNS_ROOT

TARGETS_EXAMPLE = Path("measure/references/smolvlm2_test_plan_targets.csv")


@dataclass
class ProfileOptions:
    models: Sequence[str] = option(
        help="Models to profile (local model dirs or hub ids), one after another, each on servers `profile` starts.",
        parser=comma_list,
        metavar="MODEL,...",
    )
    out: Path = option(RUNS_ROOT / "profile", "Where profile.json, profile.md and the plots go.")
    targets: Path | None = option(
        None,
        f"A targets CSV (figure, at_most, at_least, source): met / NOT met beside each figure; the SmolVLM2 test "
        f"plan's: {TARGETS_EXAMPLE}.",
        shown="none",
    )
    dtypes: Sequence[str] = option(
        ("float32", "bfloat16"),
        "Dtypes to serve in (vLLM --dtype): the first for every measure, each other for latency and answers "
        "against it, on a server of its own.",
        parser=comma_list,
        metavar="DTYPE,...",
    )
    video_frames: Sequence[int] = option(
        (4, 8, 16, 32, 64), "Frames of the videos sent.", parser=counts, metavar="N,..."
    )
    in_flight: Sequence[int] = option(
        (1, 2, 4, 8, 16, 32, 64), "Requests in flight, the throughput levels.", parser=counts, metavar="N,..."
    )
    warm: int = option(3, "Warm requests per input kind, after the cold one.")
    session: int = option(10, "The leak check's n: the server's memory after n and after 10 n requests.")
    repeats: int = option(5, "Requests per repeatability setting.")
    port: int | None = option(None, "Port of the servers `profile` starts.", shown="a free one")

    def problems(self) -> list[str]:
        small = [f"--{k.replace('_', '-')}" for k in ("warm", "session", "repeats") if getattr(self, k) < 1]
        return [f"{', '.join(small)} must be 1 or more"] if small else []
