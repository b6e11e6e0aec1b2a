"""Readers for raw SSV2 label files and Something-Else box files."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import ijson

from core.errors import DataError
from core.files import read_json

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in source pixels
FrameBoxes = dict[str, Box]  # gt_annotation ("object 0", "object hand", ...) -> box
_FRAME_NO = re.compile(r"(\d+)\.\w+$")


@dataclass(frozen=True)
class LabelEntry:
    """One labelled SSV2 video, as in train.json / validation.json."""

    id: str
    label: str
    template: str
    placeholders: tuple[str, ...]
    source: str  # the label file it came from


def read_labels(labels_dir: Path, files: Iterable[str]) -> tuple[list[LabelEntry], list[str], list[tuple[str, str]]]:
    """Labelled entries of the chosen label files, ids that are only in test.json, and
    (id, reason) for rows that cannot be used."""
    entries: list[LabelEntry] = []
    dropped: list[tuple[str, str]] = []
    for name in files:
        path = labels_dir / f"{name}.json"
        rows = read_json(path)
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of label entries")
        for i, row in enumerate(rows):
            vid = str(row.get("id", f"{path.name}[{i}]")) if isinstance(row, dict) else f"{path.name}[{i}]"
            try:
                entries.append(
                    LabelEntry(
                        id=vid,
                        label=str(row["label"]),
                        template=str(row["template"]),
                        placeholders=tuple(str(p) for p in row["placeholders"]),
                        source=name,
                    )
                )
            except (KeyError, TypeError) as e:
                dropped.append((vid, f"{path.name}: label entry without {e}"))
    labelled = {e.id for e in entries}
    test_path = labels_dir / "test.json"
    unlabeled = []
    if test_path.is_file():
        unlabeled = [str(r["id"]) for r in read_json(test_path) if str(r["id"]) not in labelled]
    return entries, unlabeled, dropped


def read_templates(labels_dir: Path) -> list[str]:
    """All class templates from labels.json, with their slots as [something] (the file
    writes them as a bare "something"); empty if the file is absent."""
    path = labels_dir / "labels.json"
    if not path.is_file():
        return []
    return [re.sub(r"\b([Ss]omething)\b", r"[\1]", name) for name in read_json(path)]


def read_boxes(
    paths: Iterable[Path], keep: set[str], stats: dict[str, int] | None = None
) -> dict[str, list[FrameBoxes]]:
    """Per-frame boxes of the videos in `keep`, streamed so multi-GB files fit in memory.

    Frame i of the result is the annotation named `<video>/<i+1:04d>.jpg`; frames with no
    annotation are empty dicts. `stats["videos"]` counts every video the files name.
    """
    out: dict[str, list[FrameBoxes]] = {}
    seen = 0
    for path in paths:
        try:
            with open(path, "rb") as f:
                for vid, frames in ijson.kvitems(f, "", use_float=True):
                    seen += 1
                    if vid in keep:
                        out[vid] = frame_boxes(frames)
        except ijson.JSONError as e:
            raise DataError(f"{path}: malformed JSON: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: not in the Something-Else box format ({type(e).__name__}: {e})") from None
    if stats is not None:
        stats["videos"] = seen
    return out


def frame_boxes(frames: list[dict]) -> list[FrameBoxes]:
    """One video's Something-Else frames as boxes per frame (frame i: `<video>/<i+1:04d>.jpg`)."""
    by_index: dict[int, FrameBoxes] = {}
    for pos, frame in enumerate(frames):
        m = _FRAME_NO.search(str(frame.get("name", "")))
        index = int(m.group(1)) - 1 if m else pos
        by_index[index] = {
            lab["gt_annotation"]: (
                float(lab["box2d"]["x1"]),
                float(lab["box2d"]["y1"]),
                float(lab["box2d"]["x2"]),
                float(lab["box2d"]["y2"]),
            )
            for lab in frame.get("labels", [])
        }
    n = max(by_index) + 1 if by_index else 0
    return [by_index.get(i, {}) for i in range(n)]
