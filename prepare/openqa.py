"""Open-QA datasets in their published annotation formats -> open questions + clip variants.

- EgoTempo (`egotempo_openQA.json`): {"info": {...}, "annotations": [{"question_id",
  "clip_id", "question_type", "question", "answer"}]}; clips are `<clip_id>.mp4`.
- EgoTextVQA (JSONL, one object per line): {"video_id", "question_id", "question_type",
  "question", "correct_answer", "timestamp", ...}; clips are `<video_id>.mp4`. Its question
  ids repeat across videos ("1.0"), so ours is `<video_id>-<question_id>`.

Every question is `type` "open", its question type in `category`, its split the row's own
(`split`) or else drawn by video (`--test-share`, seeded), its subset the row's own, else
`--subset`, else (of several files) its file's name. A bad row is dropped with file:line (or
file:annotations[i]) and the reason; the rest goes on.
Plain and the controls are rendered as for SSV2; cues need boxes, which these data lack.
"""

from __future__ import annotations

import collections
import importlib.metadata
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.cli import option
from core.errors import DataError
from core.layout import DataLayout
from core.records import OPEN, Question
from core.runfiles import Manifest
from core.variants import BLIND, FROM_BOXES, PLAIN, SINGLE_FRAME
from prepare.pipeline import find_video, render_clips, seed_option, variants_option, workers_option, write_dataset
from prepare.questions import split_videos
from prepare.variants import CueOptions, settings

Bad = tuple[str, str]  # (where, reason)


def _fields(row: Any, where: str, names: dict[str, str]) -> dict[str, str]:
    """`names` (our name -> theirs) read from `row` as non-empty text; DataError naming the first missing one."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object")
    out = {}
    for ours, theirs in names.items():
        value = row.get(theirs)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: missing or empty {theirs!r}")
        out[ours] = value.strip()
    return out


def _optional(row: dict, name: str) -> str:
    value = row.get(name)
    return value.strip() if isinstance(value, str) else ""


def _question(f: dict[str, str], qid: str, where: str, row: dict) -> Question:
    """A row as an open question: its own split and subset when it names them (else the split
    is drawn later, by video, and the subset is the file's)."""
    q = Question(
        id=qid,
        video_id=f["video"],
        split=_optional(row, "split"),
        type=OPEN,
        question=f["question"],
        choices=[],
        answer=f["answer"],
        template="",
        label="",
        slot=None,
        category=f["type"],
        subset=_optional(row, "subset"),
    )
    problems = q.problems()
    if problems:
        raise DataError(f"{where}: {'; '.join(problems)}")
    return q


def read_egotempo(path: Path) -> tuple[list[Question], list[Bad]]:
    """EgoTempo's egotempo_openQA.json."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not readable as JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f'{path}: expected {{"info": ..., "annotations": [...]}} (EgoTempo\'s egotempo_openQA.json)')
    names = {
        "id": "question_id",
        "video": "clip_id",
        "type": "question_type",
        "question": "question",
        "answer": "answer",
    }
    questions, bad = [], []
    for i, row in enumerate(data["annotations"]):
        where = f"{path}:annotations[{i}]"
        try:
            f = _fields(row, where, names)
            questions.append(_question(f, f["id"], where, row))
        except DataError as e:
            bad.append((where, str(e).removeprefix(f"{where}: ")))
    return questions, bad


def read_egotextvqa(path: Path) -> tuple[list[Question], list[Bad]]:
    """EgoTextVQA's annotation JSONL."""
    names = {
        "id": "question_id",
        "video": "video_id",
        "type": "question_type",
        "question": "question",
        "answer": "correct_answer",
    }
    questions, bad = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"{path}: not readable ({e})") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not JSON ({e.msg} at column {e.colno})") from e
            f = _fields(row, where, names)
            questions.append(_question(f, f"{f['video']}-{f['id']}", where, row))
        except DataError as e:
            bad.append((where, str(e).removeprefix(f"{where}: ")))
    return questions, bad


def with_splits(questions: list[Question], opts: OpenOptions) -> list[Question]:
    """Each question with a split: its row's, else its video's, drawn seeded with
    `opts.test_share` of the videos in test."""
    if not 0 <= opts.test_share <= 1:
        raise DataError(f"--test-share {opts.test_share}: a share from 0 to 1")
    unsplit = sorted({q.video_id for q in questions if not q.split})
    splits = split_videos(unsplit, round(opts.test_share * len(unsplit)), opts.seed)
    return [replace(q, split=q.split or splits[q.video_id]) for q in questions]


