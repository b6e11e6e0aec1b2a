"""The frame spec: which frames of a clip a model sees, declared once (count, sampling, size)
and sampled by one function, for measuring and for training alike.

- `centers`: `frames` evenly spread, the centre of each of `frames` equal spans;
- `uniform`: `np.linspace(0, n - 1, frames)` (vLLM's OpenCV loader given num_frames);
- `processor`: what the model's own video processor samples at its fps (Qwen-VL: 2 fps, at
  least 4), i.e. what current vLLM does server-side;
- `study`: what vLLM < 0.12 did with `--media-io-kwargs {"video": {"num_frames": frames}}`
  (read from its 0.11.0 source): a clip of more than `frames` frames is sampled `uniform`, a
  shorter one is read whole and left to the processor's own sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from core.cli import option, parse_size
from core.defaults import FPS_FALLBACK, FRAMES

Sampling = Literal["centers", "uniform", "processor", "study"]
SAMPLINGS: tuple[str, ...] = get_args(Sampling)
NEEDS_PROCESSOR: tuple[str, ...] = ("processor", "study")


def frames_option(default: int = FRAMES, help: str = "Frames per clip the model sees.") -> Any:
    """The frame-count option (`--frames`), for every command that has one."""
    return option(default, help)


def size_option(default: tuple[int, int] | None, help: str) -> Any:
    """A frame-size option (`--frame-size WxH`)."""
    return option(default, help, parser=parse_size, metavar="WxH", shown=None if default else "the processor's size")


@dataclass(frozen=True)
class FrameSpec:
    """Which frames of a clip a model sees (the options of measure and train)."""

    frames: int = frames_option()
    sampling: Sampling = option(
        "centers",
        "Which frames: centers (evenly spread), uniform (np.linspace), processor (the model's video processor at its "
        "fps, what current vLLM samples) or study (vLLM < 0.12 with num_frames=--frames: the reference study's).",
    )
    frame_size: tuple[int, int] | None = size_option(
        None, "Frame size WxH, rounded by the model's processor (default: what the processor makes of the clip)."
    )

    def problems(self) -> list[str]:
        return [f"--frames must be >= 1 (got {self.frames})"] if self.frames < 1 else []

    def describe(self) -> str:
        size = "x".join(map(str, self.frame_size)) if self.frame_size else "the processor's size"
        return f"{self.frames} frames by {self.sampling} sampling at {size}"


def sample_indices(n_frames: int, k: int) -> list[int]:
    """`centers`: k frame indices spread evenly over the clip (centre of k equal spans)."""
    if n_frames <= k:
        return list(range(n_frames))
    return [int((i + 0.5) * n_frames / k) for i in range(k)]


@lru_cache(maxsize=4)
def video_processor(name: str) -> Any:
    """A model's video processor (transformers), loaded once per process."""
    from transformers import AutoVideoProcessor

    return AutoVideoProcessor.from_pretrained(name)


def frame_indices(n: int, fps: float, spec: FrameSpec, processor: str | None) -> list[int]:
    """The frames of an n-frame clip that `spec` chooses (`processor`: the model whose video
    processor decides, for the sampling modes that ask it)."""
    k = spec.frames
    if spec.sampling == "centers":
        return sample_indices(n, k)
    uniform = np.linspace(0, n - 1, min(k, n), dtype=int).tolist()
    if spec.sampling == "uniform" or (spec.sampling == "study" and n > k):
        return uniform
    if processor is None:
        raise ValueError(f"--sampling {spec.sampling} needs the model's video processor (a local model dir)")
    from transformers.video_utils import VideoMetadata

    return [int(i) for i in video_processor(processor).sample_frames(VideoMetadata(total_num_frames=n, fps=fps))]


@lru_cache(maxsize=256)
def processed_size(processor: str, frames: int, height: int, width: int) -> tuple[int, int]:
    """(W, H) the model's own video processor resizes `frames` frames of height x width to
    (patch x merge multiples within its min/max pixels): asked of the processor itself."""
    vp = video_processor(processor)
    out = vp(videos=[np.zeros((frames, height, width, 3), np.uint8)], do_sample_frames=False, return_tensors="np")
    _, grid_h, grid_w = (int(v) for v in out["video_grid_thw"][0])
    return grid_w * vp.patch_size, grid_h * vp.patch_size


@dataclass(frozen=True)
class Sampled:
    """The frames chosen from one clip, at the size sent, and where they came from."""

    pixels: np.ndarray  # (frames, H, W, 3) uint8 RGB
    indices: list[int]
    fps: float
    total: int  # frames in the clip

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[2], self.pixels.shape[1]


def resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Every frame at (W, H): area interpolation to shrink, cubic to grow."""
    import cv2

    w, h = size
    if (w, h) == (frames.shape[2], frames.shape[1]):
        return frames
    shrink = w * h < frames.shape[1] * frames.shape[2]
    mode = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (w, h), interpolation=mode) for f in frames])


def load(clip: Path, spec: FrameSpec, processor: str | None = None, sizer: str | None = None) -> Sampled:
    """Decode `clip` once and return the frames `spec` chooses, resized to `spec.frame_size`
    and then to what `sizer`'s video processor makes of them (so its own resize is a no-op).
    `processor` decides the frames for the sampling modes that ask it."""
    from core.decoding import decord

    vr = decord.VideoReader(str(clip), ctx=decord.cpu(0))
    fps = float(vr.get_avg_fps()) or FPS_FALLBACK
    idx = frame_indices(len(vr), fps, spec, processor)
    pixels = vr.get_batch(idx).asnumpy()
    w, h = spec.frame_size or (pixels.shape[2], pixels.shape[1])
    if sizer is not None:
        w, h = processed_size(sizer, len(idx), h, w)
    return Sampled(resize(pixels, (w, h)), idx, fps, len(vr))


def still(clip: Path) -> np.ndarray:
    """The image an image variant (the single-frame control) is sent as: its clip's first frame."""
    from core.decoding import decord

    return decord.VideoReader(str(clip), ctx=decord.cpu(0))[0].asnumpy()
