"""The media part of a request, prepared once per clip, off the event loop.

Modes for video families (`--media`):
- `frames` (the default): the client decodes the clip once (decord), samples frames with
  `prompt.sample_indices` (what training uses), resizes them to exactly what the served
  model's video processor would produce (so the server's own resize is a no-op), JPEG-encodes
  them and sends one `video_url` part `data:video/jpeg;base64,<f1>,<f2>,...` with
  `media_io_kwargs.video` = {fps, frames_indices, total_num_frames, duration, num_frames}
  so the model's timestamps describe the original clip (server: --trust-request-mm-kwargs);
- `data`: the whole mp4 inline; `file`: a file:// URL (server: --allowed-local-media-path).
Image-only families (SmolVLM) always get client-sampled frames as images.

Every part carries a `uuid`: the clip's content hash plus everything that decides the
pixels sent (mode, frames, size, encoding), so vLLM's multimodal processor cache hits for
every question, model and adapter of one clip and never serves a stale one.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import cv2
import decord
import numpy as np

from core.defaults import FPS_FALLBACK
from core.files import sha256
from core.procs import die_with_parent
from core.variants import IMAGE_VARIANTS
from measure.prompt import frame_label, sample_indices, video_intro

Media = Literal["frames", "data", "file"]
Sampling = Literal["centers", "uniform", "processor", "study"]
JPEG_QUALITY = 90
MEDIA_VERSION = 1  # bump when the pixels sent for the same settings change: old cache keys must not match


@dataclass(frozen=True)
class MediaSpec:
    """Everything that decides what is sent for one clip (equal specs: equal media)."""

    clip: Path
    variant: str
    mode: Media
    video_as: Literal["video", "frames"]  # the model family's way (core.profiles)
    frames: int  # frames sampled by the client (frames mode, image-only families)
    frame_size: tuple[int, int] | None = None  # (W, H) asked for; None: the processor's size for the clip
    processor: str | None = None  # a model dir (or hub id) whose video processor decides the final size
    server_frames: int | None = None  # data/file mode: frames the server is asked to sample
    sampling: Sampling = "centers"  # which `frames` frames the client sends (`frame_indices`)


@dataclass(frozen=True)
class Prepared:
    """The content parts for a clip, per-request media kwargs, and what was sent."""

    parts: tuple[dict, ...]
    media_io: dict[str, Any] | None  # media_io_kwargs["video"] for this request
    frame_indices: list[int] | None  # frames sent (client-sampled), None when the server samples
    frame_size: list[int] | None  # [W, H] of the frames sent, None when the server decides


def _worker_init(parent: int, processors: tuple[str, ...]) -> None:
    """In each media worker process: leave Ctrl-C to the parent (which stops cleanly), on Linux
    die with the parent (a killed run leaves no worker behind), and load the video processors
    now rather than while the first clips wait."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    for name in processors:
        _video_processor(name)


@contextlib.contextmanager
def worker_pool(workers: int, processors: Iterable[str | None] = ()) -> Iterator[ProcessPoolExecutor]:
    """A pool of `workers` processes preparing media, started (processors loaded) before it is
    yielded, so the first requests do not wait for it."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(os.getpid(), tuple(sorted({p for p in processors if p}))))
    try:
        for started in [pool.submit(os.getpid) for _ in range(workers)]:
            started.result()
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


PROCESSOR_CONFIGS = ("video_preprocessor_config.json", "preprocessor_config.json", "processor_config.json")


def find_processor(model: str) -> str | None:
    """`model` when it has a video processor: a local model dir holding a processor config, or
    a hub id whose processor loads (from the local cache or the hub); else None."""
    if Path(model).is_dir():
        return model if any((Path(model) / name).is_file() for name in PROCESSOR_CONFIGS) else None
    try:
        _video_processor(model)
    except Exception:  # offline, unknown, not a video model: the caller says what to do
        return None
    return model


@lru_cache(maxsize=4)
def _video_processor(name: str):
    from transformers import AutoVideoProcessor

    return AutoVideoProcessor.from_pretrained(name)


@lru_cache(maxsize=256)
def processed_size(processor: str, frames: int, height: int, width: int) -> tuple[int, int]:
    """(W, H) the model's own video processor resizes `frames` frames of height x width to
    (patch x merge multiples within its min/max pixels): asked of the processor itself."""
    vp = _video_processor(processor)
    out = vp(videos=[np.zeros((frames, height, width, 3), np.uint8)], do_sample_frames=False, return_tensors="np")
    _, grid_h, grid_w = (int(v) for v in out["video_grid_thw"][0])
    return grid_w * vp.patch_size, grid_h * vp.patch_size


def _encode(frame: np.ndarray, ext: str) -> str:
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(frame[:, :, ::-1]), params)
    if not ok:
        raise ValueError(f"{ext} encoding failed")
    return base64.b64encode(buf.tobytes()).decode()


def cache_key(spec: MediaSpec, content: str, size: tuple[int, int] | None, indices: list[int] | None) -> str:
    """A key that changes whenever the pixels sent change."""
    what = f"{MEDIA_VERSION}|{content}|{spec.variant}|{spec.mode}|{spec.video_as}|{size}|{indices}|{spec.server_frames}|{JPEG_QUALITY}"
    return hashlib.sha256(what.encode()).hexdigest()[:32]


def frame_indices(n: int, fps: float, k: int, sampling: Sampling, processor: str | None) -> list[int]:
    """The frames of an n-frame clip the client sends:
    - centers: k evenly spread (`prompt.sample_indices`, what training uses);
    - uniform: k from `np.linspace(0, n - 1, k)` (vLLM's OpenCV loader given num_frames=k);
    - processor: what the model's own video processor samples at its fps (Qwen-VL: 2 fps,
      at least 4), i.e. what current vLLM does server-side;
    - study: what vLLM < 0.12 did with `--media-io-kwargs {"video": {"num_frames": k}}`, read
      from its 0.11.0 source: a clip of more than k frames is sampled `uniform`, a shorter
      one (or one of exactly k) is read whole and left to the processor's own sampling."""
    if sampling == "centers":
        return sample_indices(n, k)
    uniform = np.linspace(0, n - 1, min(k, n), dtype=int).tolist()
    if sampling == "uniform" or (sampling == "study" and n > k):
        return uniform
    if processor is None:
        raise ValueError(f"--sampling {sampling} needs the model's video processor (a local model dir)")
    from transformers.video_utils import VideoMetadata

    return [int(i) for i in _video_processor(processor).sample_frames(VideoMetadata(total_num_frames=n, fps=fps))]


