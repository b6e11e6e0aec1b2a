"""The synthetic worlds `prepare synthetic --templates` draws, by the templates each keeps: a
module without cv2, so command lines (`train organism`) can offer the worlds by name.

`default`: the 14 templates before the lid, which many sentences tell apart (a verb question's
sentence often fits one verb only: "... onto ..."); `one-sentence`: four verbs of one sentence
frame ("Verbing [something]"), so every verb question's choices fit its sentence and only the
video tells them apart (the organism's world)."""

from __future__ import annotations

from collections.abc import Callable

GENERATOR_VERSION = 4  # of the synthetic worlds' drawing: bump when the generated data changes
OPENING = "Opening [something]"
ONE_SENTENCE = ("Squeezing [something]", "Throwing [something]", "Uncovering [something]", OPENING)
WORLDS: dict[str, Callable[[str], bool]] = {  # world -> whether it keeps a template (by its text)
    "default": lambda text: text != OPENING,
    "one-sentence": lambda text: text in ONE_SENTENCE,
}
