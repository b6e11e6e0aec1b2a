"""Draw cues on frames: boxes and trajectories, one fixed colour per object slot."""

from __future__ import annotations

import colorsys
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
