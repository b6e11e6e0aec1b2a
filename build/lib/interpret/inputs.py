"""The input a server saw for one prediction, rebuilt exactly: the clip's media prepared by the
very code measure sent it with (`measure.ask.media`), its JPEG frames decoded as vLLM decodes
them (PIL), the frame metadata it sent, the chat template and prompt; and a generic question
on the same frames ("Describe the video."), to divide attention sinks out."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core import prompt
from core.ask import AskConfig
from core.errors import UserError
from core.records import Prediction, Question
from measure.ask import media

GENERIC = "Describe the video."


@dataclass(frozen=True)
class Sent:
    """The frames one request carried and what it said of them."""

    frames: np.ndarray  # (T, H, W, 3) uint8, as the server decoded them
    indices: list[int]
    fps: float
    total: int  # frames in the clip

    @property
    def size(self) -> tuple[int, int]:
        return self.frames.shape[2], self.frames.shape[1]


def sent(pred: Prediction, clip: Path, ask: AskConfig) -> Sent:
    """The frames measure sent for `pred` (prepared again by the same code, checked against the
    frames the prediction recorded); UserError when the clip changed since the run."""
    if not clip.is_file():
        raise UserError(f"{clip}: clip missing (gone since the run; give --data if the dataset moved)")
    spec = media.MediaSpec(clip, pred.variant, "frames", "video", ask.frames, ask.processors.get(pred.model))
    prepared = media.prepare(spec)
    if prepared.frame_indices != pred.frame_indices or prepared.frame_size != pred.frame_size:
        raise UserError(
            f"{clip}: changed since the run (it sent frames {pred.frame_indices} at {pred.frame_size}, "
            f"the clip now gives {prepared.frame_indices} at {prepared.frame_size})"
        )
    url = prepared.parts[0]["video_url"]["url"]
    jpegs = url.split(",", 1)[1].split(",")
    frames = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(j))).convert("RGB")) for j in jpegs])
    io_kwargs = prepared.media_io or {}
    return Sent(frames, list(prepared.frame_indices or []), float(io_kwargs["fps"]), int(io_kwargs["total_num_frames"]))


def encode(processor: Any, question: Question | None, frames: Sent, fmt: str = "text") -> dict[str, Any]:
    """The model's inputs for a question (None: the generic one) on the sent frames, built as
    vLLM builds them: the chat template with the video first, the processor told which frames
    of the clip these are (so the timestamps are the clip's)."""
    from transformers.video_utils import VideoMetadata

    video = [{"type": "video"}]
    if question is None:
        chat = [{"role": "user", "content": [*video, {"type": "text", "text": GENERIC}]}]
    else:
        chat = prompt.messages(question, fmt, video)
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    meta = VideoMetadata(
        total_num_frames=frames.total, fps=frames.fps, frames_indices=frames.indices, duration=frames.total / frames.fps
    )
    return processor(
        text=[text], videos=[frames.frames], video_metadata=[meta], do_sample_frames=False, return_tensors="pt"
    )
