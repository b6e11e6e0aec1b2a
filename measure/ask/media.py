"""The media part of a request, prepared once per clip, off the event loop.

Modes for video families (`--media`):
- `frames` (the default): the client decodes the clip once and takes the frames the run's
  frame spec chooses (`core.frames.load`, the function training uses), resized to exactly
  what the served model's video processor would produce (so the server's own resize is a
  no-op), JPEG-encodes them and sends one `video_url` part
  `data:video/jpeg;base64,<f1>,<f2>,...` with `media_io_kwargs.video` = {fps,
  frames_indices, total_num_frames, duration, num_frames} so the model's timestamps describe
  the original clip (server: --trust-request-mm-kwargs);
- `data`: the whole mp4 inline; `file`: a file:// URL (server: --allowed-local-media-path);
  the server samples the spec's frame count, asked per request.
Image-only families (SmolVLM) always get client-sampled frames as images.

Every part carries a `uuid`: the clip's content hash plus everything that decides the
pixels sent (mode, frames, size, encoding), so vLLM's multimodal processor cache hits for
every question, model and adapter of one clip and never serves a stale one.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from core.ask import Media
from core.files import sha256
from core.frames import FrameSpec, load, still, video_processor
from core.procs import die_with
from core.prompt import frame_label, video_intro
from core.variants import IMAGE_VARIANTS
from measure.ask.framestore import FrameStore

JPEG_QUALITY = 90
MEDIA_VERSION = 2  # bump when the pixels sent for the same settings change: old cache keys must not match


@dataclass(frozen=True)
class MediaSpec:
    """Everything that decides what is sent for one clip (equal specs: equal media)."""

    clip: Path
    variant: str
    mode: Media
    video_as: Literal["video", "frames"]  # the model family's way (core.profiles)
    frames: FrameSpec
    processor: str | None = None  # a model dir (or hub id) whose video processor samples and sizes the frames


@dataclass(frozen=True)
class Prepared:
    """The content parts for a clip, per-request media kwargs, and what was sent."""

    parts: tuple[dict, ...]
    media_io: dict[str, Any] | None  # media_io_kwargs["video"] for this request
    frame_indices: list[int] | None  # frames sent (client-sampled), None when the server samples
    frame_size: list[int] | None  # [W, H] of the frames sent, None when the server decides
    from_store: bool = False  # read from the frame store, not decoded


# What every media worker needs, imported once in the fork server the workers are forked from
# (a few seconds of imports, paid once per process, however many pools it starts).
WORKER_MODULES = ["measure.ask.media", "transformers.video_processing_utils"]


def _worker_init(run: int, processors: tuple[str, ...]) -> None:
    """In each media worker process: leave Ctrl-C to the run's process (which stops cleanly),
    on Linux end with it (a killed run leaves no worker behind: then its fork server ends
    too), and load the video processors now rather than while the first clips wait."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with(run)
    for name in processors:
        video_processor(name)


@contextlib.contextmanager
def worker_pool(workers: int, processors: Iterable[str | None] = ()) -> Iterator[ProcessPoolExecutor]:
    """A pool of `workers` processes preparing media, started (processors loaded) before it is
    yielded, so the first requests do not wait for it. Workers are forked from a fork server
    that has imported `WORKER_MODULES`, started with the first pool of the process."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_MODULES)
    pool = ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_worker_init,
        initargs=(os.getpid(), tuple(sorted({p for p in processors if p}))),
    )
    try:
        for started in [pool.submit(os.getpid) for _ in range(workers)]:
            started.result()
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class Workers:
    """A `worker_pool` started on first use, so a run that decodes nothing (every clip in the
    frame store, whole clips sent, the blind control) starts no worker process."""

    def __init__(self, workers: int, processors: Iterable[str | None] = ()) -> None:
        self._args = (workers, tuple(processors))
        self._stack = contextlib.ExitStack()
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = self._stack.enter_context(worker_pool(*self._args))
            return self._pool

    @property
    def started(self) -> bool:
        return self._pool is not None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


PROCESSOR_CONFIGS = ("video_preprocessor_config.json", "preprocessor_config.json", "processor_config.json")


def find_processor(model: str) -> str | None:
    """`model` when it has a video processor: a local model dir holding a processor config, or
    a hub id whose processor loads (from the local cache or the hub); else None."""
    if Path(model).is_dir():
        return model if any((Path(model) / name).is_file() for name in PROCESSOR_CONFIGS) else None
    try:
        video_processor(model)
    except Exception:  # offline, unknown, not a video model: the caller says what to do
        return None
    return model


def _encode(frame: np.ndarray, ext: str) -> str:
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(frame[:, :, ::-1]), params)
    if not ok:
        raise ValueError(f"{ext} encoding failed")
    return base64.b64encode(buf.tobytes()).decode()


def cache_key(spec: MediaSpec, content: str, size: tuple[int, int] | None, indices: list[int] | None) -> str:
    """A key that changes whenever the pixels sent change."""
    server = None if spec.mode == "frames" else spec.frames.frames  # frames the server samples
    what = (
        f"{MEDIA_VERSION}|{content}|{spec.variant}|{spec.mode}|{spec.video_as}|{size}|{indices}|{server}|{JPEG_QUALITY}"
    )
    return hashlib.sha256(what.encode()).hexdigest()[:32]


def _image(spec: MediaSpec, content: str) -> Prepared:
    """One frame (the single-frame control): an image."""
    frame = still(spec.clip)
    size = (frame.shape[1], frame.shape[0])
    part = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + _encode(frame, ".png")},
        "uuid": cache_key(spec, content, size, [0]),
    }
    return Prepared((part,), None, [0], list(size))


def _images(spec: MediaSpec, content: str) -> Prepared:
    """Image-only families: the sampled frames as images, with the text they were trained with."""
    s = load(spec.clip, spec.frames, spec.processor)
    parts: list[dict] = [{"type": "text", "text": video_intro(len(s.indices), s.total / s.fps)}]
    for i, frame in zip(s.indices, s.pixels):
        parts.append({"type": "text", "text": frame_label(i / s.fps)})
        parts.append(
            {
                "type": "image_url",
                "image_url": {"url": "data:image/png;base64," + _encode(frame, ".png")},
                "uuid": cache_key(spec, content, s.size, [i]),
            }
        )
    return Prepared(tuple(parts), None, s.indices, list(s.size))


def _whole(spec: MediaSpec, content: str) -> Prepared:
    """The clip itself (data: inline, file: a URL); the server samples the spec's frame count."""
    url = (
        "data:video/mp4;base64," + base64.b64encode(spec.clip.read_bytes()).decode()
        if spec.mode == "data"
        else spec.clip.resolve().as_uri()
    )
    part = {"type": "video_url", "video_url": {"url": url}, "uuid": cache_key(spec, content, None, None)}
    n = spec.frames.frames
    return Prepared((part,), {"min_frames": n, "max_frames": n}, None, None)


