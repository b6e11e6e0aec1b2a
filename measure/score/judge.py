"""`measure judge`: open questions' predictions judged by an LLM on any OpenAI-compatible
server (vLLM, or an API such as Gemini's), the whole flow (`judge_run`: choose the judge, ask
what is left, append, record it in run.json); or by normalised exact match (`EXACT`, no server).

The judge sees the question, the reference answer and the prediction, temperature 0, and
replies in one of two ways (`--judge-format`; each judgement records which: `path`):
- schema: OpenAI's `response_format` with the JSON schema {"pred": "yes"|"no", "score": 0-5},
  which vLLM, OpenAI and Gemini's OpenAI-compatible endpoint enforce;
- text: asked to reply "yes 4" or "no 1", parsed from the text.
`auto` asks with the schema and reads a reply that is not the schema's JSON as text (a server
that ignores `response_format`); a server that refuses it (HTTP 400) is asked in text from
then on. A call that fails (after bounded retries) or whose reply cannot be read either way is
`judge_error`: counted apart, asked again on resume, never scored "no". Verdicts are appended
to judgements.jsonl, one line per prediction x judge, so several judges can judge one run.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core import progress
from core.chat import connect, create, list_models, text
from core.errors import UserError
from core.records import OPEN, JudgeKey, Judgement, Prediction, Question, normalize
from core.runfiles import JudgeRecord
from core.runs import Run, in_key_order
from core.store import judgement_store
from core.urls import ServerUrl

PROMPT_VERSION = 2  # 2: the reply's format said in the prompt (schema or text)
MAX_TOKENS = 24  # '{"pred":"yes","score":5}' is about 12 tokens
EXACT = "exact-match"  # the judge that needs no model: normalised exact match (score 5 or 0)
JudgeFormat = Literal["auto", "schema", "text"]
TEXT_REPLY = re.compile(r"\b(yes|no)\b\W*(?:score\W*)?([0-5])\b", re.IGNORECASE)
SCHEMA = {
    "type": "object",
    "properties": {
        "pred": {"type": "string", "enum": ["yes", "no"]},
        "score": {"type": "integer", "minimum": 0, "maximum": 5},
    },
    "required": ["pred", "score"],
    "additionalProperties": False,
}
SYSTEM = (
    "You grade answers to questions about videos. Decide whether the predicted answer means the same as the "
    "correct answer. Synonyms and paraphrases match. Numbers, names, dates, phone numbers and other exact strings "
    "must have the same value. An answer that is vaguer, or adds or changes details that alter its meaning, does "
    "not match."
)
USER = (
    "Question: {question}\nCorrect answer: {answer}\nPredicted answer: {prediction}\n\n"
    'Reply in JSON: "pred" is "yes" if the predicted answer matches the correct answer, else "no"; "score" is an '
    "integer from 0 (no match at all) to 5 (a full match)."
)
USER_TEXT = (
    "Question: {question}\nCorrect answer: {answer}\nPredicted answer: {prediction}\n\n"
    'Reply with "yes" if the predicted answer matches the correct answer, else "no", then a score from 0 (no '
    'match at all) to 5 (a full match), and nothing else: for example "yes 5" or "no 1".'
)


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pred: Literal["yes", "no"]
    score: int = Field(ge=0, le=5)


@dataclass
class JudgeConfig:
    judge: str  # the judge's served model name
    format: JudgeFormat = "auto"
    timeout_s: float = 60.0
    max_attempts: int = 3
    backoff_s: float = 0.5
    refused_schema: bool = False  # the server refused `response_format`: asked in text from then on

    def record(self, url: ServerUrl | None) -> JudgeRecord:
        """What run.json keeps about a judge."""
        return JudgeRecord(
            judge=self.judge,
            base_url=str(url) if url else "(none: normalised exact match, no model)",
            prompt_version=PROMPT_VERSION,
            temperature=0.0,
            max_tokens=MAX_TOKENS,
            schema=SCHEMA,
            system=SYSTEM,
            user=USER,
            format=self.format,
            user_text=USER_TEXT,
        )

    def asks_schema(self) -> bool:
        return self.format == "schema" or (self.format == "auto" and not self.refused_schema)


def request(judge: str, question: str, answer: str, prediction: str, timeout_s: float, schema: bool = True) -> dict:
    """The chat-completion arguments of one judge call: the reply as the schema's JSON
    (OpenAI's `response_format`), or as text."""
    user = (USER if schema else USER_TEXT).format(question=question, answer=answer, prediction=prediction)
    args: dict = dict(
        model=judge,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
        temperature=0.0,
        max_tokens=MAX_TOKENS,
        timeout=timeout_s,
    )
    if schema:
        args["response_format"] = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA}}
    return args


def read_reply(reply: str, schema: bool) -> tuple[Verdict, str]:
    """(the verdict, how it was read: schema or text); ValueError when it cannot be read. A
    schema reply that is not its JSON is read as text (a server that ignored the schema)."""
    if schema:
        try:
            return Verdict.model_validate_json(reply), "schema"
        except ValidationError:
            pass
    m = TEXT_REPLY.search(reply)
    if m is None:
        raise ValueError(f"neither the schema's JSON nor 'yes|no SCORE': {reply[:200]!r}")
    return Verdict(pred=m[1].lower(), score=int(m[2])), "text"


def exact(p: Prediction, q: Question) -> Judgement:
    """The verdict of normalised exact match: yes (5) when the reply, lower-cased, without a
    leading article, spacing or closing punctuation, is the reference answer so normalised."""
    same = normalize((p.reply or "").strip().rstrip(".!")) == normalize(q.answer.strip().rstrip(".!"))
    return Judgement(
        question_id=p.question_id,
        model=p.model,
        variant=p.variant,
        judge=EXACT,
        status="ok",
        pred="yes" if same else "no",
        score=5 if same else 0,
        prompt_version=PROMPT_VERSION,
        path="exact",
    )


