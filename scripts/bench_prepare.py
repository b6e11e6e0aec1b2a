"""Benchmark `prepare`, printing ratios measured in this one run (no thresholds asserted).

1. cue-render cost / plain cost: per real sample clip, decode + draw trajectory + encode
   vs decode + encode (goal <= 1.3);
2. clips/s of the `ssv2` step at 1 and 2 workers, on synthetic raw data;
3. peak RSS while streaming a large Something-Else box file (several hundred MB in the real
   dataset), keeping 1000 videos, next to `json.load` of the same file.

Usage: .venv/bin/python scripts/bench_prepare.py [--box-mb 300] [--videos 60]
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "ssv2-sample"
sys.path.insert(0, str(REPO))

from dataclasses import dataclass  # noqa: E402

from core import cli  # noqa: E402
from core.cli import command, option  # noqa: E402
from prepare.pipeline import Options, prepare_ssv2  # noqa: E402
from prepare.sources import read_boxes  # noqa: E402
from prepare.synthetic import generate_raw  # noqa: E402
from prepare.variants import RENDERERS, CueOptions, Source, aligned  # noqa: E402
from prepare.video import read_video, write_mp4  # noqa: E402


def cue_cost(tmp: Path, repeats: int = 3) -> float:
    boxes = read_boxes([SAMPLE / "bounding_box_smthsmth_sample.json"], {p.stem for p in (SAMPLE / "videos").iterdir()})
    times = {"plain": [], "trajectory": []}
    for _ in range(repeats):
        for variant in times:
            start = time.perf_counter()
            for vid, b in boxes.items():
                frames, fps = read_video(SAMPLE / "videos" / f"{vid}.webm")
                out = RENDERERS[variant](Source(frames, aligned(b, len(frames), fps), vid, 0), CueOptions())
                write_mp4(tmp / variant / f"{vid}.mp4", out, fps)
            times[variant].append(time.perf_counter() - start)
    return median(times["trajectory"]) / median(times["plain"])


def clips_per_second(tmp: Path, videos: int, workers: int) -> float:
    raw = generate_raw(tmp / "raw", videos, seed=0)
    out = tmp / f"w{workers}"
    start = time.perf_counter()
    m = prepare_ssv2(
        raw["videos"],
        raw["labels"],
        [raw["boxes"]],
        out,
        Options(test_videos=videos // 4, variants=("plain", "trajectory"), workers=workers),
    )
    return m.counts["clips_rendered"] / (time.perf_counter() - start)


def write_box_file(path: Path, megabytes: int) -> tuple[int, list[str]]:
    """A Something-Else-format file of about `megabytes` MB; returns (videos, ids)."""
    rng = random.Random(0)
    ids, size = [], 0
    with open(path, "w") as f:
        f.write("{")
        i = 0
        while size < megabytes * 1e6:
            vid = str(100000 + i)
            frames = [
                {
                    "name": f"{vid}/{k + 1:04d}.jpg",
                    "gt_placeholders": ["cup", "table"],
                    "nr_instances": 3,
                    "labels": [
                        {
                            "box2d": {
                                "x1": rng.uniform(0, 300),
                                "y1": rng.uniform(0, 200),
                                "x2": rng.uniform(0, 427),
                                "y2": rng.uniform(0, 240),
                            },
                            "category": c,
                            "gt_annotation": g,
                            "standard_category": "0000",
                        }
                        for c, g in (("cup", "object 0"), ("table", "object 1"), ("hand", "object hand"))
                    ],
                }
                for k in range(48)
            ]
            text = ("," if i else "") + json.dumps(vid) + ":" + json.dumps(frames)
            f.write(text)
            size += len(text)
            ids.append(vid)
            i += 1
        f.write("}")
    return len(ids), ids


def peak_rss_mb(code: str) -> float:
    """Peak RSS (MB) of a fresh Python running `code` (VmHWM: ru_maxrss would carry the
    parent's peak across fork + exec)."""
    probe = code + "\nprint(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


@dataclass
class Bench:
    box_mb: int = option(300, "Size (MB) of the box file streamed.")
    videos: int = option(60, "Synthetic videos rendered at 1 and 2 workers.")


app = cli.app(__doc__)


@command(app, Bench)
def bench(args: Bench) -> None:
    """Cue cost, clips/s and streamed box-file memory."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ratio = cue_cost(tmp / "cue")
        print(f"cue-render cost / plain decode+encode cost: {ratio:.2f} (goal <= 1.3)")
        rates = {w: clips_per_second(tmp / f"rate{w}", args.videos, w) for w in (1, 2)}
        print(f"clips/s: 1 worker {rates[1]:.1f}, 2 workers {rates[2]:.1f} (x{rates[2] / rates[1]:.2f})")
        box_file = tmp / "boxes.json"
        n, ids = write_box_file(box_file, args.box_mb)
        keep = set(random.Random(1).sample(ids, min(1000, n)))
        base = peak_rss_mb("import prepare.sources")
        start = time.perf_counter()
        streamed = peak_rss_mb(
            f"from pathlib import Path; from prepare.sources import read_boxes\n"
            f"b = read_boxes([Path({str(box_file)!r})], set({sorted(keep)!r})); assert len(b) == {len(keep)}"
        )
        took = time.perf_counter() - start
        loaded = peak_rss_mb(f"import json; d = json.load(open({str(box_file)!r})); assert len(d) == {n}")
        mb = box_file.stat().st_size / 1e6
        print(
            f"boxes: {mb:.0f} MB file, {n} videos, keep {len(keep)}: streamed peak RSS {streamed:.0f} MB "
            f"(interpreter + imports alone {base:.0f} MB) in {took:.1f} s; json.load peak RSS {loaded:.0f} MB"
        )


if __name__ == "__main__":
    cli.main(app)
