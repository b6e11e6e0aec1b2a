"""measure.score alone: a stored reply -> status, picked choice, correctness, per-choice
probabilities; reversed probes against their own answer; open answers kept for the judge;
`rescore` on a run folder, idempotent to the byte."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from core import runs
from core.prompt import targets
from core.records import Prediction
from measure.score import scored
from measure.score.choice import choice_probs, score_choice
from measure.score.rescore import legacy_text, rescore
from tests.conftest import cli

CHOICES = ["pushing", "lifting", "tearing", "poking"]
V1 = Path(__file__).parent / "data" / "v1"
V2 = Path(__file__).parent / "data" / "v2"


def _p(text: str | None, **kw) -> Prediction:
    base = dict(
        question_id="1-verb",
        video_id="1",
        type="verb",
        model="m",
        variant="plain",
        choices=CHOICES,
        answer="lifting",
        reply=None,
        status="error",
        correct=False,
        text=text,
    )
    return Prediction(**(base | kw))


def test_a_text_reply_picks_its_choice():
    right = score_choice(CHOICES, "lifting", targets(CHOICES, "text"), "lifting")
    wrong = score_choice(CHOICES, "lifting", targets(CHOICES, "text"), "poking")
    assert (right.status, right.picked, right.correct) == ("ok", "lifting", True)
    assert (wrong.status, wrong.picked, wrong.correct) == ("ok", "poking", False)


def test_a_letter_maps_back_to_its_choice_with_probabilities():
    lp = {"A": math.log(0.1), " B": math.log(0.6), "C": math.log(0.2), "x": math.log(0.05)}  # D absent, x not a target
    s = score_choice(CHOICES, "lifting", targets(CHOICES, "letters"), "B", lp)
    assert (s.status, s.picked, s.correct) == ("ok", "lifting", True)
    assert s.probs == pytest.approx({"pushing": 1 / 9, "lifting": 6 / 9, "tearing": 2 / 9, "poking": 0.0})


@pytest.mark.parametrize("reply", ["", "Lifting", "lifting.", "E", "pushing lifting"])
def test_anything_outside_the_targets_is_invalid_never_correct(reply):
    s = score_choice(CHOICES, "lifting", targets(CHOICES, "text"), reply)
    assert (s.status, s.picked, s.correct, s.probs) == ("invalid", None, False, None)


def test_no_target_among_the_logprobs_gives_no_probabilities():
    assert choice_probs({"x": -0.1}, ["A", "B"], ["a", "b"]) is None
    assert score_choice(CHOICES, "lifting", targets(CHOICES, "letters"), "A", {"x": -0.1}).probs is None


def test_a_stored_reply_is_scored_into_its_fields():
    ok = scored(_p(" lifting\n"), "text")  # the server's text as sent: scoring strips it
    assert (ok.status, ok.reply, ok.correct, ok.text) == ("ok", "lifting", True, " lifting\n")
    bad = scored(_p("Lifting!"), "text")
    assert (bad.status, bad.reply, bad.correct) == ("invalid", "Lifting!", False)
    error = scored(_p(None, error="HTTP 400: bad"), "text")
    assert (error.status, error.reply, error.correct) == ("error", None, False)
    letters = scored(_p("D", top_logprobs={"D": math.log(0.5), "B": math.log(0.5)}), "letters")
    assert (letters.reply, letters.correct, letters.probs) == (
        "poking",
        False,
        pytest.approx({"pushing": 0.0, "lifting": 0.5, "tearing": 0.0, "poking": 0.5}),
    )


def test_a_reversed_probe_is_right_on_its_own_answer():
    probe = dict(type="probe", choices=["the circle", "the square"], answer="the circle", reversed_answer="the square")
    fwd = scored(_p("the circle", **probe), "text")
    rev_as_forward = scored(_p("the circle", variant="reversed", **probe), "text")
    rev_right = scored(_p("the square", variant="reversed", **probe), "text")
    assert (fwd.correct, rev_as_forward.correct, rev_right.correct) == (True, False, True)
    assert rev_right.expected == "the square" and fwd.expected == "the circle"


def test_an_open_answer_is_kept_for_the_judge():
    o = dict(type="open", choices=[], answer="a red cup")
    assert (scored(_p(" two cups ", **o), "text").status, scored(_p(" two cups ", **o), "text").reply) == (
        "ok",
        "two cups",
    )
    empty = scored(_p("  ", **o), "text")
    assert (empty.status, empty.reply, empty.correct) == ("invalid", "", False)


def test_rows_written_before_replies_were_stored_get_their_text_back():
    assert legacy_text(_p(None, status="ok", reply="lifting", correct=True), "text") == "lifting"
    assert legacy_text(_p(None, status="ok", reply="tearing"), "letters") == "C"
    assert legacy_text(_p(None, status="invalid", reply="maybe"), "text") == "maybe"
    assert legacy_text(_p(None, status="error", error="x"), "text") is None


def _rescore(run: Path) -> subprocess.CompletedProcess:
    return cli(f"measure rescore {run}")


@pytest.mark.parametrize("fixture", [V1, V2])
def test_rescore_of_an_old_run_keeps_every_score_and_its_file(tmp_path, fixture):
    """An old run rescored by the current scorer: every score as stored, so predictions.jsonl is
    not written at all (the same bytes, the same mtime), then or on a second rescore."""
    run = tmp_path / "run"
    shutil.copytree(fixture, run)
    before = runs.load(run).predictions
    stat = (run / "predictions.jsonl").stat()
    data = (run / "predictions.jsonl").read_bytes()
    first = _rescore(run)
    assert first.returncode == 0, first.stderr[-2000:]
    assert " 0 changed" in first.stdout
    assert [(p.status, p.reply, p.correct, p.probs) for p in runs.load(run).predictions] == [
        (p.status, p.reply, p.correct, p.probs) for p in before
    ]
    report = (run / "report.json").read_bytes()
    second = _rescore(run)
    assert second.returncode == 0 and " 0 changed" in second.stdout
    assert (run / "predictions.jsonl").read_bytes() == data and (
        run / "predictions.jsonl"
    ).stat().st_mtime_ns == stat.st_mtime_ns
    assert (run / "report.json").read_bytes() == report


def _out_of_key_order(run: Path) -> list[str]:
    """The run's lines shuffled (seeded) into an order that is not the key order, as answers come."""
    import random

    lines = (run / "predictions.jsonl").read_text().splitlines(keepends=True)
    keys = [tuple(json.loads(x)[f] for f in ("question_id", "model", "variant")) for x in lines]
    order = list(range(len(lines)))
    random.Random(0).shuffle(order)
    assert [keys[i] for i in order] != sorted(keys)
    (run / "predictions.jsonl").write_text("".join(lines[i] for i in order))
    return [lines[i] for i in order]


