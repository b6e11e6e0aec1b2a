"""`python -m train`: a LoRA adapter on the language model, trained on plain and/or cued clips
with PEFT + transformers' Trainer, saved as a PEFT directory that `serve` loads unmerged.
`python -m train organism`: the model organism, a tiny Qwen3-VL trained whole on the
synthetic world (built once, kept).

Multi-GPU: `accelerate launch -m train ...` or `torchrun --nproc-per-node N -m train ...`
(data parallel through the same entry point; the effective batch stays --batch).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import typer

from core import cli, runfiles
from core.ask import AnswerFormat
from core.cli import command, fail, group, main, option, warn
from core.defaults import ADAPTERS_DIR, DATASET, default_model
from core.files import atomic_write, plain_modes, sha256, write_json
from core.frames import FrameSpec
from core.layout import AdapterLayout, DataLayout
from core.profiles import served_name
from core.runfiles import TrainArgs
from core.variants import PLAIN, variant_names
from train.organism import OrganismOptions, build

app = cli.app(__doc__)
LLM_ONLY = r".*language_model.*\.({})$"
# The vision merger (and Qwen3-VL's deepstack mergers): the study's `tune_mm_mlp`.
MERGER = r".*visual\.(merger|deepstack_merger_list\.\d+)\.linear_fc[12]$"


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def shares(value: str | dict) -> dict[Path, float]:
    """`data/a:0.7,data/b:0.3` as {data/a: 0.7, data/b: 0.3}: datasets and their shares of the examples."""
    if isinstance(value, dict):
        return {Path(k): float(v) for k, v in value.items()}
    out = {}
    for item in cli.comma_list(value):
        path, sep, share = item.rpartition(":")
        try:
            out[Path(path)] = float(share)
        except ValueError:
            raise ValueError(f"{item!r}: use DATASET:SHARE, comma-separated, e.g. data/a:0.7,data/b:0.3") from None
        if not sep or not path or out[Path(path)] <= 0:
            raise ValueError(f"{item!r}: use DATASET:SHARE with a share above 0, e.g. data/a:0.7")
    return out


@dataclass
class TrainOptions:
    """Every option of `python -m train`."""

    model: str | None = option(None, "Base model dir or hub id.", shown="the tiny model on CPU, Qwen3-VL-2B on GPU")
    data: Path = option(DATASET, "Prepared dataset directory (multiple-choice or open questions).")
    mix: dict[Path, float] | None = option(
        None,
        "Train on a mixture instead of --data: datasets and their shares of the examples.",
        parser=shares,
        metavar="DATA:SHARE,...",
        shown="none",
    )
    max_text_tokens: int | None = option(
        None, "Leave out examples whose question and answer run longer (tokens), saying which.", shown="none"
    )
    out: Path = option(ADAPTERS_DIR / "trained", "Adapter directory to write.")
    variants: Sequence[str] = option(
        (PLAIN,),
        "Comma-separated clip variants; each question is used once per variant.",
        parser=variant_names,
        metavar="NAME,...",
    )
    rank: int = option(64, "LoRA r.")
    alpha: int = option(64, "LoRA alpha.")
    dropout: float = option(0.05, "LoRA dropout.")
    targets: str = option(
        "q_proj,k_proj,v_proj,o_proj", "Language-model projections to adapt (the vision tower stays frozen)."
    )
    tune_merger: bool = option(
        False,
        "Also put the LoRA on the vision merger, as the study's training script does (its tune_mm_mlp; "
        "its README says LLM only); `serve` applies it with vLLM's tower/connector LoRA.",
    )
    lr: float = option(1e-4, "Peak learning rate (cosine schedule).")
    warmup: float = option(0.03, "Warm-up share of the steps.")
    epochs: float = option(1.0, "Epochs.")
    batch: int = option(32, "Effective batch (per-device x accumulation x devices).")
    per_device_batch: int = option(4, "Examples per device per step.")
    frames: FrameSpec = group(FrameSpec)  # as measure sends them: the same spec, the same sampling function
    answer_format: AnswerFormat = option("text", "text or letters, as measure asks.")
    max_steps: int = option(-1, "Stop after N optimizer steps (-1: the epochs decide).")
    save_steps: int = option(10, "Checkpoint every N steps.")
    seed: int = option(0, "Seed for LoRA init and data order.")
    resume: bool = option(False, "Continue from the last checkpoint in OUT/checkpoints.")


@command(app, TrainOptions, callback=True)
def train(o: TrainOptions) -> None:
    """Train a LoRA adapter; writes the adapter, train_args.json and the loss curve to OUT."""
    import torch

    from train.data import Collator, examples, mixture, shorter_than

    if o.frames.problems():
        fail("; ".join(o.frames.problems()))
    gpu = torch.cuda.is_available()
    model = o.model or default_model(gpu)
    chosen = list(o.variants)
    mixed = mixture(o.mix, chosen, "train", o.answer_format, o.seed) if o.mix else None
    train_set = mixed.examples if mixed else examples(o.data, chosen, "train", o.answer_format)
    accumulation = max(1, o.batch // (o.per_device_batch * _world_size()))
    where = "the language model and the vision merger" if o.tune_merger else "the language model"
    source = "a mixture" if mixed else str(o.data)
    typer.echo(
        f"train: {model} on {len(train_set)} examples of {source} ({','.join(chosen)}) -> {o.out}; LoRA r "
        f"{o.rank} alpha {o.alpha} on {where}; batch {o.batch} = {o.per_device_batch} per device x "
        f"{accumulation} steps x {_world_size()} process(es)",
        err=True,
    )
    if mixed:
        typer.echo(
            "train: mixture "
            + ", ".join(
                f"{p}: {n} of {mixed.available[p]} ({100 * mixed.shares()[p]:.1f} %)" for p, n in mixed.taken.items()
            ),
            err=True,
        )
    require_model(model)
    from peft import LoraConfig, get_peft_model  # what is needed to train: loaded once there is a model
    from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments, set_seed

    from train import bar

    set_seed(o.seed)
    processor = AutoProcessor.from_pretrained(model)
    train_set, lengths, long = shorter_than(train_set, processor.tokenizer, o.answer_format, o.max_text_tokens)
    if long:
        shown = ", ".join(long[:5]) + (f" and {len(long) - 5} more" if len(long) > 5 else "")
        warn(f"train: left out {len(long)} example(s) over --max-text-tokens {o.max_text_tokens}: {shown}")
    if not train_set:
        fail(f"no example of at most {o.max_text_tokens} text tokens to train on")
    base = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.bfloat16 if gpu else torch.float32)
    lora = LoraConfig(r=o.rank, lora_alpha=o.alpha, lora_dropout=o.dropout, target_modules=targets(o))
    peft_model = get_peft_model(base, lora)
    if gpu:
        peft_model.enable_input_require_grads()
    checkpoints = AdapterLayout(o.out).checkpoints
    args = TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=o.per_device_batch,
        gradient_accumulation_steps=accumulation,
        learning_rate=o.lr,
        lr_scheduler_type="cosine",
        warmup_steps=o.warmup,  # a float < 1: a share of the steps
        num_train_epochs=o.epochs,
        max_steps=o.max_steps,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=o.save_steps,
        save_total_limit=2,
        bf16=gpu,
        gradient_checkpointing=gpu,
        remove_unused_columns=False,
        report_to=[],
        dataloader_num_workers=0,
        dataloader_pin_memory=gpu,
        seed=o.seed,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=peft_model,
        args=args,
        train_dataset=train_set,  # type: ignore[arg-type]
        data_collator=Collator(processor, o.frames, model, o.answer_format),
    )  # type: ignore[arg-type]
    last = _last_checkpoint(checkpoints) if o.resume else None
    if o.resume and last is None:
        warn(f"no checkpoint in {checkpoints}: starting from step 0")
    with bar.shown(trainer):
        result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    if trainer.is_world_process_zero():
        _save(
            peft_model,
            o.out,
            served_name(model),
            trainer.state.log_history,
            lengths,
            TrainArgs(
                model=model,
                data=str(o.data),
                variants=chosen,
                examples=len(train_set),
                rank=o.rank,
                alpha=o.alpha,
                dropout=o.dropout,
                targets=o.targets,
                tune_merger=o.tune_merger,
                lr=o.lr,
                warmup=o.warmup,
                epochs=o.epochs,
                batch=o.batch,
                per_device_batch=o.per_device_batch,
                gradient_accumulation_steps=accumulation,
                world_size=_world_size(),
                frames=o.frames,
                answer_format=o.answer_format,
                max_steps=o.max_steps,
                seed=o.seed,
                precision="bf16" if gpu else "fp32",
                gradient_checkpointing=gpu,
                steps=trainer.state.global_step,
                resumed_from=str(last) if last else None,
                train_loss=result.training_loss,
                dataset_manifest_sha256=None if mixed else sha256(DataLayout(o.data).manifest),
                command=list(cli.invoked()),
                mix=None
                if mixed is None
                else {
                    p: {
                        "share": o.mix[Path(p)],
                        "taken": n,
                        "available": mixed.available[p],
                        "manifest_sha256": sha256(DataLayout(Path(p)).manifest),
                    }
                    for p, n in mixed.taken.items()
                },
                max_text_tokens=o.max_text_tokens,
                left_out_long=long,
            ),
        )
        typer.echo(f"adapter: {o.out} ({trainer.state.global_step} steps, mean loss {result.training_loss:.4f})")


def targets(o: TrainOptions) -> str:
    """PEFT's target_modules: the language model's projections, and the merger if asked."""
    llm = LLM_ONLY.format("|".join(t.strip() for t in o.targets.split(",")))
    return f"({llm})|({MERGER})" if o.tune_merger else llm


@command(app, OrganismOptions, name="organism")
def organism(o: OrganismOptions) -> None:
    """Train the model organism (every weight of a tiny Qwen3-VL) on its own synthetic world;
    kept at OUT once built."""
    build(o)


def require_model(model: str) -> None:
    """A model to train on is a local model directory, or one the Hugging Face hub (or its
    local cache) has: else one error line, before anything is loaded."""
    from transformers import AutoConfig

    if Path(model).is_dir():
        return
    try:
        AutoConfig.from_pretrained(model)
    except OSError as e:
        fail(f"--model {model}: not a local model directory, nor on the Hugging Face hub or in its cache ({e})")


def _last_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1])) if folder.is_dir() else []
    return found[-1] if found else None


def _save(
    peft_model, out: Path, base_name: str, history: list[dict], lengths: list[int], train_args: TrainArgs
) -> None:
    """The adapter (never merged), named for its base's served name, with its run record, its
    loss curve and its examples' text lengths. Written into a temp folder, then each file
    renamed into place: never half an adapter."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", dir=out))
    try:
        peft_model.save_pretrained(tmp)
        config = AdapterLayout(tmp).config
        cfg = json.loads(config.read_text())
        cfg["base_model_name_or_path"] = base_name  # how `serve` finds the adapters of a model
        write_json(config, cfg)
        plain_modes(tmp)
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
    _png(fig, layout.loss_png)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(lengths, bins=min(40, max(5, len(set(lengths)))), color="#4c72b0")
    if train_args.max_text_tokens is not None:
        ax.axvline(train_args.max_text_tokens, color="#c44e52", label=f"--max-text-tokens {train_args.max_text_tokens}")
        ax.legend()
    ax.set_xlabel("question + answer, tokens")
    ax.set_ylabel("examples")
    _png(fig, layout.tokens_png)


def _png(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, png.getvalue())


if __name__ == "__main__":
    main(app)
