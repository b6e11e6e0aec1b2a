"""Training examples: each train question once per clip variant, asked exactly as `measure`
asks it (same prompt text and chat template, the frames its frame spec chooses, by the same
function: `core.frames.load`; an image variant's first frame as an image, `core.frames.still`;
blind, the text alone), with the loss on the answer tokens only: a multiple-choice question's
choice (or its letter), an open question's reference answer. Several datasets mix in chosen
ratios (`mixture`); examples whose text runs long can be left out (`shorter_than`)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from core import prompt
from core.ask import AnswerFormat
from core.errors import DataError
from core.frames import NEEDS_PROCESSOR, FrameSpec, load, still
from core.layout import DataLayout
from core.records import OPEN, Question, read_questions
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
            answer = q.answer if q.type == OPEN else prompt.targets(q.choices, fmt)[q.choices.index(q.answer)]
            out.append(Example(q, clip, answer, v in IMAGE_VARIANTS))
    return out


@dataclass(frozen=True)
class Mixed:
    """A mixture's examples and, per dataset, how many it gave of how many it had."""

    examples: list[Example]
    taken: dict[str, int]
    available: dict[str, int]

    def shares(self) -> dict[str, float]:
        total = sum(self.taken.values())
        return {name: n / total for name, n in self.taken.items()}


def mixture(ratios: dict[Path, float], variants: list[str], split: str, fmt: AnswerFormat, seed: int) -> Mixed:
    """Examples of several datasets in the declared ratios (by examples): as many as the
    datasets allow without repeating one (the dataset shortest for its share sets the size),
    each dataset's drawn at random without replacement, seeded."""
    if not ratios or any(r <= 0 for r in ratios.values()):
        raise DataError(f"--mix {ratios}: give each dataset a share above 0")
    total = sum(ratios.values())
    pools = {path: examples(path, variants, split, fmt) for path in ratios}
    size = min(len(pool) / (ratios[path] / total) for path, pool in pools.items())
    taken: dict[str, int] = {}
    out: list[Example] = []
    for path, pool in pools.items():
        k = min(len(pool), round(size * ratios[path] / total))
        out += random.Random(f"{seed}/mix/{path}").sample(pool, k)
        taken[str(path)] = k
    return Mixed(out, taken, {str(p): len(pool) for p, pool in pools.items()})


def text_tokens(tokenizer, ex: Example, fmt: AnswerFormat) -> int:
    """An example's text in tokens: its question as asked and its answer (the media left out)."""
    return len(tokenizer(prompt.question_text(ex.question, fmt) + "\n" + ex.answer, add_special_tokens=False).input_ids)


def shorter_than(
    found: list[Example], tokenizer, fmt: AnswerFormat, most: int | None
) -> tuple[list[Example], list[int], list[str]]:
    """(the examples of at most `most` text tokens, every example's length, the ids left out)."""
    lengths = [text_tokens(tokenizer, ex, fmt) for ex in found]
    if most is None:
        return found, lengths, []
    kept = [ex for ex, n in zip(found, lengths) if n <= most]
    return kept, lengths, [ex.question.id for ex, n in zip(found, lengths) if n > most]


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

    def target(self, ex: Example) -> str:
        """What the model learns to reply: the answer, and for an open question the end of its turn
        too (a free reply must learn to stop; a choice is ended by the constraint)."""
        return ex.answer + (self.tokenizer.eos_token if ex.question.type == OPEN else "")

    def texts(self, ex: Example) -> tuple[str, str]:
        """(prompt, prompt + reply) in the chat template, its media as placeholder parts."""
        messages = prompt.messages(ex.question, self.fmt, ex.media)
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text, text + self.target(ex)

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
            answer = self.tokenizer(self.target(ex), add_special_tokens=False)["input_ids"]
            end = int(lengths[row])
            labels[row, end - len(answer) : end] = torch.tensor(answer)
        enc["labels"] = labels
        return dict(enc)
