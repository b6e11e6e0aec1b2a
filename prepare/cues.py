"""Draw cues on frames: this project's boxes and centre paths (one fixed colour per object slot,
strokes that scale with the frame), and the reference study's cue drawn by its rule."""

from __future__ import annotations

import colorsys
import random
import zlib

import cv2
import numpy as np

from prepare.sources import Box, FrameBoxes

HAND = "object hand"


def slot_colour(slot: str) -> tuple[int, int, int]:
    """A fixed RGB colour per annotation slot, for any number of objects.

    `object k` gets hue k * golden-ratio (well spread, never repeating); the hand is white.
    """
    if slot == HAND:
        return (255, 255, 255)
    last = slot.rsplit(" ", 1)[-1]
    k = int(last) if last.isdigit() else zlib.crc32(slot.encode()) % 97
    r, g, b = colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 1.0, 1.0)
    return (int(r * 255), int(g * 255), int(b * 255))


def auto_thickness(height: int) -> int:
    """Stroke width that survives the model's resize: ~1/60 of the frame height, >= 3 px."""
    return max(3, round(height / 60))


def _pt(x: float, y: float) -> tuple[int, int]:
    return (int(round(x)), int(round(y)))


def _centre(box: Box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def box_mask(shape: tuple[int, int], boxes: FrameBoxes, slots: set[str] | None = None) -> np.ndarray:
    """(H, W) bool: the pixels the boxes cover (each box from floor(x1), floor(y1) to ceil(x2),
    ceil(y2)); `slots` limits it to some slots (None: every box)."""
    mask = np.zeros(shape, bool)
    for slot, (x1, y1, x2, y2) in boxes.items():
        if slots is None or slot in slots:
            mask[int(np.floor(y1)) : int(np.ceil(y2)), int(np.floor(x1)) : int(np.ceil(x2))] = True
    return mask


def objects(boxes: FrameBoxes) -> set[str]:
    """The object slots of a frame (every annotated box but the hand)."""
    return {slot for slot in boxes if slot != HAND}


def draw_boxes(frame: np.ndarray, boxes: FrameBoxes, thickness: int, cue_hand: bool = False) -> None:
    """Draw each annotated box in place."""
    for slot, (x1, y1, x2, y2) in sorted(boxes.items()):
        if slot == HAND and not cue_hand:
            continue
        cv2.rectangle(frame, _pt(x1, y1), _pt(x2, y2), slot_colour(slot), thickness, cv2.LINE_AA)


def draw_trajectory(frame: np.ndarray, history: list[FrameBoxes], thickness: int, cue_hand: bool = False) -> None:
    """Draw, in place, each object's box-centre path from the first annotation to the last
    one in `history`: a line between consecutive centres and a dot at each."""
    paths: dict[str, list[tuple[int, int]]] = {}
    for boxes in history:
        for slot, box in boxes.items():
            if slot != HAND or cue_hand:
                paths.setdefault(slot, []).append(_pt(*_centre(box)))
    radius = thickness
    for slot, pts in sorted(paths.items()):
        colour = slot_colour(slot)
        if len(pts) > 1:
            cv2.polylines(frame, [np.array(pts, np.int32)], False, colour, thickness, cv2.LINE_AA)
        for p in pts:
            cv2.circle(frame, p, radius, colour, -1, cv2.LINE_AA)


# The reference study's cue (4g/visual_cues, annotate.py), drawn by its rule: its 9-colour
# palette (RGB), its stroke widths, each object's history up to the frame before.
STUDY_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 64, 64),
    (0, 0, 255),
    (127, 255, 0),
    (255, 97, 3),
    (220, 20, 60),
    (255, 185, 15),
    (255, 20, 147),
    (255, 105, 180),
    (60, 179, 113),
)
STUDY_BOX_PX, STUDY_DOT_RADIUS, STUDY_LINE_PX = 2, 2, 1


def annotated_slots(per_frame: list[FrameBoxes | None]) -> list[str]:
    """Every slot in the order it first appears (frame by frame, label by label), the hand included."""
    seen: dict[str, None] = {}
    for boxes in per_frame:
        seen.update(dict.fromkeys(boxes or {}))
    return list(seen)


def study_colours(slots: list[str], rng: random.Random) -> dict[str, tuple[int, int, int]]:
    """A colour per slot drawn without replacement from the study's palette, as the study
    drew them per video (it counted the hand too); past 9 slots the palette repeats."""
    n = len(slots)
    picked = rng.sample(STUDY_PALETTE, min(n, len(STUDY_PALETTE)))
    return {slot: picked[i % len(picked)] for i, slot in enumerate(slots)}


def _truncated(x: float, y: float) -> tuple[int, int]:
    return (int(x), int(y))  # the study truncates coordinates (int()), where our strokes round


def draw_study(
    frames: np.ndarray, per_frame: list[FrameBoxes | None], colours: dict[str, tuple[int, int, int]]
) -> None:
    """Draw the study's cue in place on frames [T, H, W, 3]: on each annotated frame, for each
    object present in it (the hand skipped), its box (2 px) and its centre path through the
    frames before this one where it was present (dots of radius 2 joined by 1 px lines).
    Frames past the last annotation stay as they are."""
    centres: dict[str, list[tuple[int, int]]] = {}
    for t, boxes in enumerate(per_frame):
        if boxes is None:
            continue
        for slot in colours:
            if slot == HAND or slot not in boxes:
                continue
            x1, y1, x2, y2 = boxes[slot]
            colour = colours[slot]
            cv2.rectangle(frames[t], _truncated(x1, y1), _truncated(x2, y2), colour, STUDY_BOX_PX)
            path = centres.get(slot, [])
            for k, p in enumerate(path):
                cv2.circle(frames[t], p, STUDY_DOT_RADIUS, colour, -1)
                if k:
                    cv2.line(frames[t], p, path[k - 1], colour, STUDY_LINE_PX)
        for slot, box in boxes.items():  # this frame's centres join the history of the next ones
            centres.setdefault(slot, []).append(_truncated(*_centre(box)))
