"""measure.score alone: a reply -> status, picked choice, correctness, per-choice probabilities."""
from __future__ import annotations

import math

import pytest

from core.records import Question
from measure.prompt import targets
from measure.score import choice_probs, score_choice

Q = Question(id="1-verb", video_id="1", split="test", type="verb", question="_____ a cup", choices=["pushing", "lifting", "tearing", "poking"],
             answer="lifting", template="Lifting [something]", label="lifting a cup", slot=None)


def test_a_text_reply_picks_its_choice():
    right = score_choice(Q, targets(Q, "text"), "lifting")
    wrong = score_choice(Q, targets(Q, "text"), "poking")
    assert (right.status, right.picked, right.correct) == ("ok", "lifting", True)
    assert (wrong.status, wrong.picked, wrong.correct) == ("ok", "poking", False)


def test_a_letter_maps_back_to_its_choice_with_probabilities():
    lp = {"A": math.log(0.1), " B": math.log(0.6), "C": math.log(0.2), "x": math.log(0.05)}  # D absent, x not a target
    s = score_choice(Q, targets(Q, "letters"), "B", lp)
    assert (s.status, s.picked, s.correct) == ("ok", "lifting", True)
    assert s.probs == pytest.approx({"pushing": 1 / 9, "lifting": 6 / 9, "tearing": 2 / 9, "poking": 0.0})


@pytest.mark.parametrize("reply", ["", "Lifting", "lifting.", "E", "pushing lifting"])
def test_anything_outside_the_targets_is_invalid_never_correct(reply):
    s = score_choice(Q, targets(Q, "text"), reply)
    assert (s.status, s.picked, s.correct, s.probs) == ("invalid", None, False, None)


def test_no_target_among_the_logprobs_gives_no_probabilities():
    assert choice_probs({"x": -0.1}, ["A", "B"], ["a", "b"]) is None
    assert score_choice(Q, targets(Q, "letters"), "A", {"x": -0.1}).probs is None
