"""`measure judge`: open questions' predictions judged by an LLM served by vLLM.

The judge sees the question, the reference answer and the prediction, and replies through
`structured_outputs` with the JSON schema {"pred": "yes"|"no", "score": 0-5}, temperature 0.
A call that fails (after bounded retries) or whose reply does not validate is `judge_error`:
counted apart, asked again on resume, never scored "no". Verdicts are appended to
judgements.jsonl, one line per prediction x judge, so several judges can judge one run.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable, Literal

from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.records import OPEN, Judgement, JudgeKey, Prediction, Question
from measure.client import create

PROMPT_VERSION = 1
MAX_TOKENS = 24  # '{"pred":"yes","score":5}' is about 12 tokens
SCHEMA = {
    "type": "object",
    "properties": {"pred": {"type": "string", "enum": ["yes", "no"]},
                   "score": {"type": "integer", "minimum": 0, "maximum": 5}},
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


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pred: Literal["yes", "no"]
    score: int = Field(ge=0, le=5)


@dataclass(frozen=True)
class JudgeConfig:
    judge: str  # the judge's served model name
    timeout_s: float = 60.0
    max_attempts: int = 3
    backoff_s: float = 0.5

    def record(self, base_url: str) -> dict:
        """What run.json keeps about a judge."""
        return {"judge": self.judge, "base_url": base_url, "prompt_version": PROMPT_VERSION, "temperature": 0.0,
                "max_tokens": MAX_TOKENS, "schema": SCHEMA, "system": SYSTEM, "user": USER}


def request(judge: str, question: str, answer: str, prediction: str, timeout_s: float) -> dict:
    """The chat-completion arguments of one judge call."""
    user = USER.format(question=question, answer=answer, prediction=prediction)
    return dict(model=judge, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                temperature=0.0, max_tokens=MAX_TOKENS, extra_body={"structured_outputs": {"json": SCHEMA}},
                timeout=timeout_s)


def todo(predictions: list[Prediction], done: dict[JudgeKey, Judgement], judge: str) -> list[Prediction]:
    """Open predictions with a reply that this judge has not judged yet (earlier judge_errors included)."""
    return [p for p in predictions if p.type == OPEN and p.status == "ok"
            and ((k := (*p.key, judge)) not in done or done[k].status != "ok")]


async def judge_one(client: AsyncOpenAI, p: Prediction, q: Question, cfg: JudgeConfig) -> Judgement:
    """One verdict; never raises for server trouble or a bad reply (status judge_error)."""
    base = dict(question_id=p.question_id, model=p.model, variant=p.variant, judge=cfg.judge,
                prompt_version=PROMPT_VERSION)
    args = request(cfg.judge, q.question, q.answer, p.reply or "", cfg.timeout_s)
    start = time.perf_counter()
    resp, attempt, error = await create(client, args, cfg.max_attempts, cfg.backoff_s)
    if resp is not None:
        reply = resp.choices[0].message.content or ""
        try:
            v = Verdict.model_validate_json(reply)
            return Judgement(**base, status="ok", pred=v.pred, score=v.score, latency_s=time.perf_counter() - start,
                             attempts=attempt)
        except ValidationError as e:  # temperature 0: asking again would give the same reply
            error = f"reply does not validate ({e.error_count()} error(s)): {reply[:200]!r}"
    return Judgement(**base, status="judge_error", error=error, latency_s=time.perf_counter() - start, attempts=attempt)


async def judge_all(items: list[tuple[Prediction, Question]], base_url: str, api_key: str | None, cfg: JudgeConfig,
                    concurrency: int, on_result: Callable[[Judgement], None]) -> None:
    """Judge every item with at most `concurrency` calls in flight; `on_result` sees each
    verdict as soon as it is known."""
    client = AsyncOpenAI(base_url=base_url, api_key=api_key or "EMPTY", max_retries=0)
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
