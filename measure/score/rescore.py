"""`measure rescore`: every stored reply of a run scored again with the current scorer, no
server needed. predictions.jsonl is the user's record of what the server said: it is written
only when a scored field changed, and then only the changed lines, where they stood."""

from __future__ import annotations

from dataclasses import dataclass, replace

from core.ask import AnswerFormat
from core.errors import UserError
from core.prompt import LETTERS
from core.records import OPEN, Prediction
from core.runs import Run
from measure.score import scored


@dataclass(frozen=True)
class Rescored:
    rows: int
    changed: int  # rows whose scored fields changed
    flipped: int  # rows whose correctness changed


def legacy_text(p: Prediction, fmt: AnswerFormat) -> str | None:
    """What the server said, for a row written before replies were stored as sent (v1, v2):
    the stored reply, or the letter of the choice it picked; None for an error."""
    if p.status == "error":
        return None
    if p.status == "invalid" or p.type == OPEN or fmt == "text":
        return p.reply or ""
    return LETTERS[p.choices.index(p.reply)]


def rescore_one(p: Prediction, fmt: AnswerFormat) -> Prediction:
    """One stored prediction scored again. A row written before v3 gets its text back from its
    reply, and keeps the probabilities it was stored with (its logprobs were not kept)."""
    again = scored(p if p.text is not None else replace(p, text=legacy_text(p, fmt)), fmt)
    return again if p.top_logprobs is not None else replace(again, probs=p.probs if again.status == "ok" else None)


def rescore(run: Run) -> Rescored:
    """Score every prediction of `run` again; the lines whose scored fields changed are replaced
    in predictions.jsonl where they stand (atomically; nothing written when none changed), and
    the rows of `run` are updated too."""
    if run.record is None:
        raise UserError(f"{run.layout.run_json if run.layout else 'run'}: missing (rescoring needs the answer format)")
    fmt = run.record.ask.answer_format
    new = [rescore_one(p, fmt) for p in run.predictions]
    changed = {b.key: b for a, b in zip(run.predictions, new) if _scored_fields(a) != _scored_fields(b)}
    flipped = sum(a.correct != b.correct for a, b in zip(run.predictions, new))
    run.store.update(changed, run.renamed)
    run.predictions = [changed.get(p.key, p) for p in run.predictions]
    return Rescored(len(new), len(changed), flipped)


def _scored_fields(p: Prediction) -> tuple:
    return p.status, p.reply, p.correct, p.probs
