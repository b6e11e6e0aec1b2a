"""Which SSV2 verbs can describe the same clip, so one must never be a distractor for another.

A verb question blanks the template's first -ing word. A distractor is wrong only if its
sentence is false of the clip; "moving the cup up" is true of a clip labelled "lifting the
cup up", so "moving" cannot be a distractor there. The table below is hand-made from the
174 SSV2 templates; read it, and extend it when a new template set needs it. Relations are
symmetric: if "lifting" may be true where "moving" is the answer, the reverse holds too.
"""

from __future__ import annotations

from itertools import combinations

# Hypernyms: true of (almost) any clip whose verb is one of the hyponyms.
HYPERNYMS: dict[str, set[str]] = {
    "moving": {
        "pushing",
        "pulling",
        "lifting",
        "picking",
        "putting",
        "taking",
        "removing",
        "rolling",
        "throwing",
        "laying",
        "turning",
        "tilting",
        "tipping",
        "spinning",
        "dropping",
        "approaching",
        "stacking",
        "piling",
        "attaching",
        "twisting",
        "plugging",
        "stuffing",
        "covering",
        "uncovering",
        "scooping",
        "pouring",
    },
    "touching": {
        "poking",
        "pushing",
        "pulling",
        "hitting",
        "squeezing",
        "holding",
        "wiping",
        "lifting",
        "picking",
        "moving",
        "turning",
        "twisting",
        "tilting",
        "tipping",
        "bending",
        "folding",
        "unfolding",
        "opening",
        "closing",
        "tearing",
        "attaching",
        "plugging",
        "stuffing",
        "covering",
        "uncovering",
        "putting",
        "taking",
        "removing",
        "spinning",
        "rolling",
        "laying",
        "stacking",
        "piling",
        "scooping",
        "digging",
    },
    "holding": {"lifting", "picking", "showing", "squeezing", "turning", "tilting", "pouring", "moving"},
    "showing": {"holding", "putting", "moving", "lifting", "picking", "turning"},
}

# Near-synonyms: any two in one group may describe the same clip.
SYNONYMS: list[set[str]] = [
    {"putting", "laying", "stacking", "piling", "stuffing", "plugging", "attaching"},
    {"picking", "lifting", "taking", "removing", "scooping"},
    {"dropping", "letting", "falling", "throwing"},
    {"turning", "twisting", "spinning", "rolling"},
    {"tilting", "tipping"},
    {"covering", "burying"},
    {"uncovering", "removing", "digging"},
    {"folding", "bending", "closing"},
    {"unfolding", "opening"},
    {"pouring", "spilling", "sprinkling", "spreading"},
    {"poking", "hitting", "pushing", "colliding"},
    {"wiping", "spreading"},
    {"pretending", "trying", "failing"},
]


def _pairs() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for hyper, hypos in HYPERNYMS.items():
        for v in hypos:
            out.setdefault(hyper, set()).add(v)
            out.setdefault(v, set()).add(hyper)
    for group in SYNONYMS:
        for a, b in combinations(sorted(group), 2):
            out.setdefault(a, set()).add(b)
            out.setdefault(b, set()).add(a)
    return out


ALSO_TRUE: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in _pairs().items()}


def also_true(verb: str) -> frozenset[str]:
    """Verbs whose sentence may also be true of a clip labelled with `verb`."""
    return ALSO_TRUE.get(verb, frozenset())
