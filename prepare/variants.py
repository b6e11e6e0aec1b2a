"""Clip variants: the same decode/encode path for every variant, cues drawn per frame."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from prepare.cues import auto_thickness, draw_boxes, draw_trajectory
from prepare.sources import FrameBoxes

ANNOTATION_FPS = 12.0  # Something-Else annotation i belongs to frame i of a 12 fps clip


@dataclass(frozen=True)
class CueOptions:
    thickness: int | None = None  # None: scale with frame height
    cue_hand: bool = False


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


def _cued(draw_box: bool, draw_path: bool) -> Callable[[np.ndarray, list[FrameBoxes | None], CueOptions], np.ndarray]:
    def render(frames: np.ndarray, per_frame: list[FrameBoxes | None], opts: CueOptions) -> np.ndarray:
        out = frames.copy()
        thickness = opts.thickness or auto_thickness(frames.shape[1])
        history: list[FrameBoxes] = []
        for t, boxes in enumerate(per_frame):
            if boxes is None:
                continue
            history.append(boxes)
            if draw_path:
                draw_trajectory(out[t], history, thickness, opts.cue_hand)
            if draw_box:
                draw_boxes(out[t], boxes, thickness, opts.cue_hand)
        return out

    return render


def _plain(frames: np.ndarray, per_frame: list[FrameBoxes | None], opts: CueOptions) -> np.ndarray:
    return frames


_both = _cued(draw_box=True, draw_path=True)


def _side_by_side(frames: np.ndarray, per_frame: list[FrameBoxes | None], opts: CueOptions) -> np.ndarray:
    """Raw | cued (boxes and trajectories) in one frame, twice as wide."""
    return np.concatenate([frames, _both(frames, per_frame, opts)], axis=2)


RENDERERS: dict[str, Callable[[np.ndarray, list[FrameBoxes | None], CueOptions], np.ndarray]] = {
    "plain": _plain,
    "bbox": _cued(draw_box=True, draw_path=False),
    "trajectory": _cued(draw_box=False, draw_path=True),
    "both": _both,
    "side-by-side": _side_by_side,
}
RENDER_VERSION = 1  # bump when a renderer's output changes: clips made before are re-rendered


def settings(variant: str, opts: CueOptions) -> dict:
    """Everything that decides a variant's pixels; clips are reused only under equal settings."""
    out = {"variant": variant, "render_version": RENDER_VERSION, "codec": "libx264 yuv420p crf=18 preset=veryfast"}
    if variant != "plain":
        out |= {"thickness": opts.thickness or "auto", "cue_hand": opts.cue_hand}
    return out
VARIANTS: tuple[str, ...] = tuple(RENDERERS)
CUED: tuple[str, ...] = ("bbox", "trajectory", "both", "side-by-side")  # compared with "plain"
