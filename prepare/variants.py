"""Clip variants (names and roles: `core.variants`): the same decode/encode path for every
variant. `shuffled` permutes frames with a per-video seeded RNG; `blind` has no clip."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.cli import option
from core.variants import BLIND, CUED, DRAWINGS, PLAIN, SINGLE_FRAME, STUDY_CUE, VARIANTS
from prepare.cues import (
    annotated_slots,
    auto_thickness,
    box_mask,
    draw_boxes,
    draw_study,
    draw_trajectory,
    objects,
    study_colours,
)
from prepare.sources import FrameBoxes
from prepare.video import ENCODINGS, Encoding

ANNOTATION_FPS = 12.0  # Something-Else annotation i belongs to frame i of a 12 fps clip


def thickness(value: str | int | None) -> int | None:
    """`auto` (None: the stroke scales with frame height) or a positive number of pixels."""
    if value is None or value == "auto":
        return None
    if isinstance(value, int) or value.isdigit():
        if int(value) >= 1:
            return int(value)
    raise ValueError(f"{value!r}: use 'auto' or a positive number of pixels")


@dataclass(frozen=True)
class CueOptions:
    thickness: int | None = option(
        None,
        "Stroke width of this project's cues: auto (scales with frame height) or pixels (`trajectory`, "
        "the study's cue, keeps the study's widths).",
        parser=thickness,
        metavar="auto|PX",
        shown="auto",
    )
    cue_hand: bool = option(False, "Also cue the hand (this project's cues; the study's skips it).")


@dataclass(frozen=True)
class Source:
    """One decoded clip and what belongs to it."""

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    per_frame: list[FrameBoxes | None]  # annotation per frame, None past the last one
    video_id: str
    seed: int


Renderer = Callable[[Source, CueOptions], np.ndarray]


def annotation_index(frame: int, fps: float) -> int:
    """The annotation shown when `frame` of a clip at `fps` is: annotation i spans
    [i/12 s, (i+1)/12 s)."""
    if abs(fps - ANNOTATION_FPS) < 1e-3:
        return frame
    return int(frame / fps * ANNOTATION_FPS + 1e-9)


def aligned(boxes: list[FrameBoxes], n_frames: int, fps: float) -> list[FrameBoxes | None]:
    """Per video frame, its annotation, or None past the last annotation (no cue drawn)."""
    out: list[FrameBoxes | None] = []
    for t in range(n_frames):
        i = annotation_index(t, fps)
        out.append(boxes[i] if i < len(boxes) else None)
    return out


def fit_boxes(per_frame: list[FrameBoxes | None], height: int, width: int) -> tuple[list[FrameBoxes | None], int, int]:
    """Boxes clamped to the frame; boxes empty or inverted after that are dropped. Returns
    (boxes, how many were clamped, how many were dropped)."""
    clamped = dropped = 0
    out: list[FrameBoxes | None] = []
    for boxes in per_frame:
        if boxes is None:
            out.append(None)
            continue
        kept: FrameBoxes = {}
        for slot, (x1, y1, x2, y2) in boxes.items():
            fit = (
                min(max(x1, 0.0), width),
                min(max(y1, 0.0), height),
                min(max(x2, 0.0), width),
                min(max(y2, 0.0), height),
            )
            if fit[2] <= fit[0] or fit[3] <= fit[1]:
                dropped += 1
                continue
            clamped += fit != (x1, y1, x2, y2)
            kept[slot] = fit
        out.append(kept)
    return out, clamped, dropped


def _cued(draw_box: bool, draw_path: bool) -> Renderer:
    def render(src: Source, opts: CueOptions) -> np.ndarray:
        out = src.frames.copy()
        thickness = opts.thickness or auto_thickness(src.frames.shape[1])
        history: list[FrameBoxes] = []
        for t, boxes in enumerate(src.per_frame):
            if boxes is None:
                continue
            history.append(boxes)
            if draw_path:
                draw_trajectory(out[t], history, thickness, opts.cue_hand)
            if draw_box:
                draw_boxes(out[t], boxes, thickness, opts.cue_hand)
        return out

    return render


_both = _cued(draw_box=True, draw_path=True)


def palette_rng(video_id: str, seed: int) -> random.Random:
    """The study's colours for one video: drawn at random per video as it drew them, here from
    (seed, video id), so a clip is the same on every run."""
    return random.Random(f"{seed}/{video_id}/palette")


def _study(src: Source, opts: CueOptions) -> np.ndarray:
    """The study's cue (`prepare.cues.draw_study`), its colours drawn per video."""
    out = src.frames.copy()
    draw_study(out, src.per_frame, study_colours(annotated_slots(src.per_frame), palette_rng(src.video_id, src.seed)))
    return out


