"""The `ssv2` step: raw SSV2 labels + Something-Else boxes + clips -> questions and variants."""

from __future__ import annotations

import collections
import importlib.metadata
import json
import os
import pickle
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from core import progress, runfiles
from core.cli import comma_list, group, option, shard_spec
from core.errors import DataError
from core.files import atomic_path, atomic_write, read_json, write_json
from core.layout import DataLayout
from core.records import Question, safe_id, to_json_line
from core.runfiles import Manifest
from core.variants import BLIND, PLAIN, VARIANTS, variant_names
from prepare import questions as qb
from prepare import subset as subsets
from prepare.cues import auto_thickness
from prepare.sources import FrameBoxes, read_boxes, read_labels, read_templates
from prepare.variants import RENDERERS, CueOptions, Source, aligned, fit_boxes, settings
from prepare.video import Encoding, probe_video, read_video, write_mp4

VIDEO_SUFFIXES = (".webm", ".mp4")
Distractors = Literal["random", "hard"]
DISTRACTORS: tuple[str, ...] = get_args(Distractors)


def seed_option() -> Any:
    return option(0, "Seed for the split, distractors, choice order and shuffled frames.")


def variants_option(default: tuple[str, ...] = (PLAIN, "trajectory")) -> Any:
    return option(
        default, f"Comma-separated clip variants: {', '.join(VARIANTS)}.", parser=variant_names, metavar="NAME,..."
    )


def workers_option() -> Any:
    return option(factory=lambda: os.cpu_count() or 1, help="Parallel render processes.", shown="one per core")


@dataclass
class Options:
    """How `prepare ssv2` builds questions and clips (its options)."""

    label_files: Sequence[str] = option(
        ("train", "validation"), "SSV2 label files whose videos are used.", parser=comma_list, metavar="NAME,..."
    )
    test_videos: int = option(1000, "Videos in our test split.")
    limit: int | None = option(None, "Use only the first N labelled videos.", shown="all")
    subset: Literal["all", "visual-cues"] = option(
        "all",
        "Which labelled videos: all, or visual-cues (the reference study's subset by its rule: the first "
        "10,000 annotated ids, [something]-only templates, test = the first --test-videos of them).",
    )
    seed: int = seed_option()
    variants: Sequence[str] = variants_option()
    distractors: Distractors = option(
        "random", "Object distractors: random (whole vocabulary) or hard (same template)."
    )
    cues: CueOptions = group(CueOptions)
    encoding: Encoding | None = option(
        None,
        "How clips are written: ours (padded to even size, the source fps) or study (cropped to even "
        "size, 12 fps, x264's default preset: as the study wrote its clips).",
        shown="study with --subset visual-cues, else ours",
    )
    workers: int = workers_option()
    shard: tuple[int, int] | None = option(
        None,
        "Render only shard i/n of the videos (by id); a final run without it writes the questions.",
        shown="every video",
        parser=shard_spec,
        metavar="I/N",
    )
    ray: str | None = option(
        None,
        shown="no Ray: --workers processes here",
        help="Render as a Ray Data job: auto (the running cluster), ray://HOST:PORT, or local "
        "(a Ray instance of --workers CPUs started here); needs `pip install ray[data]` and, on "
        "several nodes, --out on a shared filesystem.",
        metavar="ADDRESS",
    )


EXECUTION = ("workers", "shard", "ray")  # how a dataset is computed, not what it is: left out of its manifest


def encoding_of(opts: Options) -> Encoding:
    """The clip writer: as given, else the study's for the study's subset."""
    return opts.encoding or ("study" if opts.subset == subsets.NAME else "ours")


@dataclass
class RenderJob:
    video_id: str
    source: Path
    boxes: list[FrameBoxes]
    outputs: dict[str, Path]  # variant -> clip path
    cues: CueOptions
    seed: int
    encoding: Encoding = "ours"


