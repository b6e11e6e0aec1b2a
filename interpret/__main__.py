"""`python -m interpret RUN`: where the model looked when it answered. A finished run's
multiple-choice predictions are asked again in transformers on the exact input the server
saw (same frames, JPEG bytes, chat template), with the answer position's attention captured
in every language layer and each patch's received attention in the vision encoder; the
attention is split over regions known exactly (cue strokes, box edges, objects, the rest)
and written to runs/RUN/interpret/ (records.jsonl, regions.csv, heat maps); the run's report
then carries the paired region comparisons and their verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import typer

from core import cli, runs
from core.cli import comma_list, command, fail, group, main, names, option, shard_spec
from core.groups import OneRun
from core.variants import BLIND, IMAGE_VARIANTS

app = cli.app(__doc__)


def layer_list(value: str | Sequence[int]) -> tuple[int, ...]:
    """`0,1,5` as (0, 1, 5): layer indices from 0."""
    if not isinstance(value, str):
        return tuple(value)
    parts = comma_list(value)
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"{value!r}: use layer indices from 0, comma-separated, e.g. 0,13,27")
    return tuple(int(p) for p in parts)


@dataclass
class InterpretOptions:
    target: OneRun = group(OneRun)
    limit: int | None = option(None, "Questions to interpret (every model and variant of each).", shown="all")
    models: Sequence[str] | None = names("Served models to interpret.", "every model of the run")
    variants: Sequence[str] | None = names(
        "Clip variants to interpret.", "plain, the cues and the interventions the run asked"
    )
    layers: Sequence[int] | None = option(
        None, "Language-model layers to capture (and average).", parser=layer_list, metavar="N,...", shown="all"
    )
    device: Literal["cpu", "cuda"] = option(
        "cpu", "Where the model runs (in the dtype the server computed in; unknown: float32 on cpu, bfloat16 on cuda)."
    )
    pictures: int = option(8, "Questions to draw heat maps for (0: none).")
    effects: Literal["none", "ablation", "all"] = option(
        "none",
        "What each region does inside the model: ablation (its visual tokens replaced by the clip's mean "
        "token) or all (ablation and attention knockout in the early, middle, late and all layers), each "
        "against as many random and highest-norm tokens: interpret/effects.csv and the causal verdicts.",
    )
    occlusion: bool = option(
        False,
        "With --effects, also draw an occlusion map for each question drawn: UNVALIDATED, it fails its "
        "known-answer check on the model organism (the asked object's tokens are not its most effective "
        "on 80 % of object questions: docs/interpret.md).",
    )
    layer_probes: bool = option(
        False,
        "Instead of attention: where each question attribute (a probe's kind, else the question "
        "type) can be read, by linear probes on the vision encoder's output and on every language "
        "layer, cross-validated by video with intervals: interpret/layers.md and layers.csv.",
    )
    data: Path | None = option(
        None, "The dataset, when run.json's path no longer points to it.", shown="the run's dataset"
    )
    shard: tuple[int, int] | None = option(
        None,
        "Interpret shard i of n only (every n-th video from the i-th, from 0): n processes, GPUs or machines "
        "sharing the run folder split the work; their records read as one.",
        parser=shard_spec,
        metavar="I/N",
        shown="all",
    )


@command(app, InterpretOptions)
def interpret(o: InterpretOptions) -> None:
    """Interpret a run (resumable: records already written are kept); print the sanity checks and
    the declared causal contrasts (the rest: the run's report)."""
    from interpret import pictures, stage
    from measure import report
    from measure.report import attention

    if o.limit is not None and o.limit < 1 or o.pictures < 0:
        fail("--limit must be a positive number and --pictures 0 or more")
    if no_video := [v for v in o.variants or () if v in IMAGE_VARIANTS or v == BLIND]:
        fail(
            f"--variants {','.join(no_video)}: asked with an image or with no media, where interpret maps a "
            "video's frames (plain, the cues, the interventions)"
        )
    run = runs.load(o.target.layout, data=o.data)
    stage.check(run)
    todo = stage.chosen(run, o.models, o.variants, o.limit)
    if not todo:
        fail(f"{run.id}: no answered multiple-choice prediction of the chosen models and variants to interpret")
    if o.occlusion and o.effects == "none":
        fail("--occlusion ablates windows of tokens: give --effects ablation (or all)")
    if o.layer_probes:
        return probe_layers(run, todo, o)
    first = set(sorted({p.question_id for p in todo})[: o.pictures])  # the questions drawn
    done = stage.interpret_run(run, todo, o.device, o.layers, o.effects, o.shard, first if o.occlusion else set())
    run = runs.load(o.target.layout, data=o.data)
    mine = {p.key for p in stage.shard_of(todo, o.shard)}
    drawn = pictures.draw(run, [r for r in run.attention if r.key in mine], first)
    r = report.write(run)
    for line in attention.sanity_lines(r.attention_sanity) + attention.causal_verdicts(r.causal, r.families):
        typer.echo(f"- {line}")
    if o.occlusion:
        typer.echo(f"occlusion maps (unvalidated): {stage.occlusion_check(run)}", err=True)
    same, agree = attention.agreement(run.attention)
    typer.echo(
        f"interpret{'' if o.shard is None else ' (shard {}/{})'.format(*o.shard)}: {done.asked} prediction(s) "
        f"interpreted, {done.done_before} kept from before; same prompt "
        f"tokens as the run {same}; same reply as the run {agree}; {len(drawn)} heat map(s); "
        f"every paired comparison in {run.layout.report_md if run.layout else 'report.md'}",
        err=True,
    )


def probe_layers(run: runs.Run, todo: list, o: InterpretOptions) -> None:
    """`--layer-probes`: fit, write interpret/layers.md and .csv, print the summary."""
    from interpret import layers

    if o.effects != "none" or o.occlusion or o.shard is not None or o.layers is not None:
        fail(
            "--layer-probes probes every layer of every prediction: leave out --effects, --occlusion, --shard, --layers"
        )
    assert run.layout is not None
    table = layers.probe_layers(run, todo, o.device)
    if table.empty:
        fail(f"{run.id}: no attribute with 3 videos and 2 answers or more to probe")
    path = layers.write(run.layout, table)
    for line in layers.summary(table):
        typer.echo(f"- {line}")
    typer.echo(f"layer probes: {len(todo)} prediction(s), every layer in {path}", err=True)


if __name__ == "__main__":
    main(app)