def test_rescore_writes_only_the_lines_it_changes_where_they_stand(tmp_path, monkeypatch):
    """Issue 50: a run answered out of key order, rescored with an unchanged scorer: the file as it
    was (bytes and mtime); with a changed scorer: only the changed lines differ, in their places,
    each the same record with its new score."""
    import measure.score.rescore as module

    run = tmp_path / "run"
    shutil.copytree(V2, run)
    lines = _out_of_key_order(run)
    mtime = (run / "predictions.jsonl").stat().st_mtime_ns
    assert rescore(runs.load(run)).changed == 0
    assert (run / "predictions.jsonl").read_text().splitlines(keepends=True) == lines
    assert (run / "predictions.jsonl").stat().st_mtime_ns == mtime

    def strict(p, fmt):  # a changed scorer: an answer that is the first choice counts as wrong
        s = scored(p, fmt)
        return replace(s, correct=False) if s.correct and s.reply == s.choices[0] else s

    monkeypatch.setattr(module, "scored", strict)
    done = rescore(runs.load(run))
    after = (run / "predictions.jsonl").read_text().splitlines(keepends=True)
    moved = [i for i, (a, b) in enumerate(zip(lines, after)) if a != b]
    assert len(after) == len(lines) and done.changed == done.flipped == len(moved) > 0
    for i in moved:
        was, now = json.loads(lines[i]), json.loads(after[i])
        assert (now["question_id"], now["model"], now["variant"]) == (was["question_id"], was["model"], was["variant"])
        assert was["correct"] and not now["correct"] and now["reply"] == now["choices"][0]
