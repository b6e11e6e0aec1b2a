"""Heat maps over the exact frames sent: for each interpreted (model, question, variant) and
language layer group, the frames side by side with the answer position's attention to each
visual token laid over its pixel block (a token covers its group's frames), and its colour
scale. Drawn from
interpret/records.jsonl and the clips alone."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from core.files import atomic_path
from core.layout import DataLayout
from core.records import AttentionRecord
from core.runs import Run
from interpret import inputs

ALPHA = 0.55
CMAP = "inferno"


def overlay(frame: np.ndarray, weights: np.ndarray, top: float) -> np.ndarray:
    """One frame (H, W, 3) with a token map (rows, cols) laid over it, scaled to `top`."""
    h, w = frame.shape[:2]
    cells = cv2.resize((weights / max(top, 1e-12)).astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    colour = colormaps[CMAP](np.clip(cells, 0, 1))[..., :3] * 255
    return (frame * (1 - ALPHA) + colour * ALPHA).astype(np.uint8)


def strip(frames: np.ndarray, maps: np.ndarray) -> Image.Image:
    """The frames side by side, each with its group's map over it (one colour scale per strip,
    drawn at its right end)."""
    per = len(frames) // len(maps)
    top = float(maps.max())
    tiles = [overlay(f, maps[i // per], top) for i, f in enumerate(frames)]
    return Image.fromarray(np.concatenate([*tiles, scale(frames.shape[1], top)], axis=1))


SCALE_WIDTH = 56


def scale(height: int, top: float) -> np.ndarray:
    """The colour scale (height, SCALE_WIDTH, 3): the colour map from 0 (bottom) to `top` (its
    share of the answer position's attention to the video, per token), labelled at both ends."""
    ramp = colormaps[CMAP](np.linspace(1, 0, height))[:, None, :3] * 255
    bar = np.full((height, SCALE_WIDTH, 3), 255, dtype=np.uint8)
    bar[:, 2:14] = ramp.astype(np.uint8)
    image = Image.fromarray(bar)
    pen = ImageDraw.Draw(image)
    pen.text((16, 0), f"{top:.3f}", fill=(0, 0, 0))
    pen.text((16, height - 11), "0", fill=(0, 0, 0))
    return np.asarray(image)


def draw(run: Run, records: list[AttentionRecord], questions: int) -> list[Path]:
    """Heat maps of the first `questions` questions interpreted (by id); returns the files written."""
    assert run.layout is not None and run.record is not None and run.data is not None
    keep = sorted({r.question_id for r in records if r.maps})[:questions]
    preds = {p.key: p for p in run.predictions}
    written = []
    for rec in (r for r in records if r.question_id in keep and r.maps):
        sent = inputs.sent(preds[rec.key], DataLayout(run.data).clip(rec.variant, rec.video_id), run.record.ask)
        for group, values in rec.maps.items():
            path = run.layout.heatmap(rec.model, rec.question_id, rec.variant, group)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                strip(sent.frames, np.asarray(values)).save(tmp, format="PNG")
            written.append(path)
    return written
