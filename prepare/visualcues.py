"""`prepare visual-cues`: import the visual-cues study's published questions and clips
(4g/visual_cues; the `apurvagup/visual_cues_ssv2` dataset) as a dataset like any other.

Its files are JSON lists of rows `{"video": "<id>.mp4", "metadata": {"question", "choices",
"answer", "type", ...}, ...}` (its training format, also read by its own `measure.py`), with
each variant's clips in a folder of their own. Questions keep the study's choices in their
order; clips are hard-linked (copied across filesystems) into `clips/<variant>/`, never
re-rendered. A row whose own distractors are flawed (two choices equal after normalisation,
or the answer not among them) is kept as published and flagged, so a comparison with the
study stays on its questions; a row that cannot be read is dropped with file[index] and why.

With the Something-Else box files (`--boxes`), each clip's boxes are kept as `prepare ssv2`
keeps them (`boxes/<video>.json`), so `interpret` splits attention and removal effects by
region on the study's own clips; a clip whose boxes do not fit it (more annotated frames than
it has, boxes beyond its size) is named and kept without regions.
"""

from __future__ import annotations

import collections
import importlib.metadata
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.cli import option
from core.errors import DataError
from core.files import atomic_path, write_json
from core.layout import DataLayout
from core.records import ANSWER_NOT_IN_CHOICES, DUPLICATE_CHOICES, Question, normalize, safe_id
from core.runfiles import Manifest
from core.variants import PLAIN, STUDY_PUBLISHED
from prepare.cues import STUDY_BOX_PX
from prepare.pipeline import write_clip_boxes, write_dataset
from prepare.sources import FrameBoxes, read_boxes
from prepare.variants import CueOptions, aligned, fit_boxes
from prepare.video import probe_video

TYPES = ("object", "verb")
TYPE_INFERRED = "type_inferred"  # the row had no type: a one-word -ing answer is a verb, anything else an object


@dataclass
class VisualCuesOptions:
    """How `prepare visual-cues` brings the clips in (its options)."""

    copy: bool = option(False, "Copy the clips instead of hard-linking them.")


def _row(raw: Any, where: str, split: str) -> tuple[Question, str, list[str]]:
    """One row as (question without its id, clip file name, flags); DataError naming what is wrong."""
    if not isinstance(raw, dict) or not isinstance(raw.get("metadata"), dict):
        raise DataError(f"{where}: expected an object with a `metadata` object")
    video, meta = raw.get("video"), raw["metadata"]
    if not isinstance(video, str) or not video:
        raise DataError(f"{where}: `video` must be a clip file name")
    video_id = Path(video).stem
    if Path(video).name != video or not safe_id(video_id):
        raise DataError(f"{where}: video {video!r} is not a plain file name (it could escape the videos directory)")
    question, choices, answer = meta.get("question"), meta.get("choices"), meta.get("answer")
    if not isinstance(question, str) or question.count("_____") != 1:
        raise DataError(f"{where}: metadata.question must be a string with exactly one _____")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise DataError(f"{where}: metadata.choices must be a list of at least 2 non-empty strings")
    if not isinstance(answer, str) or not answer.strip():
        raise DataError(f"{where}: metadata.answer must be a non-empty string")
    flags = []
    qtype = meta.get("type")
    if qtype is None:
        qtype = "verb" if len(answer.split()) == 1 and answer.lower().endswith("ing") else "object"
        flags.append(TYPE_INFERRED)
    elif qtype not in TYPES:
        raise DataError(f"{where}: metadata.type {qtype!r} is not one of {TYPES}")
    if len({normalize(c) for c in choices}) != len(choices):
        flags.append(DUPLICATE_CHOICES)
    if answer not in choices:
        flags.append(ANSWER_NOT_IN_CHOICES)
    q = Question(
        id="",
        video_id=video_id,
        split=split,
        type=qtype,
        question=question,
        choices=list(choices),
        answer=answer,
        template=question,
        label=question.replace("_____", answer),
        slot=None,
        verb=answer if qtype == "verb" else "",
        flags=[f for f in flags if f != TYPE_INFERRED],
    )
    return q, video, flags


