"""How big the tiny Qwen3-VLs are (`serve.tiny` builds them): a module without torch, so
command lines can offer the shapes by name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """How big a tiny Qwen3-VL is: its language model, vision tower and frame size."""

    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    vision_hidden: int = 64
    vision_depth: int = 2
    vision_heads: int = 2
    max_video_tokens: int = 64  # vision tokens per frame pair at most: the frames' size as sent
    prompt_words: bool = False  # a tokenizer that also knows the prompt's words (`prompt_lines`)


TINY = Shape()
# The organism (`python -m train organism`): the embedded shape made deeper, with smaller frames.
ORGANISM = Shape(layers=4, intermediate=384, max_video_tokens=24, prompt_words=True)
SHAPES: dict[str, Shape] = {"organism": ORGANISM, "tiny": TINY}  # by name: `train organism --shape`
