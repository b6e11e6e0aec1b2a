"""How each request of a run is made: the request options of `measure`, recorded in run.json
as they were used (with each served model's profile and video processor)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from core.cli import group, option
from core.frames import FrameSpec
from core.profiles import QWEN_VL, Profile

AnswerFormat = Literal["text", "letters"]
Media = Literal["frames", "data", "file"]
Reasoning = Literal["auto", "off", "server", "two-step"]


@dataclass(frozen=True)
class AskConfig:
    """The request options of `measure`."""

    answer_format: AnswerFormat = option("text", "text (the choice strings) or letters (A-D, with probabilities).")
    media: Media = option(
        "frames",
        "How a clip is sent to video models: frames (the frame spec's frames, sampled, resized and JPEG-encoded by "
        "the client), data (the mp4 inline) or file (file:// URLs; serve needs --allowed-media). With data and "
        "file the server samples --frames frames itself (--sampling and --frame-size do not apply).",
    )
    frames: FrameSpec = group(FrameSpec)
    timeout_s: float = option(120.0, "Seconds per request before a retry.", flags=("--timeout",))
    max_attempts: int = option(4, "Attempts per request (bounded exponential backoff).")
    media_workers: int = option(
        max(1, (os.cpu_count() or 2) // 2), "Processes preparing clips ahead of the requests.", shown="half the cores"
    )
    down_timeout_s: float = option(
        60.0,
        "Seconds with no server accepting connections before the run stops (exit 3); a server back sooner is used "
        "again.",
        flags=("--down-timeout",),
    )
    open_max_tokens: int = option(64, "Open questions: longest free-form answer, in tokens.")
    reasoning: Reasoning = option(
        "auto",
        "A reasoning model's thinking, kept apart from its answer (stored, shown, never scored): server (vLLM's "
        "reasoning parser separates it and the choice constraint applies after it), two-step (a free reply first, "
        "then the answer constrained, the thinking in the conversation), off, or auto (server for a model whose "
        "profile is a reasoning model's, which `serve` starts with its parser; off for the others).",
    )
    reasoning_tokens: int = option(
        512,
        "Thinking budget, in tokens (server: vLLM's thinking_token_budget ends it; two-step: the first reply's cap).",
    )
    backoff_s: float = 0.5  # doubles per attempt, capped at 8 s, with jitter
    profiles: dict[str, Profile] = field(default_factory=dict)  # served model -> request profile
    processors: dict[str, str | None] = field(default_factory=dict)  # served model -> its video processor (model dir)

    def profile(self, model: str) -> Profile:
        return self.profiles.get(model, QWEN_VL)

    def reasoning_of(self, model: str) -> str:
        """How a model's thinking is asked for: as given, or (auto) by its profile."""
        if self.reasoning != "auto":
            return self.reasoning
        return "server" if self.profile(model).reasoning_parser else "off"

    @property
    def client_samples(self) -> bool:
        """Whether the client chooses the frames (frames mode): the frame spec applies whole."""
        return self.media == "frames"

    @property
    def sends_media_io(self) -> bool:
        """Whether requests carry per-request media settings (the server must trust them): every
        request with a video, in every mode."""
        return any(p.video_as == "video" for p in self.profiles.values()) or not self.profiles

    def describe_frames(self) -> str:
        """How the clips were sent, in words."""
        if self.client_samples:
            return f"--media frames: {self.frames.describe()}, chosen and sized by the client"
        return f"--media {self.media}: the server sampled {self.frames.frames} frames per clip"
