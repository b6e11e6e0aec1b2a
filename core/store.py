"""A run's files as written: append-only predictions.jsonl (the source of truth),
judgements.jsonl (open questions' verdicts) and run.json. Reading a run whole: `core.runs`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from core import runfiles
from core.files import atomic_write
from core.layout import RunLayout
from core.records import (
    AttentionRecord,
    Judgement,
    Prediction,
    attention_from_dict,
    judge_key_of,
    judgement_from_dict,
    key_of,
    prediction_from_dict,
    read_jsonl,
    to_json_line,
)
from core.runfiles import RunRecord

R = TypeVar("R", Prediction, Judgement, AttentionRecord)


class JsonlStore(Generic[R]):
    """One line per record key, flushed as soon as it is known."""

    def __init__(self, path: Path, parse: Callable[[dict, str], R], key: Callable[[Mapping[str, Any]], Hashable]):
        self.path = path
        self._parse = parse
        self._key = key
        self._file: IO[str] | None = None

    def load(self) -> dict[Any, R]:
        """Everything already recorded, by key. A torn last line (a crash mid-write) is cut
        off with a warning; any other bad line is an error naming it."""
        if not self.path.is_file():
            return {}
        self._repair_tail()
        done: dict[Any, R] = {}
        for n, row in read_jsonl(self.path):
            record = self._parse(row, f"{self.path}:{n}")
            done[self._key(row)] = record
        return done

    def _repair_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            print(f"warning: {self.path}: dropping a torn last line ({len(data) - cut} bytes)", file=sys.stderr)
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def drop(self, keys: set) -> None:
        """Rewrite the file without the lines of `keys` (atomically: temp file + rename), so
        items asked again (earlier errors) still end with exactly one line each."""
        if not keys or not self.path.is_file():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            if self._key(json.loads(line)) not in keys
        ]
        atomic_write(self.path, "".join(kept))

    def update(self, records: Mapping[Hashable, R], renamed: Mapping[str, str] | None = None) -> None:
        """Replace the lines of `records` (by key) where they stand, every other line kept byte
        for byte, atomically. `renamed`: a variant's name in the file -> in the keys (a run of
        before v4); a replaced line keeps the file's name."""
        if not records:
            return
        names = renamed or {}
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
            row = json.loads(line) if line.strip() else None
            k = None if row is None else self._key(row | {"variant": names.get(row["variant"], row["variant"])})
            out.append(to_json_line(replace(records[k], variant=row["variant"])) if k in records else line)
        atomic_write(self.path, "".join(out))

    def rewrite(self, records: Iterable[R]) -> None:
        """Replace the whole file with `records`, one line each, atomically."""
        atomic_write(self.path, "".join(to_json_line(r) for r in records))

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, record: R) -> None:
        assert self._file is not None, "open() the store first"
        self._file.write(to_json_line(record))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class PredictionStore(JsonlStore[Prediction]):
    """predictions.jsonl, one line per (question, model, variant), and the run's run.json."""

    def __init__(self, layout: RunLayout):
        super().__init__(layout.predictions, prediction_from_dict, key_of)
        self.layout = layout

    def write_run(self, record: RunRecord) -> None:
        runfiles.write(self.layout.run_json, record)

    def read_run(self) -> RunRecord | None:
        return runfiles.read(RunRecord, self.layout.run_json) if self.layout.run_json.is_file() else None


class AttentionStore(JsonlStore[AttentionRecord]):
    """interpret/records.jsonl, one line per (question, model, variant), appended to by one
    process, or by each shard to a file of its own (`interpret --shard`); all read as one."""

    def __init__(self, layout: RunLayout, shard: tuple[int, int] | None = None):
        super().__init__(
            layout.attention if shard is None else layout.attention_shard(*shard), attention_from_dict, key_of
        )
        self.layout = layout

    def load(self) -> dict[Any, AttentionRecord]:
        done: dict[Any, AttentionRecord] = {}
        for path in self.layout.attention_files:
            done |= JsonlStore(path, attention_from_dict, key_of).load()
        return done


def attention_store(layout: RunLayout, shard: tuple[int, int] | None = None) -> AttentionStore:
    return AttentionStore(layout, shard)


def judgement_store(layout: RunLayout) -> JsonlStore[Judgement]:
    """judgements.jsonl, one line per (question, model, variant, judge)."""
    return JsonlStore(layout.judgements, judgement_from_dict, judge_key_of)
