"""Typed run-level files, each with a `schema_version` and typed all the way down: a
dataset's manifest.json, a run's run.json and report.json, an adapter's train_args.json.

`read(cls, path)` accepts every version this code knows (files without `schema_version`
are version 1, written before the field existed) and names the file and field on a bad
one; `write(path, record)` writes the current version atomically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from core.ask import AskConfig
from core.errors import DataError
from core.files import read_json, write_json
from core.frames import FrameSpec
from core.records import SCHEMA_VERSION
from core.serverinfo import ServerInfo

T = TypeVar("T")
_STRICT = ConfigDict(extra="forbid")


@dataclass
class Manifest:
    """What `prepare` made a dataset from and what it dropped (data/NAME/manifest.json)."""

    __pydantic_config__ = _STRICT
    kind: str  # "ssv2" (real or synthetic SSV2 formats) or "arrow-of-time"
    counts: dict[str, Any]
    sources: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    render_settings: dict[str, Any] = field(default_factory=dict)
    dropped: list[dict[str, str]] = field(default_factory=list)
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    frames_without_cues: dict[str, int] = field(default_factory=dict)
    padded: dict[str, list[int]] = field(default_factory=dict)
    boxes_fixed: dict[str, dict[str, int]] = field(default_factory=dict)
    boxes_for_other_videos: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    source: str | None = None  # arrow-of-time: the dataset its clips come from
    videos_without_both_clips: list[str] = field(default_factory=list)
    categories: dict[str, str] = field(default_factory=dict)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)  # temporal probes: construction per clip
    flagged: dict[str, list[str]] = field(default_factory=dict)  # imported questions kept though flawed, and how
    subset: dict[str, Any] = field(default_factory=dict)  # `prepare ssv2 --subset`: its rule, counts, differences
    no_regions: dict[str, str] = field(default_factory=dict)  # imported clips kept without boxes: video -> why
    schema_version: int = SCHEMA_VERSION

    @staticmethod
    def upgrade(raw: dict[str, Any], version: int) -> dict[str, Any]:
        raw.setdefault("kind", "arrow-of-time" if "source" in raw else "ssv2")
        return raw


@dataclass
class ServerPeak:
    peak_rss_bytes: int | None
    source: str  # "process group (/proc)" or "/metrics (API server process)"


@dataclass
class SessionHealth:
    """Peak resident memory while a session sent (measure.ask.health)."""

    __pydantic_config__ = _STRICT
    client_peak_rss_bytes: int
    servers: dict[str, ServerPeak] = field(default_factory=dict)  # by base URL


@dataclass
class Session:
    """One invocation of `measure` on a run (a run resumed twice has three)."""

    __pydantic_config__ = _STRICT
    started: str
    to_send: int
    retried_errors: int = 0
    ended: str | None = None
    answered: int | None = None  # None when interrupted
    send_s: float | None = None
    health: SessionHealth | None = None
    clips_prepared: int | None = None  # clip media the client decoded (or read inline) this session
    clips_from_store: int | None = None  # ... and read from the frame store instead

    @property
    def req_per_s(self) -> float | None:
        return round(self.answered / self.send_s, 2) if self.answered is not None and self.send_s else None


@dataclass
class ServedModel:
    """A model a server listed (/v1/models)."""

    __pydantic_config__ = ConfigDict(extra="ignore")  # vLLM lists more (object, created, permission, ...)
    id: str
    root: str | None = None  # the model dir or hub id; an adapter's path as its server was given it
    parent: str | None = None  # an adapter's base model
    max_model_len: int | None = None


@dataclass
class ServerRecord:
    """One server of a run: what it serves and, when `serve run` started it here, how."""

    __pydantic_config__ = _STRICT
    url: str  # its base URL (.../v1)
    version: str | None = None  # vLLM's
    models: list[ServedModel] = field(default_factory=list)
    serve: ServerInfo | None = None


@dataclass
class DatasetRecord:
    __pydantic_config__ = _STRICT
    path: str
    manifest_sha256: str | None = None


@dataclass
class JudgeRecord:
    """A judge of a run's open questions: its model, server, prompt and settings."""

    __pydantic_config__ = _STRICT
    judge: str  # its served model name
    base_url: str
    prompt_version: int
    temperature: float
    max_tokens: int
    schema: dict[str, Any]
    system: str
    user: str
    format: str = "schema"  # auto, schema or text (`measure judge --judge-format`)
    user_text: str = ""  # the prompt of a text reply


