"""THE run reader: a run folder -> one typed `Run`, everything a report, a rescore, the
judge, the viewer (and anything later) reads. A report is a function of this alone."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from core import reference, runfiles
from core.defaults import RUNS_ROOT
from core.errors import UserError
from core.layout import DataLayout, RunLayout
from core.records import AttentionRecord, Judgement, Prediction, Question, load_questions
from core.runfiles import CalibrationRecord, ReferenceRecord, RunRecord
from core.store import PredictionStore, attention_store, judgement_store
from core.variants import DRAWINGS_V1, STUDY_PUBLISHED, named


@dataclass
class Run:
    """A run as stored: its record (run.json), predictions, judgements and published reference
    table; the dataset's questions when the dataset is still where the run found it."""

    predictions: list[Prediction]
    judgements: list[Judgement] = field(default_factory=list)
    record: RunRecord | None = None
    parents: dict[str, str | None] = field(default_factory=dict)  # served model -> its base (None: a base)
    reference: ReferenceRecord | None = None
    layout: RunLayout | None = None
    data: Path | None = None  # the dataset folder, when found
    questions: dict[str, Question] = field(default_factory=dict)  # the dataset's valid questions, by id
    attention: list[AttentionRecord] = field(default_factory=list)  # interpret/records.jsonl: where it looked
    calibration: CalibrationRecord | None = None  # calibration.json: whether the statistics keep their promises
    renamed: dict[str, str] = field(default_factory=dict)  # a run of before v4: a variant's name in its files -> now

    @property
    def id(self) -> str:
        return self.layout.id if self.layout else ""

    @property
    def store(self) -> PredictionStore:
        assert self.layout is not None, "a run read from a folder"
        return PredictionStore(self.layout)


def find(run: Path | str | RunLayout, runs_dir: Path = RUNS_ROOT) -> RunLayout:
    """A run given as a folder, or as a run id under `runs_dir`; UserError when it is neither."""
    layout = run if isinstance(run, RunLayout) else RunLayout.find(run, runs_dir)
    if not layout.predictions.is_file():
        raise UserError(f"{layout.root}: no predictions.jsonl (is this a run folder?)")
    return layout


def dataset(record: RunRecord | None, data: Path | None = None) -> Path | None:
    """A run's dataset: `data` when given (UserError unless it is one), else the path run.json
    recorded, when its questions are still there; None when there is none."""
    if data is not None:
        if not DataLayout(data).questions.is_file():
            raise UserError(f"{data}: not a dataset (no questions.jsonl)")
        return data
    recorded = Path(record.dataset.path) if record else None
    return recorded if recorded is not None and DataLayout(recorded).questions.is_file() else None


def in_key_order(records: dict) -> list:
    return [records[k] for k in sorted(records)]


def load(run: Path | str | RunLayout, runs_dir: Path = RUNS_ROOT, data: Path | None = None) -> Run:
    """Read a run folder whole (a torn last line of predictions.jsonl is repaired, as measure
    does); `data` overrides where its dataset is. Records come in key order, so whatever reads
    a Run gets the same from the same lines in any order."""
    layout = find(run, runs_dir)
    store = PredictionStore(layout)
    record = store.read_run()
    parents = record.parents() if record else {}
    ref = reference.resolved(record.reference, parents) if record and record.reference else None
    found = dataset(record, data)
    questions = {q.id: q for q in load_questions(DataLayout(found).questions)[0]} if found else {}
    predictions = in_key_order(store.load())
    names: dict[str, str] = {}
    if record is not None and record.drawings is None:
        record, names = drawn_before_v4(record, predictions)
    return Run(  # every list in key order, whatever order its lines arrived in
        attention=renamed(in_key_order(attention_store(layout).load()), names),
        predictions=renamed(predictions, names),
        judgements=renamed(in_key_order(judgement_store(layout).load()), names),
        record=record,
        parents=parents,
        reference=ref,
        layout=layout,
        data=found,
        questions=questions,
        calibration=runfiles.read(CalibrationRecord, layout.calibration) if layout.calibration.is_file() else None,
        renamed=names,
    )


def drawn_before_v4(record: RunRecord, predictions: list[Prediction]) -> tuple[RunRecord, dict[str, str]]:
    """A run of before v4 (no drawings recorded), its cued variants named by what drew them:
    `prepare ssv2` then drew the path alone as `trajectory` and boxes with paths as `both`
    (`DRAWINGS_V1`); the study's imported clips kept `trajectory` (their questions are the study's
    rows, whose template is the question itself, blank and all). Returns the record with its
    drawings and variants so named, and old name -> new name."""
    imported = {p.variant for p in predictions if "_____" in p.template}
    drawings = {v: STUDY_PUBLISHED if v in imported else DRAWINGS_V1[v] for v in record.variants if v in DRAWINGS_V1}
    names = {v: named(d) for v, d in drawings.items() if named(d) != v}
    variants = [names.get(v, v) for v in record.variants]
    return replace(record, drawings={names.get(v, v): d for v, d in drawings.items()}, variants=variants), names


def renamed(records: list, names: dict[str, str]) -> list:
    """Records (predictions, judgements, attention) with their variants renamed, in key order."""
    if not names:
        return records
    return sorted((replace(r, variant=names.get(r.variant, r.variant)) for r in records), key=lambda r: r.key)