GREY = 128  # the flat background of `cue-only`


def _object_masked(src: Source, opts: CueOptions) -> np.ndarray:
    """Every object's box filled with its frame's mean colour (the hand left as it is)."""
    out = src.frames.copy()
    for t, boxes in enumerate(src.per_frame):
        if boxes:
            out[t][box_mask(out.shape[1:3], boxes, objects(boxes))] = src.frames[t].mean(axis=(0, 1)).round()
    return out


def _context_masked(src: Source, opts: CueOptions) -> np.ndarray:
    """Everything outside the boxes (objects and hand) filled with its frame's mean colour; a
    frame without boxes is filled whole."""
    out = src.frames.copy()
    for t, boxes in enumerate(src.per_frame):
        out[t][~box_mask(out.shape[1:3], boxes or {})] = src.frames[t].mean(axis=(0, 1)).round()
    return out


def _cue_only(src: Source, opts: CueOptions) -> np.ndarray:
    """The `both` cue's strokes (boxes and trajectories) on a flat grey background."""
    return _both(Source(np.full_like(src.frames, GREY), src.per_frame, src.video_id, src.seed), opts)


def _side_by_side(src: Source, opts: CueOptions) -> np.ndarray:
    """Raw | cued (boxes and trajectories) in one frame, twice as wide."""
    return np.concatenate([src.frames, _both(src, opts)], axis=2)


def shuffle_order(n: int, video_id: str, seed: int) -> np.ndarray:
    """The frame permutation of the `shuffled` control: seeded by (seed, video id)."""
    return np.random.default_rng([seed, zlib.crc32(video_id.encode())]).permutation(n)


RENDERERS: dict[str, Renderer] = {
    PLAIN: lambda src, opts: src.frames,
    STUDY_CUE: _study,
    "bbox": _cued(draw_box=True, draw_path=False),
    "path": _cued(draw_box=False, draw_path=True),
    "box-path": _both,
    "side-by-side": _side_by_side,
    SINGLE_FRAME: lambda src, opts: src.frames[[len(src.frames) // 2]],
    "shuffled": lambda src, opts: src.frames[shuffle_order(len(src.frames), src.video_id, src.seed)],
    "reversed": lambda src, opts: src.frames[::-1],
    "object-masked": _object_masked,
    "context-masked": _context_masked,
    "cue-only": _cue_only,
}
assert set(RENDERERS) == set(VARIANTS) - {BLIND}, "every variant but blind has a renderer"
RENDER_VERSION = 2  # bump when a renderer's output changes: clips made before are re-rendered


def settings(variant: str, opts: CueOptions, seed: int, encoding: Encoding = "ours") -> dict:
    """Everything that decides a variant's pixels; clips are reused only under equal settings.
    A cued variant's `drawing` names what drew it (`core.variants.DRAWINGS`)."""
    out = {"variant": variant, "render_version": RENDER_VERSION, "encoding": ENCODINGS[encoding]}
    if variant in CUED:
        out["drawing"] = DRAWINGS[variant]
    if variant == STUDY_CUE:
        out["seed"] = seed  # its colours
    elif variant in CUED or variant == "cue-only":
        out |= {"thickness": opts.thickness or "auto", "cue_hand": opts.cue_hand}
    if variant == "shuffled":
        out["seed"] = seed
    return out
