"""Typed run-level files, each with a `schema_version`: a dataset's manifest.json, a run's
run.json and report.json, an adapter's train_args.json.

`read(cls, path)` accepts every version this code knows (files without `schema_version`
are version 1, written before the field existed) and names the file and field on a bad
one; `write(path, record)` writes the current version atomically.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from core.errors import DataError
from core.files import read_json, write_json
from core.records import SCHEMA_VERSION

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
    schema_version: int = SCHEMA_VERSION

    @staticmethod
    def upgrade(raw: dict[str, Any]) -> dict[str, Any]:
        raw.setdefault("kind", "arrow-of-time" if "source" in raw else "ssv2")
        return raw


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
    req_per_s: float | None = None
    health: dict[str, Any] = field(default_factory=dict)  # peak resident memory while sending (measure.health)


@dataclass
class RunRecord:
    """How a run was asked (runs/RUN/run.json); its answers are in predictions.jsonl."""

    __pydantic_config__ = _STRICT
    run_id: str
    started: str
    config: dict[str, Any]  # every measure option as given
    ask: dict[str, Any]  # the request settings the client used
    models: list[str]
    variants: list[str]
    split: str
    dataset: dict[str, Any]  # path and manifest sha256
    servers: list[dict[str, Any]]  # per base URL: vLLM version, /v1/models, what `serve run` wrote (core.serverinfo)
    frames: dict[str, Any]
    sessions: list[Session] = field(default_factory=list)
    rejected_questions: list[str] = field(default_factory=list)
    judges: list[dict[str, Any]] = field(default_factory=list)  # per judge: model, URL, prompt version, settings
    ended: str | None = None
    complete: bool = False
    schema_version: int = SCHEMA_VERSION

    def parents(self) -> dict[str, str | None]:
        """served model -> its base model (None for a base), from what the servers listed."""
        return {m["id"]: m.get("parent") for s in self.servers for m in s.get("models", [])}


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
    frames: int
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
    schema_version: int = SCHEMA_VERSION


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
    statistics: dict[str, Any] = field(default_factory=dict)  # how every CI and p-value was computed
    open_accuracy: list[dict[str, Any]] = field(default_factory=list)  # open questions, per judge
    open_adapter_vs_base: list[dict[str, Any]] = field(default_factory=list)
    open_audit: list[dict[str, Any]] = field(default_factory=list)
    judge_agreement: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)  # temporal probes per model x kind
    reference: list[dict[str, Any]] = field(default_factory=list)  # published numbers beside ours
    health: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # run health tables (measure.health)
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
        raw = upgrade(raw)
    try:
        return TypeAdapter(cls).validate_python(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise DataError(f"{path}: not a {cls.__name__} file: {where}: {err['msg']}") from None


def write(path: Path, record: Any) -> None:
    write_json(path, asdict(record))
