"""Regions of every sent frame, from what is known exactly: the boxes the cues were drawn from
(`data/NAME/boxes/<video>.json`) and the cue's own strokes (its renderer run on an empty
canvas: every pixel the cue changes). Per frame, a partition of its pixels:

- `cue`: the cue's stroke pixels (on a plain clip: where the stroke would be);
- `edge`: a band of the stroke's width around each box outline, less `cue`;
- `object`: the box interiors, less the above (the asked object's box for an object
  question, every object's for a verb question);
- `rest`: everything else.

Shares are taken at the size the frames were sent (area-weighted), and a token's (or patch's)
share of a region is the mean over its pixel block and its frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from core.files import read_json
from core.records import Question
from interpret.geometry import Grid
from prepare.cues import box_mask, objects
from prepare.sources import FrameBoxes
from prepare.variants import RENDERERS, CueOptions, Source

REGIONS = ("cue", "edge", "object", "rest")


@dataclass(frozen=True)
class ClipBoxes:
    """What boxes/<video>.json holds."""

    frames: int
    size: tuple[int, int]  # (W, H) of the decoded source, before it was padded or cropped to even
    thickness: int
    cue_hand: bool
    boxes: tuple[FrameBoxes | None, ...]
    cropped: bool = False  # written cropped to even size (`--encoding study`), not padded

    @classmethod
    def load(cls, path: Path) -> ClipBoxes:
        raw = read_json(path)
        boxes = tuple(None if b is None else {s: tuple(v) for s, v in b.items()} for b in raw["boxes"])
        cropped = any(raw.get("cropped", ()))
        return cls(raw["frames"], tuple(raw["size"]), raw["thickness"], raw["cue_hand"], boxes, cropped)


@lru_cache(maxsize=32)
def strokes(path: Path, cue: str) -> np.ndarray:
    """(frames, H, W) bool: every pixel the cue variant `cue` changes, drawn on an empty canvas."""
    clip = ClipBoxes.load(path)
    w, h = clip.size
    canvas = np.zeros((clip.frames, h, w, 3), np.uint8)
    drawn = RENDERERS[cue](Source(canvas, list(clip.boxes), path.stem, 0), CueOptions(clip.thickness, clip.cue_hand))
    return drawn.any(axis=-1)


def asked(question: Question, boxes: FrameBoxes) -> set[str]:
    """The boxes an answer is about: the asked object's for an object question, every object's otherwise."""
    if question.type == "object" and question.slot is not None:
        return {f"object {question.slot}"} & set(boxes)
    return objects(boxes)


def frame_regions(boxes: FrameBoxes | None, stroke: np.ndarray, slots: set[str], band: int) -> np.ndarray:
    """(4, H, W) bool, one per region, for one frame at the clip's size."""
    shape = stroke.shape
    inside = box_mask(shape, boxes or {}, slots)
    grown = np.zeros(shape, bool)
    shrunk = np.zeros(shape, bool)
    for slot in slots:
        x1, y1, x2, y2 = (boxes or {})[slot]
        grown |= box_mask(shape, {slot: (x1 - band, y1 - band, x2 + band, y2 + band)})
        if x2 - x1 > 2 * band and y2 - y1 > 2 * band:
            shrunk |= box_mask(shape, {slot: (x1 + band, y1 + band, x2 - band, y2 - band)})
    edge = grown & ~shrunk & ~stroke
    obj = inside & ~edge & ~stroke
    return np.stack([stroke, edge, obj, ~(stroke | edge | obj)])


def sent_shares(regions: np.ndarray, size: tuple[int, int], cropped: bool = False) -> np.ndarray:
    """(4, h, w) float: each sent pixel's share of each region (area-weighted resize), after
    the bottom/right padding (or cropping) to even size the clip was encoded with."""
    w, h = size
    _, rh, rw = regions.shape
    if cropped:
        even = regions[:, : rh // 2 * 2, : rw // 2 * 2].astype(np.float32)
    else:
        even = np.pad(regions.astype(np.float32), ((0, 0), (0, rh % 2), (0, rw % 2)), mode="edge")
    out = np.stack([cv2.resize(r, (w, h), interpolation=cv2.INTER_AREA) for r in even])
    return out / np.maximum(out.sum(axis=0, keepdims=True), 1e-9)


def clip_shares(path: Path, cue: str, question: Question, indices: list[int], size: tuple[int, int]) -> np.ndarray:
    """(frames sent, 4, h, w): the region shares of every sent frame (`indices` of the clip)."""
    clip = ClipBoxes.load(path)
    lines = strokes(path, cue)
    out = []
    for t in indices:
        boxes = clip.boxes[t] if t < len(clip.boxes) else None
        slots = asked(question, boxes) if boxes else set()
        out.append(sent_shares(frame_regions(boxes, lines[t], slots, clip.thickness), size, clip.cropped))
    return np.stack(out)


def block_shares(shares: np.ndarray, grid: Grid, side: int) -> np.ndarray:
    """(groups, 4, h/side, w/side): the mean share of each `side`-pixel block over a group's frames."""
    f, k, h, w = shares.shape
    blocks = shares.reshape(f, k, h // side, side, w // side, side).mean(axis=(3, 5))
    return blocks.reshape(grid.groups, grid.temporal, k, h // side, w // side).mean(axis=1)
