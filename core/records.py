"""The per-item records: a Question (what prepare writes), a Prediction (what measure
writes: what the server said and how it was scored), a Judgement, one key for them, and
their JSON-lines reader and writer.

Every line carries `schema_version`. Older lines are upgraded on reading: version 1 (no
`schema_version`) gets its `verb` from the template; before version 3 a reversed probe was
scored against the forward answer, from 3 on against its own (`reversed_answer`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from core.errors import DataError
from core.variants import REVERSED

SCHEMA_VERSION = 4
QuestionType = Literal["verb", "object", "arrow", "open", "probe", "mcq"]
# arrow: the arrow-of-time task; open: a free-form question (no choices) scored by a judge;
# probe: a synthetic temporal probe (its kind in `category`); mcq: a user's own multiple-choice
# question, any text, no blank needed (its own type, if any, in `category`)
QUESTION_TYPES: tuple[str, ...] = ("verb", "object", "arrow", "open", "probe", "mcq")
MCQ = "mcq"
OPEN = "open"
PROBE = "probe"
TEXT_PROBES = "text"  # the subset of `prepare probes --text`: a probe told as a story, asked with no video
DUPLICATE_CHOICES, ANSWER_NOT_IN_CHOICES = "duplicate_choices", "answer_not_in_choices"
FLAWS = (DUPLICATE_CHOICES, ANSWER_NOT_IN_CHOICES)  # kept in an imported dataset, so it stays comparable
Status = Literal["ok", "invalid", "error"]
Key = tuple[str, str, str]
KEY_FIELDS = ("question_id", "model", "variant")
_ARTICLE = re.compile(r"^(a|an|the)\s+")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a file name: no "/", no leading "." or "-"
SLOT = re.compile(r"\[[^\]]*\]")  # a template's [something] slot
VERB = re.compile(r"[A-Za-z]+ing\b")  # a template's verb: its first -ing word outside the slots


def key(question_id: str, model: str, variant: str) -> Key:
    """The identity of one asked item: a line of predictions.jsonl, a request of a run."""
    return (question_id, model, variant)


def key_of(row: Mapping[str, Any]) -> Key:
    return key(*(row[f] for f in KEY_FIELDS))


def safe_id(video_id: str) -> bool:
    """True when a video id can name a clip file inside the data directory (no ../, no /)."""
    return bool(_SAFE_ID.match(video_id)) and ".." not in video_id


def normalize(text: str) -> str:
    """Case-, whitespace- and leading-article-insensitive form: "A  Box" == "box"."""
    return _ARTICLE.sub("", " ".join(text.lower().split()))


def template_verb(template: str) -> str:
    """An SSV2 template's first word ending in -ing outside the [something] slots, lower-case
    ("" when there is none)."""
    for literal in SLOT.split(template):
        m = VERB.search(literal)
        if m:
            return m.group(0).lower()
    return ""


@dataclass(frozen=True)
class Question:
    """One question about a clip: multiple choice (fill the single `_____` in `question`, or,
    for the arrow-of-time task, say which way the clip plays), or open (`type` "open": a
    free-form answer judged against `answer`; no choices; `category` is its question type)."""

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
    verb: str = ""  # the template's verb (`template_verb`)
    category: str = ""  # a task's own grouping, e.g. reversible/irreversible for arrow of time
    reversed_answer: str | None = None  # probes: the right answer on the reversed clip (a choice)
    flags: list[str] = field(default_factory=list)  # an imported row kept as published though flawed (FLAWS)
    subset: str = ""  # the source's own subset (EgoTextVQA's indoor / outdoor), reported apart
    schema_version: int = SCHEMA_VERSION

    def problems(self) -> list[str]:
        """Reasons this record is not a valid question (empty when it is)."""
        out = []
        if not safe_id(self.video_id):
            out.append(f"video_id {self.video_id!r} is not a plain file name (it could escape the data directory)")
        if self.type not in QUESTION_TYPES:
            out.append(f"type {self.type!r} is not one of {QUESTION_TYPES}")
        if self.type == OPEN:
            return out + [
                m
                for bad, m in (
                    (self.choices, "an open question has no choices"),
                    (not self.question.strip(), "empty question"),
                    (not self.answer.strip(), "empty answer"),
                )
                if bad
            ]
        if self.type not in ("arrow", MCQ) and self.question.count("_____") != 1:
            out.append("question must hold exactly one _____")
        if len(self.choices) < 2:
            out.append("fewer than 2 choices")
        if len({normalize(c) for c in self.choices}) != len(self.choices) and DUPLICATE_CHOICES not in self.flags:
            out.append("duplicate choices")
        if self.choices.count(self.answer) != 1 and not set(FLAWS) & set(self.flags):
            out.append("answer is not exactly once among the choices")
        if self.reversed_answer is not None and self.reversed_answer not in self.choices:
            out.append("reversed_answer is not among the choices")
        return out


@dataclass
class Prediction:
    """What one model said about one question on one clip variant: the server's reply as it
    came (`text`, `top_logprobs`, `prompt_tokens`, timing) and the scored fields (`status`,
    `reply`, `correct`, `probs`: `measure.score`), which a rescore recomputes from the former."""

    question_id: str
    video_id: str
    type: str
    model: str
    variant: str
    choices: list[str]
    answer: str
    reply: str | None
    status: Status
    correct: bool
    probs: dict[str, float] | None = None
    latency_s: float | None = None
    attempts: int = 0
    error: str | None = None
    template: str = ""
    verb: str = ""
    category: str = ""
    prompt_tokens: int | None = None  # what the server counted: shows the frames really sent
    cached_tokens: int | None = None  # of those, served from the engine's prefix cache (None: not counted)
    frame_indices: list[int] | None = None  # frames the client sampled and sent, if it did
    frame_size: list[int] | None = None  # [W, H] of the frames the client sent, if it did
    server: str | None = None  # base URL of the server that answered
    reversed_answer: str | None = None  # the question's (probes): the right answer on the reversed clip
    text: str | None = None  # the reply exactly as the server sent it (None: no reply, or written before v3)
    top_logprobs: dict[str, float] | None = None  # the first reply token's alternatives (token -> logprob)
    subset: str = ""  # the question's (its source's subset)
    reasoning: str | None = None  # a reasoning model's thinking before its answer: kept, shown, never scored
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> Key:
        return key(self.question_id, self.model, self.variant)

    @property
    def expected(self) -> str:
        """The right answer for the clip this prediction saw: a reversed probe's own answer."""
        return self.reversed_answer if self.variant == REVERSED and self.reversed_answer is not None else self.answer


