"""Benchmark `measure calibrate` on runs shaped like the demo's and the reference study's,
printing figures from one run.

Each run is made here in memory, shaped like the demo's: a base model and an adapter of it,
asked on plain and trajectory clips, the blind and single-frame controls and the three
interventions, 1-4 questions per video (a third object questions). Its answers are drawn with
known effects: the adapter right more often on cued clips (+10 points), blind and masked
objects at chance, context masked and single-frame as plain. For each size it prints the time
`calibrate` takes (goal: 1000 simulations of the demo's 50 videos within 2 minutes), its false
positives, coverage and power, and the coverage of the report's interval before December 2026
(the plain percentile interval) beside today's (the expanded percentile interval).

Usage: .venv/bin/python scripts/bench_calibrate.py [--videos 50,1000] [--sims 1000]
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_report import scored  # noqa: E402  (this folder is on sys.path)

from core import cli  # noqa: E402
from core.cli import command, option  # noqa: E402
from core.runs import Run  # noqa: E402
from measure.report import calibrate, stats  # noqa: E402

VARIANTS = ("plain", "trajectory", "blind", "single-frame", "object-masked", "context-masked", "cue-only")
BASE, ADAPTER = "base", "adapter"


def accuracy(model: str, variant: str, qtype: str) -> float:
    """The chance of a right answer, by construction."""
    if variant in ("blind", "cue-only") or (variant == "object-masked" and qtype == "object"):
        return 0.25
    plain = 0.8 if qtype == "object" else 0.6
    return plain + (0.1 if model == ADAPTER and variant == "trajectory" else 0.0)


def demo_shaped(videos: int, seed: int = 0) -> Run:
    """A run of `videos` videos, every model x variant, answers drawn as `accuracy` says
    (each answer kept from plain's with probability 0.8 where the accuracy is plain's)."""
    rng = np.random.default_rng(seed)
    preds = []
    for v in range(videos):
        for i in range(int(rng.integers(1, 5))):
            qtype = "object" if i % 3 == 0 else "verb"
            for model in (BASE, ADAPTER):
                plain = bool(rng.random() < accuracy(model, "plain", qtype))
                for variant in VARIANTS:
                    p = accuracy(model, variant, qtype)
                    same = p == accuracy(model, "plain", qtype) and rng.random() < 0.8
                    right = plain if same else bool(rng.random() < p)
                    preds.append(scored(f"v{v:04d}-{i}", f"v{v:04d}", qtype, model, variant, right))
    return Run(preds, parents={BASE: None, ADAPTER: BASE})


def summary(rec) -> str:
    t = pd.DataFrame(rec.comparisons)
    planted = t[t["power"].notna()]
    enough = t[t["videos_changed"] >= stats.MIN_CHANGED]
    fw = ", ".join(f"{name} {100 * v:.1f} %" for name, v in rec.familywise.items())
    return (
        f"false positives mean {t['null_rejection'].mean():.1f} %, max {t['null_rejection'].max():.1f} % "
        f"(family-wise after Holm: {fw}); CI holds 0 mean {t['null_coverage'].mean():.1f} %, min "
        f"{t['null_coverage'].min():.1f} % ({enough['null_coverage'].min():.1f} % where {stats.MIN_CHANGED}+ videos "
        f"changed); CI holds the planted MDE mean {planted['coverage'].mean():.1f} %, min "
        f"{planted['coverage'].min():.1f} % ({len(planted)} comparisons); power {planted['power'].mean():.1f} % vs "
        f"predicted {planted['predicted_power'].mean():.1f} %"
    )


@dataclass
class Bench:
    videos: str = option("50,1000", "Run sizes (videos), comma-separated: the demo's, the reference study's.")
    sims: int = option(1000, "Simulations per comparison.")


app = cli.app(__doc__)


@command(app, Bench)
def bench(o: Bench) -> None:
    """Time and figures of `measure calibrate` per run size, the interval before and after."""
    for videos in map(int, cli.comma_list(o.videos)):
        run = demo_shaped(videos)
        start = time.perf_counter()
        after = calibrate.calibrate(run, o.sims)
        seconds = time.perf_counter() - start
        with mock.patch.object(stats, "expanded_tail", lambda k, level=0.95: (1 - level) / 2):
            before = calibrate.calibrate(run, o.sims)
        print(
            f"{videos} videos, {len(after.comparisons)} comparisons, {o.sims} simulations: {seconds:.1f} s "
            f"(goal for the demo's 50 videos at 1000: <= 120 s)"
        )
        print(f"  expanded percentile (now): {summary(after)}")
        print(f"  plain percentile (before): {summary(before)}")


if __name__ == "__main__":
    cli.main(app)
