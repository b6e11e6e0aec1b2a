"""Per-model-family request profiles, shared by `serve` (media limits) and `measure` (how a
clip is put into a request).

- Qwen-VL family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): the clip as one `video_url` part; the
  server decodes and samples it.
- SmolVLM / Idefics3 family: vLLM takes images only, so the client samples the frames and
  sends them as `image_url` parts with the text the model was trained with
  (`measure.ask.prompt`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Profile:
    name: str
    video_as: Literal["video", "frames"]

    def limit_mm_per_prompt(self, frames: int) -> dict[str, int]:
        return {"video": 1, "image": 1} if self.video_as == "video" else {"image": frames}


QWEN_VL = Profile("qwen-vl", "video")
IDEFICS3 = Profile("idefics3", "frames")
_BY_ARCHITECTURE = {"Idefics3ForConditionalGeneration": IDEFICS3, "SmolVLMForConditionalGeneration": IDEFICS3}


def profile_for(model: str) -> Profile:
    """The profile of a model dir (by its config's architecture) or hub id (by name)."""
    config = Path(model) / "config.json"
    if config.is_file():
        for arch in json.loads(config.read_text()).get("architectures", []):
            if arch in _BY_ARCHITECTURE:
                return _BY_ARCHITECTURE[arch]
        return QWEN_VL
    name = model.lower()
    return IDEFICS3 if ("smolvlm" in name or "idefics" in name) else QWEN_VL


def served_name(model: str) -> str:
    """The name clients use: a local directory's name, or the hub id as given."""
    path = Path(model)
    return path.name if path.is_dir() else model
