"""How a question is asked: one definition shared by scoring and training."""
from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path
from typing import Literal

from prepare.schema import Question

AnswerFormat = Literal["text", "letters"]
Media = Literal["data", "file"]
LETTERS = "ABCDEFGHIJ"


def targets(q: Question, fmt: AnswerFormat) -> list[str]:
    """What the model may reply, in choice order: the choice strings or their letters."""
    return list(q.choices) if fmt == "text" else list(LETTERS[: len(q.choices)])


def question_text(q: Question, fmt: AnswerFormat) -> str:
    if fmt == "text":
        return (
            f"Fill in the blank: {q.question}\n"
            f"Choices: {', '.join(q.choices)}\n"
            "Answer with one of the choices."
        )
    listed = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices))
    return f"Fill in the blank: {q.question}\nChoices:\n{listed}\nAnswer with the letter of the choice."


@lru_cache(maxsize=128)
def video_data_url(path: Path) -> str:
    """The clip as a base64 data URL; read once and reused while its questions go out."""
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


def video_url(path: Path, media: Media) -> str:
    """`data`: the bytes inline (works with any server); `file`: a file:// URL, for a server
    started with --allowed-local-media-path covering the data directory."""
    return video_data_url(path) if media == "data" else path.resolve().as_uri()


def messages(q: Question, fmt: AnswerFormat, video_url: str | None) -> list[dict]:
    """Chat messages: the video first (so prefix and multimodal caches reuse it), then text."""
    content: list[dict] = []
    if video_url is not None:
        content.append({"type": "video_url", "video_url": {"url": video_url}})
    content.append({"type": "text", "text": question_text(q, fmt)})
    return [{"role": "user", "content": content}]
