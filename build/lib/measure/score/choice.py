"""Scoring one reply: is it one of the choices, which one, is it right (against the answer
for the clip shown), the per-choice probabilities; a free-form reply is kept for the judge.
Pure: no transport, so a stored reply can be scored again."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.records import Status


@dataclass(frozen=True)
class Score:
    status: Status  # "ok" (one of the targets) or "invalid" (anything else); errors never reach scoring
    picked: str | None  # the choice string picked (a letter reply is mapped back to its choice)
    correct: bool
    probs: dict[str, float] | None = None  # per choice, from the first answer token's top logprobs


def choice_probs(
    top_logprobs: Mapping[str, float], targets: Sequence[str], choices: Sequence[str]
) -> dict[str, float] | None:
    """Per-choice probability from the first answer token's top logprobs (token -> logprob),
    renormalised over the choices present; None when no target is among them."""
    lp = {token.strip(): value for token, value in top_logprobs.items()}
    raw = {c: math.exp(lp[t]) for t, c in zip(targets, choices) if t in lp}
    total = sum(raw.values())
    if not raw or total <= 0:
        return None
    return {c: raw.get(c, 0.0) / total for c in choices}


def score_choice(
    choices: Sequence[str],
    expected: str,
    targets: Sequence[str],
    reply: str,
    top_logprobs: Mapping[str, float] | None = None,
) -> Score:
    """`reply` (already stripped) against the targets (the choices, or their letters), right
    when it picks `expected`."""
    if reply not in targets:
        return Score("invalid", None, False)
    picked = choices[list(targets).index(reply)]
    probs = choice_probs(top_logprobs, targets, choices) if top_logprobs else None
    return Score("ok", picked, picked == expected, probs)


def score_open(reply: str) -> Score:
    """A free-form reply: "ok" when there is one (right or wrong is the judge's call, later:
    `measure.score.judge`), "invalid" when it is empty."""
    return Score("ok", reply, False) if reply else Score("invalid", None, False)
