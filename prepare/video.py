"""Clip I/O: decord in, PyAV (H.264, yuv420p) out, atomic writes."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Literal, get_args

import av
import numpy as np

from core.decoding import decord
from core.errors import DataError
from core.files import atomic_path


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """All frames as uint8 RGB [T, H, W, 3] and the clip's fps; DataError if unreadable."""
    if not path.is_file():
        raise DataError(f"{path}: clip missing")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: clip is empty (0 bytes)")
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
        n = len(vr)
        if n == 0:
            raise DataError(f"{path}: clip has no frames")
        frames = vr.get_batch(list(range(n))).asnumpy()
        fps = float(vr.get_avg_fps())
    except DataError:
        raise
    except Exception as e:  # decord raises bare DECORDError/RuntimeError for bad containers
        raise DataError(f"{path}: not a readable video ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return frames, fps


def probe_video(path: Path) -> tuple[int, float, int, int]:
    """(frames, fps, height, width) without decoding the whole clip."""
    frames, fps = 0, 0.0
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
        frames, fps = len(vr), float(vr.get_avg_fps())
        h, w, _ = vr[0].shape
    except Exception as e:  # decord raises bare errors for bad containers
        raise DataError(f"{path}: not a readable video ({type(e).__name__})") from None
    return frames, fps, h, w


def pad_even(frames: np.ndarray) -> np.ndarray:
    """Pad bottom/right by 0 or 1 px so H and W are even (yuv420p)."""
    dy, dx = frames.shape[1] % 2, frames.shape[2] % 2
    if dy or dx:
        frames = np.pad(frames, ((0, 0), (0, dy), (0, dx), (0, 0)), mode="edge")
    return frames


def encode(path: Path, frames: np.ndarray, fps: float, codec: str = "libx264", **options: str) -> None:
    """Encode frames [T, H, W, 3] (even H, W) at `fps`, the same bytes on every run; written to a
    temp file, then renamed."""
    fmt = {"libx264": "mp4", "libvpx-vp9": "webm"}[codec]
    if codec == "libx264":  # without it x264's asm paths vary the bytes between runs on one machine
        options.setdefault("x264-params", "cpu-independent=1")
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


Encoding = Literal["ours", "study"]
ENCODINGS: dict[str, str] = {  # how a clip is written, in words (kept in each variant's settings)
    "ours": "H.264 yuv420p crf 18 preset veryfast at the source fps, padded to even size",
    "study": "H.264 yuv420p crf 18 (x264's default preset) at 12 fps, cropped to even size: "
    "as the study's annotate.py wrote its clips",
}
assert set(ENCODINGS) == set(get_args(Encoding))
STUDY_FPS = 12.0


def crop_even(frames: np.ndarray) -> np.ndarray:
    """The last row/column dropped where H/W is odd (the study's way to yuv420p)."""
    return frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]


def write_mp4(path: Path, frames: np.ndarray, fps: float, encoding: Encoding = "ours") -> None:
    """H.264 yuv420p mp4 as `encoding` says (`ENCODINGS`)."""
    if encoding == "study":
        encode(path, crop_even(frames), STUDY_FPS, "libx264", crf="18")
    else:
        encode(path, pad_even(frames), fps, "libx264", crf="18", preset="veryfast")
