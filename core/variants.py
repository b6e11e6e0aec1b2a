"""Clip variant names, their roles, and the drawing behind each cued one.

- `plain`: the clip as recorded, the reference every other variant is compared with;
- cues (compared with plain), each named for what it draws: `trajectory` (the reference
  study's cue, drawn as its annotate.py drew it: each object's box and its centre path),
  `bbox` (boxes), `path` (centre paths), `box-path` (boxes and paths), `side-by-side`
  (raw | box-path); the last four in this project's strokes (width ∝ frame height, a fixed
  colour per object slot);
- controls (made from the same frames as plain): `blind` (no clip at all: the question text
  alone), `single-frame` (the middle frame, sent as an image), `shuffled`, `reversed`;
- interventions (from the boxes, compared with plain): `object-masked` (the objects' boxes
  filled with the frame's mean colour), `context-masked` (everything outside the boxes
  filled), `cue-only` (the box-path strokes on a flat grey background: is the cue read, not the video?).

A cued variant's clips carry the id of the drawing that made them (`DRAWINGS`), in the
dataset's manifest and in run.json, so clips drawn differently never meet under one name.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.cli import comma_list

PLAIN = "plain"
BLIND = "blind"
SINGLE_FRAME = "single-frame"
SHUFFLED = "shuffled"
REVERSED = "reversed"
STUDY_CUE = "trajectory"
CUED: tuple[str, ...] = (STUDY_CUE, "bbox", "path", "box-path", "side-by-side")
CONTROLS: tuple[str, ...] = (BLIND, SINGLE_FRAME, SHUFFLED, REVERSED)
INTERVENTIONS: tuple[str, ...] = ("object-masked", "context-masked", "cue-only")
VARIANTS: tuple[str, ...] = (PLAIN, *CUED, *CONTROLS, *INTERVENTIONS)
FROM_BOXES: tuple[str, ...] = (*CUED, *INTERVENTIONS)  # made from a clip's boxes: only datasets with boxes
AUDIT_CONTROLS: tuple[str, ...] = (BLIND, SINGLE_FRAME)  # the shortcut audit: can the answer be had without motion?
IMAGE_VARIANTS: tuple[str, ...] = (SINGLE_FRAME,)  # one frame: sent as an image, not a video

# Drawing ids. A drawing keeps its id while its pixels stay the same; the study's cue has two
# sources: drawn here by its rule, or the study's own published clips (`prepare visual-cues`).
STUDY_DRAWN = "visual-cues/annotate.py"
STUDY_PUBLISHED = "visual-cues/published"
STUDY_DRAWINGS = (STUDY_DRAWN, STUDY_PUBLISHED)
DRAWINGS: dict[str, str] = {  # a cued variant -> the drawing `prepare` makes it with
    STUDY_CUE: STUDY_DRAWN,
    "bbox": "bbox/1",
    "path": "path/1",
    "box-path": "box-path/1",
    "side-by-side": "side-by-side/1",
}
# Before schema v4 the path-only cue was called `trajectory` and the box-path cue `both`:
# the drawing behind each cued name in a dataset or run of then.
DRAWINGS_V1: dict[str, str] = {
    "trajectory": "path/1",
    "both": "box-path/1",
    "bbox": "bbox/1",
    "side-by-side": "side-by-side/1",
}
DESCRIBED: dict[str, str] = {  # a drawing in words, where a result is shown
    STUDY_DRAWN: "the study's cue as its annotate.py drew it (each object's box, 2 px, and its centre path, "
    "dots of radius 2 joined by 1 px lines; a colour per object from its 9-colour palette; the hand skipped)",
    STUDY_PUBLISHED: "the study's own published clips",
    "bbox/1": "boxes in this project's strokes",
    "path/1": "centre paths alone in this project's strokes (called `trajectory` before schema v4)",
    "box-path/1": "boxes and centre paths in this project's strokes (called `both` before schema v4)",
    "side-by-side/1": "raw | box-path, side by side",
}


def named(drawing: str) -> str:
    """The variant name a drawing is shown under: the study's cue is `trajectory`, whoever drew it."""
    return STUDY_CUE if drawing in STUDY_DRAWINGS else drawing.split("/", 1)[0]


def variant_names(value: str | Sequence[str]) -> tuple[str, ...]:
    """Comma-separated variant names, each known."""
    chosen = comma_list(value)
    renamed = {v: named(DRAWINGS_V1[v]) for v in chosen if v == "both"}
    if renamed:
        raise ValueError(f"`both` is now called `{renamed['both']}` (boxes and centre paths in this project's strokes)")
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise ValueError(f"unknown variant(s) {unknown or value!r}; valid: {', '.join(VARIANTS)}")
    return chosen
