"""`python -m prepare`: raw SSV2 (or synthetic) data -> questions.jsonl + clip variants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import typer

from core import cli
from core.cli import argument, command, group, main, option
from core.defaults import DATASET, OPEN_DATASET
from core.layout import DataLayout
from core.runfiles import Manifest
from prepare import subset as subsets
from prepare.arrow import build_arrow
from prepare.clips import ClipsOptions, prepare_clips
from prepare.openqa import OpenOptions, prepare_open
from prepare.pipeline import Options, prepare_ssv2, seed_option, variants_option, workers_option
from prepare.probes import KINDS, ProbeOptions, prepare_probes
from prepare.synthetic import generate_open, generate_raw
from prepare.visualcues import VisualCuesOptions, prepare_visual_cues
from prepare.worlds import WORLDS

app = cli.app(__doc__, no_args_is_help=True)


@dataclass
class Ssv2:
    videos: Path = option(help="Directory of <id>.webm clips.")
    labels: Path = option(help="Directory with train/validation/test/labels.json.")
    boxes: list[Path] = option(help="Something-Else box file(s); repeat the option.")
    out: Path = option(help="Output dataset directory, e.g. data/NAME.")
    options: Options = group(Options)


@dataclass
class Synthetic:
    out: Path = option(DATASET, "Output dataset directory.")
    videos: int = option(60, "Labelled videos to generate.")
    seed: int = seed_option()
    variants: Sequence[str] = variants_option()
    workers: int = workers_option()
    templates: Literal[tuple(WORLDS)] = option(
        "default",
        "The world: default (14 SSV2 templates, many told apart by their sentence) or one-sentence "
        "(4 verbs of one sentence frame: a verb question's text alone is worth chance).",
    )


def _report(out: Path, manifest: Manifest, opts: Options) -> None:
    c = manifest.counts
    if opts.shard is not None:
        typer.echo(
            f"{out}: shard {opts.shard[0]}/{opts.shard[1]}: {c['clips_rendered']} clips rendered; "
            "run again without --shard to write questions.jsonl"
        )
        return
    typer.echo(
        f"{out}: {c['questions']} questions on {c['videos']} videos {c['by_split']} {c['by_type']}; "
        f"variants {', '.join(c['variants'])}; dropped {len(manifest.dropped)} {manifest.dropped_by_reason}"
    )
    if manifest.subset:
        typer.echo("\n".join(subsets.describe(manifest.subset)))


@command(app, Ssv2)
def ssv2(a: Ssv2) -> None:
    """Build questions and clip variants from real SSV2 + Something-Else data."""
    _report(a.out, prepare_ssv2(a.videos, a.labels, a.boxes, a.out, a.options), a.options)


@command(app, Synthetic)
def synthetic(a: Synthetic) -> None:
    """Generate raw data in the real SSV2 + Something-Else formats, then run the ssv2 step on it."""
    raw = generate_raw(DataLayout(a.out).raw, a.videos, a.seed, a.workers, a.templates)
    opts = Options(test_videos=max(1, a.videos // 4), seed=a.seed, variants=a.variants, workers=a.workers)
    _report(a.out, prepare_ssv2(raw["videos"], raw["labels"], [raw["boxes"]], a.out, opts), opts)


@dataclass
class EgoTempo:
    json: Path = option(help="EgoTempo's egotempo_openQA.json.")
    videos: Path = option(help="Directory of <clip_id>.mp4 clips.")
    out: Path = option(help="Output dataset directory, e.g. data/NAME.")
    options: OpenOptions = group(OpenOptions)


@dataclass
class EgoTextVqa:
    jsonl: list[Path] = option(
        help="EgoTextVQA's annotation JSONL (video_id, question_id, question_type, question, correct_answer, "
        "timestamp); repeat for its subsets' files (each file's name is its subset)."
    )
    videos: Path = option(help="Directory of <video_id>.mp4 clips.")
    out: Path = option(help="Output dataset directory, e.g. data/NAME.")
    options: OpenOptions = group(OpenOptions)


@dataclass
class SyntheticOpen:
    format: Literal["egotempo", "egotextvqa"] = option("egotempo", "Annotation format to write and read.")
    out: Path = option(OPEN_DATASET, "Output dataset directory.")
    videos: int = option(40, "Videos to generate.")
    options: OpenOptions = group(OpenOptions)


def _report_open(out: Path, manifest: Manifest) -> None:
    c = manifest.counts
    typer.echo(
        f"{out}: {c['questions']} open questions on {c['videos']} videos {c['by_category']}; variants "
        f"{', '.join(c['variants'])}; dropped {len(manifest.dropped)} {manifest.dropped_by_reason}"
    )
    _show_dropped(manifest)


def _show_dropped(manifest: Manifest, most: int = 20) -> None:
    for d in manifest.dropped[:most]:
        typer.secho(f"dropped {d['item']}: {d['reason']}", fg="yellow", err=True)


@command(app, EgoTempo)
def egotempo(a: EgoTempo) -> None:
    """Open questions from EgoTempo's egotempo_openQA.json and its clips."""
    _report_open(a.out, prepare_open("egotempo", a.json, a.videos, a.out, a.options))


