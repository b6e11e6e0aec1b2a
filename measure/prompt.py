"""How a question is asked: one definition shared by scoring and training."""
from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path
from typing import Literal

import cv2
import decord
import numpy as np

from core.defaults import FPS_FALLBACK
from core.profiles import Profile
from core.records import Question
from core.variants import IMAGE_VARIANTS

AnswerFormat = Literal["text", "letters"]
Media = Literal["data", "file"]
LETTERS = "ABCDEFGHIJ"


def targets(q: Question, fmt: AnswerFormat) -> list[str]:
    """What the model may reply, in choice order: the choice strings or their letters."""
    return list(q.choices) if fmt == "text" else list(LETTERS[: len(q.choices)])


def question_text(q: Question, fmt: AnswerFormat) -> str:
    lead = f"Fill in the blank: {q.question}" if "_____" in q.question else q.question
    if fmt == "text":
        return f"{lead}\nChoices: {', '.join(q.choices)}\nAnswer with one of the choices."
    listed = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices))
    return f"{lead}\nChoices:\n{listed}\nAnswer with the letter of the choice."


@lru_cache(maxsize=128)
def video_data_url(path: Path) -> str:
    """The clip as a base64 data URL; read once and reused while its questions go out."""
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


def video_url(path: Path, media: Media) -> str:
    """`data`: the bytes inline (works with any server); `file`: a file:// URL, for a server
    started with --allowed-local-media-path covering the data directory."""
    return video_data_url(path) if media == "data" else path.resolve().as_uri()


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


def _png(frame: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(frame[:, :, ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


@lru_cache(maxsize=64)
def frame_parts(path: Path, k: int) -> tuple[tuple[dict, ...], tuple[int, ...]]:
    """Client-side sampled frames as SmolVLM/Idefics3 parts (intro, "Frame from MM:SS:",
    image, ...), and the frame indices used."""
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    fps = float(vr.get_avg_fps()) or FPS_FALLBACK
    idx = sample_indices(len(vr), k)
    frames = vr.get_batch(idx).asnumpy()
    parts: list[dict] = [{"type": "text", "text": video_intro(len(idx), len(vr) / fps)}]
    for i, frame in zip(idx, frames):
        parts.append({"type": "text", "text": frame_label(i / fps)})
        parts.append({"type": "image_url", "image_url": {"url": _png(frame)}})
    return tuple(parts), tuple(idx)


@lru_cache(maxsize=128)
def image_data_url(path: Path) -> str:
    """A one-frame clip (the single-frame control) as a PNG data URL."""
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    return _png(vr[0].asnumpy())


def media_parts(clip: Path | None, variant: str, profile: Profile, media: Media, frames: int) -> tuple[list[dict], list[int] | None]:
    """The content parts that carry the clip, and the frame indices sent (client-sampled only).

    No clip (the blind control): no part at all. One frame: an image. Otherwise the
    profile decides: a video part, or sampled frames as images.
    """
    if clip is None:
        return [], None
    if variant in IMAGE_VARIANTS:
        return [{"type": "image_url", "image_url": {"url": image_data_url(clip)}}], [0]
    if profile.video_as == "video":
        return [{"type": "video_url", "video_url": {"url": video_url(clip, media)}}], None
    parts, idx = frame_parts(clip, frames)
    return list(parts), list(idx)


def messages(q: Question, fmt: AnswerFormat, media: list[dict]) -> list[dict]:
    """Chat messages: the media first (so prefix and multimodal caches reuse it), then text."""
    return [{"role": "user", "content": [*media, {"type": "text", "text": question_text(q, fmt)}]}]
