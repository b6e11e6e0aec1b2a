"""Benchmark how clips are sent: `--media data` (the mp4 inline, decoded and sampled by the
server) vs `--media frames` (sampled, resized and JPEG-encoded by the client), printing
ratios measured in one run against one server.

- server capacity (req/s of the bare concurrent client of bench_measure.py, requests built by measure's own
  `measure.ask.client.build`) and server CPU-seconds per request (from /proc of the server's
  process group), at the same frame count (8: the server's and the client's) and the same
  concurrency, on real SSV2 clips (../shared/data/ssv2-sample) re-encoded under distinct
  names with distinct pixels per phase, so no cache can serve one phase from another;
- the cache effect: frames with and without the per-part `uuid`;
- client cost per clip (decode, sample, resize, encode) and the peak RSS of `measure` itself
  (frames mode) for two numbers of questions: it should stay flat;
- the frame store: client CPU per request (media prepared and request built, as measure
  does) in a first run over real clips and in a second one over the same clips, and how
  many clips the second decoded (goal: none, CPU x <= 0.2);
- decoding at the size sent (decord's width/height) vs decoding whole and resizing as the
  processor does: client CPU per clip, and how far the pixels differ (why it is not used).

Its last line reads `frames/data capacity ratio: R`.

Usage: .venv/bin/python scripts/bench_media.py [--clips 65] [--questions 3] [--concurrency 32]
           [--rss-questions 1000,10000] [--base-url URL]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "ssv2-sample" / "videos"
sys.path.insert(0, str(REPO))

from bench_measure import STARTED, bare, running_server  # noqa: E402  (this folder is on sys.path)

from core import cli  # noqa: E402
from core.ask import AskConfig  # noqa: E402
from core.cli import command, group, option, positive_ints  # noqa: E402
from core.files import atomic_write  # noqa: E402
from core.groups import Server  # noqa: E402
from core.layout import DataLayout  # noqa: E402
from core.records import Question, read_questions, to_json_line  # noqa: E402
from core.urls import ServerUrl  # noqa: E402
from core.variants import PLAIN  # noqa: E402
from measure.ask import media  # noqa: E402
from measure.ask.client import Item, build, media_for, media_spec, request  # noqa: E402
from measure.ask.framestore import GB, FrameStore  # noqa: E402
from measure.ask.plan import ask_config  # noqa: E402
from prepare.video import read_video, write_mp4  # noqa: E402

CHOICES = ["pushing", "lifting", "tearing", "poking"]


def make_dataset(root: Path, phase: int, clips: int, questions: int) -> Path:
    """`clips` distinct clips made from the real sample (pixel (0, 0) of every frame carries the
    phase and copy number, so bytes and pixels differ) and `questions` questions spread over
    them, a clip's questions together."""
    layout = DataLayout(root / f"phase{phase}")
    sources = sorted(SAMPLE.glob("*.webm"))
    vids = []
    for k in range(clips):
        src = sources[k % len(sources)]
        frames, fps = read_video(src)
        frames[:, 0, 0, :] = (phase * 37 + k) % 256
        vids.append(f"{src.stem}-p{phase}-c{k}")
        write_mp4(layout.clip(PLAIN, vids[-1]), frames, fps)
    qs = [
        Question(
            id=f"q{i}",
            video_id=vids[i * clips // questions],
            split="test",
            type="verb",
            question=f"_____ something ({i % 4})",
            choices=CHOICES[i % 4 :] + CHOICES[: i % 4],
            answer=CHOICES[i % 4],
            template="x",
            label="x",
            slot=None,
        )
        for i in range(questions)
    ]
    atomic_write(layout.questions, "".join(to_json_line(q) for q in qs))
    return layout.root


def requests(data: Path, model: str, cfg: AskConfig, uuid: bool = True) -> list[dict]:
    layout = DataLayout(data)
    out = []
    for q in read_questions(layout.questions):
        r = build(Item(q, model, PLAIN, layout.clip(PLAIN, q.video_id)), cfg)
        if not uuid:
            for part in r["messages"][0]["content"]:
                part.pop("uuid", None)
        out.append(r)
    return out


def server_cpu_s(port: int) -> float:
    """CPU seconds so far of every process in the vLLM server's process group (found by its
    `serve.launch ... --port PORT` command line)."""
    ticks = os.sysconf("SC_CLK_TCK")
    groups, stats = set(), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[pid] = (int(fields[2]), (int(fields[11]) + int(fields[12])) / ticks)  # pgid, utime + stime
        if b"serve.launch" in cmd and str(port).encode() in cmd:
            groups.add(int(fields[2]))
    return sum(cpu for pgid, cpu in stats.values() if pgid in groups)


def measure_rss_mb(url: ServerUrl, model: str, data: Path, runs: Path, run_id: str, concurrency: int) -> float:
    """Peak RSS (MB) of one `python -m measure --media frames` process asking one model."""
    code = (
        "import runpy, sys\nsys.argv = ['measure'] + sys.argv[1:]\ntry:\n"
        "    runpy.run_module('measure', run_name='__main__', alter_sys=True)\nfinally:\n"
        "    peak = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "    print('VmHWM', peak.split()[1], file=sys.stderr)"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "--data",
            str(data),
            "--base-url",
            str(url),
            "--runs-dir",
            str(runs),
            "--run-id",
            run_id,
            "--models",
            model,
            "--media",
            "frames",
            "--concurrency",
            str(concurrency),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return int(next(line for line in r.stderr.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


def store_run(data: Path, model: str, cfg: AskConfig, store: FrameStore) -> tuple[float, int]:
    """(client CPU s per request, clips decoded) for one run's media over `data` through
    `store`, in this process: each clip prepared once (`media.prepare`), each request built."""
    layout = DataLayout(data)
    questions = read_questions(layout.questions)
    spec, prepared, decoded = None, None, 0
    start = time.process_time()
    for q in questions:
        item = Item(q, model, PLAIN, layout.clip(PLAIN, q.video_id))
        if (wanted := media_spec(item, cfg)) != spec:
            spec, prepared = wanted, media.prepare(wanted, store)
            decoded += not prepared.from_store
        request(item, cfg, prepared)
    return (time.process_time() - start) / len(questions), decoded


def decode_at_size(data: Path, cfg: AskConfig, processor: str) -> tuple[float, float, float]:
    """(CPU s per clip decoding whole then resizing as sent, CPU s per clip decoding at the sent
    size, mean |pixel difference| between the two) over the clips of `data`."""
    import numpy as np

    from core.decoding import decord
    from core.frames import load

    clips = sorted(DataLayout(data).clips_dir(PLAIN).glob("*.mp4"))
    whole = at_size = diff = 0.0
    for clip in clips:
        start = time.process_time()
        s = load(clip, cfg.frames, processor, sizer=processor)
        whole += time.process_time() - start
        start = time.process_time()
        vr = decord.VideoReader(str(clip), ctx=decord.cpu(0), width=s.size[0], height=s.size[1])
        small = vr.get_batch(s.indices).asnumpy()
        at_size += time.process_time() - start
        diff += float(np.abs(small.astype(np.int16) - s.pixels.astype(np.int16)).mean())
    return whole / len(clips), at_size / len(clips), diff / len(clips)


def two(value: str | tuple[int, ...]) -> tuple[int, ...]:
    counts = positive_ints(value)
    if len(counts) != 2:
        raise ValueError(f"{value!r}: give two question counts, e.g. 1000,10000")
    return counts


@dataclass
class Bench:
    clips: int = option(65, "Distinct clips per phase (>= 60 for the real figure).")
    questions: int = option(3, "Questions per clip.")
    concurrency: int = option(32, "Requests in flight.")
    rss_questions: tuple[int, ...] = option(
        (1000, 10000), "Two question counts for measure's peak RSS.", parser=two, metavar="N,N"
    )
    server: Server = group(Server, shown={"base_url": STARTED})


app = cli.app(__doc__)


@command(app, Bench)
def bench(args: Bench) -> None:
    """Frames vs data: server capacity and CPU, cache effect, client cost and memory."""
    with running_server(args.server.base_url) as (url, listed):
        port = url.port
        model = listed[0]["id"]
        frames_cfg = ask_config(AskConfig(), listed, [model])  # measure's defaults, as measure resolves them
        data_cfg = ask_config(AskConfig(media="data"), listed, [model])
        processor = frames_cfg.processors[model]
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            warm = make_dataset(root, 0, 4, 4)
            for cfg in (data_cfg, frames_cfg):
                asyncio.run(bare(url, requests(warm, model, cfg), 4))
            phases = {
                "data": (data_cfg, True),
                "frames": (frames_cfg, True),
                "frames without uuid": (frames_cfg, False),
            }
            rate, cpu, n = {}, {}, 0
            prep_s = 0.0
            for phase, (name, (cfg, uuid)) in enumerate(phases.items(), start=1):
                data = make_dataset(root, phase, args.clips, args.clips * args.questions)
                start = time.perf_counter()
                reqs = requests(data, model, cfg, uuid)
                if name == "frames":
                    prep_s = time.perf_counter() - start
                n = len(reqs)
                before = server_cpu_s(port)
                rate[name] = asyncio.run(bare(url, reqs, args.concurrency))
                cpu[name] = (server_cpu_s(port) - before) / n
            small, large = args.rss_questions
            rss = {}
            for phase, count in enumerate((small, large), start=len(phases) + 1):
                data = make_dataset(root, phase, max(1, min(args.clips, count // args.questions)), count)
                rss[count] = measure_rss_mb(url, model, data, root / "runs", f"rss{count}", args.concurrency)
            store_data = make_dataset(root, len(phases) + 3, args.clips, args.clips * args.questions)
            store = FrameStore(root / "frame-store", 10 * GB)
            first_cpu, first_decoded = store_run(store_data, model, frames_cfg, store)
            second_cpu, second_decoded = store_run(store_data, model, frames_cfg, store)
            whole_s, at_size_s, pixel_diff = decode_at_size(store_data, frames_cfg, processor)
            q = read_questions(DataLayout(warm).questions)[0]
            sent = media_for(Item(q, model, PLAIN, DataLayout(warm).clip(PLAIN, q.video_id)), frames_cfg)
        print(
            f"{n} requests per phase ({args.clips} distinct real SSV2 clips x {args.questions} questions), "
            f"concurrency {args.concurrency}, {frames_cfg.frames.frames} frames per clip, model {model}"
        )
        print(
            f"frames sent: {len(sent.frame_indices)} JPEG (quality {media.JPEG_QUALITY}) at {sent.frame_size[0]}x"
            f"{sent.frame_size[1]} from a real SSV2 clip, sized by the processor of {processor}"
        )
        for name in phases:
            print(f"{name}: {rate[name]:.1f} req/s, server CPU {1000 * cpu[name]:.1f} ms per request")
        print(f"client cost (frames mode, in one process): {1000 * prep_s / args.clips:.1f} ms per clip")
        print(
            f"cache effect: frames with uuid / without: {rate['frames'] / rate['frames without uuid']:.2f}x capacity, "
            f"server CPU per request {cpu['frames without uuid'] / cpu['frames']:.2f}x lower with it"
        )
        print(
            f"measure peak RSS (frames mode): {small} questions {rss[small]:.0f} MB, {large} questions "
            f"{rss[large]:.0f} MB (x{rss[large] / rss[small]:.2f})"
        )
        print(
            f"decode at the size sent: {1000 * at_size_s:.1f} ms per clip vs {1000 * whole_s:.1f} decoding whole and "
            f"resizing (x{at_size_s / whole_s:.2f}); pixels differ by {pixel_diff:.1f} levels on average (not used)"
        )
        print(f"frame store: first run decoded {first_decoded} clips, {1000 * first_cpu:.2f} ms client CPU per request")
        print(f"second run: clips decoded {second_decoded}, client CPU per request x{second_cpu / first_cpu:.2f}")
        print(f"server CPU per request, data / frames: {cpu['data'] / cpu['frames']:.2f}")
        print(f"frames/data capacity ratio: {rate['frames'] / rate['data']:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli.main(app)
