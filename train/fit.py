"""Training every weight of a small model on examples encoded once, before training (a clip's
pixels kept once for all its questions), batches padded from memory, transformers' Trainer
(seeded, cosine schedule) shown with the project's progress bar."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from core import progress
from core.frames import FrameSpec
from train.data import IGNORE, Collator, Example, examples

Encoded = dict[str, torch.Tensor]
PADDED = {"input_ids": None, "attention_mask": 0, "mm_token_type_ids": 0, "labels": IGNORE}  # None: the pad id


def encoded(
    data: Path, splits: Sequence[str], model_dir: Path, spec: FrameSpec, object_weight: int = 1
) -> list[Encoded]:
    """Every question of `splits` on its plain clip, as measure asks it (`train.data`), an
    object question `object_weight` times (the same encoding); a clip's video is decoded and
    processed once, for its first question (`same_clip`)."""
    from transformers import AutoProcessor

    collator = Collator(AutoProcessor.from_pretrained(model_dir), spec, str(model_dir))
    todo = [ex for split in splits for ex in examples(data, ["plain"], split)]
    first: dict[Path, Encoded] = {}
    out = []
    with progress.bar("encoding", len(todo), "examples") as advance:
        for ex in todo:
            row = same_clip(first[ex.clip], collator, ex) if ex.clip in first else collator([ex])
            first.setdefault(ex.clip, row)
            out += [row] * (object_weight if ex.question.type == "object" else 1)
            advance()
    return out


def same_clip(first: Encoded, collator: Collator, ex: Example) -> Encoded:
    """What `collator([ex])` gives for another question on the clip `first` encodes: the chat
    text tokenized alone, its video placeholder replaced by `first`'s expanded video tokens
    (timestamps and video pads), the answer's tokens labelled, the pixels shared."""
    tok = collator.tokenizer
    start, pad, end = tok.convert_tokens_to_ids(["<|vision_start|>", "<|video_pad|>", "<|vision_end|>"])
    ids = first["input_ids"][0].tolist()
    video = slice(ids.index(start) + 1, len(ids) - ids[::-1].index(end) - 1)
    text = tok(collator.texts(ex)[1], add_special_tokens=False)["input_ids"]
    at = next(i for i in range(len(text)) if text[i : i + 3] == [start, pad, end]) + 1
    row = torch.tensor([text[:at] + ids[video] + text[at + 1 :]])
    types = torch.zeros_like(row)
    types[0, at : at + video.stop - video.start] = first["mm_token_type_ids"][0, video]
    labels = torch.full_like(row, IGNORE)
    answer = tok(ex.answer, add_special_tokens=False)["input_ids"]
    labels[0, row.shape[1] - len(answer) :] = torch.tensor(answer)
    return {
        "input_ids": row,
        "attention_mask": torch.ones_like(row),
        "mm_token_type_ids": types,
        "pixel_values_videos": first["pixel_values_videos"],
        "video_grid_thw": first["video_grid_thw"],
        "labels": labels,
    }


def collate(rows: list[Encoded], pad_id: int) -> Encoded:
    """Right-padded batch of single-example encodings, with the positions the loss needs."""
    n = max(r["input_ids"].shape[1] for r in rows)
    batch = {}
    for key, fill in PADDED.items():
        value = pad_id if fill is None else fill
        batch[key] = torch.stack([_padded(r[key][0], n, value) for r in rows])
    batch["pixel_values_videos"] = torch.cat([r["pixel_values_videos"] for r in rows])
    batch["video_grid_thw"] = torch.cat([r["video_grid_thw"] for r in rows])
    batch["logits_to_keep"], batch["shift_labels"] = answered(batch["labels"])
    return batch


def answered(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the positions whose next token is labelled in some row, those next tokens per row): the
    model computes logits there alone (`logits_to_keep`) and the loss on them (`shift_labels`),
    the same loss as on every position, without the vocabulary's logits for the prompt's ~160
    tokens (about a twentieth of a CPU step)."""
    following = labels[:, 1:]
    keep = (following != IGNORE).any(0).nonzero().flatten()
    return keep, following[:, keep]


@contextlib.contextmanager
def patches_as_matmul(model) -> Iterator[None]:
    """The vision tower's patch embedding (a Conv3d whose kernel is its stride) computed as the
    matrix product it is: the same weights and result, about a sixth of a CPU step less
    (oneDNN's Conv3d backward is slow at this size)."""
    embed = model.model.visual.patch_embed
    proj = embed.proj

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        flat = hidden_states.reshape(-1, proj.weight[0].numel()).to(proj.weight.dtype)
        return torch.nn.functional.linear(flat, proj.weight.reshape(proj.out_channels, -1), proj.bias)

    embed.forward = forward
    try:
        yield
    finally:
        del embed.forward


def _padded(row: torch.Tensor, n: int, value: int) -> torch.Tensor:
    return torch.nn.functional.pad(row, (0, n - row.shape[0]), value=value)


def train(model, rows: list[Encoded], steps: int, batch: int, lr: float, seed: int) -> list[float]:
    """Train all of `model`'s weights for `steps` optimizer steps; the loss after each step."""
    from transformers import Trainer, TrainingArguments

    from train import bar

    pad_id = model.config.text_config.pad_token_id
    with tempfile.TemporaryDirectory(prefix="organism-trainer.") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=batch,
            learning_rate=lr,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            max_steps=steps,
            weight_decay=0.01,
            max_grad_norm=1.0,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            remove_unused_columns=False,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            seed=seed,
            data_seed=seed,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=lambda b: collate(b, pad_id))
        with bar.shown(trainer, "training the organism"), patches_as_matmul(model):
            trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]
