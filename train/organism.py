"""The model organism: a tiny Qwen3-VL trained, all of its weights, on the synthetic world, so
that what the tool measures can be checked against what is known by construction (an object
question needs the object's pixels, a verb question needs the motion).

Its world is `prepare synthetic` with a seed of its own (plain clips, all labelled splits);
every example is asked as measure asks it (`train.data`: the prompt, the answer format, the
frame spec), encoded once before training; training is seeded, so one machine rebuilds the
same bytes."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import typer

from core import cli
from core.cli import option
from core.defaults import DATA_ROOT, ORGANISM
from core.errors import UserError
from core.files import atomic_dir, read_json, write_json
from core.frames import FrameSpec
from core.layout import DataLayout
from core.records import read_questions
from core.variants import PLAIN
from prepare.worlds import GENERATOR_VERSION, WORLDS
from serve.shapes import SHAPES

RECORD = "organism.json"  # how it was built, beside its weights


@dataclass(frozen=True)
class OrganismOptions:
    """Every option of `python -m train organism`."""

    out: Path = option(ORGANISM, "Where the organism goes (kept: built once).")
    world: Path = option(DATA_ROOT / "organism-world", "Where its synthetic training world is prepared.")
    videos: int = option(1200, "Synthetic videos in its world.")
    seed: int = option(7, "Seed of its world, its initialisation and its data order.")
    steps: int = option(2000, "Optimizer steps.")
    batch: int = option(16, "Examples per step.")
    lr: float = option(3e-3, "Peak learning rate (warm-up, then cosine).")
    object_weight: int = option(
        2, "Times each object question is used per epoch (they are the ones that need the pixels)."
    )
    shape: Literal[tuple(SHAPES)] = option(
        "organism", "organism (deeper, smaller frames) or tiny (the embedded default's shape)."
    )
    templates: Literal[tuple(WORLDS)] = option(
        "one-sentence",
        "Its world (`prepare synthetic --templates`): one-sentence (a verb question's text alone is "
        "worth chance) or default.",
    )


def build(o: OrganismOptions) -> Path:
    """The organism at `o.out`: kept when it was built with these options, trained anew when only
    its world's generator has changed since (it learned another world), else refused."""
    record = o.out / RECORD
    wanted = _options(o)
    if record.is_file():
        built = read_json(record)
        had = built.get("options", {})
        if had == wanted:
            typer.echo(f"organism: kept {o.out} (built in {built['seconds']:.0f} s, final loss {built['loss']:.3f})")
            return o.out
        if {k: v for k, v in had.items() if k != WORLD_VERSION} != {
            k: v for k, v in wanted.items() if k != WORLD_VERSION
        }:
            raise UserError(f"{o.out}: an organism built with other options ({had}); remove it or choose another --out")
        typer.echo(
            f"organism: {o.out} learned world generator version {had.get(WORLD_VERSION, 'before 4')}, now "
            f"{wanted[WORLD_VERSION]}: trained anew",
            err=True,
        )
    started = time.monotonic()
    atomic_dir(o.out, lambda tmp: _train(o, tmp, started))
    return o.out


WORLD_VERSION = "world_version"  # the synthetic world's generator version: what the organism learned


def _options(o: OrganismOptions) -> dict:
    """What decides the organism: its options (not where it goes) and its world's generator version."""
    kept = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(o).items() if k not in ("out", "world")}
    return kept | {WORLD_VERSION: GENERATOR_VERSION}


def _world(o: OrganismOptions) -> Path:
    """Its synthetic world, prepared in-process by `prepare synthetic` (kept when it exists)."""
    from prepare.__main__ import app as prepare_app

    argv = ["synthetic", "--out", str(o.world), "--videos", str(o.videos), "--seed", str(o.seed), "--variants", PLAIN]
    argv += ["--templates", o.templates]
    if cli.run(prepare_app, argv) != 0:
        raise UserError(f"{o.world}: preparing the organism's world failed (see above)")
    return o.world


def _train(o: OrganismOptions, tmp: Path, started: float) -> None:
    from serve import tiny
    from train import fit

    model, processor, tokenizer = tiny.initial(SHAPES[o.shape], o.seed, name=o.out.name, std=None)
    tiny.save(tmp, model, processor, tokenizer)  # the processor measure will use: frames sized by it
    world = _world(o)
    splits = sorted({q.split for q in read_questions(DataLayout(world).questions)})  # its own world: all of it
    examples = fit.encoded(world, splits, tmp, FrameSpec(), o.object_weight)
    losses = fit.train(model, examples, steps=o.steps, batch=o.batch, lr=o.lr, seed=o.seed)
    model.save_pretrained(tmp)
    params = sum(p.numel() for p in model.parameters())
    questions = len({id(row) for row in examples})  # each encoded once
    seconds = time.monotonic() - started
    write_json(
        tmp / RECORD,
        {
            "options": _options(o),
            "parameters": params,
            "examples": questions,
            "rows": len(examples),  # an epoch: object questions counted object_weight times
            "seconds": round(seconds, 1),
            "loss": losses[-1],
            "losses": losses,
        },
    )
    typer.echo(
        f"organism: {o.out} ({params / 1e6:.1f} M parameters, {questions} questions, {o.steps} steps, "
        f"final loss {losses[-1]:.3f}, {seconds:.0f} s)"
    )
