"""`prepare clips DIR`: a folder of one's own videos as a dataset.

Every video under DIR (.mp4, .webm, .mov, .mkv; nested folders too) becomes a clip named by
its path inside DIR (`kitchen/egg 1.mov` -> `kitchen--egg-1`). By default each clip asks the
arrow-of-time question both ways (the clip forward, then reversed: "Is this video playing
forward or backward?"), with its category (reversible | irreversible) from `--labels`, a CSV
of `video,category`. With `--questions`, the clips ask one's own multiple-choice questions
instead: a CSV or JSONL of video, question, choices, answer and, optionally, type and boxes
(a Something-Else JSON file per video, for cues and `interpret`'s regions).

A file that is not a video, does not decode, or runs longer than `--max-seconds` is named and
skipped; so is a bad row (file:row and why); the rest goes on (`manifest.json` keeps it all).
"""

from __future__ import annotations

import collections
import csv
import importlib.metadata
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.cli import option
from core.errors import DataError
from core.files import read_json
from core.layout import DataLayout
from core.records import MCQ, Question, read_jsonl
from core.runfiles import Manifest
from core.variants import FROM_BOXES, PLAIN, REVERSED
from prepare import arrow
from prepare.pipeline import (
    RenderJob,
    render_clips,
    run_jobs,
    seed_option,
    sync_settings,
    variants_option,
    workers_option,
    write_dataset,
)
from prepare.questions import split_videos
from prepare.sources import FrameBoxes, frame_boxes
from prepare.variants import RENDER_VERSION, CueOptions
from prepare.video import ENCODINGS, probe_video

SUFFIXES = (".mp4", ".webm", ".mov", ".mkv")
CATEGORIES = ("reversible", "irreversible")
COLUMNS = ("video", "question", "choices", "answer")  # a questions file's required columns (type, boxes optional)


@dataclass
class ClipsOptions:
    """How `prepare clips` makes a dataset of a folder of videos (its options)."""

    labels: Path | None = option(
        None, "CSV of video,category (reversible|irreversible): each clip's arrow-of-time category.", shown="none"
    )
    questions: Path | None = option(
        None,
        "Ask these multiple-choice questions instead of the arrow of time: a CSV or JSONL of video, question, "
        "choices, answer[, type][, boxes].",
        shown="none: the arrow of time",
    )
    variants: Sequence[str] = variants_option((PLAIN,))
    max_seconds: float = option(120.0, "Skip (and name) clips longer than this.")
    test_videos: int | None = option(None, "Videos in the test split (seeded); the rest go to train.", shown="all")
    seed: int = seed_option()
    workers: int = workers_option()


@dataclass
class Found:
    """The videos of a folder: clip id -> file, file -> why it was skipped."""

    clips: dict[str, Path] = field(default_factory=dict)
    relative: dict[str, str] = field(default_factory=dict)  # clip id -> its path inside the folder
    skipped: list[dict[str, str]] = field(default_factory=list)


def clip_id(relative: str, taken: set[str]) -> str:
    """A file name for a clip from its path inside the folder: separators as `--`, any other
    character outside [A-Za-z0-9._-] as `-`, unique among `taken`."""
    stem = relative.rsplit(".", 1)[0].replace("/", "--")
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "clip"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}-{k}"
    return name


