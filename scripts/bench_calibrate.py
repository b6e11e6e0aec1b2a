"""Benchmark `measure calibrate` and check that its check can fail, printing figures from one run.

Runs are made here in memory. Demo-shaped: a base model and an adapter of it, asked on plain
and trajectory clips, the blind and single-frame controls and the three interventions, 1-4
questions per video (a third object questions), answers drawn with known effects (the adapter
+10 points on cued clips, blind and masked objects at chance). Clustered: 10 questions per
video whose accuracy varies by video, where a procedure that ignores videos is wrong.

For each demo-shaped size it prints the time `calibrate` takes (goal: 1000 simulations of the
demo's 50 videos within 2 minutes) and its verdict on the report's procedure; then, on the
clustered run, its verdict on the report's procedure and on each deliberately broken one
(`measure.report.calibrate.PROCEDURES`): each broken one must be flagged, the report's not.

Usage: .venv/bin/python scripts/bench_calibrate.py [--videos 50,1000] [--sims 1000]
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_report import scored  # noqa: E402  (this folder is on sys.path)

from core import cli  # noqa: E402
from core.cli import command, option  # noqa: E402
from core.runs import Run  # noqa: E402
from measure.report import calibrate  # noqa: E402

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


def clustered(videos: int = 40, per: int = 10, seed: int = 0) -> Run:
    """A run whose videos matter: `per` questions a video, each video's accuracy its own (a
    logit-normal level), the cue changing half the answers at random (no effect on average)."""
    rng = np.random.default_rng(seed)
    preds = []
    for v in range(videos):
        skill = rng.normal()
        for i in range(per):
            qtype = "object" if i % 2 == 0 else "verb"
            for model in (BASE, ADAPTER):
                plain = bool(rng.random() < 1 / (1 + np.exp(-(0.8 + skill))))
                for variant in ("plain", "trajectory", "blind"):
                    p = 0.25 if variant == "blind" else 0.7
                    right = plain if variant == "plain" or rng.random() < 0.5 else bool(rng.random() < p)
                    preds.append(scored(f"v{v:03d}-{i}", f"v{v:03d}", qtype, model, variant, right))
    return Run(preds, parents={BASE: None, ADAPTER: BASE})


def summary(rec) -> str:
    t = pd.DataFrame(rec.comparisons)
    planted = t[t["power"].notna()]
    fw = ", ".join(f"{name} {100 * v:.1f} %" for name, v in rec.familywise.items())
    weak = ", ".join(f"{name} {100 * v:.1f} %" for name, v in rec.weak_familywise.items())
    return (
        f"false positives mean {t['null_rejection'].mean():.1f} % (family-wise {fw}; weak null {weak}); CI holds 0 "
        f"mean {t['null_coverage'].mean():.1f} %; planted MDE: coverage {planted['coverage'].mean():.1f} %, power "
        f"{planted['power'].mean():.1f} % vs predicted {planted['predicted_power'].mean():.1f} %"
    )


@dataclass
class Bench:
    videos: str = option("50,1000", "Run sizes (videos), comma-separated: the demo's, the reference study's.")
    sims: int = option(1000, "Simulations per comparison.")


app = cli.app(__doc__)


@command(app, Bench)
def bench(o: Bench) -> None:
    """Time and verdict of `measure calibrate` per run size, then each procedure's verdict."""
    for videos in map(int, cli.comma_list(o.videos)):
        run = demo_shaped(videos)
        start = time.perf_counter()
        rec = calibrate.calibrate(run, o.sims)
        seconds = time.perf_counter() - start
        print(
            f"{videos} videos, {len(rec.comparisons)} comparisons, {o.sims} simulations: {seconds:.1f} s "
            f"(goal for the demo's 50 videos at 1000: <= 120 s)"
        )
        print(f"  {summary(rec)}")
        print(f"  {calibrate.verdict(rec)}")
    run = clustered()
    for procedure in calibrate.PROCEDURES:
        rec = calibrate.calibrate(run, o.sims, procedure=procedure)
        print(f"clustered run, {procedure}: {calibrate.verdict(rec)}")


if __name__ == "__main__":
    cli.main(app)
