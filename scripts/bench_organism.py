"""Benchmark the model organism (`python -m train organism`): what it has learned, measured by
`python -m measure` through `serve` on synthetic videos of a seed it never saw.

Prints, per clip variant (plain, blind, object-masked, context-masked) and question type, the
accuracy with its 95 % cluster-bootstrap CI (videos resampled), beside chance and the
organism issue's targets; then the organism's parameter count and training time (its
organism.json). Builds the organism first (`python -m train organism`, ~10 min) when --model
holds none.

Usage: .venv/bin/python scripts/bench_organism.py [--model data/models/organism] [--videos 160] [--seed 4242]
(`--help` lists the options)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_measure import make_variants, running_server  # noqa: E402

from core import cli  # noqa: E402
from core.cli import command, group, option  # noqa: E402
from core.defaults import ORGANISM  # noqa: E402
from core.groups import Server  # noqa: E402
from core.profiles import served_name  # noqa: E402
from core.runs import load  # noqa: E402
from core.variants import BLIND, PLAIN  # noqa: E402
from measure.report import stats  # noqa: E402
from measure.report.tables import to_frame  # noqa: E402

VARIANTS = (PLAIN, BLIND, "object-masked", "context-masked")
CHANCE = 25.0  # 4 choices
SPLIT = "test"


@dataclass
class BenchOptions:
    model: Path = option(
        ORGANISM, "The model's folder: the organism (built there by `python -m train organism` if missing)."
    )
    videos: int = option(160, "Unseen synthetic videos (about a quarter of them in the test split it scores).")
    seed: int = option(4242, "Their seed: not the organism's own.")
    server: Server = group(Server, shown={"base_url": "a `serve run --model MODEL` started here"})


def targets(acc: dict[tuple[str, str], float]) -> list[tuple[str, bool]]:
    """The organism issue's targets, each with whether this run meets it."""
    plain_o, plain_v = acc[PLAIN, "object"], acc[PLAIN, "verb"]
    return [
        ("plain object >= 85 %", plain_o >= 85),
        ("plain verb >= 60 %", plain_v >= 60),
        ("blind at chance (object, within 10 pts)", abs(acc[BLIND, "object"] - CHANCE) <= 10),
        ("object-masked object within 10 pts of chance", abs(acc["object-masked", "object"] - CHANCE) <= 10),
        (
            "context-masked within 5 pts of plain (both types)",
            all(abs(acc["context-masked", t] - acc[PLAIN, t]) <= 5 for t in ("object", "verb")),
        ),
    ]


def measured(run_dir: Path) -> dict[tuple[str, str], tuple[float, float, float, int]]:
    """(variant, type) -> (accuracy %, CI low, CI high, n) from the stored run."""
    df = to_frame(load(run_dir).predictions)
    df = df[df["status"] != "error"]
    out = {}
    for (variant, qtype), g in df.groupby(["variant", "type"]):
        hits = 100.0 * g["correct"].astype(float).to_numpy()
        low, high = stats.bootstrap_ci(hits, g["video_id"].to_numpy())
        out[variant, qtype] = (stats.mean(hits), low, high, len(g))
    return out


def measure_run(url, data: Path, runs: Path, model: str) -> Path:
    """`python -m measure` asking `model` every question of the split on every variant."""
    argv = ["--data", str(data), "--base-url", str(url), "--split", SPLIT, "--variants", ",".join(VARIANTS)]
    argv += ["--models", model, "--runs-dir", str(runs), "--run-id", "organism"]
    subprocess.run([sys.executable, "-m", "measure", *argv], cwd=REPO, check=True, capture_output=True)
    return runs / "organism"


def header(model: Path) -> str:
    """How the organism was built (its organism.json), or that this model is no organism."""
    record = model / "organism.json"
    if not record.is_file():
        return f"model: {model} (no organism.json: not an organism, e.g. the random-weight control)"
    built = json.loads(record.read_text())
    return (
        f"organism: {model} ({built['parameters'] / 1e6:.2f} M parameters, trained in {built['seconds']:.0f} s "
        f"on {built['examples']} examples, final loss {built['loss']:.3f})"
    )


app = cli.app(__doc__)


@command(app, BenchOptions)
def bench(o: BenchOptions) -> None:
    """Measure the organism on unseen videos and print its accuracy per variant."""
    if not o.model.exists():
        subprocess.run([sys.executable, "-m", "train", "organism", "--out", str(o.model)], cwd=REPO, check=True)
    with tempfile.TemporaryDirectory() as d, running_server(o.server.base_url, o.model) as (url, _):
        data = make_variants(Path(d), o.seed, o.videos, VARIANTS)
        acc = measured(measure_run(url, data, Path(d) / "runs", served_name(str(o.model))))
    print(header(o.model))
    print(f"unseen: {o.videos} videos of seed {o.seed}, split {SPLIT}; chance {CHANCE:.0f} %")
    for (variant, qtype), (a, low, high, n) in sorted(acc.items()):
        print(f"{variant:>15} {qtype:<7} {a:5.1f} % [{low:5.1f}, {high:5.1f}]  n={n}")
    for name, met in targets({k: v[0] for k, v in acc.items()}):
        print(f"target {name}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    cli.main(app)
