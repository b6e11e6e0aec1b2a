"""Per-model-family request profiles, shared by `serve` (media limits) and `measure` (how a
clip is put into a request).

- Qwen-VL family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): the clip as one `video_url` part; the
  server decodes and samples it.
- SmolVLM / Idefics3 family: vLLM takes images only, so the client samples the frames and
  sends them as `image_url` parts with the text the model was trained with
  (`measure.ask.prompt`).
- A reasoning model (Qwen3-VL-*-Thinking; a local model whose chat template opens a think
  block) also names vLLM's reasoning parser for it: `serve` starts vLLM with it and `measure`
  keeps the thinking apart from the answer (`core.ask.AskConfig.reasoning`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Profile:
    name: str
    video_as: Literal["video", "frames"]
    reasoning_parser: str | None = None  # vLLM's --reasoning-parser for a reasoning model

    def limit_mm_per_prompt(self, frames: int) -> dict[str, int]:
        return {"video": 1, "image": 1} if self.video_as == "video" else {"image": frames}


QWEN_VL = Profile("qwen-vl", "video")
IDEFICS3 = Profile("idefics3", "frames")
_BY_ARCHITECTURE = {"Idefics3ForConditionalGeneration": IDEFICS3, "SmolVLMForConditionalGeneration": IDEFICS3}


def profile_for(model: str) -> Profile:
    """The profile of a model dir (by its config's architecture and its chat template) or hub
    id (by name)."""
    config = Path(model) / "config.json"
    if config.is_file():
        for arch in json.loads(config.read_text()).get("architectures", []):
            if arch in _BY_ARCHITECTURE:
                return _BY_ARCHITECTURE[arch]
        return replace(QWEN_VL, reasoning_parser="qwen3") if "<think>" in chat_template(Path(model)) else QWEN_VL
    name = model.lower()
    if "smolvlm" in name or "idefics" in name:
        return IDEFICS3
    return replace(QWEN_VL, reasoning_parser="qwen3") if "thinking" in name else QWEN_VL


def chat_template(folder: Path) -> str:
    """A local model's chat template, as transformers keeps it (its own file, or in its tokenizer's config)."""
    own = folder / "chat_template.jinja"
    if own.is_file():
        return own.read_text()
    config = folder / "tokenizer_config.json"
    return str(json.loads(config.read_text()).get("chat_template") or "") if config.is_file() else ""


def served_name(model: str) -> str:
    """The name clients use: a local directory's name, or the hub id as given."""
    path = Path(model)
    return path.name if path.is_dir() else model