def _upgrade(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A row of any known schema version as the current one."""
    version = row.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise DataError(f"{where}: schema_version {version!r} is newer than this visual-cues reads ({SCHEMA_VERSION})")
    row = dict(row, schema_version=SCHEMA_VERSION)
    if version == 1:
        row.setdefault("verb", template_verb(str(row.get("template", ""))))
    if version < 3 and row.get("variant") == REVERSED and row.get("reversed_answer") is not None:
        row["correct"] = row.get("status") == "ok" and row.get("reply") == row["reversed_answer"]
    return row


def _from_dict(cls, row: dict[str, Any], where: str):
    row = _upgrade(row, where)
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


JudgeStatus = Literal["ok", "judge_error"]
JudgeKey = tuple[str, str, str, str]


@dataclass
class Judgement:
    """One judge's verdict on one open-question prediction (a line of judgements.jsonl, beside
    predictions.jsonl). A call that failed or did not validate is `judge_error`: counted
    apart, asked again on resume, never a "no"."""

    question_id: str
    model: str
    variant: str
    judge: str  # the judge's served model name: a run may hold several judges
    status: JudgeStatus
    pred: Literal["yes", "no"] | None = None
    score: int | None = None  # 0-5
    error: str | None = None
    latency_s: float | None = None
    attempts: int = 0
    prompt_version: int = 0
    path: str = ""  # how the verdict was read: schema (JSON schema), text (parsed), exact (exact match)
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> JudgeKey:
        return judge_key_of(asdict(self))


def judge_key_of(row: Mapping[str, Any]) -> JudgeKey:
    return (*key_of(row), row["judge"])


@dataclass
class AttentionRecord:
    """Where one model looked on one question and clip variant (a line of
    runs/RUN/interpret/records.jsonl, written by `interpret`): the rebuilt input checked against
    the run (`prompt_tokens` vs `run_prompt_tokens`, the reply it gives vs the run's), and one
    row per (cue the regions are drawn for, source, layer, region) with the attention mass."""

    question_id: str
    video_id: str
    type: str
    model: str
    variant: str
    prompt_tokens: int  # the rebuilt prompt's
    run_prompt_tokens: int | None  # what the server counted
    picked: str | None  # the choice the model gives on the rebuilt input (constrained greedy)
    reply: str | None  # the run's
    margin: float | None = None  # first reply token: log-prob of the best allowed token minus the runner-up's
    rows: list[dict[str, Any]] = field(default_factory=list)  # cue_of, source, layer, region, mass, mass_norm, area
    maps: dict[str, list] = field(default_factory=dict)  # layer group -> (groups, token rows, cols) LLM attention
    # A base model's object questions: the language model's region rows (mean of layers) on the same
    # input through its architecture with its weights redrawn (interpret's sanity check)
    redrawn: list[dict[str, Any]] = field(default_factory=list)
    # `interpret --effects`: one row per region x method x window x target (`interpret.effects`)
    effects: list[dict[str, Any]] = field(default_factory=list)
    # `interpret --effects`: each visual token ablated alone, the change in the run's answer's
    # log-probability, as (groups, token rows, cols) (`interpret.effects.occlusion`)
    occlusion: list = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> Key:
        return key(self.question_id, self.model, self.variant)

    @property
    def same_input(self) -> bool:
        return self.prompt_tokens == self.run_prompt_tokens

    @property
    def agrees(self) -> bool:
        return self.picked == self.reply


def attention_from_dict(row: dict[str, Any], where: str) -> AttentionRecord:
    return _from_dict(AttentionRecord, row, where)


def prediction_from_dict(row: dict[str, Any], where: str) -> Prediction:
    return _from_dict(Prediction, row, where)


def judgement_from_dict(row: dict[str, Any], where: str) -> Judgement:
    return _from_dict(Judgement, row, where)


def to_json_line(record: Question | Prediction | Judgement | AttentionRecord) -> str:
    return json.dumps(asdict(record), ensure_ascii=False, sort_keys=True) + "\n"
