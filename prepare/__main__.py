"""`python -m prepare`: raw SSV2 (or synthetic) data -> questions.jsonl + clip variants."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from prepare.arrow import build_arrow
from prepare.pipeline import DISTRACTORS, Options, prepare_ssv2
from prepare.schema import DataError, DataLayout
from prepare.synthetic import generate_raw
from prepare.variants import VARIANTS, CueOptions

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _variants(value: str) -> list[str]:
    """Comma-separated variant names, each known."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise typer.BadParameter(f"unknown variant(s) {unknown or value!r}; valid: {', '.join(VARIANTS)}")
    return names


def _shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    i, sep, n = value.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise typer.BadParameter(f"{value!r}: use i/n with 0 <= i < n, e.g. 0/4")
    return int(i), int(n)


def _thickness(value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise typer.BadParameter("use 'auto' or a positive number of pixels")
    return int(value)


VariantsOpt = Annotated[str, typer.Option(help=f"Comma-separated clip variants: {', '.join(VARIANTS)}.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for the split, distractors and choice order.")]
WorkersOpt = Annotated[int, typer.Option(help="Parallel render processes.")]


def _run(videos: Path, labels: Path, boxes: list[Path], out: Path, opts: Options) -> None:
    try:
        manifest = prepare_ssv2(videos, labels, boxes, out, opts)
    except DataError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2)
    c = manifest["counts"]
    if opts.shard is not None:
        typer.echo(f"{out}: shard {opts.shard[0]}/{opts.shard[1]}: {c['clips_rendered']} clips rendered; "
                   "run again without --shard to write questions.jsonl")
        return
    typer.echo(
        f"{out}: {c['questions']} questions on {c['videos']} videos {c['by_split']} {c['by_type']}; "
        f"variants {', '.join(c['variants'])}; dropped {len(manifest['dropped'])} {manifest['dropped_by_reason']}"
    )


@app.command()
def ssv2(
    videos: Annotated[Path, typer.Option(help="Directory of <id>.webm clips.")],
    labels: Annotated[Path, typer.Option(help="Directory with train/validation/test/labels.json.")],
    boxes: Annotated[list[Path], typer.Option(help="Something-Else box file(s); repeat the option.")],
    out: Annotated[Path, typer.Option(help="Output dataset directory, e.g. data/NAME.")],
    label_files: Annotated[str, typer.Option(help="SSV2 label files whose videos are used.")] = "train,validation",
    test_videos: Annotated[int, typer.Option(help="Videos in our test split.")] = 1000,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N labelled videos.")] = None,
    seed: SeedOpt = 0,
    variants: VariantsOpt = "plain,trajectory",
    distractors: Annotated[str, typer.Option(help="Object distractors: random (whole vocabulary) or hard (same template).")] = "random",
    cue_hand: Annotated[bool, typer.Option(help="Also cue the hand.")] = False,
    thickness: Annotated[str, typer.Option(help="Stroke width: auto (scales with height) or pixels.")] = "auto",
    workers: WorkersOpt = os.cpu_count() or 1,
    shard: Annotated[Optional[str], typer.Option(help="Render only shard i/n of the videos (by id); a final run without it writes the questions.")] = None,
) -> None:
    """Build questions and clip variants from real SSV2 + Something-Else data."""
    if distractors not in DISTRACTORS:
        raise typer.BadParameter(f"{distractors!r}; valid: {', '.join(DISTRACTORS)}", param_hint="--distractors")
    opts = Options(
        label_files=[f.strip() for f in label_files.split(",") if f.strip()],
        test_videos=test_videos, limit=limit, seed=seed, variants=_variants(variants),
        distractors=distractors, cues=CueOptions(_thickness(thickness), cue_hand), workers=workers,
        shard=_shard(shard),
    )
    _run(videos, labels, boxes, out, opts)


@app.command()
def synthetic(
    out: Annotated[Path, typer.Option(help="Output dataset directory.")] = Path("data/synthetic"),
    videos: Annotated[int, typer.Option(help="Labelled videos to generate.")] = 60,
    seed: SeedOpt = 0,
    variants: VariantsOpt = "plain,trajectory",
    workers: WorkersOpt = os.cpu_count() or 1,
) -> None:
    """Generate raw data in the real SSV2 + Something-Else formats, then run the ssv2 step on it."""
    raw = generate_raw(DataLayout(out).raw, videos, seed)
    opts = Options(test_videos=max(1, videos // 4), seed=seed, variants=_variants(variants), workers=workers)
    _run(raw["videos"], raw["labels"], [raw["boxes"]], out, opts)


@app.command("arrow-of-time")
def arrow_of_time(
    source: Annotated[Path, typer.Option("--from", help="A prepared dataset with plain and reversed clips.")],
    out: Annotated[Optional[Path], typer.Option(help="Output directory. Default: <from>/arrow-of-time.")] = None,
) -> None:
    """Forward/backward questions over a dataset's plain and reversed clips."""
    try:
        manifest = build_arrow(source, out)
    except DataError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2)
    c = manifest["counts"]
    typer.echo(f"{out or source / 'arrow-of-time'}: {c['questions']} questions {c['by_answer']} {c['by_category']}")


if __name__ == "__main__":
    app()
