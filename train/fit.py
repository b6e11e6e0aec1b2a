"""Training every weight of a small model on examples encoded once, before training (a clip's
pixels kept once for all its questions), batches padded from memory, transformers' Trainer
(seeded, cosine schedule) shown with the project's progress bar."""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from core import progress
from core.frames import FrameSpec
from train.data import IGNORE, Collator, examples

Encoded = dict[str, torch.Tensor]
PADDED = {"input_ids": None, "attention_mask": 0, "mm_token_type_ids": 0, "labels": IGNORE}  # None: the pad id


def encoded(data: Path, splits: Sequence[str], model_dir: Path, spec: FrameSpec) -> list[Encoded]:
    """Every question of `splits` on its plain clip, as measure asks it (`train.data`)."""
    from transformers import AutoProcessor

    collator = Collator(AutoProcessor.from_pretrained(model_dir), spec, str(model_dir))
    collator.frames = functools.lru_cache(maxsize=1)(collator.frames)  # a clip's questions come together
    todo = [ex for split in splits for ex in examples(data, ["plain"], split)]
    pixels: dict[Path, torch.Tensor] = {}
    out = []
    with progress.bar("encoding", len(todo), "examples") as advance:
        for ex in todo:
            enc = collator([ex])
            enc["pixel_values_videos"] = pixels.setdefault(ex.clip, enc["pixel_values_videos"])
            out.append(enc)
            advance()
    return out


def collate(rows: list[Encoded], pad_id: int) -> Encoded:
    """Right-padded batch of single-example encodings."""
    n = max(r["input_ids"].shape[1] for r in rows)
    batch = {}
    for key, fill in PADDED.items():
        value = pad_id if fill is None else fill
        batch[key] = torch.stack([_padded(r[key][0], n, value) for r in rows])
    batch["pixel_values_videos"] = torch.cat([r["pixel_values_videos"] for r in rows])
    batch["video_grid_thw"] = torch.cat([r["video_grid_thw"] for r in rows])
    return batch


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