def scan(root: Path, max_seconds: float) -> Found:
    """Every readable video under `root` no longer than `max_seconds`; the rest named with why."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of videos")
    found = Found()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.suffix.lower() not in SUFFIXES:
            found.skipped.append({"item": rel, "reason": f"not a video ({path.suffix or 'no suffix'})"})
            continue
        try:
            frames, fps, _, _ = probe_video(path)
        except DataError as e:
            found.skipped.append({"item": rel, "reason": str(e).removeprefix(f"{path}: ")})
            continue
        seconds = frames / fps if fps > 0 else float("inf")
        if frames < 2 or seconds > max_seconds:
            why = f"{frames} frame(s)" if frames < 2 else f"{seconds:.1f} s, over --max-seconds {max_seconds:g}"
            found.skipped.append({"item": rel, "reason": why})
            continue
        cid = clip_id(rel, set(found.clips))
        found.clips[cid], found.relative[cid] = path, rel
    if not found.clips:
        raise DataError(f"{root}: no readable video ({len(found.skipped)} file(s) skipped)")
    return found


def read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file:row, row) of a CSV (header first) or a JSONL file; DataError if it cannot be read."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() == ".jsonl":
        return [(f"{path}:{n}", row) for n, row in read_jsonl(path)]
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [(f"{path}:{n}", row) for n, row in enumerate(csv.DictReader(f), 2)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV ({type(e).__name__}: {e})") from None


class Videos:
    """A row's `video` -> a clip id: its path inside the folder (with or without its suffix), its
    file name or its stem, when that names one clip."""

    def __init__(self, found: Found):
        names: dict[str, set[str]] = collections.defaultdict(set)
        for cid, rel in found.relative.items():
            for key in {rel, rel.rsplit(".", 1)[0], Path(rel).name, Path(rel).stem, cid}:
                names[key].add(cid)
        self.names = names

    def __call__(self, video: Any) -> str:
        matches = self.names.get(str(video).strip().removeprefix("./"), set())
        if len(matches) != 1:
            raise ValueError(f"video {video!r} " + ("names no clip" if not matches else f"names {sorted(matches)}"))
        return next(iter(matches))


def categories(path: Path, videos: Videos) -> tuple[dict[str, str], list[dict[str, str]]]:
    """clip id -> reversible|irreversible from a labels CSV, and its bad rows named."""
    out, bad = {}, []
    for where, row in read_rows(path):
        try:
            cat = str(row.get("category") or "").strip().lower()
            if cat not in CATEGORIES:
                raise ValueError(f"category {row.get('category')!r} is not one of {', '.join(CATEGORIES)}")
            out[videos(row.get("video"))] = cat
        except ValueError as e:
            bad.append({"item": where, "reason": str(e)})
    return out, bad


def prepare_arrow(found: Found, out: Path, opts: ClipsOptions) -> tuple[list[Question], list[dict], dict]:
    """The arrow-of-time questions of every clip (forward and reversed clips written under
    clips/arrow/), their bad label rows and per-clip render info."""
    cats, dropped = categories(opts.labels, Videos(found)) if opts.labels else ({}, [])
    layout = DataLayout(out)
    sync_settings(
        layout,
        arrow.VARIANT,
        {"variant": arrow.VARIANT, "render_version": RENDER_VERSION, "encoding": ENCODINGS["ours"]},
    )
    directions = {"forward": PLAIN, "backward": REVERSED}
    jobs = [
        RenderJob(
            cid,
            path,
            [],
            {v: layout.clip(arrow.VARIANT, f"{cid}-{d}") for d, v in directions.items()},
            CueOptions(),
            opts.seed,
        )
        for cid, path in sorted(found.clips.items())
    ]
    clips = {info["video_id"]: info for info in run_jobs(jobs, opts.workers)}
    splits = split_videos(found.clips, len(found.clips) if opts.test_videos is None else opts.test_videos, opts.seed)
    questions = []
    for cid in sorted(found.clips):
        if "error" in clips[cid]:
            dropped.append({"item": found.relative[cid], "reason": clips[cid]["error"]})
            continue
        for d in directions:
            questions.append(
                arrow.question(f"{cid}-{d}", splits[cid], d, label=found.relative[cid], cat=cats.get(cid, ""))
            )
    return questions, dropped, clips


def parse_choices(value: Any) -> list[str]:
    """A row's choices: a list (JSONL), or in a CSV a JSON list or `a|b|c`."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split("|")
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, str) and c.strip() for c in value):
        raise ValueError("choices must be at least 2 non-empty strings (a JSON list, or a|b|c in a CSV)")
    return [c.strip() for c in value]


