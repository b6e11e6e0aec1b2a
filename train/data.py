"""Training examples: each train question once per clip variant, asked exactly as `measure`
asks it (same prompt text and chat template, the frames its frame spec chooses, by the same
function: `core.frames.load`; an image variant's first frame as an image, `core.frames.still`;
blind, the text alone), with the loss on the answer tokens only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from core import prompt
from core.ask import AnswerFormat
from core.errors import DataError
from core.frames import NEEDS_PROCESSOR, FrameSpec, load, still
from core.layout import DataLayout
from core.records import Question, read_questions
from core.variants import IMAGE_VARIANTS

IGNORE = -100


@dataclass(frozen=True)
class Example:
    question: Question
    clip: Path | None  # None: blind, the question asked without media
    answer: str  # the reply the model should give: the choice string, or its letter
    image: bool = False  # the clip sent as one image (its first frame), as measure sends an image variant

    @property
    def media(self) -> list[dict]:
        """The chat's media part, as measure places it: a video, an image, or none."""
        return [] if self.clip is None else [{"type": "image" if self.image else "video"}]


def examples(data: Path, variants: list[str], split: str = "train", fmt: AnswerFormat = "text") -> list[Example]:
    layout = DataLayout(data)
    qs = [q for q in read_questions(layout.questions) if q.split == split]
    if not qs:
        raise DataError(f"{layout.questions}: no questions in split {split!r}")
    out = []
    for v in variants:
        for q in qs:
            clip = layout.asked_with(v, q.video_id)
            if clip is not None and not clip.is_file():
                raise DataError(f"{clip}: clip missing (prepare the dataset with --variants {','.join(variants)})")
            answer = prompt.targets(q.choices, fmt)[q.choices.index(q.answer)]
            out.append(Example(q, clip, answer, v in IMAGE_VARIANTS))
    return out


def load_frames(clip: Path, spec: FrameSpec, model: str):
    """The frames the model sees (`core.frames.load`, as measure sends them; the model's own
    processor sizes them) with the metadata Qwen3-VL needs for its frame timestamps."""
    s = load(clip, spec, processor=model if spec.sampling in NEEDS_PROCESSOR else None)
    from transformers.video_utils import VideoMetadata

    meta = VideoMetadata(total_num_frames=s.total, fps=s.fps, frames_indices=s.indices, duration=s.total / s.fps)
    return s.pixels, meta


class Collator:
    """Batches examples through the model's own processor; labels mask all but the answer."""

    def __init__(self, processor, spec: FrameSpec, model: str, fmt: AnswerFormat = "text"):
        self.processor = processor
        self.spec = spec
        self.model = model
        self.fmt = fmt
        self.tokenizer = processor.tokenizer

    def frames(self, clip: Path):
        """(pixels, metadata) of a clip as the model sees it (`load_frames`)."""
        return load_frames(clip, self.spec, self.model)

    def texts(self, ex: Example) -> tuple[str, str]:
        """(prompt, prompt + answer) in the chat template, its media as placeholder parts."""
        messages = prompt.messages(ex.question, self.fmt, ex.media)
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text, text + ex.answer

    def pixels(self, batch: list[Example]) -> dict:
        """The processor's media arguments for `batch`, in the order the chats name them."""
        images = [still(ex.clip) for ex in batch if ex.clip is not None and ex.image]
        videos = [self.frames(ex.clip) for ex in batch if ex.clip is not None and not ex.image]
        out: dict = {"images": images} if images else {}
        if videos:
            out.update(videos=[v for v, _ in videos], video_metadata=[m for _, m in videos], do_sample_frames=False)
        return out

    def __call__(self, batch: list[Example]) -> dict[str, torch.Tensor]:
        full = [self.texts(ex)[1] for ex in batch]
        self.tokenizer.padding_side = "right"
        enc = self.processor(text=full, padding=True, return_tensors="pt", **self.pixels(batch))
        labels = torch.full_like(enc["input_ids"], IGNORE)
        lengths = enc["attention_mask"].sum(dim=1)
        for row, ex in enumerate(batch):
            answer = self.tokenizer(ex.answer, add_special_tokens=False)["input_ids"]
            end = int(lengths[row])
            labels[row, end - len(answer) : end] = torch.tensor(answer)
        enc["labels"] = labels
        return dict(enc)
