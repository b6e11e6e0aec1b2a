"""The `interpret` stage: a finished run's predictions asked again in transformers (the base
model, an adapter through PEFT, unmerged) on the exact input the server saw, with attention
captured; each prediction's region masses appended to interpret/records.jsonl as soon as they
are known (a killed run continues where it stopped), then regions.csv and the heat maps."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from core import progress
from core.errors import UserError
from core.files import atomic_write
from core.layout import AdapterLayout, DataLayout
from core.prompt import targets
from core.records import AttentionRecord, Prediction
from core.runs import Run, in_key_order
from core.store import attention_store
from core.variants import CUED, INTERVENTIONS, PLAIN
from interpret import capture, inputs
from interpret.attention import Attention, forward, grid_of, region_rows, video_features
from interpret.choice import choose, margin
from interpret.effects import COLUMNS as EFFECT_COLUMNS
from interpret.effects import Scorer, effects, found, occlusion, region_tokens, window_size
from interpret.geometry import Grid
from interpret.regions import clip_shares
from measure.report.stats import seed_for

STROKES = tuple(c for c in CUED if c != "side-by-side")  # cues whose strokes define a `cue` region
MAPPED = (PLAIN, *STROKES, *INTERVENTIONS)  # variants whose frames the regions fit
COLUMNS = [
    "question_id",
    "model",
    "variant",
    "cue_of",
    "source",
    "layer",
    "region",
    "mass",
    "mass_norm",
    "area",
    "video_share",
]


def check(run: Run) -> None:
    """What interpret needs of a run, each lack one clear error."""
    if run.record is None or run.layout is None:
        raise UserError(f"{run.id}: run.json missing (interpret needs how the run asked)")
    ask = run.record.ask
    if ask.media != "frames":
        raise UserError(
            f"{run.id}: measured with --media {ask.media}: the server chose the frames, so there is "
            "nothing exact to map (measure with --media frames)"
        )
    other = sorted({p.name for m, p in ask.profiles.items() if p.video_as != "video"})
    if other:
        raise UserError(f"{run.id}: interpret maps the Qwen-VL family only, not yet {', '.join(other)}")
    if run.data is None:
        raise UserError(
            f"{run.id}: its dataset {run.record.dataset.path!r} is not found (interpret needs its clips "
            "and boxes); give --data"
        )


def chosen(
    run: Run, models: Sequence[str] | None, variants: Sequence[str] | None, limit: int | None
) -> list[Prediction]:
    """The answered multiple-choice predictions to interpret, every chosen model and variant of
    the first `limit` questions."""
    wanted_v = set(variants or MAPPED)
    preds = [
        p
        for p in run.predictions
        if p.status != "error"
        and p.choices
        and p.frame_indices
        and p.variant in wanted_v
        and (models is None or p.model in models)
    ]
    questions = sorted({(p.video_id, p.question_id) for p in preds})[:limit]
    keep = {q for _, q in questions}
    return sorted(
        (p for p in preds if p.question_id in keep), key=lambda p: (p.model, p.video_id, p.question_id, p.variant)
    )


def model_dirs(run: Run, name: str) -> tuple[str, Path | None]:
    """(the base model dir, the adapter dir or None) of a served model, as its server named them."""
    assert run.record is not None
    listed = {m.id: m for s in run.record.servers for m in s.models}
    served = listed[name]
    if served.parent is None:
        return served.root or name, None
    adapter = Path(served.root or "")
    if not AdapterLayout(adapter).config.is_file():
        raise UserError(f"adapter {name}: its folder {adapter} (as its server named it) is not here")
    return listed[served.parent].root or served.parent, adapter


@contextlib.contextmanager
def loaded(run: Run, name: str, device: str) -> Iterator[tuple[Any, Any]]:
    """(model, processor) of a served model in transformers: the base with the capturing
    attention, an adapter on it through PEFT (unmerged); in the dtype it was served in."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base, adapter = model_dirs(run, name)
    model = AutoModelForImageTextToText.from_pretrained(
        base, dtype=replica_dtype(run, name, device), attn_implementation=capture.register()
    )
    capture.label_vision_layers(model)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    yield model.to(device).eval(), AutoProcessor.from_pretrained(base)


