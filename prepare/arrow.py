"""The arrow-of-time task: is this clip playing forward or backward?

Every video that has both a `plain` and a `reversed` clip yields two questions, one per
direction (so answers are balanced 50/50). Each is tagged `reversible` or `irreversible`
from its SSV2 template by the table below: reversed, a reversible action looks like
another real action ("Opening [something]" reversed is closing it); an irreversible one
looks physically wrong (a dropped thing rising, torn pieces joining).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from core import runfiles
from core.errors import DataError
from core.files import atomic_write
from core.layout import DataLayout
from core.records import Question, read_questions, template_verb, to_json_line
from core.runfiles import Manifest
from core.variants import PLAIN, REVERSED

QUESTION = "Is this video playing forward or backward?"
CHOICES = ["forward", "backward"]
VARIANT = "arrow"

# By verb (the template's first -ing word); a template listed in TEMPLATES overrides it.
REVERSIBLE_VERBS = {
    "approaching",
    "attaching",
    "bending",
    "closing",
    "covering",
    "folding",
    "holding",
    "laying",
    "lifting",
    "moving",
    "opening",
    "picking",
    "piling",
    "plugging",
    "pulling",
    "pushing",
    "putting",
    "removing",
    "showing",
    "stacking",
    "taking",
    "tilting",
    "touching",
    "turning",
    "twisting",
    "uncovering",
    "unfolding",
    "rolling",
    "spinning",
    "stuffing",
    "pretending",
    "trying",
    "failing",
}
IRREVERSIBLE_VERBS = {
    "burying",
    "colliding",
    "digging",
    "dropping",
    "falling",
    "hitting",
    "letting",
    "poking",
    "pouring",
    "scooping",
    "spilling",
    "spreading",
    "sprinkling",
    "squeezing",
    "tearing",
    "throwing",
    "tipping",
    "wiping",
    "being",
}
TEMPLATES = {
    "Lifting [something] up completely, then letting it drop down": "irreversible",
    "Lifting up one end of [something], then letting it drop down": "irreversible",
    "Putting [something] onto a slanted surface but it doesn't glide down": "reversible",
    "Pushing [something] so that it falls off the table": "irreversible",
    "Pushing [something] off of [something]": "irreversible",
    "Moving [something] and [something] so they collide with each other": "irreversible",
    "Rolling [something] on a flat surface": "reversible",
    "Spinning [something] that quickly stops spinning": "irreversible",
    "Bending [something] until it breaks": "irreversible",
    "Tearing [something] into two pieces": "irreversible",
    "Tearing [something] just a little bit": "irreversible",
    "Opening [something]": "reversible",
}


def category(template: str) -> str:
    """`reversible`, `irreversible`, or `unknown` (a template the table does not cover)."""
    if template in TEMPLATES:
        return TEMPLATES[template]
    verb = template_verb(template)
    if verb in IRREVERSIBLE_VERBS:
        return "irreversible"
    if verb in REVERSIBLE_VERBS:
        return "reversible"
    return "unknown"


def _link(src: Path, dst: Path) -> None:
    """dst becomes the same file as src (a hard link, or a copy across file systems)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def question(qid: str, split: str, direction: str, template: str = "", label: str = "", cat: str = "") -> Question:
    """The arrow-of-time question on clip `qid` (playing `direction`); its category from
    `cat`, else from its SSV2 template (`category`)."""
    return Question(
        id=qid,
        video_id=qid,
        split=split,
        type="arrow",
        question=QUESTION,
        choices=list(CHOICES),
        answer=direction,
        template=template,
        label=label,
        slot=None,
        verb=template_verb(template),
        category=cat or category(template),
    )


def counts(questions: list[Question]) -> dict:
    """An arrow-of-time dataset's counts: questions, by answer, by category."""
    cats = [q.category for q in questions]
    return {
        "questions": len(questions),
        "by_answer": {c: sum(q.answer == c for q in questions) for c in CHOICES},
        "by_category": {c: cats.count(c) for c in sorted(set(cats))},
    }


def build_arrow(source: Path, out: Path | None = None) -> Manifest:
    """Write the arrow-of-time dataset for the prepared dataset `source`; returns its manifest."""
    src = DataLayout(source)
    out = out or source / "arrow-of-time"
    if REVERSED not in src.variants():
        raise DataError(f"{source}: no reversed clips; prepare it with --variants including plain,reversed")
    layout = DataLayout(out)
    questions: list[Question] = []
    missing: list[str] = []
    for q in {q.video_id: q for q in read_questions(src.questions)}.values():
        clips = {"forward": src.clip(PLAIN, q.video_id), "backward": src.clip(REVERSED, q.video_id)}
        if not all(p.is_file() for p in clips.values()):
            missing.append(q.video_id)
            continue
        for direction, clip in clips.items():
            qid = f"{q.video_id}-{direction}"
            _link(clip, layout.clip(VARIANT, qid))
            questions.append(question(qid, q.split, direction, q.template, q.label))
    questions.sort(key=lambda q: (q.split, q.id))
    atomic_write(layout.questions, "".join(to_json_line(q) for q in questions))
    manifest = Manifest(
        kind="arrow-of-time",
        source=str(source),
        counts=counts(questions),
        videos_without_both_clips=missing,
        categories={t: category(t) for t in sorted({q.template for q in questions})},
    )
    runfiles.write(layout.manifest, manifest)
    return manifest