@command(app, EgoTextVqa)
def egotextvqa(a: EgoTextVqa) -> None:
    """Open questions from EgoTextVQA's annotation JSONL and its clips."""
    _report_open(a.out, prepare_open("egotextvqa", a.jsonl, a.videos, a.out, a.options))


@command(app, SyntheticOpen, name="synthetic-open")
def synthetic_open(a: SyntheticOpen) -> None:
    """Generate open questions (counting, direction, locating) over synthetic scenes, written in
    EgoTempo's or EgoTextVQA's exact format, then read them as `prepare egotempo/egotextvqa` does."""
    raw = generate_open(DataLayout(a.out).raw, a.videos, a.options.seed, a.format)
    _report_open(a.out, prepare_open(a.format, raw["annotations"], raw["videos"], a.out, a.options))


@dataclass
class Probes:
    out: Path = option(help="Output dataset directory, e.g. data/probes.")
    options: ProbeOptions = group(ProbeOptions)


@command(app, Probes)
def probes(a: Probes) -> None:
    """Temporal probes (Video-T3 style): synthetic clips where one temporal factor (order,
    direction, a change, a count) decides the answer and no single frame gives it away."""
    c = prepare_probes(a.out, a.options).counts
    kinds = ", ".join(f"{k} {c['by_category'][k]}" for k in KINDS)
    typer.echo(
        f"{a.out}: {c['questions']} probe questions ({kinds}); variants {', '.join(c['variants'])}; "
        f"{c['clips_rendered']} clips rendered"
    )


@dataclass
class VisualCues:
    test: Path = option(
        help="The study's test rows (a JSON list of {video, metadata: {question, choices, answer, type}})."
    )
    videos_plain: Path = option(help="Folder of the study's plain clips.")
    videos_trajectory: Path = option(help="Folder of the study's trajectory clips.")
    out: Path = option(help="Output dataset directory, e.g. data/visual-cues.")
    train: Path | None = option(None, "The study's train rows, same format.", shown="none")
    boxes: list[Path] = option(
        factory=list,
        help="Something-Else box file(s) holding the clips' boxes (repeat the option): regions for interpret.",
        shown="none",
    )
    options: VisualCuesOptions = group(VisualCuesOptions)


@command(app, VisualCues, name="visual-cues")
def visual_cues(a: VisualCues) -> None:
    """Import the visual-cues study's questions and clips (4g/visual_cues) as they were published:
    its choices in their order, its clips linked, flawed rows kept and flagged."""
    m = prepare_visual_cues(
        a.test, {"plain": a.videos_plain, "trajectory": a.videos_trajectory}, a.out, a.options, a.train, a.boxes
    )
    c = m.counts
    typer.echo(
        f"{a.out}: {c['questions']} questions on {c['videos']} videos {c['by_split']} {c['by_type']}; "
        f"flagged {c['flagged']}; dropped {len(m.dropped)} {m.dropped_by_reason}"
    )
    if a.boxes:
        typer.echo(f"boxes: {c['videos_with_regions']} of {c['videos']} clips have regions for interpret")
    for vid, why in sorted(m.no_regions.items()):
        typer.secho(f"no regions for {vid}: {why}", fg="yellow", err=True)
    _show_dropped(m)


@dataclass
class Clips:
    folder: Path = argument(help="A folder of videos (mp4, webm, mov, mkv; nested folders too).")
    out: Path = option(help="Output dataset directory, e.g. data/NAME.")
    options: ClipsOptions = group(ClipsOptions)


@command(app, Clips)
def clips(a: Clips) -> None:
    """One's own videos as a dataset: the arrow of time on every clip (forward and reversed), or
    one's own multiple-choice questions (--questions); bad files and rows named and skipped."""
    m = prepare_clips(a.folder, a.out, a.options)
    c = m.counts
    task = "arrow-of-time" if a.options.questions is None else "multiple-choice"
    typer.echo(
        f"{a.out}: {c['questions']} {task} questions on {c['videos']} clips {c['by_split']}; "
        f"variants {', '.join(c['variants'])}; skipped {len(m.dropped)} {m.dropped_by_reason}"
    )
    _show_dropped(m)


@dataclass
class Arrow:
    source: Path = option(help="A prepared dataset with plain and reversed clips.", flags=("--from",))
    out: Path | None = option(None, "Output directory.", shown="<from>/arrow-of-time")


@command(app, Arrow, name="arrow-of-time")
def arrow_of_time(a: Arrow) -> None:
    """Forward/backward questions over a dataset's plain and reversed clips."""
    manifest = build_arrow(a.source, a.out)
    c = manifest.counts
    typer.echo(f"{a.out or a.source / 'arrow-of-time'}: {c['questions']} questions {c['by_answer']} {c['by_category']}")


if __name__ == "__main__":
    main(app)
