"""Clip variant names and their roles.

- `plain`: the clip as recorded, the reference every other variant is compared with;
- cues (compared with plain): `bbox`, `trajectory`, `both`, `side-by-side` (raw | cued);
- controls (made from the same frames as plain): `blind` (no clip at all: the question text
  alone), `single-frame` (the middle frame, sent as an image), `shuffled`, `reversed`;
- interventions (from the boxes, compared with plain): `object-masked` (the objects' boxes
  filled with the frame's mean colour), `context-masked` (everything outside the boxes
  filled), `cue-only` (the cue strokes on a flat grey background: is the cue read, not the video?).
"""

from __future__ import annotations

from collections.abc import Sequence

from core.cli import comma_list

PLAIN = "plain"
BLIND = "blind"
SINGLE_FRAME = "single-frame"
SHUFFLED = "shuffled"
REVERSED = "reversed"
CUED: tuple[str, ...] = ("bbox", "trajectory", "both", "side-by-side")
CONTROLS: tuple[str, ...] = (BLIND, SINGLE_FRAME, SHUFFLED, REVERSED)
INTERVENTIONS: tuple[str, ...] = ("object-masked", "context-masked", "cue-only")
VARIANTS: tuple[str, ...] = (PLAIN, *CUED, *CONTROLS, *INTERVENTIONS)
FROM_BOXES: tuple[str, ...] = (*CUED, *INTERVENTIONS)  # made from a clip's boxes: only datasets with boxes
AUDIT_CONTROLS: tuple[str, ...] = (BLIND, SINGLE_FRAME)  # the shortcut audit: can the answer be had without motion?
IMAGE_VARIANTS: tuple[str, ...] = (SINGLE_FRAME,)  # one frame: sent as an image, not a video


def variant_names(value: str | Sequence[str]) -> tuple[str, ...]:
    """Comma-separated variant names, each known."""
    chosen = comma_list(value)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise ValueError(f"unknown variant(s) {unknown or value!r}; valid: {', '.join(VARIANTS)}")
    return chosen