@dataclass
class ReferenceRow:
    """One published row: a model on one variant's clips, accuracy in %."""

    __pydantic_config__ = _STRICT
    model: str
    videos: str
    object_acc: float | None = None
    verb_acc: float | None = None
    overall_acc: float | None = None


@dataclass
class ReferenceRecord:
    """A published table shown beside the run's numbers (`measure --reference`), kept whole so
    the report needs nothing outside the run folder."""

    __pydantic_config__ = _STRICT
    source: str  # the CSV it was read from
    models: dict[str, str] = field(default_factory=dict)  # its model labels -> served models
    rows: list[ReferenceRow] | None = None  # None: a run from before v3, read from `source`


@dataclass
class RunRecord:
    """How a run was asked (runs/RUN/run.json); its answers are in predictions.jsonl."""

    __pydantic_config__ = _STRICT
    run_id: str
    started: str
    dataset: DatasetRecord
    split: str
    models: list[str]
    variants: list[str]
    ask: AskConfig
    servers: list[ServerRecord]
    limit: int | None = None
    concurrency: int = 32
    reference: ReferenceRecord | None = None
    sessions: list[Session] = field(default_factory=list)
    rejected_questions: list[str] = field(default_factory=list)
    judges: list[JudgeRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what measure warned of when it started (e.g. frame specs)
    client_packages: dict[str, str] = field(default_factory=dict)  # what shaped what was sent (`measure.ask.plan`)
    # cued variant -> the drawing its clips were made with (`core.variants.DRAWINGS`); None: a run
    # of before v4, which recorded none (the run reader names its variants: `core.runs`)
    drawings: dict[str, str] | None = None
    ended: str | None = None
    complete: bool = False
    schema_version: int = SCHEMA_VERSION

    def parents(self) -> dict[str, str | None]:
        """served model -> its base model (None for a base), from what the servers listed."""
        return {m.id: m.parent for s in self.servers for m in s.models}

    def dtype(self, model: str) -> str | None:
        """The --dtype vLLM served `model` in (None: no server started by `serve run` here lists it)."""
        for s in self.servers:
            argv = s.serve.argv if s.serve is not None else []
            if any(m.id == model for m in s.models) and "--dtype" in argv:
                return argv[argv.index("--dtype") + 1]
        return None

    def serving(self) -> str:
        """Whether its servers answered independently of the batch (`serve run --batch-invariant`),
        in words: batch-invariant, not batch-invariant, mixed, or unknown (a server not started by
        `serve run` here)."""
        known = [s.serve.batch_invariant for s in self.servers if s.serve is not None]
        if not known or len(known) < len(self.servers):
            return "unknown (a server not started by `serve run` on this machine)"
        if all(known):
            return "batch-invariant (VLLM_BATCH_INVARIANT=1)"
        return "mixed: some servers batch-invariant, some not" if any(known) else "not batch-invariant"

    @staticmethod
    def upgrade(raw: dict[str, Any], version: int) -> dict[str, Any]:
        return _run_v3(raw) if version < 3 else raw


def _ask_v3(ask: dict[str, Any]) -> dict[str, Any]:
    """A v1/v2 `ask` block: `client_frames`, `sampling`, `frame_size` and the server's
    `frames` became one frame spec."""
    ask = dict(ask)
    count = ask.pop("client_frames", None) or 8
    server = ask.pop("frames", None)
    media = ask.get("media", "frames")
    spec = {
        "frames": count if media == "frames" else server or count,
        "sampling": ask.pop("sampling", "centers"),
        "frame_size": ask.pop("frame_size", None),
    }
    return ask | {"frames": spec}


def _run_v3(raw: dict[str, Any]) -> dict[str, Any]:
    """A v1/v2 run.json as v3: options typed, /v1/models trimmed, the reference in a block of
    its own, nothing derivable kept (the `frames` block, `config` repeating the rest)."""
    raw = dict(raw)
    config = raw.pop("config", {})
    raw.pop("frames", None)
    raw["ask"] = _ask_v3(raw.get("ask", {}))
    raw["limit"], raw["concurrency"] = config.get("limit"), config.get("concurrency", 32)
    if config.get("reference"):
        raw["reference"] = {"source": str(config["reference"]), "models": config.get("reference_models") or {}}
    raw["sessions"] = [
        {k: v for k, v in s.items() if k != "req_per_s"} | {"health": s.get("health") or None}
        for s in raw.get("sessions", [])
    ]
    return raw


@dataclass
class TrainArgs:
    """How an adapter was trained (ADAPTER/train_args.json)."""

    __pydantic_config__ = _STRICT
    model: str
    data: str
    variants: list[str]
    examples: int
    rank: int
    alpha: int
    dropout: float
    targets: str
    lr: float
    warmup: float
    epochs: float
    batch: int
    per_device_batch: int
    gradient_accumulation_steps: int
    world_size: int
    frames: FrameSpec  # the frames each example was trained on
    answer_format: str
    max_steps: int
    seed: int
    precision: str
    gradient_checkpointing: bool
    steps: int
    resumed_from: str | None
    train_loss: float
    dataset_manifest_sha256: str | None
    command: list[str]
    tune_merger: bool = False  # LoRA on the vision merger too (the study's tune_mm_mlp)
    mix: dict[str, dict[str, Any]] | None = None  # `--mix`: per dataset its share, examples taken and available
    max_text_tokens: int | None = None
    left_out_long: list[str] = field(default_factory=list)  # question ids over --max-text-tokens
    schema_version: int = SCHEMA_VERSION

    @staticmethod
    def upgrade(raw: dict[str, Any], version: int) -> dict[str, Any]:
        """Before v3 an adapter was trained on `frames` frames by centers sampling."""
        return (
            raw | {"frames": {"frames": raw["frames"]}} if version < 3 and isinstance(raw.get("frames"), int) else raw
        )


@dataclass
class ReportRecord:
    """Every report table as records (runs/RUN/report.json), computed from predictions."""

    __pydantic_config__ = _STRICT
    accuracy: list[dict[str, Any]]
    cued_vs_plain: list[dict[str, Any]]
    adapter_vs_base: list[dict[str, Any]]
    template_moves: list[dict[str, Any]]
    positions: list[dict[str, Any]]
    audit: list[dict[str, Any]]
    cued_where_blind_fails: list[dict[str, Any]]
    arrow_of_time: list[dict[str, Any]]
    warnings: list[str]
    verdicts: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # what a reader acts on: report.md's and the viewer's first
    ledger: list[dict[str, Any]] = field(default_factory=list)  # every paired test, one row (comparisons.csv)
    primary: list[dict[str, Any]] = field(default_factory=list)  # the primary family, every column
    statistics: dict[str, Any] = field(default_factory=dict)  # how every CI and p-value was computed
    open_accuracy: list[dict[str, Any]] = field(default_factory=list)  # open questions, per judge
    open_adapter_vs_base: list[dict[str, Any]] = field(default_factory=list)
    open_audit: list[dict[str, Any]] = field(default_factory=list)
    judge_agreement: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)  # temporal probes per model x kind
    reference: list[dict[str, Any]] = field(default_factory=list)  # published numbers beside ours
    reference_notes: list[str] = field(default_factory=list)  # what our cued clips were drawn as
    interventions: list[dict[str, Any]] = field(default_factory=list)  # plain vs masked / cue-only
    attention: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # where the model looked (interpret)
    health: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # run health tables (measure.report.health)
    calibration: list[str] = field(default_factory=list)  # calibration.json in words (measure calibrate)
    schema_version: int = SCHEMA_VERSION

    @staticmethod
    def upgrade(raw: dict[str, Any], version: int) -> dict[str, Any]:
        """Reports before the ledger held the verdicts by family and a line on the others: a
        function of the same tables (`measure report` writes them anew)."""
        return {k: v for k, v in raw.items() if k not in ("verdict_families", "others")}


