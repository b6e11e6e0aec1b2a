"""Benchmark the report's statistics, printing times and a ratio measured in this one run
(no thresholds asserted).

1. `report.build` on a run of --videos videos x 2.5 questions x 2 models x 4 variants
   (plain, trajectory, blind, single-frame): seconds, and per paired test (cluster bootstrap
   + sign-flip test + McNemar + MDE);
2. the exact McNemar p of the largest comparison: whole-number binomial sums (how it was
   computed before) vs log space (now), same value.

Usage: .venv/bin/python scripts/bench_report.py [--videos 10000]
"""

from __future__ import annotations

import sys
import time
from math import comb
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataclasses import dataclass  # noqa: E402

from core import cli  # noqa: E402
from core.cli import command, option  # noqa: E402
from core.records import Prediction  # noqa: E402
from core.runs import Run  # noqa: E402
from measure import report  # noqa: E402
from measure.report import stats  # noqa: E402

SKILL = {"plain": 0.6, "trajectory": 0.58, "blind": 0.3, "single-frame": 0.45}


def predictions(videos: int, seed: int = 0) -> list[Prediction]:
    """Correctness drawn per question, with a per-video difficulty shared by its questions."""
    rng = np.random.default_rng(seed)
    out = []
    for v in range(videos):
        ease = rng.normal(0, 1)
        for k in range(2 + (v % 2)):
            qtype = "verb" if k == 0 else "object"
            for model, bonus in (("base", 0.0), ("adapter", 0.05)):
                for variant, skill in SKILL.items():
                    ok = bool(rng.random() < 1 / (1 + np.exp(-(ease + 4 * (skill + bonus - 0.5)))))
                    out.append(scored(f"{v}-{k}", str(v), qtype, model, variant, ok))
    return out


def scored(qid: str, video: str, qtype: str, model: str, variant: str, right: bool) -> Prediction:
    """A simulated prediction of 4 choices, right or wrong."""
    return Prediction(
        question_id=qid,
        video_id=video,
        type=qtype,
        model=model,
        variant=variant,
        choices=["a", "b", "c", "d"],
        answer="a",
        reply="a" if right else "b",
        status="ok",
        correct=right,
    )


def whole_number_mcnemar(b: int, c: int) -> float:
    n = b + c
    return min(1.0, 2 * sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n) if n else 1.0


@dataclass
class Bench:
    videos: int = option(10_000, "Videos of the simulated run (2.5 questions each).")


app = cli.app(__doc__)


@command(app, Bench)
def bench(args: Bench) -> None:
    """Time report.build and the two McNemar computations."""
    preds = predictions(args.videos)
    start = time.perf_counter()
    r = report.build(Run(preds, parents={"adapter": "base"}))
    took = time.perf_counter() - start
    print(
        f"report.build: {len(preds)} predictions, {args.videos} videos, {r.tests} paired tests: {took:.2f} s "
        f"({1000 * took / max(1, r.tests):.0f} ms per test incl. tables)"
    )
    big = r.adapter_vs_base.sort_values("n").iloc[-1]
    b, c = int(big["only_a"]), int(big["only_b"])
    start = time.perf_counter()
    exact = whole_number_mcnemar(b, c)
    slow = time.perf_counter() - start
    start = time.perf_counter()
    fast = stats.mcnemar_exact(b, c)
    quick = time.perf_counter() - start
    print(
        f"McNemar at {b + c} discordant pairs: whole numbers {slow * 1000:.1f} ms, log space {quick * 1000:.2f} ms, "
        f"relative difference {abs(exact - fast) / max(exact, 1e-300):.1e}"
    )
    print(f"whole-number / log-space McNemar time: {slow / max(quick, 1e-9):.1f}")


if __name__ == "__main__":
    cli.main(app)