def render(job: RenderJob) -> dict[str, Any]:
    """Decode once, write every missing or out-of-date variant (older than its source clip);
    a bad clip comes back as an error, not a raise."""
    born = job.source.stat().st_mtime if job.source.is_file() else 0.0
    todo = {v: p for v, p in job.outputs.items() if not p.is_file() or p.stat().st_mtime < born}
    info: dict[str, Any] = {"video_id": job.video_id, "rendered": sorted(todo)}
    try:
        if todo:
            frames, fps = read_video(job.source)
            n, h, w = frames.shape[:3]
        else:  # everything is on disk: only the numbers the manifest needs
            n, fps, h, w = probe_video(job.source)
    except DataError as e:
        return info | {"error": str(e)}
    per_frame, clamped, dropped = fit_boxes(aligned(job.boxes, n, fps), h, w)
    info |= {
        "frames": n,
        "fps": fps,
        "frames_without_cues": sum(b is None for b in per_frame),
        "padding": [h % 2, w % 2] if job.encoding == "ours" else [0, 0],
        "cropped": [h % 2, w % 2] if job.encoding == "study" else [0, 0],
        "boxes_clamped": clamped,
        "boxes_dropped": dropped,
        "size": [w, h],
        "thickness": job.cues.thickness or auto_thickness(h),
        "boxes": [None if b is None else {slot: list(box) for slot, box in b.items()} for b in per_frame],
    }
    if todo:
        src = Source(frames, per_frame, job.video_id, job.seed)
        for variant, path in todo.items():
            write_mp4(path, RENDERERS[variant](src, job.cues), fps, job.encoding)
    return info


def _render_row(row: dict[str, Any]) -> dict[str, Any]:
    """A Ray Data row (a pickled RenderJob) -> its render info as JSON (what `render` returns
    is plain JSON data: the manifest comes out as a local run's)."""
    return {"info": json.dumps(render(pickle.loads(row["job"])))}


def _ray_jobs(jobs: list[RenderJob], address: str, workers: int) -> Iterator[dict[str, Any]]:
    """`render` over every job as a Ray Data job on the cluster at `address` ("local": a Ray
    instance of `workers` CPUs started here, stopped after)."""
    try:
        import ray
    except ImportError:
        raise DataError(
            "--ray needs Ray: pip install 'ray[data]' (or the project's extra: pip install -e '.[ray]')"
        ) from None
    local = address == "local"
    try:
        ray.init(
            address=None if local else address,
            num_cpus=workers if local else None,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    except ConnectionError as e:
        raise DataError(f"--ray {address}: {e} (start one with `ray start --head`, or use --ray local)") from None
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts what comes back
        items = [{"job": pickle.dumps(j)} for j in jobs]
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 8 * workers)))
        for row in ds.map(_render_row, num_cpus=1).iter_rows():
            yield json.loads(row["info"])
    finally:
        ray.shutdown()


def run_jobs(jobs: list[RenderJob], workers: int, ray_address: str | None = None) -> Iterator[dict[str, Any]]:
    with progress.bar("rendering clips", len(jobs), "clips") as advance:
        if ray_address is not None and jobs:
            for info in _ray_jobs(jobs, ray_address, workers):
                yield info
                advance()
            return
        if workers <= 1:
            for job in jobs:
                yield render(job)
                advance()
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for fut in as_completed([pool.submit(render, j) for j in jobs]):
                yield fut.result()
                advance()


def find_video(videos: Path, video_id: str) -> Path | None:
    for suffix in VIDEO_SUFFIXES:
        path = videos / f"{video_id}{suffix}"
        if path.is_file():
            return path
    return None


def sync_settings(layout: DataLayout, variant: str, wanted: dict) -> int:
    """Make clips/<variant>/ hold only clips made with `wanted` settings: clips of other (or
    unknown) settings are removed so they are rendered again. Returns how many were removed."""
    folder = layout.clips_dir(variant)
    for tmp in folder.glob(".*.mp4") if folder.is_dir() else []:  # half-written by a killed run
        tmp.unlink()
    marker = layout.clip_settings(variant)
    if marker.is_file() and read_json(marker) == wanted:
        return 0
    stale = sorted(folder.glob("*.mp4")) if folder.is_dir() else []
    for clip in stale:
        clip.unlink()
    write_json(marker, wanted)
    return len(stale)


