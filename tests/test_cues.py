"""Cue drawing: fixed colours per slot, stroke that scales, hand only on request."""

from __future__ import annotations

import numpy as np

from prepare.cues import HAND, auto_thickness, draw_boxes, draw_trajectory, slot_colour


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
