"""Scoring, a stage of its own: a stored reply plus its question -> the scored fields of a
Prediction (`scored`), for multiple choice, reversed probes (scored against the reversed
clip's own answer) and open answers (kept for the judge: `judge`, `open`). Pure and run on
stored data, so a run can be scored again without a server (`rescore`)."""

from __future__ import annotations

from dataclasses import replace

from core.ask import AnswerFormat
from core.prompt import targets
from core.records import OPEN, Prediction
from measure.score.choice import score_choice, score_open


def scored(p: Prediction, fmt: AnswerFormat) -> Prediction:
    """`p` with its scored fields (status, reply, correct, probs) computed from what the server
    said (`text`, `top_logprobs`); no text is an error, never a wrong answer."""
    if p.text is None:
        return replace(p, status="error", reply=None, correct=False, probs=None)
    text = p.text.strip()
    if p.type == OPEN:
        s = score_open(text)
    else:
        s = score_choice(p.choices, p.expected, targets(p.choices, fmt), text, p.top_logprobs)
    return replace(p, status=s.status, reply=s.picked if s.status == "ok" else text, correct=s.correct, probs=s.probs)