def in_shard(video_id: str, shard: tuple[int, int] | None) -> bool:
    return shard is None or zlib.crc32(video_id.encode()) % shard[1] == shard[0]


def prepare_ssv2(videos: Path, labels: Path, boxes: Sequence[Path], out: Path, opts: Options) -> Manifest:
    """Build data/NAME from raw SSV2-format data; returns the manifest it wrote.

    With `opts.shard` only that shard's clips are rendered and a shard manifest is written;
    a final run without a shard (which reuses every rendered clip) writes the questions.
    """
    unknown = sorted(set(opts.variants) - set(VARIANTS))
    if unknown:
        raise DataError(f"unknown variants {unknown}; valid: {list(VARIANTS)}")
    if opts.distractors not in DISTRACTORS:
        raise DataError(f"unknown distractors {opts.distractors!r}; valid: {list(DISTRACTORS)}")
    layout = DataLayout(out)
    dropped: list[dict[str, str]] = []

    def drop(item: str, reason: str) -> None:
        dropped.append({"item": item, "reason": reason})

    entries, unlabeled, bad_rows = read_labels(labels, opts.label_files)
    for vid, reason in bad_rows:
        drop(vid, reason)
    for vid in unlabeled:
        drop(vid, "unlabeled (only in test.json)")
    subset = None
    if opts.subset == subsets.NAME:
        subset = subsets.visual_cues(subsets.annotated_ids(boxes), entries, opts.test_videos)
        entries = subset.entries
    if opts.limit is not None:
        entries = entries[: opts.limit]
    sources: dict[str, Path] = {}
    for e in entries:
        if not safe_id(e.id):
            drop(e.id, "video id is not a plain file name (it could escape the videos directory)")
            continue
        path = find_video(videos, e.id)
        if path is None:
            drop(e.id, "video missing")
        else:
            sources[e.id] = path
    box_stats: dict[str, int] = {}
    box_map = read_boxes(boxes, set(sources), box_stats)
    for vid in sorted(set(sources) - set(box_map)):
        drop(vid, "no boxes")
    usable = [e for e in entries if e.id in sources and e.id in box_map]

    vocab = qb.Vocabulary.from_entries(entries, read_templates(labels))
    splits = subset.splits if subset else qb.split_videos((e.id for e in usable), opts.test_videos, opts.seed)
    questions: list[Question] = []
    for e in usable:
        qs, bad = qb.build(e, splits[e.id], vocab, opts.seed, opts.distractors)
        questions += qs
        for qid, reason in bad:
            drop(qid, reason)

    asked = {q.video_id: sources[q.video_id] for q in questions if in_shard(q.video_id, opts.shard)}
    encoding = encoding_of(opts)
    clips, rerendered = render_clips(
        layout, asked, box_map, opts.variants, opts.cues, opts.seed, opts.workers, drop, opts.ray, encoding
    )
    failed = {vid for vid, info in clips.items() if "error" in info}
    questions = [q for q in questions if q.video_id not in failed]
    questions.sort(key=lambda q: (q.split, q.video_id, q.id))

    manifest = Manifest(
        kind="ssv2",
        sources={"videos": str(videos), "labels": str(labels), "boxes": [str(b) for b in boxes]},
        options={k: v for k, v in asdict(opts).items() if k not in EXECUTION}
        | {"variants": list(opts.variants), "label_files": list(opts.label_files), "encoding": encoding},
        seed=opts.seed,
        render_settings={v: settings(v, opts.cues, opts.seed, encoding) for v in opts.variants},
        subset=subset.record() if subset else {},
        counts=_counts(questions, opts.variants, clips)
        | {"clips_rendered": sum(len(i["rendered"]) for i in clips.values()), "stale_clips_removed": rerendered},
        dropped=dropped,
        dropped_by_reason=dict(collections.Counter(d["reason"].split(": ")[-1] for d in dropped)),
        frames_without_cues={
            vid: i["frames_without_cues"] for vid, i in sorted(clips.items()) if i.get("frames_without_cues")
        },
        padded={vid: i["padding"] for vid, i in sorted(clips.items()) if any(i.get("padding", ()))},
        boxes_fixed={
            vid: {"clamped_to_frame": i["boxes_clamped"], "dropped_empty_or_inverted": i["boxes_dropped"]}
            for vid, i in sorted(clips.items())
            if i.get("boxes_clamped") or i.get("boxes_dropped")
        },
        boxes_for_other_videos=box_stats["videos"] - len(box_map),
        versions={pkg: importlib.metadata.version(pkg) for pkg in ("decord", "av", "numpy", "opencv-python-headless")},
    )
    if opts.shard is not None:
        runfiles.write(layout.shard_manifest(*opts.shard), manifest)
        return manifest
    return write_dataset(layout, questions, manifest)


