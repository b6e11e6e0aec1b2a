"""How a question is asked: one definition shared by asking, scoring and training (the media
part of a request: `measure.ask.media`)."""

from __future__ import annotations

from collections.abc import Sequence

from core.ask import AnswerFormat
from core.records import OPEN, Question

LETTERS = "ABCDEFGHIJ"


def targets(choices: Sequence[str], fmt: AnswerFormat) -> list[str]:
    """What the model may reply, in choice order: the choice strings or their letters."""
    return list(choices) if fmt == "text" else list(LETTERS[: len(choices)])


def question_text(q: Question, fmt: AnswerFormat) -> str:
    if q.type == OPEN:
        return f"{q.question}\nAnswer in a few words."
    lead = f"Fill in the blank: {q.question}" if "_____" in q.question else q.question
    if fmt == "text":
        return f"{lead}\nChoices: {', '.join(q.choices)}\nAnswer with one of the choices."
    listed = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices))
    return f"{lead}\nChoices:\n{listed}\nAnswer with the letter of the choice."


def video_intro(n_frames: int, duration_s: float) -> str:
    """SmolVLM2's video preamble (the literal "[H:MM:SS]" is part of what it was trained on)."""
    s = int(round(duration_s))
    return (
        f"You are provided the following series of {n_frames} frames from a "
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d} [H:MM:SS] video.\n"
    )


def frame_label(t_s: float) -> str:
    """SmolVLM2's caption before each frame: "Frame from MM:SS:"."""
    s = int(t_s)
    return f"\nFrame from {s // 60:02d}:{s % 60:02d}:"


def messages(q: Question, fmt: AnswerFormat, media: Sequence[dict]) -> list[dict]:
    """Chat messages: the media first (so prefix and multimodal caches reuse it), then text."""
    return [{"role": "user", "content": [*media, {"type": "text", "text": question_text(q, fmt)}]}]
