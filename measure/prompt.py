"""How a question is asked: one definition shared by scoring and training (the media part of
a request: `measure.media`)."""
from __future__ import annotations

from typing import Literal

from core.records import OPEN, Question

AnswerFormat = Literal["text", "letters"]
LETTERS = "ABCDEFGHIJ"


def targets(q: Question, fmt: AnswerFormat) -> list[str]:
    """What the model may reply, in choice order: the choice strings or their letters."""
    return list(q.choices) if fmt == "text" else list(LETTERS[: len(q.choices)])


def question_text(q: Question, fmt: AnswerFormat) -> str:
    if q.type == OPEN:
        return f"{q.question}\nAnswer in a few words."
    lead = f"Fill in the blank: {q.question}" if "_____" in q.question else q.question
    if fmt == "text":
        return f"{lead}\nChoices: {', '.join(q.choices)}\nAnswer with one of the choices."
    listed = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices))
    return f"{lead}\nChoices:\n{listed}\nAnswer with the letter of the choice."


def sample_indices(n_frames: int, k: int) -> list[int]:
    """k frame indices spread evenly over the clip (centre of k equal spans): the same on
    every run and for every model."""
    if n_frames <= k:
        return list(range(n_frames))
    return [int((i + 0.5) * n_frames / k) for i in range(k)]


def video_intro(n_frames: int, duration_s: float) -> str:
    """SmolVLM2's video preamble (the literal "[H:MM:SS]" is part of what it was trained on)."""
    s = int(round(duration_s))
    return f"You are provided the following series of {n_frames} frames from a {s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d} [H:MM:SS] video.\n"


def frame_label(t_s: float) -> str:
    """SmolVLM2's caption before each frame: "Frame from MM:SS:"."""
    s = int(t_s)
    return f"\nFrame from {s // 60:02d}:{s % 60:02d}:"


def messages(q: Question, fmt: AnswerFormat, media: list[dict]) -> list[dict]:
    """Chat messages: the media first (so prefix and multimodal caches reuse it), then text."""
    return [{"role": "user", "content": [*media, {"type": "text", "text": question_text(q, fmt)}]}]