def render_clips(
    layout: DataLayout,
    sources: dict[str, Path],
    boxes: dict[str, list[FrameBoxes]],
    variants: Sequence[str],
    cues: CueOptions,
    seed: int,
    workers: int,
    drop: Callable[[str, str], None],
    ray_address: str | None = None,
    encoding: Encoding = "ours",
) -> tuple[dict, dict[str, int]]:
    """Every variant of every source clip (video id -> path) rendered or reused (in `workers`
    processes, or as a Ray Data job at `ray_address`) and written as `encoding` says, a bad
    clip dropped with its reason; returns (per-video render info, stale clips removed per variant)."""
    rerendered = {v: sync_settings(layout, v, settings(v, cues, seed, encoding)) for v in variants}
    rendered = [v for v in variants if v != BLIND]  # blind: no clip, the text alone
    jobs = [
        RenderJob(vid, path, boxes.get(vid, []), {v: layout.clip(v, vid) for v in rendered}, cues, seed, encoding)
        for vid, path in sorted(sources.items())
    ]
    clips: dict[str, dict[str, Any]] = {}
    for info in run_jobs(jobs, workers, ray_address):
        clips[info["video_id"]] = info
        if "error" in info:
            drop(info["video_id"], info["error"])
        elif boxes.get(info["video_id"]):
            write_clip_boxes(layout, info, cues)
    return clips, rerendered


def write_clip_boxes(layout: DataLayout, info: dict[str, Any], cues: CueOptions) -> None:
    """boxes/<video>.json: each frame's boxes as the clips were drawn from them (aligned to the
    frames, fitted to the frame), the stroke width and frame size: what `interpret` maps
    attention onto."""
    keep = ("frames", "fps", "size", "cropped", "thickness", "boxes")
    write_json(layout.boxes(info["video_id"]), {k: info[k] for k in keep} | {"cue_hand": cues.cue_hand})


def write_dataset(layout: DataLayout, questions: list[Question], manifest: Manifest) -> Manifest:
    """questions.jsonl, questions.parquet and manifest.json, each atomically."""
    atomic_write(layout.questions, "".join(to_json_line(q) for q in questions))
    write_parquet(layout.parquet, questions)
    runfiles.write(layout.manifest, manifest)
    return manifest


def write_parquet(path: Path, questions: list[Question]) -> None:
    """The questions as a Hugging Face dataset (parquet): `load_dataset("parquet", data_files=...)`."""
    from datasets import Dataset

    with atomic_path(path) as tmp:
        Dataset.from_list([asdict(q) for q in questions]).to_parquet(str(tmp))


def _counts(questions: list[Question], variants: Sequence[str], clips: dict[str, dict]) -> dict[str, Any]:
    videos = {q.video_id for q in questions}
    return {
        "questions": len(questions),
        "videos": len(videos),
        "by_split": dict(collections.Counter(q.split for q in questions)),
        "by_type": dict(collections.Counter(q.type for q in questions)),
        "by_split_and_type": dict(collections.Counter(f"{q.split}/{q.type}" for q in questions)),
        "videos_by_split": dict(collections.Counter(s for s, _ in {(q.split, q.video_id) for q in questions})),
        "clips_by_variant": {
            v: sum(1 for vid in videos if vid in clips and "error" not in clips[vid]) for v in variants
        },
        "variants": list(variants),
    }