def _sample(vr: decord.VideoReader, spec: MediaSpec) -> tuple[np.ndarray, list[int], float]:
    fps = float(vr.get_avg_fps()) or FPS_FALLBACK
    idx = frame_indices(len(vr), fps, spec.frames, spec.sampling, spec.processor)
    return vr.get_batch(idx).asnumpy(), idx, fps


def prepare(spec: MediaSpec) -> Prepared:
    """The media for one clip (runs in a worker process); raises if the clip cannot be read."""
    content = sha256(spec.clip)
    if content is None:
        raise FileNotFoundError(f"{spec.clip}: clip missing")
    if spec.variant in IMAGE_VARIANTS:  # one frame: an image
        vr = decord.VideoReader(str(spec.clip), ctx=decord.cpu(0))
        frame = vr[0].asnumpy()
        size = (frame.shape[1], frame.shape[0])
        part = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + _encode(frame, ".png")},
                "uuid": cache_key(spec, content, size, [0])}
        return Prepared((part,), None, [0], list(size))
    if spec.video_as == "frames":  # image-only families: sampled frames with their trained text
        vr = decord.VideoReader(str(spec.clip), ctx=decord.cpu(0))
        frames, idx, fps = _sample(vr, spec)
        size = (frames.shape[2], frames.shape[1])
        parts: list[dict] = [{"type": "text", "text": video_intro(len(idx), len(vr) / fps)}]
        for i, frame in zip(idx, frames):
            parts.append({"type": "text", "text": frame_label(i / fps)})
            parts.append({"type": "image_url", "image_url": {"url": "data:image/png;base64," + _encode(frame, ".png")},
                          "uuid": cache_key(spec, content, size, [i])})
        return Prepared(tuple(parts), None, idx, list(size))
    if spec.mode != "frames":  # the server decodes and samples (server-wide, or server_frames per request)
        url = ("data:video/mp4;base64," + base64.b64encode(spec.clip.read_bytes()).decode() if spec.mode == "data"
               else spec.clip.resolve().as_uri())
        part = {"type": "video_url", "video_url": {"url": url}, "uuid": cache_key(spec, content, None, None)}
        n = spec.server_frames
        return Prepared((part,), {"min_frames": n, "max_frames": n} if n else None, None, None)
    vr = decord.VideoReader(str(spec.clip), ctx=decord.cpu(0))
    frames, idx, fps = _sample(vr, spec)
    w, h = spec.frame_size or (frames.shape[2], frames.shape[1])
    if spec.processor is not None:
        w, h = processed_size(spec.processor, len(idx), h, w)
    if (w, h) != (frames.shape[2], frames.shape[1]):
        shrink = w * h < frames.shape[1] * frames.shape[2]
        frames = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
                           for f in frames])
    url = "data:video/jpeg;base64," + ",".join(_encode(f, ".jpg") for f in frames)
    part = {"type": "video_url", "video_url": {"url": url}, "uuid": cache_key(spec, content, (w, h), idx)}
    media_io = {"fps": fps, "frames_indices": idx, "total_num_frames": len(vr), "duration": len(vr) / fps,
                "num_frames": len(idx)}
    return Prepared((part,), media_io, idx, [w, h])