def _frames(spec: MediaSpec, content: str) -> Prepared:
    """The frames the spec chooses, sized as the model's processor would, as one JPEG video."""
    s = load(spec.clip, spec.frames, spec.processor, sizer=spec.processor)
    url = "data:video/jpeg;base64," + ",".join(_encode(f, ".jpg") for f in s.pixels)
    part = {"type": "video_url", "video_url": {"url": url}, "uuid": cache_key(spec, content, s.size, s.indices)}
    media_io = {
        "fps": s.fps,
        "frames_indices": s.indices,
        "total_num_frames": s.total,
        "duration": s.total / s.fps,
        "num_frames": len(s.indices),
    }
    return Prepared((part,), media_io, s.indices, list(s.size))


def _decoded(spec: MediaSpec, content: str) -> Prepared:
    if spec.variant in IMAGE_VARIANTS:
        return _image(spec, content)
    return _images(spec, content) if spec.video_as == "frames" else _frames(spec, content)


@functools.cache
def processor_identity(processor: str | None) -> str | None:
    """A processor's name, with its configuration files' hashes for a local model dir (read
    once per process, not once per clip)."""
    if processor and Path(processor).is_dir():
        return processor + "|" + "|".join(sha256(Path(processor) / n) or "-" for n in PROCESSOR_CONFIGS)
    return processor


def store_key(spec: MediaSpec, content: str) -> str:
    """The frame-store key of a clip's decoded media: its content and everything that decides
    the pixels (the frame spec, the processor and its configuration, the encoder)."""
    what = (
        f"{MEDIA_VERSION}|{content}|{spec.variant}|{spec.mode}|{spec.video_as}|{spec.frames!r}|"
        f"{processor_identity(spec.processor)}|"
        f"{JPEG_QUALITY}|{cv2.__version__}"
    )
    return hashlib.sha256(what.encode()).hexdigest()


def _content(spec: MediaSpec) -> str:
    try:
        st = spec.clip.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{spec.clip}: clip missing") from None
    return _hashed(spec.clip, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=65536)
def _hashed(clip: Path, size: int, mtime_ns: int) -> str:
    """A clip's content hash, read once per process while the file is unchanged."""
    content = sha256(clip)
    if content is None:
        raise FileNotFoundError(f"{clip}: clip missing")
    return content


def _whole_clip(spec: MediaSpec) -> bool:
    """The server decodes this clip itself: nothing to decode or keep here."""
    return spec.mode != "frames" and spec.video_as == "video" and spec.variant not in IMAGE_VARIANTS


def ready(spec: MediaSpec, store: FrameStore | None = None) -> Prepared | None:
    """The media for one clip when it needs no decoding (a whole clip the server decodes, or
    one `store` holds), else None: cheap enough for a thread."""
    content = _content(spec)
    if _whole_clip(spec):
        return _whole(spec, content)
    kept = store.get(store_key(spec, content)) if store is not None else None
    return None if kept is None else Prepared(**kept | {"parts": tuple(kept["parts"]), "from_store": True})


def needs_decoding(specs: Iterable[MediaSpec], store: FrameStore | None) -> bool:
    """Whether any of these clips must be decoded here (a clip of the client's frames that
    `store` holds no entry for): a missing clip or an entry found corrupt later decode too."""
    for spec in specs:
        if _whole_clip(spec) or not spec.clip.is_file():
            continue
        if store is None or not store.path(store_key(spec, _content(spec))).is_file():
            return True
    return False


def decode(spec: MediaSpec, store: FrameStore | None = None) -> Prepared:
    """The media for one clip decoded (in a worker process), and written to `store`."""
    content = _content(spec)
    prepared = _decoded(spec, content)
    if store is not None:
        store.put(store_key(spec, content), asdict(prepared))
    return prepared


def prepare(spec: MediaSpec, store: FrameStore | None = None) -> Prepared:
    """The media for one clip: `ready`, else decoded; raises if the clip cannot be read."""
    return ready(spec, store) or decode(spec, store)
