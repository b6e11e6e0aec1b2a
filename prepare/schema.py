"""The records every package reads and writes, and the one place that knows the data layout.

data/NAME/
  questions.jsonl               one Question per line
  manifest.json                 sources, options, counts, dropped items
  clips/<variant>/<video>.mp4   one clip per video and variant
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Literal

QuestionType = Literal["verb", "object", "arrow"]
QUESTION_TYPES: tuple[str, ...] = ("verb", "object", "arrow")  # arrow: the arrow-of-time task
_ARTICLE = re.compile(r"^(a|an|the)\s+")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a file name: no "/", no leading "." or "-"


def safe_id(video_id: str) -> bool:
    """True when a video id can name a clip file inside the data directory (no ../, no /)."""
    return bool(_SAFE_ID.match(video_id)) and ".." not in video_id


def normalize(text: str) -> str:
    """Case-, whitespace- and leading-article-insensitive form: "A  Box" == "box"."""
    return _ARTICLE.sub("", " ".join(text.lower().split()))


@dataclass(frozen=True)
class Question:
    """One multiple-choice question: fill the single `_____` in `question` (or, for the
    arrow-of-time task, say which way the clip plays)."""

    id: str
    video_id: str
    split: str
    type: QuestionType
    question: str
    choices: list[str]
    answer: str
    template: str
    label: str
    slot: int | None  # placeholder index for object questions, None for verb questions

    def problems(self) -> list[str]:
        """Reasons this record is not a valid question (empty when it is)."""
        out = []
        if not safe_id(self.video_id):
            out.append(f"video_id {self.video_id!r} is not a plain file name (it could escape the data directory)")
        if self.type not in QUESTION_TYPES:
            out.append(f"type {self.type!r} is not one of {QUESTION_TYPES}")
        if self.type != "arrow" and self.question.count("_____") != 1:
            out.append("question must hold exactly one _____")
        if len(self.choices) < 2:
            out.append("fewer than 2 choices")
        if len({normalize(c) for c in self.choices}) != len(self.choices):
            out.append("duplicate choices")
        if self.choices.count(self.answer) != 1:
            out.append("answer is not exactly once among the choices")
        return out


@dataclass
class Prediction:
    """What one model said about one question on one clip variant."""

    question_id: str
    video_id: str
    type: str
    model: str
    variant: str
    choices: list[str]
    answer: str
    reply: str | None
    status: Literal["ok", "invalid", "error"]
    correct: bool
    probs: dict[str, float] | None = None
    latency_s: float | None = None
    attempts: int = 0
    error: str | None = None
    template: str = ""
    prompt_tokens: int | None = None  # what the server counted: shows the frames really sent
    frame_indices: list[int] | None = None  # frames the client sampled and sent, if it did

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.question_id, self.model, self.variant)


class DataError(ValueError):
    """Bad input: the message names the file (and line) and the reason."""


def _from_dict(cls, row: dict[str, Any], where: str):
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - row.keys())
    if missing:
        raise DataError(f"{where}: missing fields {missing}")
    return cls(**{k: v for k, v in row.items() if k in names})


def read_jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-empty line; a bad line raises DataError naming it."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object")
            yield n, row


def load_questions(path: Path) -> tuple[list[Question], list[str]]:
    """Valid questions of questions.jsonl, and one message per rejected row (file:line and
    the reason): not JSON, missing fields, bad choices, unsafe video id, duplicate id."""
    if not path.is_file():
        raise DataError(f"{path}: no questions file")
    out: list[Question] = []
    rejected: list[str] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise DataError(f"{where}: expected a JSON object")
                q = _from_dict(Question, row, where)
                if not isinstance(q.choices, list) or not all(isinstance(c, str) for c in q.choices):
                    raise DataError(f"{where}: choices must be a list of strings")
            except json.JSONDecodeError as e:
                rejected.append(f"{where}: not JSON ({e.msg} at column {e.colno})")
                continue
            except (DataError, TypeError) as e:
                rejected.append(str(e) if isinstance(e, DataError) else f"{where}: {e}")
                continue
            problems = q.problems() + ([f"duplicate id {q.id!r}"] if q.id in seen else [])
            if problems:
                rejected.append(f"{where}: {'; '.join(problems)}")
                continue
            seen.add(q.id)
            out.append(q)
    return out, rejected


def read_questions(path: Path) -> list[Question]:
    """All questions of a file that must be valid; the first rejected row raises DataError."""
    questions, rejected = load_questions(path)
    if rejected:
        raise DataError(rejected[0] + (f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""))
    return questions


def prediction_from_dict(row: dict[str, Any], where: str) -> Prediction:
    return _from_dict(Prediction, row, where)


def to_json_line(record: Question | Prediction) -> str:
    return json.dumps(asdict(record), ensure_ascii=False, sort_keys=True) + "\n"


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temp file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class DataLayout:
    """Paths inside one prepared dataset directory."""

    root: Path
    clip_suffix: str = field(default=".mp4")

    @property
    def questions(self) -> Path:
        return self.root / "questions.jsonl"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def raw(self) -> Path:
        """Where `prepare synthetic` writes its raw SSV2-format data."""
        return self.root / "raw"

    def clip(self, variant: str, video_id: str) -> Path:
        return self.root / "clips" / variant / f"{video_id}{self.clip_suffix}"

    def variants(self) -> list[str]:
        """Clip variants on disk, in a stable order (plain first)."""
        clips = self.root / "clips"
        found = sorted(p.name for p in clips.iterdir() if p.is_dir()) if clips.is_dir() else []
        return sorted(found, key=lambda v: (v != "plain", v))