def replica_dtype(run: Run, name: str, device: str) -> Any:
    """The dtype the server computed `name` in (its --dtype in run.json), else bf16 on a GPU
    and fp32 on the CPU."""
    import torch

    assert run.record is not None
    served = run.record.dtype(name)
    if served in ("float32", "bfloat16", "float16"):
        return getattr(torch, served)
    return torch.bfloat16 if device == "cuda" else torch.float32


REDRAW_SEED = 1234  # the weights of the sanity check's twin: the architecture's own initialisation, this seed


def redrawn(run: Run, name: str, device: str) -> Any:
    """A base model's architecture with its weights redrawn (its own initialisation, seeded),
    capturing attention as the model does: the control of the model-randomisation test
    (Adebayo et al. 2018). None for an adapter (its base has one)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    base, adapter = model_dirs(run, name)
    if adapter is not None:
        return None
    torch.manual_seed(REDRAW_SEED)
    twin = AutoModelForImageTextToText.from_config(
        AutoConfig.from_pretrained(base), dtype=replica_dtype(run, name, device), attn_implementation=capture.register()
    )
    capture.label_vision_layers(twin)
    return twin.to(device).eval()


@dataclass
class Interpreted:
    """What a session did."""

    asked: int
    done_before: int


def one(
    pred: Prediction,
    run: Run,
    model: Any,
    processor: Any,
    cache: dict,
    layers: Sequence[int] | None = None,
    twin: Any = None,
    methods: str = "none",
    occlude: bool = True,
) -> AttentionRecord:
    """One prediction: its input rebuilt, attention captured on it and on the generic question,
    its region rows for every cue its regions can be drawn for (language `layers` only, all
    when None), its reply under the constraint; on an object question, the same rows (language
    model, mean of layers) from `twin`, the architecture with its weights redrawn. With
    `methods`, the region removals and, when `occlude`, the occlusion map."""
    assert run.record is not None and run.data is not None
    layout = DataLayout(run.data)
    question = run.questions[pred.question_id]
    key = ("sent", pred.video_id, pred.variant)
    if key not in cache:
        cache[key] = inputs.sent(pred, layout.clip(pred.variant, pred.video_id), run.record.ask)
    sent = cache[key]
    fmt = run.record.ask.answer_format
    enc = inputs.encode(processor, question, sent, fmt)
    key = ("generic", pred.model, pred.video_id, pred.variant)
    if key not in cache:  # the clip's vision tower, run once: its maps from the generic pass, its output kept
        cache[key] = only(forward(model, inputs.encode(processor, None, sent)), layers), video_features(model, enc)
    generic, features = cache[key]
    att = replace(only(forward(model, enc, features), layers), vision=generic.vision)
    rows, control = [], []
    boxes = layout.boxes(pred.video_id)
    grid = grid_of(model, enc)
    cues = [pred.variant] if pred.variant in STROKES else [c for c in STROKES if c in run.record.variants] or ["bbox"]
    twin_att = twin_generic = None
    if twin is not None and pred.type == "object" and boxes.is_file():
        twin_att = only(forward(twin, enc), layers)
        key = ("twin-generic", pred.model, pred.video_id, pred.variant)
        if key not in cache:
            cache[key] = only(forward(twin, inputs.encode(processor, None, sent)), layers)
        twin_generic = cache[key]
    for cue in cues if boxes.is_file() else []:
        shares = clip_shares(boxes, cue, question, sent.indices, grid.pixels)
        rows += [r | {"cue_of": cue} for r in region_rows(att, generic, shares, grid)]
        if twin_att is not None:
            control += [
                r | {"cue_of": cue}
                for r in region_rows(twin_att, twin_generic, shares, grid)
                if r["source"] == "llm" and r["layer"] == "mean"
            ]
    removed, occluded = [], []
    if methods != "none" and pred.reply in pred.choices:
        scorer = Scorer.of(model, processor.tokenizer, enc, pred.choices, fmt, features)
        shares = clip_shares(boxes, cues[0], question, sent.indices, grid.pixels) if boxes.is_file() else None
        if occlude:
            asked = region_tokens(shares, grid)["object"] if shares is not None else np.array([], dtype=int)
            size = window_size(asked, grid)
            occluded = np.round(occlusion(scorer, pred.choices.index(pred.reply), grid, size), 6).tolist()
        if shares is not None:
            seed = seed_for("effects", pred.question_id, pred.variant)
            removed = effects(pred, scorer, shares, grid, cues[0], question.answer, seed, methods)
    options = targets(pred.choices, fmt)
    said = choose(model, processor.tokenizer, enc, options, features)
    groups = layer_groups(sorted(att.llm))
    record = AttentionRecord(
        question_id=pred.question_id,
        video_id=pred.video_id,
        type=pred.type,
        model=pred.model,
        variant=pred.variant,
        prompt_tokens=att.tokens,
        run_prompt_tokens=pred.prompt_tokens,
        picked=None if said is None else pred.choices[options.index(said)],
        reply=pred.reply,
        margin=margin(att.logits, processor.tokenizer, options),
        rows=rows,
        maps={g: np.round(np.mean([att.llm[k] for k in ks], axis=0), 6).tolist() for g, ks in groups.items()},
        redrawn=control,
        effects=removed,
        occlusion=occluded,
    )
    return record


def only(att: Attention, layers: Sequence[int] | None) -> Attention:
    """`att` with the language layers in `layers` alone (all when None)."""
    if layers is None:
        return att
    pick = {k: v for k, v in att.llm.items() if k in layers}
    return replace(att, llm=pick, video_share={k: att.video_share[k] for k in pick})


def language_layers(run: Run, name: str) -> int:
    """How many language layers a served model has (from its config; no weights loaded)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dirs(run, name)[0])
    return int(getattr(config, "text_config", config).num_hidden_layers)