READERS: dict[str, Callable[[Path], tuple[list[Question], list[Bad]]]] = {
    "egotempo": read_egotempo,
    "egotextvqa": read_egotextvqa,
}


@dataclass
class OpenOptions:
    """How an open-QA dataset's clips are made (the options of `prepare egotempo/egotextvqa`)."""

    variants: Sequence[str] = variants_option((PLAIN, BLIND, SINGLE_FRAME))
    test_share: float = option(
        0.2,
        "Share of the videos in the test split, drawn by video (seeded) where a row names no split; "
        "1 puts them all in test, 0 all in train (to train on one dataset and evaluate on another).",
    )
    subset: str = option(
        "",
        "The subset (e.g. indoor, outdoor) of rows that name none; with several annotation files, each file's "
        "own name.",
        shown="none (several files: each file's name)",
    )
    seed: int = seed_option()
    workers: int = workers_option()


def read_files(kind: str, files: list[Path], subset: str) -> tuple[list[Question], list[Bad]]:
    """Every file's questions, each file's marked with its subset (its rows' own, else `subset`,
    else, of several files, the file's name: EgoTextVQA publishes its indoor and outdoor
    subsets as files of their own)."""
    questions, bad = [], []
    for path in files:
        found, wrong = READERS[kind](path)
        own = subset or (path.stem if len(files) > 1 else "")
        questions += [replace(q, subset=q.subset or own) for q in found]
        bad += wrong
    return questions, bad


def prepare_open(kind: str, annotations: Path | list[Path], videos: Path, out: Path, opts: OpenOptions) -> Manifest:
    """Build data/NAME from open-QA annotation file(s) and their clips; returns the manifest."""
    cued = sorted(set(opts.variants) & set(FROM_BOXES))
    if cued:
        raise DataError(
            f"--variants {','.join(cued)}: cues are drawn from boxes, and {kind} has none: use plain and the controls"
        )
    files = annotations if isinstance(annotations, list) else [annotations]
    questions, bad = read_files(kind, files, opts.subset)
    dropped = [{"item": where, "reason": reason} for where, reason in bad]

    def drop(item: str, reason: str) -> None:
        dropped.append({"item": item, "reason": reason})

    seen: set[str] = set()
    sources: dict[str, Path] = {}
    kept = []
    for q in questions:
        if q.id in seen:
            drop(q.id, "duplicate question id")
            continue
        seen.add(q.id)
        path = sources.get(q.video_id) or find_video(videos, q.video_id)
        if path is None:
            drop(q.id, f"video missing: {q.video_id}")
            continue
        sources[q.video_id] = path
        kept.append(q)
    layout = DataLayout(out)
    cues = CueOptions()
    clips, rerendered = render_clips(layout, sources, {}, opts.variants, cues, opts.seed, opts.workers, drop)
    failed = {vid for vid, info in clips.items() if "error" in info}
    kept = sorted((q for q in kept if q.video_id not in failed), key=lambda q: (q.video_id, q.id))
    kept = with_splits(kept, opts)
    videos_kept = {q.video_id for q in kept}
    manifest = Manifest(
        kind=f"open-qa:{kind}",
        sources={"annotations": [str(f) for f in files], "videos": str(videos)},
        options={  # not --workers: how, not what (EXECUTION)
            "variants": list(opts.variants),
            "seed": opts.seed,
            "test_share": opts.test_share,
            "subset": opts.subset,
        },
        seed=opts.seed,
        render_settings={v: settings(v, cues, opts.seed) for v in opts.variants},
        counts={
            "questions": len(kept),
            "videos": len(videos_kept),
            "by_type": {OPEN: len(kept)},
            "by_category": dict(collections.Counter(q.category for q in kept)),
            "by_split": dict(collections.Counter(q.split for q in kept)),
            "by_subset": dict(collections.Counter(q.subset for q in kept if q.subset)),
            "variants": list(opts.variants),
            "clips_by_variant": {v: len(videos_kept) for v in opts.variants},
            "clips_rendered": sum(len(i["rendered"]) for i in clips.values()),
            "stale_clips_removed": rerendered,
        },
        dropped=dropped,
        dropped_by_reason=dict(collections.Counter(d["reason"].split(": ")[0] for d in dropped)),
        versions={pkg: importlib.metadata.version(pkg) for pkg in ("decord", "av", "numpy")},
    )
    if not kept:
        raise DataError(f"{annotations}: no usable question ({len(dropped)} dropped: {manifest.dropped_by_reason})")
    return write_dataset(layout, kept, manifest)
