"""decord, always loaded after PyAV: decord's wheel bundles FFmpeg libraries of its own, and
when they are loaded first they shadow PyAV's in the process, so PyAV's VP9 encoder then
refuses its options (avcodec_open2 returns EINVAL). Import decord from here, never directly."""

from __future__ import annotations

import av  # noqa: F401  (first: see above)
import decord

__all__ = ["decord"]
