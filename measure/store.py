"""A run's files: append-only predictions.jsonl (the source of truth) and run.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prepare.schema import Prediction, atomic_write, prediction_from_dict, read_jsonl, to_json_line, write_json


def _key(row: dict[str, Any]) -> tuple[str, str, str]:
    return (row["question_id"], row["model"], row["variant"])


class PredictionStore:
    """One line per (question, model, variant), flushed as soon as it is known."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.path = run_dir / "predictions.jsonl"
        self.run_json = run_dir / "run.json"

    def load(self) -> dict[tuple[str, str, str], Prediction]:
        """Everything already answered, by key. A torn last line (a crash mid-write) is cut
        off with a warning; any other bad line is an error naming it."""
        if not self.path.is_file():
            return {}
        self._repair_tail()
        done: dict[tuple[str, str, str], Prediction] = {}
        for n, row in read_jsonl(self.path):
            p = prediction_from_dict(row, f"{self.path}:{n}")
            done[p.key] = p
        return done

    def _repair_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            print(f"warning: {self.path}: dropping a torn last line ({len(data) - cut} bytes)", file=sys.stderr)
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def drop(self, keys: set[tuple[str, str, str]]) -> None:
        """Rewrite the file without the lines of `keys` (atomically: temp file + rename), so
        items asked again (earlier errors) still end with exactly one line each."""
        if not keys or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True)
                if _key(json.loads(line)) not in keys]
        atomic_write(self.path, "".join(kept))

    def open(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, p: Prediction) -> None:
        self._file.write(to_json_line(p))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def write_run(self, info: dict[str, Any]) -> None:
        write_json(self.run_json, info)

    def read_run(self) -> dict[str, Any]:
        return json.loads(self.run_json.read_text()) if self.run_json.is_file() else {}