def check_layers(run: Run, models: list[str], layers: Sequence[int] | None, done: list[AttentionRecord]) -> None:
    """--layers within every model's range, and the layers of the records already written (a
    resume adds to them, it does not mix two choices)."""
    for name in models:
        n = language_layers(run, name)
        wanted = sorted(set(layers)) if layers is not None else list(range(n))
        if wanted and wanted[-1] >= n:
            raise UserError(f"--layers {[k for k in wanted if k >= n]}: {name} has language layers 0..{n - 1}")
        kept = {r["layer"] for rec in done if rec.model == name for r in rec.rows if r["source"] == "llm"}
        if kept and kept != {str(k) for k in wanted} | {"mean"}:
            raise UserError(
                f"{run.layout.attention if run.layout else 'records.jsonl'}: {name}'s records hold language layers "
                f"{sorted(kept - {'mean'}, key=int)}, not {wanted}: resume with the same --layers, or remove "
                "interpret/ to start again"
            )


def shard_of(todo: list[Prediction], shard: tuple[int, int] | None) -> list[Prediction]:
    """Shard i of n (from 0): every n-th video of the chosen predictions, so a clip's questions
    and variants stay in one process (its vision tower and generic question computed once)."""
    if shard is None:
        return todo
    index, count = shard
    mine = set(sorted({p.video_id for p in todo})[index::count])
    return [p for p in todo if p.video_id in mine]


def interpret_run(
    run: Run,
    todo: list[Prediction],
    device: str = "cpu",
    layers: Sequence[int] | None = None,
    methods: str = "none",
    shard: tuple[int, int] | None = None,
    mapped: Collection[str] | None = None,
) -> Interpreted:
    """Interpret what is left of `todo` (of its `shard`; records already written are kept, but
    those now drawn that were made without their occlusion map are made again), appending each
    record as it comes (`methods`: the region removals to measure, `interpret.effects`, with an
    occlusion map for the questions in `mapped`, every one when None: the maps drawn); then
    regions.csv and effects.csv are written whole from every shard's records."""
    check(run)
    assert run.layout is not None
    store = attention_store(run.layout, shard)
    done = store.load()
    todo = shard_of(todo, shard)
    again = unmapped(todo, done, methods, mapped)
    left = [p for p in todo if p.key not in done or p.key in again]
    check_layers(run, sorted({p.model for p in todo}), layers, list(done.values()))
    missing = sorted({p.question_id for p in left if p.question_id not in run.questions})
    if missing:
        raise UserError(f"{run.data}: questions {missing[:5]} of the run are not in its dataset (give --data)")
    store.drop(again)
    store.open()
    try:
        with progress.bar("interpreting", len(left), "predictions") as advance:
            for name in sorted({p.model for p in left}):
                with loaded(run, name, device) as (model, processor):
                    twin = redrawn(run, name, device)
                    for _, clip in itertools.groupby((p for p in left if p.model == name), key=lambda p: p.video_id):
                        cache: dict = {}  # one video's frames, vision output and generic passes
                        for pred in clip:
                            occlude = occludes(pred, methods, mapped)
                            store.append(one(pred, run, model, processor, cache, layers, twin, methods, occlude))
                            advance()
    finally:
        store.close()
    write_regions(run)
    write_effects(run)
    return Interpreted(len(left), len(todo) - len(left))