def read_rows(path: Path, split: str) -> tuple[list[tuple[Question, str, list[str]]], list[tuple[str, str]]]:
    """Every readable row of one file, ids `<video id>-<k>` (k: its k-th question on that clip in
    the file), and the unreadable ones as (file[index], reason)."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a JSON file ({type(e).__name__}: {e})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of rows, found {type(rows).__name__}")
    good, bad = [], []
    per_video: collections.Counter[str] = collections.Counter()
    for i, raw in enumerate(rows):
        where = f"{path}[{i}]"
        try:
            q, video, flags = _row(raw, where, split)
        except DataError as e:
            bad.append((where, str(e).removeprefix(f"{where}: ")))
            continue
        q = replace(q, id=f"{q.video_id}-{per_video[q.video_id]}")
        per_video[q.video_id] += 1
        good.append((q, video, flags))
    return good, bad


def _bring(src: Path, dst: Path, copy: bool) -> None:
    """`src` at `dst`, hard-linked (or copied), written atomically."""
    if dst.is_file() and dst.stat().st_size == src.stat().st_size and (copy or os.path.samefile(src, dst)):
        return
    with atomic_path(dst) as tmp:
        tmp.unlink(missing_ok=True)
        try:
            if copy:
                raise OSError("copy asked")
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def prepare_visual_cues(
    test: Path,
    videos: dict[str, Path],
    out: Path,
    opts: VisualCuesOptions,
    train: Path | None = None,
    boxes: list[Path] | None = None,
) -> Manifest:
    """Import the study's test (and train) rows with the clips of each variant (variant -> its
    folder) into data/NAME, with each clip's boxes from `boxes` (Something-Else files) when
    given; returns the manifest. A question is kept only when every variant has its clip, and
    that clip reads."""
    if PLAIN not in videos:
        raise DataError("the study's plain clips are needed (--videos-plain)")
    layout = DataLayout(out)
    rows, bad = read_rows(test, "test")
    if train is not None:
        more, more_bad = read_rows(train, "train")
        rows, bad = rows + more, bad + more_bad
    dropped = [{"item": where, "reason": reason} for where, reason in bad]
    seen: set[str] = set()
    kept, flagged, clips_ok, video_of = [], {}, {}, {}
    for q, video, flags in rows:
        if q.id in seen:
            dropped.append({"item": q.id, "reason": "duplicate question id (the clip is in train and test)"})
            continue
        seen.add(q.id)
        if q.video_id not in clips_ok:
            clips_ok[q.video_id] = _check_clips(video, videos)
        if clips_ok[q.video_id]:
            dropped.append({"item": q.id, "reason": clips_ok[q.video_id]})
            continue
        kept.append(q)
        video_of[q.video_id] = video
        if flags:
            flagged[q.id] = flags
    if not kept:
        raise DataError(f"{test}: no usable question ({len(dropped)} dropped)")
    for vid, video in sorted(video_of.items()):
        for variant, folder in videos.items():
            _bring(folder / video, layout.clip(variant, vid), opts.copy)
    for variant in videos:
        if variant != PLAIN:
            write_json(layout.clip_settings(variant), drawn(variant))
    no_regions = attach_boxes(layout, sorted(video_of), list(videos), boxes) if boxes else {}
    kept.sort(key=lambda q: (q.split, q.video_id, q.id))
    manifest = Manifest(
        kind="visual-cues",
        sources={
            "test": str(test),
            "train": str(train) if train else None,
            "videos": {v: str(p) for v, p in videos.items()},
            "boxes": [str(b) for b in boxes or []],
        },
        options={"variants": list(videos), "copy": opts.copy, "boxes": bool(boxes)},
        render_settings={v: drawn(v) for v in videos if v != PLAIN},
        no_regions=no_regions,
        counts={
            "questions": len(kept),
            "videos": len({q.video_id for q in kept}),
            "by_split": dict(collections.Counter(q.split for q in kept)),
            "by_type": dict(collections.Counter(q.type for q in kept)),
            "variants": list(videos),
            "flagged": dict(collections.Counter(f for fs in flagged.values() for f in fs)),
            "videos_with_regions": len(video_of) - len(no_regions) if boxes else 0,
        },
        dropped=dropped,
        dropped_by_reason=dict(collections.Counter(d["reason"].split(": ")[0] for d in dropped)),
        flagged=flagged,
        versions={pkg: importlib.metadata.version(pkg) for pkg in ("decord",)},
    )
    return write_dataset(layout, kept, manifest)


def _check_clips(video: str, videos: dict[str, Path]) -> str:
    """ "" when every variant's clip of `video` is there and reads, else why not."""
    for variant, folder in videos.items():
        path = folder / video
        if not path.is_file():
            return f"clip missing: {variant}/{video}"
        try:
            probe_video(path)
        except DataError as e:
            return f"clip unreadable: {variant}/{video} ({e})"
    return ""


def drawn(variant: str) -> dict[str, str]:
    """What an imported cued variant's clips are: the study's own, drawn by its annotate.py."""
    return {"variant": variant, "drawing": STUDY_PUBLISHED}


def attach_boxes(layout: DataLayout, video_ids: list[str], variants: list[str], files: list[Path]) -> dict[str, str]:
    """boxes/<video>.json for every imported clip whose Something-Else boxes fit it (as `prepare
    ssv2` writes them: aligned to its frames, fitted to its size, the study's stroke width);
    returns video -> why not, for the rest."""
    found = read_boxes(files, set(video_ids))
    why_not = {}
    for vid in video_ids:
        if vid not in found:
            why_not[vid] = f"no boxes for it in {', '.join(f.name for f in files)}"
            continue
        info = fitted(found[vid], [layout.clip(v, vid) for v in variants])
        if isinstance(info, str):
            why_not[vid] = info
        else:
            write_clip_boxes(layout, info | {"video_id": vid}, CueOptions())
    return why_not


def fitted(annotations: list[FrameBoxes], clips: list[Path]) -> dict | str:
    """The boxes of one video checked against each of its clips (frame count, size: the study
    cropped an odd side by 1 px, so a box may reach 1 px past it, and box files hold floats that
    miss a border by a hair) and fitted to them; or why they do not fit."""
    sizes = {probe_video(c) for c in clips}
    if len(sizes) > 1:
        return f"its clips differ in frames or size: {sorted(sizes)}"
    (n, fps, h, w) = sizes.pop()
    if len(annotations) > n:
        return f"{len(annotations)} annotated frames, but its clip has {n}"
    boxes = [b for frame in annotations for b in frame.values()]
    reach = (max((b[2] for b in boxes), default=0.0), max((b[3] for b in boxes), default=0.0))
    if reach[0] > w + 1.01 or reach[1] > h + 1.01:
        return f"boxes reach x {reach[0]:.1f}, y {reach[1]:.1f}: beyond its clip's {w}x{h}"
    per_frame, _, _ = fit_boxes(aligned(annotations, n, fps), h, w)
    return {
        "frames": n,
        "fps": fps,
        "size": [w, h],
        "cropped": [0, 0],
        "thickness": STUDY_BOX_PX,
        "boxes": [None if b is None else {slot: list(box) for slot, box in b.items()} for b in per_frame],
    }
