"""The `ssv2` step: raw SSV2 labels + Something-Else boxes + clips -> questions and variants."""
from __future__ import annotations

import collections
import importlib.metadata
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from prepare import questions as qb
from prepare.schema import DataError, DataLayout, Question, atomic_write, to_json_line, write_json
from prepare.sources import FrameBoxes, read_boxes, read_labels, read_templates
from prepare.variants import RENDERERS, CueOptions, aligned
from prepare.video import read_video, write_mp4

VIDEO_SUFFIXES = (".webm", ".mp4")


@dataclass
class Options:
    label_files: Sequence[str] = ("train", "validation")
    test_videos: int = 1000
    limit: int | None = None
    seed: int = 0
    variants: Sequence[str] = ("plain", "trajectory")
    cues: CueOptions = field(default_factory=CueOptions)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)


@dataclass
class RenderJob:
    video_id: str
    source: Path
    boxes: list[FrameBoxes]
    outputs: dict[str, Path]  # variant -> clip path
    cues: CueOptions


def render(job: RenderJob) -> dict[str, Any]:
    """Decode once, write every missing variant; a bad clip comes back as an error, not a raise."""
    todo = {v: p for v, p in job.outputs.items() if not p.is_file()}
    info: dict[str, Any] = {"video_id": job.video_id, "rendered": sorted(todo)}
    if not todo:
        return info
    try:
        frames, fps = read_video(job.source)
    except DataError as e:
        return info | {"error": str(e)}
    per_frame = aligned(job.boxes, len(frames), fps)
    info |= {"frames": len(frames), "fps": fps, "frames_without_cues": sum(b is None for b in per_frame)}
    for variant, path in todo.items():
        info["padding"] = write_mp4(path, RENDERERS[variant](frames, per_frame, job.cues), fps)
    return info


def _run_jobs(jobs: list[RenderJob], workers: int) -> Iterator[dict[str, Any]]:
    columns = (TextColumn("rendering clips"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("render", total=len(jobs))
        if workers <= 1:
            for job in jobs:
                yield render(job)
                progress.advance(task)
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for fut in as_completed([pool.submit(render, j) for j in jobs]):
                yield fut.result()
                progress.advance(task)


def find_video(videos: Path, video_id: str) -> Path | None:
    for suffix in VIDEO_SUFFIXES:
        path = videos / f"{video_id}{suffix}"
        if path.is_file():
            return path
    return None


def prepare_ssv2(videos: Path, labels: Path, boxes: Sequence[Path], out: Path, opts: Options) -> dict[str, Any]:
    """Build data/NAME from raw SSV2-format data; returns the manifest it wrote."""
    unknown = sorted(set(opts.variants) - set(RENDERERS))
    if unknown:
        raise DataError(f"unknown variants {unknown}; valid: {sorted(RENDERERS)}")
    layout = DataLayout(out)
    dropped: list[dict[str, str]] = []

    def drop(item: str, reason: str) -> None:
        dropped.append({"item": item, "reason": reason})

    entries, unlabeled, bad_rows = read_labels(labels, opts.label_files)
    for vid, reason in bad_rows:
        drop(vid, reason)
    for vid in unlabeled:
        drop(vid, "unlabeled (only in test.json)")
    if opts.limit is not None:
        entries = entries[: opts.limit]
    sources: dict[str, Path] = {}
    for e in entries:
        path = find_video(videos, e.id)
        if path is None:
            drop(e.id, "video missing")
        else:
            sources[e.id] = path
    box_map = read_boxes(boxes, set(sources))
    for vid in sorted(set(sources) - set(box_map)):
        drop(vid, "no boxes")
    usable = [e for e in entries if e.id in sources and e.id in box_map]

    vocab = qb.Vocabulary.from_entries(entries, read_templates(labels))
    splits = qb.split_videos((e.id for e in usable), opts.test_videos, opts.seed)
    questions: list[Question] = []
    for e in usable:
        qs, bad = qb.build(e, splits[e.id], vocab, opts.seed)
        questions += qs
        for qid, reason in bad:
            drop(qid, reason)

    asked = sorted({q.video_id for q in questions})
    jobs = [
        RenderJob(vid, sources[vid], box_map[vid], {v: layout.clip(v, vid) for v in opts.variants}, opts.cues)
        for vid in asked
    ]
    clips: dict[str, dict[str, Any]] = {}
    for info in _run_jobs(jobs, opts.workers):
        clips[info["video_id"]] = info
        if "error" in info:
            drop(info["video_id"], info["error"])
    failed = {vid for vid, info in clips.items() if "error" in info}
    questions = [q for q in questions if q.video_id not in failed]
    questions.sort(key=lambda q: (q.split, q.video_id, q.id))
    atomic_write(layout.questions, "".join(to_json_line(q) for q in questions))

    manifest = {
        "sources": {"videos": str(videos), "labels": str(labels), "boxes": [str(b) for b in boxes]},
        "options": asdict(opts) | {"variants": list(opts.variants), "label_files": list(opts.label_files)},
        "seed": opts.seed,
        "counts": _counts(questions, opts.variants),
        "dropped": dropped,
        "dropped_by_reason": dict(collections.Counter(d["reason"].split(": ")[-1] for d in dropped)),
        "frames_without_cues": {vid: i["frames_without_cues"] for vid, i in sorted(clips.items()) if i.get("frames_without_cues")},
        "padded": {vid: i["padding"] for vid, i in sorted(clips.items()) if any(i.get("padding", ()))},
        "versions": {pkg: importlib.metadata.version(pkg) for pkg in ("decord", "av", "numpy", "opencv-python-headless")},
    }
    write_json(layout.manifest, manifest)
    return manifest


def _counts(questions: list[Question], variants: Sequence[str]) -> dict[str, Any]:
    return {
        "questions": len(questions),
        "videos": len({q.video_id for q in questions}),
        "by_split": dict(collections.Counter(q.split for q in questions)),
        "by_type": dict(collections.Counter(q.type for q in questions)),
        "videos_by_split": dict(collections.Counter(s for s, _ in {(q.split, q.video_id) for q in questions})),
        "variants": list(variants),
    }
