"""The reference study's subset of SSV2 (4g/visual_cues, its annotate.py), rebuilt by its rule:

1. the first 10,000 video ids of the Something-Else box file, in sorted (string) order;
2. of those, the videos labelled in train.json, then validation.json, in the files' order;
3. templates whose only placeholders are `[something]`, with a verb: the first word ending
   in "ing" once "something" is removed from the lower-cased template;
4. test = the first 1,000 such videos, train = the rest.

Questions are then built by this project's builder (`prepare.questions`), which differs on
purpose (`DIFFERENCES`, kept in the manifest): the study drew distractors with replacement,
so some of its choices repeat or equal the answer.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ijson

from core.errors import DataError
from core.records import normalize, template_verb
from prepare.sources import LabelEntry

NAME = "visual-cues"
FIRST_ANNOTATED = 10_000
TEST_VIDEOS = 1_000
STUDY = {"videos": 9_500, "verbs": 50, "objects": 4_000, "test": 1_000, "train": 8_500, "questions_per_video": 2.5}
STUDY_SAID = "~9,500 videos (1,000 test : 8,500 train), 50 verbs, ~4,000 objects, ~2.5 questions a video"
DIFFERENCES = (
    "distractors: 3 distinct choices, none equal to the answer after normalisation (the study drew them "
    "with replacement from its whole vocabulary, so a choice could repeat or equal the answer)",
    "a verb question blanks the verb once (the study blanked every occurrence of the verb's text)",
    "a question's objects are written as its label writes them (the study filled the lower-cased template "
    "with the placeholders; the two differ where an annotator's label and placeholders disagree)",
)
_SLOTS = re.compile(r"\[(.*?)\]")


def study_verb(template: str) -> str:
    """The study's verb of a template: its first word ending in "ing" once "something" is
    removed from it, lower-cased ("" when none)."""
    return next((w for w in template.lower().replace("something", "").split() if w.endswith("ing")), "")


def only_something(template: str) -> bool:
    """Whether the template's placeholders are all `[something]` (its only kind)."""
    return set(_SLOTS.findall(template.lower())) == {"something"}


def annotated_ids(paths: Iterable[Path]) -> list[str]:
    """Every video id the Something-Else box files hold, streamed (keys only)."""
    ids: list[str] = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                ids += [value for prefix, event, value in ijson.parse(f) if not prefix and event == "map_key"]
        except ijson.JSONError as e:
            raise DataError(f"{path}: malformed JSON: {e}") from None
    return ids


@dataclass
class Subset:
    """The study's videos in its order, its split of them and what the rule left out."""

    entries: list[LabelEntry]
    splits: dict[str, str]
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> labelled videos

    def record(self) -> dict[str, Any]:
        """The manifest's account: the rule, what it found beside what the study reported, and
        every deliberate difference."""
        objects = {p for e in self.entries for p in e.placeholders}
        verbs = {study_verb(e.template) for e in self.entries}
        test = sum(s == "test" for s in self.splits.values())
        found = {
            "videos": len(self.entries),
            "test": test,
            "train": len(self.entries) - test,
            "verbs": len(verbs),
            "objects": len(objects),
            "objects_normalised": len({normalize(p) for p in objects}),
            "questions_per_video": round(
                sum(1 + len(e.placeholders) for e in self.entries) / max(1, len(self.entries)), 2
            ),
            "verb_not_ours": sum(study_verb(e.template) != template_verb(e.template) for e in self.entries),
        }
        return {
            "name": NAME,
            "rule": __doc__.split("\n\n")[1],
            "found": found,
            "study": STUDY,
            "left_out": self.left_out,
            "differences": list(DIFFERENCES),
        }


def visual_cues(annotated: Iterable[str], entries: Iterable[LabelEntry], test_videos: int = TEST_VIDEOS) -> Subset:
    """The study's subset of `entries` (label files in their order), given every annotated id."""
    first = set(sorted(set(annotated))[:FIRST_ANNOTATED])
    labelled: dict[str, LabelEntry] = {}  # as the study's dict: a second entry of an id replaces the first in place
    left_out: collections.Counter[str] = collections.Counter()
    for e in entries:
        if e.id in first:
            labelled[e.id] = e
        else:
            left_out["not among the first 10,000 annotated ids"] += 1
    kept = []
    for e in labelled.values():
        if not only_something(e.template):
            left_out["a placeholder other than [something]"] += 1
        elif not study_verb(e.template):
            left_out["no word ending in -ing"] += 1
        else:
            kept.append(e)
    splits = {e.id: "test" if i < test_videos else "train" for i, e in enumerate(kept)}
    return Subset(kept, splits, dict(left_out))


def describe(record: dict[str, Any]) -> list[str]:
    """The subset's counts beside the study's, in a few lines."""
    f = record["found"]
    return [
        f"subset {record['name']}: {f['videos']:,} videos ({f['test']:,} test : {f['train']:,} train), "
        f"{f['verbs']} verbs, {f['objects']:,} objects ({f['objects_normalised']:,} after normalising), "
        f"{f['questions_per_video']} questions a video; the study reported {STUDY_SAID}",
        f"  its verb differs from this project's (first -ing word outside the slots) on {f['verb_not_ours']} videos; "
        f"left out: {', '.join(f'{n:,} {why}' for why, n in record['left_out'].items()) or 'none'}",
        *(f"  deliberate difference: {d}" for d in record["differences"]),
    ]
