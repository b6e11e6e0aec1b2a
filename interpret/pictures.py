"""Heat maps over the exact frames sent: for each interpreted (model, question, variant) and
language layer group, the frames side by side with the answer position's attention to each
visual token laid over its pixel block (a token covers its group's frames), and its colour
scale; with `interpret --effects`, the occlusion map beside them (`<variant>.effect.png`: each
token ablated alone, the change in the answer's log-probability, blue where removing the token
lowers it, red where it raises it, on a scale symmetric about 0). Drawn from
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
CMAP = "inferno"  # attention: 0 .. the strip's largest share
SIGNED = "RdBu_r"  # effects: -largest change (blue) .. 0 (white) .. +largest (red)


def overlay(frame: np.ndarray, weights: np.ndarray, top: float, signed: bool = False) -> np.ndarray:
    """One frame (H, W, 3) with a token map (rows, cols) laid over it, scaled to `top` (signed:
    to -top .. top)."""
    h, w = frame.shape[:2]
    cells = cv2.resize((weights / max(top, 1e-12)).astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    colour = colormaps[SIGNED if signed else CMAP](np.clip((cells + 1) / 2 if signed else cells, 0, 1))[..., :3] * 255
    return (frame * (1 - ALPHA) + colour * ALPHA).astype(np.uint8)


def strip(frames: np.ndarray, maps: np.ndarray, signed: bool = False) -> Image.Image:
    """The frames side by side, each with its group's map over it (one colour scale per strip,
    drawn at its right end)."""
    per = len(frames) // len(maps)
    top = float(np.abs(maps).max())
    tiles = [overlay(f, maps[i // per], top, signed) for i, f in enumerate(frames)]
    return Image.fromarray(np.concatenate([*tiles, scale(frames.shape[1], top, signed)], axis=1))


SCALE_WIDTH = 56


def scale(height: int, top: float, signed: bool = False) -> np.ndarray:
    """The colour scale (height, SCALE_WIDTH, 3): the colour map from 0 (signed: -top) at the
    bottom to `top` (a token's share of the answer position's attention to the video; signed:
    the change in nats), labelled at both ends."""
    ramp = colormaps[SIGNED if signed else CMAP](np.linspace(1, 0, height))[:, None, :3] * 255
    bar = np.full((height, SCALE_WIDTH, 3), 255, dtype=np.uint8)
    bar[:, 2:14] = ramp.astype(np.uint8)
    image = Image.fromarray(bar)
    pen = ImageDraw.Draw(image)
    pen.text((16, 0), f"{'+' if signed else ''}{top:.3f}", fill=(0, 0, 0))
    pen.text((16, height - 11), f"-{top:.3f}" if signed else "0", fill=(0, 0, 0))
    return np.asarray(image)


def draw(run: Run, records: list[AttentionRecord], keep: set[str]) -> list[Path]:
    """Heat maps of the `records` of the questions in `keep`; returns the files written."""
    assert run.layout is not None and run.record is not None and run.data is not None
    preds = {p.key: p for p in run.predictions}
    written = []
    for rec in (r for r in records if r.question_id in keep and r.maps):
        sent = inputs.sent(preds[rec.key], DataLayout(run.data).clip(rec.variant, rec.video_id), run.record.ask)
        paths = {
            run.layout.heatmap(rec.model, rec.question_id, rec.variant, g): (v, False) for g, v in rec.maps.items()
        }
        if rec.occlusion:
            paths[run.layout.effect_map(rec.model, rec.question_id, rec.variant)] = (rec.occlusion, True)
        for path, (values, signed) in paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                strip(sent.frames, np.asarray(values), signed).save(tmp, format="PNG")
            written.append(path)
    return written