def todo(predictions: list[Prediction], done: dict[JudgeKey, Judgement], judge: str) -> list[Prediction]:
    """Open predictions with a reply that this judge has not judged yet (earlier judge_errors included)."""
    return [
        p
        for p in predictions
        if p.type == OPEN and p.status == "ok" and ((k := (*p.key, judge)) not in done or done[k].status != "ok")
    ]


async def judge_one(client: AsyncOpenAI, p: Prediction, q: Question, cfg: JudgeConfig) -> Judgement:
    """One verdict; never raises for server trouble or a bad reply (status judge_error)."""
    base = dict(
        question_id=p.question_id, model=p.model, variant=p.variant, judge=cfg.judge, prompt_version=PROMPT_VERSION
    )
    schema = cfg.asks_schema()
    args = request(cfg.judge, q.question, q.answer, p.reply or "", cfg.timeout_s, schema)
    start = time.perf_counter()
    resp, attempt, error = await create(client, args, cfg.max_attempts, cfg.backoff_s)
    if resp is None and schema and cfg.format == "auto" and error.startswith("HTTP 400"):
        cfg.refused_schema = True  # this server takes no JSON schema: asked in text from now on
        schema = False
        args = request(cfg.judge, q.question, q.answer, p.reply or "", cfg.timeout_s, schema)
        resp, attempt, error = await create(client, args, cfg.max_attempts, cfg.backoff_s)
    path = "schema" if schema else "text"
    if resp is not None:
        reply = text(resp)
        try:  # temperature 0: asking again would give the same reply
            v, path = read_reply(reply, schema)
            return Judgement(
                **base,
                status="ok",
                pred=v.pred,
                score=v.score,
                latency_s=time.perf_counter() - start,
                attempts=attempt,
                path=path,
            )
        except ValueError as e:
            error = f"reply not readable: {e}"
    return Judgement(
        **base, status="judge_error", error=error, latency_s=time.perf_counter() - start, attempts=attempt, path=path
    )


async def judge_all(
    items: list[tuple[Prediction, Question]],
    url: ServerUrl,
    api_key: str | None,
    cfg: JudgeConfig,
    concurrency: int,
    on_result: Callable[[Judgement], None],
) -> None:
    """Judge every item with at most `concurrency` calls in flight; `on_result` sees each
    verdict as soon as it is known."""
    if cfg.judge == EXACT:
        for p, q in items:
            on_result(exact(p, q))
        return
    client = connect(url, api_key, max_retries=0)
    queue: asyncio.Queue = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            p, q = queue.get_nowait()
            on_result(await judge_one(client, p, q, cfg))

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(items))))))
    finally:
        await client.close()


@dataclass(frozen=True)
class Judged:
    """What one `measure judge` did."""

    judge: str
    url: ServerUrl | None
    asked: int
    failed: int  # judge errors: asked again by the next `measure judge`
    unjudgeable: int  # predictions whose question is not in the dataset


def choose(run: Run, judge: str | None, url: ServerUrl | None, api_key: str | None) -> tuple[str, ServerUrl | None]:
    """The judge (default: the run's base model) and its server (default: the run's first),
    checked to be served there (the exact-match judge needs none); UserError saying what is
    missing."""
    if run.record is None:
        raise UserError(f"{run.id}: run.json missing (the judge needs the run's servers and dataset)")
    if not any(p.type == OPEN for p in run.predictions):
        raise UserError(f"{run.id}: no open questions to judge")
    judge = judge or next((m for m in run.record.models if run.parents.get(m) is None), None)
    if judge is None:
        raise UserError(f"{run.id}: no base model among {run.record.models}; give --judge-model")
    if judge == EXACT:
        url = None
    else:
        url = url or ServerUrl.parse(run.record.servers[0].url)
        served = [m["id"] for m in list_models(url, api_key)]
        if judge not in served:
            raise UserError(f"judge {judge!r} is not served at {url} (it serves {', '.join(served)})")
    if run.data is None:
        raise UserError(
            f"{run.id}: its dataset {run.record.dataset.path!r} is not found (the judge needs the "
            "questions); give --data"
        )
    return judge, url


def judge_run(
    run: Run, judge: str | None, url: ServerUrl | None, api_key: str | None, concurrency: int, fmt: JudgeFormat = "auto"
) -> Judged:
    """Judge what is left of `run` (new predictions and earlier judge errors) with a progress
    bar, appending each verdict to judgements.jsonl as it comes; the judge is recorded in
    run.json. `run.judgements` is updated."""
    judge, url = choose(run, judge, url, api_key)
    assert run.layout is not None and run.record is not None
    jstore = judgement_store(run.layout)
    pending = todo(run.predictions, jstore.load(), judge)
    items = [(p, run.questions[p.question_id]) for p in pending if p.question_id in run.questions]
    cfg = JudgeConfig(judge, fmt)
    if all(j.judge != judge for j in run.record.judges):
        run.record.judges.append(cfg.record(url))
        run.store.write_run(run.record)
    jstore.drop({(*p.key, judge) for p, _ in items})  # earlier judge errors: asked again, one line each
    failed = 0
    jstore.open()
    try:
        with progress.bar(f"judging ({judge})", len(items), "verdicts") as advance:

            def on_result(j: Judgement) -> None:
                nonlocal failed
                jstore.append(j)
                failed += j.status != "ok"
                advance()

            asyncio.run(judge_all(items, url, api_key, cfg, concurrency, on_result))
    finally:
        jstore.close()
    run.judgements = in_key_order(jstore.load())
    return Judged(judge, url, len(items), failed, len(pending) - len(items))