@dataclass
class CalibrationRecord:
    """What `measure calibrate` simulated on a run (runs/RUN/calibration.json): per paired
    comparison, the rejection rate under the null and the weak null, the interval's coverage,
    and power beside its prediction (percentages); per Holm family, the family-wise rate."""

    __pydantic_config__ = _STRICT
    sims: int
    seed: int
    effect: float | None  # points planted in every comparison; None: each comparison's MDE
    alpha: float
    comparisons: list[dict[str, Any]]
    familywise: dict[str, float]  # share of null simulations in which Holm rejects any test of the family
    tests: dict[str, int]  # tests per family
    weak_familywise: dict[str, float] = field(default_factory=dict)  # the same under the weak null
    procedure: str = "report"  # whose statistics were simulated: the report's, or a broken one (a check's check)
    schema_version: int = SCHEMA_VERSION

    @staticmethod
    def upgrade(raw: dict[str, Any], version: int) -> dict[str, Any]:
        """Before v4 the null was the sign-flip test's own randomisation: kept as it was, said so."""
        return raw | {"procedure": "report (v3: sign-flip null)"} if version < 4 else raw


@dataclass
class ProfiledModel:
    """One model's serving profile (`measure profile`): what was measured, as measured; every
    figure and verdict of profile.md is computed from it (`measure.profile.figures`)."""

    __pydantic_config__ = _STRICT
    model: str  # the model dir or hub id served
    family: str  # its request profile (core.profiles)
    dtypes: list[str]  # the first: every measure; the others: latency and answers against it
    ready: dict[str, dict[str, Any]]  # dtype -> ready_s, times (vLLM's log), rss_ready_bytes
    latency: list[dict[str, Any]]  # dtype x input kind: cold_s, warm_s, replies, peak_rss_bytes, errors
    throughput: list[dict[str, Any]]  # per requests in flight: requests, seconds, errors, latencies
    session: dict[str, Any]  # the leak check: requests, rss_bytes after n and after 10 n
    repeats: dict[str, Any]  # temperature 0, 0.7 with a seed, 0.7 without: the replies
    edges: list[dict[str, Any]]  # per edge input: what happened, and whether the server still answered
    seconds: float  # this model's profile, servers started and stopped included


@dataclass
class ProfileRecord:
    """What `measure profile` measured (runs/profile/profile.json)."""

    __pydantic_config__ = _STRICT
    started: str
    settings: dict[str, Any]  # the command's options
    machine: dict[str, Any]  # cores, memory, vLLM's version
    models: list[ProfiledModel]
    targets: list[dict[str, Any]] = field(default_factory=list)  # the targets file's rows, as given
    schema_version: int = SCHEMA_VERSION


def read(cls: type[T], path: Path) -> T:
    """The record in `path`, upgraded to the current schema; DataError naming the file and
    the field when it is not one."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object")
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise DataError(f"{path}: schema_version {version!r} is newer than this visual-cues reads ({SCHEMA_VERSION})")
    raw["schema_version"] = SCHEMA_VERSION
    upgrade = getattr(cls, "upgrade", None)
    if upgrade is not None:
        raw = upgrade(raw, version)
    try:
        return TypeAdapter(cls).validate_python(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise DataError(f"{path}: not a {cls.__name__} file: {where}: {err['msg']}") from None


def write(path: Path, record: Any) -> None:
    write_json(path, asdict(record))
