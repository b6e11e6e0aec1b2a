"""Cue drawing: this project's (fixed colours per slot, stroke that scales, hand only on
request) and the study's, against its rule."""

from __future__ import annotations

import numpy as np
import pytest

from prepare.cues import HAND, auto_thickness, draw_boxes, draw_trajectory, slot_colour
from tests.conftest import SAMPLE, needs_sample


def test_colours_are_fixed_per_slot_and_distinct_for_many_objects():
    colours = [slot_colour(f"object {k}") for k in range(20)]
    assert len(set(colours)) == 20
    assert slot_colour("object 3") == colours[3]
    assert slot_colour(HAND) not in colours


def test_stroke_scales_with_height():
    assert auto_thickness(240) == 4 and auto_thickness(480) == 8 and auto_thickness(100) == 3


def test_hand_is_cued_only_when_asked():
    boxes = {"object 0": (10, 10, 40, 40), HAND: (60, 60, 90, 90)}
    off, on = np.zeros((100, 100, 3), np.uint8), np.zeros((100, 100, 3), np.uint8)
    draw_boxes(off, boxes, 3)
    draw_boxes(on, boxes, 3, cue_hand=True)
    assert off[60:91, 60:91].sum() == 0 and on[60:91, 60:91].sum() > 0
    assert off[10:41, 10:41].sum() > 0


def test_trajectory_connects_the_centres_seen_so_far():
    frame = np.zeros((100, 200, 3), np.uint8)
    history = [{"object 0": (0, 40, 20, 60)}, {}, {"object 0": (160, 40, 180, 60)}]  # vanishes in between
    draw_trajectory(frame, history, 3)
    row = frame[50].max(axis=1) > 0
    assert row[10:171].all()  # a line from the first centre to the last
    assert frame[:30].sum() == 0 and frame[70:].sum() == 0


def test_annotations_align_by_timestamp_and_stop_at_the_last_one():
    from prepare.variants import aligned, annotation_index

    assert [annotation_index(t, 12.0) for t in range(4)] == [0, 1, 2, 3]
    assert [annotation_index(t, 24.0) for t in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [annotation_index(t, 6.0) for t in range(3)] == [0, 2, 4]
    boxes = [{"object 0": (0, 0, 1, 1)}] * 3
    per_frame = aligned(boxes, 5, 12.0)
    assert per_frame[:3] == boxes and per_frame[3:] == [None, None]


def _study_rule(annotation: list[dict], n_frames: int, h: int, w: int) -> np.ndarray:
    """The study's trajectory cue as issue 45 describes its annotate.py, written here from that
    description (not from either implementation): on frame t < the annotated frames, for each
    object in frame t's labels but the hand, its box (cv2.rectangle, 2 px, corners truncated to
    int) and its centre path: a dot of radius 2 at its centre in every earlier frame it was
    labelled in, consecutive dots joined by 1 px lines. Returns the (T, H, W) stroke mask."""
    import cv2

    canvas = np.zeros((n_frames, h, w, 3), np.uint8)
    frames = sorted(annotation, key=lambda f: f["name"])
    for t in range(min(len(frames), n_frames)):
        for label in frames[t]["labels"]:
            who = label["gt_annotation"]
            if who == HAND:
                continue
            b = label["box2d"]
            cv2.rectangle(canvas[t], (int(b["x1"]), int(b["y1"])), (int(b["x2"]), int(b["y2"])), (255, 255, 255), 2)
            dots = [
                (int((e["box2d"]["x1"] + e["box2d"]["x2"]) / 2), int((e["box2d"]["y1"] + e["box2d"]["y2"]) / 2))
                for f in frames[:t]
                for e in f["labels"]
                if e["gt_annotation"] == who
            ]
            for k, dot in enumerate(dots):
                cv2.circle(canvas[t], dot, 2, (255, 255, 255), -1)
                if k:
                    cv2.line(canvas[t], dots[k - 1], dot, (255, 255, 255), 1)
    return canvas.any(axis=-1)


@needs_sample
@pytest.mark.parametrize("video", ["4", "57082", "151201", "6981"])
def test_the_study_cue_is_drawn_as_the_study_drew_it(video):
    """`trajectory` on one real Something-Else annotation (video 4: three objects and a hand;
    151201: more frames than annotations; 6981: objects that vanish), against the study's rule:
    the same stroke pixels on every frame, nothing past the last annotation, the hand uncued,
    each object in one colour of the study's palette."""
    from core.files import read_json
    from prepare.cues import STUDY_PALETTE
    from prepare.sources import frame_boxes
    from prepare.variants import RENDERERS, CueOptions, Source, aligned

    annotation = read_json(SAMPLE / "bounding_box_smthsmth_sample.json")[video]
    n_frames = len(annotation) + 5  # frames past the last annotation, as real clips have
    h, w = 240, 427
    per_frame = aligned(frame_boxes(annotation), n_frames, 12.0)
    drawn = RENDERERS["trajectory"](Source(np.zeros((n_frames, h, w, 3), np.uint8), per_frame, video, 0), CueOptions())
    assert ((drawn != 0).any(axis=-1) == _study_rule(annotation, n_frames, h, w)).all()
    assert not drawn[len(annotation) :].any()
    pixels = drawn.reshape(-1, 3)
    colours = {tuple(int(v) for v in c) for c in np.unique(pixels[pixels.any(axis=1)], axis=0)}
    objects = {lab["gt_annotation"] for f in annotation for lab in f["labels"]} - {HAND}
    assert colours <= set(STUDY_PALETTE) and len(colours) == len(objects)


def test_the_study_palette_is_drawn_per_video_from_the_seed():
    """Its colours drawn without replacement from its 9-colour palette, one per annotated slot
    (the hand counted, as the study counted it): the same video and seed give the same colours,
    and the colours move with the seed."""
    from prepare.cues import STUDY_PALETTE, study_colours
    from prepare.variants import palette_rng

    slots = ["object 0", "object 1", HAND]
    first = study_colours(slots, palette_rng("57082", 0))
    assert first == study_colours(slots, palette_rng("57082", 0)) and len(set(first.values())) == 3
    assert set(first.values()) <= set(STUDY_PALETTE)
    assert len({tuple(study_colours(slots, palette_rng("57082", s)).values()) for s in range(10)}) > 1
    many = study_colours([f"object {k}" for k in range(11)], palette_rng("x", 0))
    assert len(set(many.values())) == 9  # past the palette's 9, colours repeat
