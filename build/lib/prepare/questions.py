"""Seeded multiple-choice questions from SSV2 labels: blank the verb or one object.

Every choice list holds 4 options that are distinct after `normalize` (case, whitespace,
leading article), the answer exactly once, in an order drawn from a per-question RNG
seeded by (seed, question id) — identical on every run and machine.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from core.records import SLOT, VERB, Question, normalize, template_verb
from prepare.sources import LabelEntry
from prepare.verbs import also_true

BLANK = "_____"
N_CHOICES = 4


class Unusable(ValueError):
    """A label entry that yields no question; the message is the reason for the manifest."""


@dataclass(frozen=True)
class Parsed:
    """A label split into literal template text and slot fillers, in order."""

    literals: tuple[str, ...]  # len(fillers) + 1 pieces of template text
    fillers: tuple[str, ...]  # the text standing in each [something] slot
    verb: tuple[int, int, int] | None  # (literal index, start, end) of the verb

    def text(self, blank_slot: int | None = None, blank_verb: bool = False) -> str:
        lits = list(self.literals)
        if blank_verb and self.verb is not None:
            i, a, b = self.verb
            lits[i] = lits[i][:a] + BLANK + lits[i][b:]
        parts = [lits[0]]
        for k, filler in enumerate(self.fillers):
            parts += [BLANK if k == blank_slot else filler, lits[k + 1]]
        text = "".join(parts)
        return text[0].lower() + text[1:] if text else text


def parse(entry: LabelEntry) -> Parsed:
    """Align the label with its template; fall back to filling the template's slots."""
    literals = SLOT.split(entry.template)
    n_slots = len(literals) - 1
    if n_slots != len(entry.placeholders):
        raise Unusable(f"template has {n_slots} slots but {len(entry.placeholders)} placeholders")
    if any(not p.strip() for p in entry.placeholders):
        raise Unusable("empty placeholder")
    pattern = "".join(re.escape(lit) + ("(.+?)" if k < n_slots else "") for k, lit in enumerate(literals))
    m = re.fullmatch(pattern, entry.label.strip(), flags=re.IGNORECASE)
    fillers = tuple(m.groups()) if m else entry.placeholders
    verb = None
    for i, lit in enumerate(literals):
        vm = VERB.search(lit)
        if vm:
            verb = (i, vm.start(), vm.end())
            break
    return Parsed(tuple(literals), tuple(fillers), verb)


def _choices(answer: str, pools: Sequence[Sequence[str]], exclude: Iterable[str], rng: random.Random) -> list[str]:
    """The answer plus N_CHOICES-1 distractors drawn without replacement from the first
    pool, then the next ones if it runs short; shuffled."""
    banned = {normalize(answer), *map(normalize, exclude)}
    picked: list[str] = []

    def take(cand: str) -> None:
        key = normalize(cand)
        if key not in banned:
            banned.add(key)
            picked.append(cand)

    for pool in pools:
        # Random draws are cheap on a large pool; a shuffled pass settles small or crowded ones.
        for _ in range(8 * N_CHOICES if pool else 0):
            if len(picked) == N_CHOICES - 1:
                break
            take(pool[rng.randrange(len(pool))])
        if len(picked) < N_CHOICES - 1:
            for cand in rng.sample(list(pool), len(pool)):
                take(cand)
                if len(picked) == N_CHOICES - 1:
                    break
    if len(picked) < N_CHOICES - 1:
        raise Unusable("not enough distinct distractors")
    choices = [answer, *picked]
    rng.shuffle(choices)
    return choices


@dataclass(frozen=True)
class Vocabulary:
    """What distractors are drawn from; sorted, since the order is part of the seed."""

    verbs: tuple[str, ...]
    objects: tuple[str, ...]
    # (template, slot) -> objects seen in that slot of that template anywhere in the dataset
    by_slot: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_entries(cls, entries: Iterable[LabelEntry], templates: Iterable[str] = ()) -> Vocabulary:
        entries = list(entries)
        verbs = {template_verb(t) for t in [*templates, *(e.template for e in entries)]}
        objects: dict[str, str] = {}
        by_slot: dict[tuple[str, int], dict[str, str]] = {}
        for e in entries:
            for k, p in enumerate(e.placeholders):
                text = " ".join(p.split())
                objects.setdefault(normalize(p), text)
                by_slot.setdefault((e.template, k), {}).setdefault(normalize(p), text)
        return cls(
            tuple(sorted(v for v in verbs if v)),
            tuple(sorted(objects.values())),
            {key: tuple(sorted(v.values())) for key, v in sorted(by_slot.items())},
        )


def build(
    entry: LabelEntry, split: str, vocab: Vocabulary, seed: int, distractors: str = "random"
) -> tuple[list[Question], list[tuple[str, str]]]:
    """The verb question and one object question per placeholder for one labelled video,
    plus (question id, reason) for the ones that cannot be asked.

    Verb distractors are other template verbs, never one whose sentence may also be true
    (`prepare.verbs`). Object distractors come from the whole object vocabulary (`random`)
    or, first, from objects seen in the same slot of the same template (`hard`), so the
    text alone does not give the answer away; `hard` tops up from the vocabulary when the
    template has too few objects.
    """
    try:
        parsed = parse(entry)
    except Unusable as e:
        return [], [(entry.id, str(e))]
    out: list[Question] = []
    dropped: list[tuple[str, str]] = []
    specs: list[tuple[str, str, int | None]] = [(f"{entry.id}-verb", "verb", None)]
    specs += [(f"{entry.id}-object{k}", "object", k) for k in range(len(parsed.fillers))]
    for qid, qtype, slot in specs:
        rng = random.Random(f"{seed}/{qid}")
        try:
            if qtype == "verb":
                if parsed.verb is None:
                    raise Unusable("template has no -ing verb")
                i, a, b = parsed.verb
                answer = parsed.literals[i][a:b].lower()
                choices = _choices(answer, [vocab.verbs], also_true(answer), rng)
                text = parsed.text(blank_verb=True)
            else:
                answer = " ".join(entry.placeholders[slot].split())
                others = [p for k, p in enumerate(entry.placeholders) if k != slot]
                pools = [vocab.objects]
                if distractors == "hard":
                    pools.insert(0, vocab.by_slot.get((entry.template, slot), ()))
                choices = _choices(answer, pools, others, rng)
                text = parsed.text(blank_slot=slot)
        except Unusable as e:
            dropped.append((qid, str(e)))
            continue
        out.append(
            Question(
                id=qid,
                video_id=entry.id,
                split=split,
                type=qtype,
                question=text,
                choices=choices,
                answer=answer,
                template=entry.template,
                label=entry.label,
                slot=slot,
                verb=template_verb(entry.template),
            )
        )
    return out, dropped


def split_videos(video_ids: Iterable[str], test_videos: int, seed: int) -> dict[str, str]:
    """Our own seeded train/test split by video: a video lands in exactly one split."""
    ids = sorted(set(video_ids))
    random.Random(f"{seed}/split").shuffle(ids)
    return {vid: ("test" if i < test_videos else "train") for i, vid in enumerate(ids)}