def occludes(pred: Prediction, methods: str, mapped: Collection[str] | None) -> bool:
    """Whether `pred`'s record carries an occlusion map: effects measured, an answered choice, a
    question drawn (in `mapped`; every one when None)."""
    return methods != "none" and pred.reply in pred.choices and (mapped is None or pred.question_id in mapped)


def unmapped(todo: list[Prediction], done: dict, methods: str, mapped: Collection[str] | None) -> set:
    """Keys recorded without the occlusion map they are now to be drawn with (a resume with a
    larger --pictures): made again."""
    return {p.key for p in todo if p.key in done and occludes(p, methods, mapped) and not done[p.key].occlusion}


def occlusion_check(run: Run) -> str:
    """The occlusion maps' known-answer check on this run, in words: on how many object questions
    (with boxes) the asked object's tokens hold the map's most effective token."""
    assert run.data is not None
    layout, preds, hits = DataLayout(run.data), {p.key: p for p in run.predictions}, []
    for rec in run.attention:
        path = layout.boxes(rec.video_id)
        if rec.type != "object" or not rec.occlusion or not path.is_file() or rec.variant not in MAPPED:
            continue
        occ, pred = np.asarray(rec.occlusion), preds[rec.key]
        if not pred.frame_size:
            continue
        grid = Grid(occ.shape[0], 2 * occ.shape[1], 2 * occ.shape[2], patch=pred.frame_size[0] // (2 * occ.shape[2]))
        cue = rec.variant if rec.variant in STROKES else "bbox"
        shares = clip_shares(path, cue, run.questions[rec.question_id], pred.frame_indices, grid.pixels)
        hits.append(found(occ, region_tokens(shares, grid)["object"]))
    if not hits:
        return "no object question with boxes among the maps: the known-answer check cannot be made"
    return (
        f"the asked object's tokens hold the most effective token on {sum(hits)} of {len(hits)} object "
        f"questions ({100 * sum(hits) / len(hits):.0f} %; the known-answer check asks 80 %)"
    )


def write_effects(run: Run) -> Path:
    """interpret/effects.csv: every record's region removals, from records.jsonl alone."""
    assert run.layout is not None
    return _write_csv(run, run.layout.effects_csv, EFFECT_COLUMNS, lambda rec: rec.effects)


def write_regions(run: Run) -> Path:
    """interpret/regions.csv: every record's rows, one row per region, from records.jsonl alone."""
    assert run.layout is not None

    def rows(rec: AttentionRecord) -> list[dict]:
        ids = {"question_id": rec.question_id, "model": rec.model, "variant": rec.variant}
        return [ids | row for row in rec.rows]

    return _write_csv(run, run.layout.regions_csv, COLUMNS, rows)


def _write_csv(run: Run, path: Path, columns: list[str], rows: Callable[[AttentionRecord], list[dict]]) -> Path:
    """`path` written whole (atomically) from every record's `rows`, records in key order."""
    assert run.layout is not None
    buf = io.StringIO()
    out = csv.DictWriter(buf, columns, extrasaction="ignore")
    out.writeheader()
    for rec in in_key_order(attention_store(run.layout).load()):
        out.writerows(rows(rec))
    atomic_write(path, buf.getvalue())
    return path


def layer_groups(layers: Sequence[int]) -> dict[str, list[int]]:
    """Named groups of language layers for the pictures: the mean of all, and thirds (early,
    middle, late) when there are more than three, else each layer alone."""
    groups = {"mean": list(layers)}
    if len(layers) > 3:
        third = np.array_split(np.array(sorted(layers)), 3)
        return groups | {name: part.tolist() for name, part in zip(("early", "middle", "late"), third)}
    return groups | {f"L{k}": [k] for k in layers}
