"""A run's whole report, a function of the run as stored (`core.runs.Run`) alone: whichever
command builds it, the same run gives the same report."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from core.records import OPEN
from core.runfiles import CalibrationRecord
from core.runs import Run
from measure.report import attention, health, opentables, reference, summary
from measure.report.ledger import ledger
from measure.report.tables import (
    ATTENTION,
    CAUSAL_FAMILY,
    accuracy_table,
    arrow_of_time,
    audit,
    cell_ci,
    comparisons,
    cued_where_blind_fails,
    family_sizes,
    holm_adjust,
    interventions,
    per_template,
    positions,
    primary_table,
    template_moves,
    temporal_probes,
    to_frame,
    verdicts,
)
from measure.score.open import verdicts as open_verdicts


@dataclass(kw_only=True)
class Report:
    summary: list[str]  # at most ten sentences a reader acts on (`measure.report.summary`)
    ledger: pd.DataFrame  # every paired test, one row (`measure.report.ledger`): the family tables
    verdicts: list[str]  # a sentence per accuracy, attention and declared causal comparison
    primary: pd.DataFrame  # the primary family with every column of its tables
    tests: int  # every paired test of the report
    families: dict[str, int]  # the tests of each Holm family (p_holm corrects within one)
    table: pd.DataFrame
    cued_vs_plain: pd.DataFrame
    adapter_vs_base: pd.DataFrame
    templates: pd.DataFrame
    moves: pd.DataFrame
    positions: pd.DataFrame
    cis: dict[tuple[str, str], tuple[float, float]]  # overall accuracy CI per model x variant (videos resampled)
    audit: pd.DataFrame
    warnings: list[str]
    cued_blind_wrong: pd.DataFrame
    arrow: pd.DataFrame
    open_accuracy: pd.DataFrame  # open questions, per judge (`measure.report.opentables`)
    open_adapter_vs_base: pd.DataFrame
    open_audit: pd.DataFrame
    judge_agreement: pd.DataFrame
    probes: pd.DataFrame = field(default_factory=pd.DataFrame)  # temporal probes per model x kind
    reference: pd.DataFrame = field(default_factory=pd.DataFrame)  # published numbers beside ours
    reference_notes: list[str] = field(default_factory=list)  # what our cued clips were drawn as
    frames: str = ""  # how the clips were sent (from run.json): what a published number is compared under
    serving: str = ""  # whether the servers answered independently of the batch (run.json)
    health: dict[str, pd.DataFrame] = field(default_factory=dict)  # run health, from run.json
    interventions: pd.DataFrame = field(default_factory=pd.DataFrame)  # plain vs objects/context masked, cue only
    attention_regions: pd.DataFrame = field(default_factory=pd.DataFrame)  # mean mass per region (interpret)
    attention_pairs: pd.DataFrame = field(default_factory=pd.DataFrame)  # the study's questions, paired
    attention_inputs: pd.DataFrame = field(default_factory=pd.DataFrame)  # rebuilt input = the run's? same reply?
    attention_off: pd.DataFrame = field(default_factory=pd.DataFrame)  # where it was not, listed
    attention_sanity: pd.DataFrame = field(default_factory=pd.DataFrame)  # maps with weights vs weights redrawn
    causal: pd.DataFrame = field(default_factory=pd.DataFrame)  # region tokens removed vs baselines (interpret)
    calibration: CalibrationRecord | None = None  # `measure calibrate`'s simulations (calibration.json)


def build(run: Run) -> Report:
    """Every table of a run: from its scored predictions (and judgements, for open questions;
    its run.json, for the run health tables and its warnings; the published table it keeps;
    interpret's records, for where the model looked)."""
    parents = run.parents
    df = to_frame(p for p in run.predictions if p.type != OPEN)
    of = open_verdicts(run.predictions, run.judgements)
    empty = pd.DataFrame()
    open_adapters, open_audit = opentables.deltas(of, parents) if not of.empty else (empty, empty)
    cued = adapters = audit_table = blind_wrong = masked = empty
    warnings: list[str] = []
    if not df.empty:
        cued, adapters = comparisons(df, parents)
        audit_table, warnings = audit(df)
        blind_wrong = cued_where_blind_fails(df)
        masked = interventions(df)
    looked = attention.frame(run.attention)
    pairs = empty if looked.empty else attention.comparisons(looked, parents)
    removed = attention.causal(run.attention)
    tested = holm_adjust([cued, adapters, audit_table, blind_wrong, open_adapters, open_audit, masked, pairs, removed])
    cued, adapters, audit_table, blind_wrong, open_adapters, open_audit, masked, pairs, removed = tested
    sizes = family_sizes(tested)
    said = (
        verdicts(cued, adapters, open_adapters, masked, sizes)
        + [(ATTENTION, v) for v in attention.verdicts(pairs, sizes)]
        + [(CAUSAL_FAMILY, v) for v in attention.causal_verdicts(removed, sizes)]
    )
    every = ledger(
        dict(
            cued=cued,
            adapters=adapters,
            audit=audit_table,
            blind_wrong=blind_wrong,
            open_adapters=open_adapters,
            open_audit=open_audit,
            interventions=masked,
            attention=pairs,
            causal=removed,
        )
    )
    inputs, off = attention.inputs(run.attention)
    record = run.record
    drawings = (record.drawings or {}) if record else {}
    sanity = attention.sanity(run.attention)
    published = empty if run.reference is None else reference.table(df, run.reference, drawings)
    warnings = (record.warnings if record else []) + warnings
    extra = attention.sanity_summary(sanity) + summary.extras(run.calibration, published)
    return Report(
        summary=[summary.scope(df, parents), *summary.lines(every, audit_table, masked, warnings, extra)],
        ledger=every,
        verdicts=[line for _, line in said],
        primary=primary_table(cued, adapters),
        tests=sum(sizes.values()),
        families=sizes,
        table=accuracy_table(df),
        cued_vs_plain=cued,
        adapter_vs_base=adapters,
        templates=empty if df.empty else per_template(df),
        moves=empty if df.empty else template_moves(df, parents),
        positions=empty if df.empty else positions(df),
        cis={} if df.empty else cell_ci(df),
        audit=audit_table,
        warnings=warnings,
        cued_blind_wrong=blind_wrong,
        interventions=masked,
        arrow=empty if df.empty else arrow_of_time(df),
        open_accuracy=empty if of.empty else opentables.accuracy(of),
        open_adapter_vs_base=open_adapters,
        open_audit=open_audit,
        judge_agreement=opentables.agreement(run.judgements),
        probes=empty if df.empty else temporal_probes(df),
        reference=published,
        reference_notes=[] if run.reference is None else reference.notes(run.reference, drawings),
        health=health.tables(run.predictions, record) if record is not None else {},
        frames="" if record is None else record.ask.describe_frames(),
        serving="" if record is None else record.serving(),
        attention_regions=empty if looked.empty else attention.regions(looked),
        attention_pairs=pairs,
        attention_inputs=inputs,
        attention_off=off,
        causal=removed,
        attention_sanity=sanity,
        calibration=run.calibration,
    )