def row_boxes(value: Any, folder: Path, stem: str) -> list[FrameBoxes] | None:
    """A row's boxes: a Something-Else JSON file (relative to the questions file) holding this
    video's frames, as `{video: [frames]}` or `[frames]`; None when the row gives none."""
    if value is None or str(value).strip() == "":
        return None
    path = folder / str(value).strip()
    raw = read_json(path)
    if isinstance(raw, dict):
        raw = raw.get(stem) if stem in raw else next(iter(raw.values())) if len(raw) == 1 else None
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected Something-Else frames for {stem!r} ({{video: [frames]}} or [frames])")
    try:
        return frame_boxes(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not in the Something-Else box format ({type(e).__name__}: {e})") from None


def question_of(row: dict[str, Any], cid: str, k: int) -> Question:
    """One row as a question on clip `cid` (its k-th); ValueError saying what is wrong."""
    missing = [c for c in COLUMNS if row.get(c) in (None, "")]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    text, answer = str(row["question"]).strip(), str(row["answer"]).strip()
    choices = parse_choices(row["choices"])
    if choices.count(answer) != 1:
        raise ValueError(f"answer {answer!r} is not exactly once among the choices {choices}")
    kind = str(row.get("type") or "").strip()
    study_form = kind in ("object", "verb") and text.count("_____") == 1
    return Question(
        id=f"{cid}-{k}",
        video_id=cid,
        split="test",
        type=kind if study_form else MCQ,  # type: ignore[arg-type]
        question=text,
        choices=choices,
        answer=answer,
        template=text,
        label="",
        slot=None,
        category="" if study_form else kind,
    )


def prepare_mcq(found: Found, out: Path, opts: ClipsOptions) -> tuple[list[Question], list[dict], dict]:
    """The questions of `opts.questions` on the clips they name (every variant rendered, cued
    ones from the rows' boxes), their bad rows named, and per-clip render info."""
    assert opts.questions is not None
    videos, dropped = Videos(found), []
    questions: list[Question] = []
    boxes: dict[str, list[FrameBoxes]] = {}
    per_clip: collections.Counter[str] = collections.Counter()
    for where, row in read_rows(opts.questions):
        try:
            cid = videos(row.get("video"))
            q = question_of(row, cid, per_clip[cid])
            found_boxes = row_boxes(row.get("boxes"), opts.questions.parent, Path(found.relative[cid]).stem)
        except (ValueError, DataError) as e:
            dropped.append({"item": where, "reason": str(e)})
            continue
        per_clip[cid] += 1
        questions.append(q)
        if found_boxes is not None:
            boxes[cid] = found_boxes
    cued = sorted(set(opts.variants) & set(FROM_BOXES))
    if cued:
        for q in [q for q in questions if q.video_id not in boxes]:
            dropped.append(
                {"item": q.id, "reason": f"no boxes for its clip: --variants {','.join(cued)} draw from them"}
            )
        questions = [q for q in questions if q.video_id in boxes]
    asked = sorted({q.video_id for q in questions})
    splits = split_videos(asked, len(asked) if opts.test_videos is None else opts.test_videos, opts.seed)
    questions = [replace(q, split=splits[q.video_id]) for q in questions]

    def drop(item: str, reason: str) -> None:
        dropped.append({"item": found.relative.get(item, item), "reason": reason})

    sources = {cid: found.clips[cid] for cid in asked}
    clips, _ = render_clips(DataLayout(out), sources, boxes, opts.variants, CueOptions(), opts.seed, opts.workers, drop)
    return [q for q in questions if "error" not in clips[q.video_id]], dropped, clips


def prepare_clips(folder: Path, out: Path, opts: ClipsOptions) -> Manifest:
    """Build data/NAME from a folder of videos; returns the manifest it wrote."""
    if opts.questions is None and (set(opts.variants) - {PLAIN}):
        raise DataError(
            "--variants: the arrow of time asks each clip forward and reversed; give --questions to ask others"
        )
    if opts.questions is not None and opts.labels is not None:
        raise DataError("--labels gives arrow-of-time categories; with --questions put a clip's type in its rows")
    found = scan(folder, opts.max_seconds)
    make = prepare_mcq if opts.questions else prepare_arrow
    questions, dropped, clips = make(found, out, opts)
    if not questions:
        raise DataError(f"{folder}: no question could be made ({len(found.skipped) + len(dropped)} item(s) dropped)")
    questions.sort(key=lambda q: (q.split, q.video_id, q.id))
    dropped = found.skipped + dropped
    variants = [arrow.VARIANT] if opts.questions is None else list(opts.variants)
    manifest = Manifest(
        kind="clips",
        sources={
            "folder": str(folder),
            "clips": found.relative,
            "labels": _str(opts.labels),
            "questions": _str(opts.questions),
        },
        options={
            "task": "mcq" if opts.questions else "arrow-of-time",
            "variants": variants,
            "max_seconds": opts.max_seconds,
            "test_videos": opts.test_videos,
        },
        seed=opts.seed,
        counts=(
            arrow.counts(questions)
            if opts.questions is None
            else {"questions": len(questions), "by_type": dict(collections.Counter(q.type for q in questions))}
        )
        | {
            "videos": len({q.video_id for q in questions}) if opts.questions else len(questions) // 2,
            "by_split": dict(collections.Counter(q.split for q in questions)),
            "variants": variants,
            "clips_rendered": sum(len(i.get("rendered", [])) for i in clips.values()),
        },
        dropped=dropped,
        dropped_by_reason=dict(collections.Counter(_reason(d["reason"]) for d in dropped)),
        versions={pkg: importlib.metadata.version(pkg) for pkg in ("decord", "av")},
    )
    return write_dataset(DataLayout(out), questions, manifest)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _reason(reason: str) -> str:
    """A reason's kind, for counting: its quoted values and numbers left out."""
    return re.sub(r"'[^']*'|\d[\d.]*", "_", reason)
