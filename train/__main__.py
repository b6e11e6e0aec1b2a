"""`python -m train`: a LoRA adapter on the language model, trained on plain and/or cued clips
with PEFT + transformers' Trainer, saved as a PEFT directory that `serve` loads unmerged.

Multi-GPU: `accelerate launch -m train ...` or `torchrun --nproc-per-node N -m train ...`
(data parallel through the same entry point; the effective batch stays --batch).
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from core import runfiles
from core.cli import comma_list
from core.cli import main as run_cli
from core.defaults import ADAPTERS_DIR, DATASET, FRAMES, GPU_MODEL
from core.files import atomic_write, sha256, write_json
from core.layout import AdapterLayout, DataLayout
from core.profiles import served_name
from core.runfiles import TrainArgs
from core.variants import PLAIN
from measure.prompt import AnswerFormat

app = typer.Typer(add_completion=False, help=__doc__)
LLM_ONLY = r".*language_model.*\.({})$"


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@app.command()
def main(
    model: Annotated[str, typer.Option(help="Base model dir or hub id.")] = GPU_MODEL,
    data: Annotated[Path, typer.Option(help="Prepared dataset directory.")] = DATASET,
    out: Annotated[Path, typer.Option(help="Adapter directory to write.")] = ADAPTERS_DIR / "trained",
    variants: Annotated[str, typer.Option(help="Clip variants; each question is used once per variant.")] = PLAIN,
    rank: Annotated[int, typer.Option(help="LoRA r.")] = 64,
    alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 64,
    dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.05,
    targets: Annotated[str, typer.Option(help="Language-model projections to adapt (the vision tower stays frozen).")] = "q_proj,k_proj,v_proj,o_proj",
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine schedule).")] = 1e-4,
    warmup: Annotated[float, typer.Option(help="Warm-up share of the steps.")] = 0.03,
    epochs: Annotated[float, typer.Option(help="Epochs.")] = 1.0,
    batch: Annotated[int, typer.Option(help="Effective batch (per-device x accumulation x devices).")] = 32,
    per_device_batch: Annotated[int, typer.Option(help="Examples per device per step.")] = 4,
    frames: Annotated[int, typer.Option(help="Frames per clip (as served: serve --frames).")] = FRAMES,
    answer_format: Annotated[AnswerFormat, typer.Option(help="text or letters, as measure asks.")] = "text",
    max_steps: Annotated[int, typer.Option(help="Stop after N optimizer steps (-1: the epochs decide).")] = -1,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed for LoRA init and data order.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in OUT/checkpoints.")] = False,
) -> None:
    """Train a LoRA adapter; writes the adapter, train_args.json and the loss curve to OUT."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments, set_seed

    from train.data import Collator, examples

    chosen = list(comma_list(variants))
    train_set = examples(data, chosen, "train", answer_format)
    gpu = torch.cuda.is_available()
    accumulation = max(1, batch // (per_device_batch * _world_size()))
    set_seed(seed)
    processor = AutoProcessor.from_pretrained(model)
    base = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.bfloat16 if gpu else torch.float32)
    lora = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                      target_modules=LLM_ONLY.format("|".join(t.strip() for t in targets.split(","))))
    peft_model = get_peft_model(base, lora)
    if gpu:
        peft_model.enable_input_require_grads()
    checkpoints = AdapterLayout(out).checkpoints
    args = TrainingArguments(
        output_dir=str(checkpoints), per_device_train_batch_size=per_device_batch,
        gradient_accumulation_steps=accumulation, learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=warmup,  # a float < 1: a share of the steps
        num_train_epochs=epochs, max_steps=max_steps, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1,
        save_strategy="steps", save_steps=save_steps, save_total_limit=2, bf16=gpu, gradient_checkpointing=gpu,
        remove_unused_columns=False, report_to=[], dataloader_num_workers=0, seed=seed, disable_tqdm=False,
    )
    trainer = Trainer(model=peft_model, args=args, train_dataset=train_set,  # type: ignore[arg-type]
                      data_collator=Collator(processor, frames, answer_format))  # type: ignore[arg-type]
    last = _last_checkpoint(checkpoints) if resume else None
    if resume and last is None:
        typer.secho(f"no checkpoint in {checkpoints}: starting from step 0", fg="yellow", err=True)
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    if trainer.is_world_process_zero():
        _save(peft_model, out, served_name(model), trainer.state.log_history, TrainArgs(
            model=model, data=str(data), variants=chosen, examples=len(train_set), rank=rank, alpha=alpha,
            dropout=dropout, targets=targets, lr=lr, warmup=warmup, epochs=epochs, batch=batch,
            per_device_batch=per_device_batch, gradient_accumulation_steps=accumulation, world_size=_world_size(),
            frames=frames, answer_format=answer_format, max_steps=max_steps, seed=seed,
            precision="bf16" if gpu else "fp32", gradient_checkpointing=gpu, steps=trainer.state.global_step,
            resumed_from=str(last) if last else None, train_loss=result.training_loss,
            dataset_manifest_sha256=sha256(DataLayout(data).manifest), command=sys.argv,
        ))
        typer.echo(f"adapter: {out} ({trainer.state.global_step} steps, mean loss {result.training_loss:.4f})")


def _last_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1])) if folder.is_dir() else []
    return found[-1] if found else None


def _save(peft_model, out: Path, base_name: str, history: list[dict], train_args: TrainArgs) -> None:
    """The adapter (never merged), named for its base's served name, with its run record.
    Written into a temp folder, then each file renamed into place: never half an adapter."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", dir=out))
    try:
        peft_model.save_pretrained(tmp)
        config = AdapterLayout(tmp).config
        cfg = json.loads(config.read_text())
        cfg["base_model_name_or_path"] = base_name  # how `serve` finds the adapters of a model
        write_json(config, cfg)
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    layout = AdapterLayout(out)
    runfiles.write(layout.train_args, train_args)
    rows = [(h["step"], h["loss"], h.get("learning_rate")) for h in history if "loss" in h]
    buf = io.StringIO()
    csv.writer(buf).writerows([("step", "loss", "learning_rate"), *rows])
    atomic_write(layout.loss_csv, buf.getvalue())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([r[0] for r in rows], [r[1] for r in rows], marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (answer tokens)")
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(layout.loss_png, png.getvalue())


if __name__ == "__main__":
    run_cli(app)
