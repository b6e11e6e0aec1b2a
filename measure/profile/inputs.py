"""What `measure profile` sends: input kinds built the way `measure` builds a request (the
same prompt, frame sampling, sizing and encoding, `measure.ask.client.request`), on clips
drawn here, each request made new to the server; and the edge inputs, built raw."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.ask import AskConfig
from core.records import MCQ, Question
from core.variants import BLIND, PLAIN, SINGLE_FRAME
from measure.ask import media
from measure.ask.client import Item, request

SIZE = (224, 160)  # W, H of the clips drawn (the synthetic datasets' size)
FPS = 8.0
DIRECTIONS = ("to the left", "to the right", "up", "down")
QUESTION = Question(
    id="profile",
    video_id="profile",
    split="test",
    type=MCQ,
    question="Which way does the square move?",
    choices=list(DIRECTIONS),
    answer=DIRECTIONS[0],
    template="",
    label="",
    slot=None,
)


@dataclass(frozen=True)
class Kind:
    """An input kind: text only, one image, or a video of `frames` frames."""

    name: str
    frames: int  # 0: text only; 1: one image

    @property
    def variant(self) -> str:
        return BLIND if self.frames == 0 else SINGLE_FRAME if self.frames == 1 else PLAIN


def kinds(video_frames: list[int]) -> list[Kind]:
    return [Kind("text", 0), Kind("image", 1), *(Kind(f"video-{k}", k) for k in video_frames)]


def draw(frames: int, seed: int) -> np.ndarray:
    """A square crossing a plain background, its colour and direction from `seed`: [T, H, W, 3]."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    back, colour = rng.integers(150, 256, 3), rng.integers(0, 120, 3)
    video = np.empty((max(frames, 2), h, w, 3), np.uint8)
    video[:] = back
    left, right, top, bottom, mx, my = 10, w - 40, 10, h - 40, w // 2 - 15, h // 2 - 15
    (x0, y0), (x1, y1) = [  # DIRECTIONS[seed % 4]
        ((right, my), (left, my)),
        ((left, my), (right, my)),
        ((mx, bottom), (mx, top)),
        ((mx, top), (mx, bottom)),
    ][seed % 4]
    for t, frame in enumerate(video):
        a = t / (len(video) - 1)
        x, y = int(x0 + (x1 - x0) * a), int(y0 + (y1 - y0) * a)
        frame[y : y + 30, x : x + 30] = colour
    return video


def write_clip(path: Path, frames: np.ndarray) -> Path:
    """An mp4 (OpenCV's mp4v) of RGB `frames`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    for f in frames:
        out.write(np.ascontiguousarray(f[:, :, ::-1]))
    out.release()
    return path


@dataclass(frozen=True)
class Prepared:
    """One request of a kind, ready to send again and again (each time made new)."""

    kind: Kind
    seed: int
    kwargs: dict[str, Any]


def prepared(kind: Kind, seed: int, model: str, cfg: AskConfig, clips: Path) -> Prepared:
    """The request `measure` would send for this kind's clip of `seed`."""
    clip = None
    if kind.frames:
        clip = write_clip(clips / f"{kind.name}-{seed}.mp4", draw(max(kind.frames, 2), seed))
    item = Item(QUESTION, model, kind.variant, clip)
    frames = replace(cfg.frames, frames=max(kind.frames, 1))
    sized = replace(cfg, frames=frames)
    spec = (
        None
        if clip is None
        else media.MediaSpec(
            clip, kind.variant, sized.media, sized.profile(model).video_as, frames, sized.processors.get(model)
        )
    )
    sent = None if spec is None else media.prepare(spec)
    return Prepared(kind, seed, request(item, sized, sent))


def new(kwargs: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`kwargs` made new to the server: a fresh uuid on every media part and a fresh cache salt
    (no prefix or multimodal cache hit), with `changes` (temperature, seed, ...) applied."""
    fresh = uuid.uuid4().hex
    messages = [
        m | {"content": [p | {"uuid": f"{fresh}-{i}"} if "uuid" in p else p for i, p in enumerate(m["content"])]}
        if isinstance(m.get("content"), list)
        else m
        for m in kwargs["messages"]
    ]
    extra = kwargs.get("extra_body") or {}
    return kwargs | {"messages": messages, "extra_body": extra | {"cache_salt": fresh}} | changes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _encoded(frame: np.ndarray, ext: str) -> str:
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(frame[:, :, ::-1]))
    assert ok, ext
    return _b64(buf.tobytes())


def _image(frame: np.ndarray) -> list[dict]:
    return [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + _encoded(frame, ".png")}}]


def _video(frames: list[str], video_as: str) -> tuple[list[dict], dict]:
    """JPEG frames (base64) as the model family takes a video: one video part or images."""
    if video_as == "frames":
        return [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + f}} for f in frames], {}
    n = len(frames)
    io = {"fps": FPS, "frames_indices": list(range(n)), "total_num_frames": n, "duration": n / FPS, "num_frames": n}
    part = {"type": "video_url", "video_url": {"url": "data:video/jpeg;base64," + ",".join(frames)}}
    return [part], {"media_io_kwargs": {"video": io}} if n else {}


def edges(video_as: str, max_model_len: int) -> dict[str, Callable[[], tuple[list[dict], dict, str]]]:
    """Edge input -> (media parts, extra body, question text), built when called. The test
    plan's: a corrupt file, 1x1 and 4K frames, a 1:10 aspect, a blurred clip, zero frames, a
    file in the wrong format, a prompt over the context length, a malformed message part."""
    ask = "Which way does the square move? Answer in a few words."
    rng = np.random.default_rng(0)
    blurred = [_encoded(cv2.GaussianBlur(f, (31, 31), 15), ".jpg") for f in draw(8, 1)]

    def corrupt() -> tuple[list[dict], dict, str]:
        junk = _b64(rng.bytes(4096))
        kind, mime = ("image_url", "image/jpeg") if video_as == "frames" else ("video_url", "video/mp4")
        return [{"type": kind, kind: {"url": f"data:{mime};base64,{junk}"}}], {}, ask

    def zero_frames() -> tuple[list[dict], dict, str]:
        parts, extra = _video([], video_as)
        return parts or [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,"}}], extra, ask

    return {
        "corrupt file": corrupt,
        "1x1 frame": lambda: (_image(np.full((1, 1, 3), 128, np.uint8)), {}, ask),
        "4K frame (3840x2160)": lambda: (_image(rng.integers(0, 256, (2160, 3840, 3), dtype=np.uint8)), {}, ask),
        "1:10 aspect (64x640)": lambda: (_image(np.full((640, 64, 3), 128, np.uint8)), {}, ask),
        "blurred clip (8 frames)": lambda: (*_video(blurred, video_as), ask),
        "zero frames": zero_frames,
        "wrong format (text as PNG)": lambda: (
            [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + _b64(b"not an image")}}],
            {},
            ask,
        ),
        "prompt over the context length": lambda: ([], {}, "word " * (max_model_len + 1) + ask),
        "malformed message part": lambda: ([{"type": "no-such-part", "no-such-part": {}}], {}, ask),
    }


def edge_request(model: str, parts: list[dict], extra: dict, text: str) -> dict[str, Any]:
    """A free-form request around an edge input (short, temperature 0)."""
    content = [*parts, {"type": "text", "text": text}]
    return dict(
        model=model,
        messages=[{"role": "user", "content": content}],
        temperature=0.0,
        max_tokens=8,
        extra_body=extra | {"cache_salt": uuid.uuid4().hex},
    )
