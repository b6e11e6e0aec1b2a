"""`prepare probes`: synthetic temporal probes in the Video-T3 style. Each clip changes one
temporal factor and asks about it, so the answer is known by construction and no single
frame gives it away:

- order: 2 or 3 objects (distinct colour and shape, each at its own fixed place) appear one
  after another, each alone on screen, blank frames between; "The first/last object to
  appear was the _____." Reversed: first and last swap.
- direction: one object moves in a straight line, left to right, right to left, up or down,
  over a path symmetric about the centre; "The red ball moves _____." Reversed: opposite.
- change: one object changes colour (or size) once, halfway; "At the start/end, the ball
  is _____." Reversed: start and end swap.
- count: one object flashes k = 1..4 times (one frame each, never two frames running) at one
  place; "The red ball appears _____." Reversed: the same count.

Answers are balanced by construction (each class in turn, the answer's place among the
choices rotated). `unsolvable` checks, at generation on the frames and in the tests on the
decoded clips, that every frame also occurs in a clip of the same construction with
another answer. Clips are written as sources, then rendered into the variants like any
dataset's; the manifest records each clip's construction and the sha256 of its frames.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from core import runfiles
from core.cli import option
from core.errors import DataError
from core.frames import frames_option, size_option
from core.layout import DataLayout
from core.records import PROBE, TEXT_PROBES, Question
from core.runfiles import Manifest
from core.variants import BLIND, FROM_BOXES, PLAIN, REVERSED, SHUFFLED, SINGLE_FRAME
from prepare.pipeline import render_clips, seed_option, sync_settings, variants_option, workers_option, write_dataset
from prepare.synthetic import COLOURS, SHAPES, _draw
from prepare.variants import CueOptions, settings
from prepare.video import encode

KINDS = ("order", "direction", "change", "count")
DIRECTIONS = ("from left to right", "from right to left", "up", "down")
OPPOSITE = dict(zip(DIRECTIONS, ("from right to left", "from left to right", "down", "up")))
COUNTS = ("once", "twice", "three times", "four times")
SIZES = ("small", "large")
FPS = 4
BACKGROUND = 128
PROBES_VERSION = 1  # bump when the clips or questions made for the same options change


@dataclass
class ProbeOptions:
    """How `prepare probes` builds its clips (its options)."""

    per_kind: int = option(24, "Clips per probe kind (order, direction, change, count), one question each.")
    seed: int = seed_option()
    frames: int = frames_option(help="Frames per clip; keep it measure's --frames so every frame is sent.")
    size: tuple[int, int] = size_option((224, 160), "Size WxH of the clips drawn.")
    variants: Sequence[str] = variants_option((PLAIN, REVERSED, SHUFFLED, SINGLE_FRAME, BLIND))
    text: bool = option(
        False,
        "Textual probes instead: each clip told as a story, frame by frame, before its question, asked with no "
        "video (the blind variant): is the reasoning there without the vision?",
    )
    workers: int = workers_option()


@dataclass(frozen=True)
class Probe:
    """One clip's construction: everything its frames and question are made from."""

    kind: str
    frames: int
    size: tuple[int, int]
    objects: tuple[tuple[str, str], ...]  # (colour, shape) per object
    places: tuple[tuple[float, float], ...]  # each object's centre, as fractions of (W, H)
    params: tuple[tuple[str, Any], ...]  # the kind's own settings, as sorted pairs

    def get(self, name: str) -> Any:
        return dict(self.params)[name]

    def record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "frames": self.frames,
            "size": list(self.size),
            "objects": [list(o) for o in self.objects],
            "places": [list(p) for p in self.places],
            **dict(self.params),
        }


def _with(p: Probe, **changes: Any) -> Probe:
    return replace(p, params=tuple(sorted((dict(p.params) | changes).items())))


def _box(p: Probe, place: tuple[float, float], scale: float = 1.0) -> tuple[float, float, float, float]:
    w, h = p.size
    half = 0.09 * min(w, h) * scale
    cx, cy = place[0] * w, place[1] * h
    return (cx - half, cy - half, cx + half, cy + half)


def scene(p: Probe, t: int) -> list[tuple[str, str, tuple[float, float], float]]:
    """What frame t shows: (colour, shape, centre as fractions of (W, H), scale) per object."""
    if p.kind == "order":
        spans = np.array_split(np.arange(p.frames), 2 * len(p.objects) - 1)
        order = p.get("order")
        return [(*p.objects[order[i]], p.places[order[i]], 1.0) for i in range(len(order)) if t in spans[2 * i]]
    colour, shape = p.objects[0]
    if p.kind == "direction":
        (x0, y0), (x1, y1) = p.get("path")
        a = t / (p.frames - 1)
        return [(colour, shape, (x0 + (x1 - x0) * a, y0 + (y1 - y0) * a), 1.0)]
    if p.kind == "change":
        state = p.get("start") if t < p.frames // 2 else p.get("end")
        if p.get("attribute") == "colour":
            return [(state, shape, p.places[0], 1.0)]
        return [(colour, shape, p.places[0], 1.6 if state == "large" else 0.8)]
    return [(colour, shape, p.places[0], 1.0)] if t in p.get("flashes") else []


def render(p: Probe) -> np.ndarray:
    """The clip's frames [T, H, W, 3], uint8."""
    w, h = p.size
    frames = np.full((p.frames, h, w, 3), BACKGROUND, np.uint8)
    for t, frame in enumerate(frames):
        for colour, shape, place, scale in scene(p, t):
            _draw(frame, shape, COLOURS[colour], _box(p, place, scale))
    return frames


def _where(place: tuple[float, float]) -> str:
    x, y = place
    row = "top" if y < 0.4 else "bottom" if y > 0.6 else "middle"
    column = "left" if x < 0.4 else "right" if x > 0.6 else "centre"
    return "the centre" if (row, column) == ("middle", "centre") else f"the {row} {column}"


def story(p: Probe) -> str:
    """The clip as text, frame by frame: what each frame shows and where (the textual probe:
    the same construction, the same question, no video)."""
    lines = []
    for t in range(p.frames):
        seen = [
            f"{'a large ' if scale > 1.2 else 'a small ' if scale < 0.9 else 'a '}{colour} {shape} at {_where(place)}"
            for colour, shape, place, scale in scene(p, t)
        ]
        lines.append(f"Frame {t + 1}: {', '.join(seen) if seen else 'nothing'}.")
    return " ".join(lines)


def alternatives(p: Probe) -> list[Probe]:
    """The same construction with every other answer (what a single frame must not rule out)."""
    if p.kind == "order":
        return [_with(p, order=list(o)) for o in itertools.permutations(p.get("order")) if list(o) != p.get("order")]
    if p.kind == "direction":
        (x0, y0), (x1, y1) = p.get("path")
        return [_with(p, path=[[x1, y1], [x0, y0]])]
    if p.kind == "change":
        return [_with(p, start=p.get("end"), end=p.get("start"))]
    n = len(p.get("flashes"))
    return [
        _with(p, flashes=_flash_frames(p.frames, k, random.Random(f"alt/{k}")))
        for k in range(1, len(COUNTS) + 1)
        if k != n
    ]


def unsolvable(frames: np.ndarray, others: Sequence[np.ndarray], noise: int = 0, share: float = 0.0) -> bool:
    """True when every frame also occurs in some clip with another answer (then no single
    frame tells the answer). Two frames are the same when at most `share` of their pixels
    differ by more than `noise` levels in a channel: 0 and 0 for rendered frames; for decoded
    ones, about 64 and 1 % (codec noise stays on object edges, well under the ~2 % of the
    frame that one object covers at the default size)."""
    flat = [
        (np.abs(o.astype(np.int16)[:, None] - frames.astype(np.int16)[None]).max(axis=-1) > noise)
        .reshape(len(o), len(frames), -1)
        .mean(axis=-1)
        for o in others
    ]
    return all(any((d[:, t] <= share).any() for d in flat) for t in range(len(frames)))


def _flash_frames(frames: int, k: int, rng: random.Random) -> list[int]:
    """k frame indices, no two adjacent, seeded."""
    options = [c for c in itertools.combinations(range(frames), k) if all(b - a > 1 for a, b in zip(c, c[1:]))]
    if not options:
        raise DataError(f"--frames {frames}: too few to flash an object {k} times with a blank frame between")
    return list(rng.choice(options))


def _name(o: tuple[str, str]) -> str:
    return f"{o[0]} {o[1]}"


def build(kind: str, i: int, opts: ProbeOptions) -> tuple[Probe, Question]:
    """Probe number i of a kind and its question; the answer class is i's turn."""
    rng = random.Random(f"{opts.seed}/probes/{kind}/{i}")
    vid = f"{kind}-{i:04d}"
    colours, shapes = rng.sample(sorted(COLOURS), 3), rng.sample(SHAPES, 3)
    objects = tuple(zip(colours, shapes))
    base = dict(kind=kind, frames=opts.frames, size=opts.size)
    if kind == "order":
        k = 2 + (i // 2) % 2
        places = [(0.25, 0.35), (0.75, 0.35), (0.5, 0.7)][:k]
        rng.shuffle(places)
        order = rng.sample(range(k), k)
        p = Probe(**base, objects=objects[:k], places=tuple(places), params=(("order", order),))
        ask = ("first", "last")[i % 2]
        answer, flipped = (order[0], order[-1]) if ask == "first" else (order[-1], order[0])
        names = [_name(o) for o in p.objects]
        others = [n for n in names if n != names[answer]]
        rng.shuffle(others)
        choices = others[:]
        choices.insert((i // 4) % k, names[answer])
        q = f"The {ask} object to appear was the _____."
        return p, _question(vid, kind, q, choices, names[answer], names[flipped])
    if kind == "direction":
        direction = DIRECTIONS[i % 4]
        y, x = 0.3 + 0.4 * rng.random(), 0.3 + 0.4 * rng.random()
        path = {
            "from left to right": [[0.15, y], [0.85, y]],
            "from right to left": [[0.85, y], [0.15, y]],
            "up": [[x, 0.85], [x, 0.15]],
            "down": [[x, 0.15], [x, 0.85]],
        }[direction]
        p = Probe(**base, objects=objects[:1], places=(), params=(("path", path),))
        q = f"The {_name(objects[0])} moves _____."
        return p, _question(vid, kind, q, list(DIRECTIONS), direction, OPPOSITE[direction])
    if kind == "change":
        attribute, ask = ("colour", "size")[i % 2], ("start", "end")[(i // 2) % 2]
        if attribute == "colour":
            start = sorted(COLOURS)[(i // 4) % len(COLOURS)]
            end = rng.choice([c for c in sorted(COLOURS) if c != start])
            choices, subject = sorted(COLOURS), f"the {objects[0][1]}"
        else:
            start = SIZES[(i // 4) % 2]
            end = SIZES[1 - SIZES.index(start)]
            choices, subject = list(SIZES), f"the {_name(objects[0])}"
        p = Probe(
            **base,
            objects=objects[:1],
            places=((0.5, 0.5),),
            params=(("attribute", attribute), ("end", end), ("start", start)),
        )
        answer, flipped = (start, end) if ask == "start" else (end, start)
        return p, _question(vid, kind, f"At the {ask}, {subject} is _____.", choices, answer, flipped)
    k = 1 + i % len(COUNTS)
    p = Probe(
        **base,
        objects=objects[:1],
        places=((0.3 + 0.4 * rng.random(), 0.3 + 0.4 * rng.random()),),
        params=(("flashes", _flash_frames(opts.frames, k, rng)),),
    )
    q = f"The {_name(objects[0])} appears _____."
    return p, _question(vid, kind, q, list(COUNTS), COUNTS[k - 1], COUNTS[k - 1])


def _question(vid: str, kind: str, text: str, choices: list[str], answer: str, flipped: str) -> Question:
    return Question(
        id=f"{vid}-q",
        video_id=vid,
        split="test",
        type=PROBE,
        question=text,
        choices=choices,
        answer=answer,
        template=f"probe: {kind}",
        label=text.replace("_____", answer),
        slot=None,
        category=kind,
        reversed_answer=flipped,
    )


def prepare_probes(out: Path, opts: ProbeOptions) -> Manifest:
    """Generate the probes into data/NAME (sources under raw/probes, then every variant);
    returns the manifest. DataError if a construction would let one frame give the answer."""
    if opts.per_kind < 1:
        raise DataError(f"--per-kind {opts.per_kind}: at least 1")
    cued = sorted(set(opts.variants) & set(FROM_BOXES))
    if cued:
        raise DataError(
            f"--variants {','.join(cued)}: cues are drawn from boxes, and probes have none: use plain and the controls"
        )
    if opts.frames < 2 * len(COUNTS) - 1:
        raise DataError(f"--frames {opts.frames}: the count probe needs at least {2 * len(COUNTS) - 1}")
    if opts.text:
        return prepare_text_probes(out, opts)
    layout = DataLayout(out)
    raw = layout.raw / "probes"
    earlier = constructions_on_disk(layout)
    questions, sources, constructions = [], {}, {}
    for kind in KINDS:
        for i in range(opts.per_kind):
            probe, q = build(kind, i, opts)
            frames = render(probe)
            if not unsolvable(frames, [render(a) for a in alternatives(probe)]):
                raise DataError(f"probe {q.video_id}: a single frame gives the answer away ({probe.record()})")
            digest = hashlib.sha256(frames.tobytes()).hexdigest()
            path = raw / f"{q.video_id}.mp4"
            if earlier.get(q.video_id, {}).get("frames_sha256") != digest or not path.is_file():
                encode(path, frames, FPS, "libx264", crf="10", preset="veryfast")
            questions.append(q)
            sources[q.video_id] = path
            constructions[q.video_id] = probe.record() | {
                "frames_sha256": digest,
                "single_frame_solvable": False,
                "answer": q.answer,
                "reversed_answer": q.reversed_answer,
            }
    dropped: list[dict[str, str]] = []
    cues = CueOptions()
    clips, rerendered = render_clips(
        layout,
        sources,
        {},
        opts.variants,
        cues,
        opts.seed,
        opts.workers,
        lambda item, reason: dropped.append({"item": item, "reason": reason}),
    )
    if dropped:
        raise DataError(f"{out}: probe clips failed to render: {dropped[:3]}")
    manifest = Manifest(
        kind="probes",
        counts=counts(questions, len(sources), list(opts.variants))
        | {
            "by_answer": {k: dict(collections.Counter(q.answer for q in questions if q.category == k)) for k in KINDS},
            "clips_by_variant": {v: len(sources) for v in opts.variants},
            "clips_rendered": sum(len(i["rendered"]) for i in clips.values()),
            "stale_clips_removed": rerendered,
        },
        sources={"generator": f"prepare.probes version {PROBES_VERSION}"},
        options={
            "per_kind": opts.per_kind,
            "frames": opts.frames,
            "size": "x".join(map(str, opts.size)),
            "fps": FPS,
            "variants": list(opts.variants),
        },
        seed=opts.seed,
        render_settings={v: settings(v, cues, opts.seed) for v in opts.variants},
        versions={pkg: importlib.metadata.version(pkg) for pkg in ("av", "numpy", "opencv-python-headless")},
        probes=constructions,
    )
    return write_dataset(layout, questions, manifest)


def constructions_on_disk(layout: DataLayout) -> dict[str, dict[str, Any]]:
    """The constructions an earlier run recorded (its sources are reused when their frames match)."""
    if not layout.manifest.is_file():
        return {}
    try:
        return runfiles.read(Manifest, layout.manifest).probes
    except DataError:
        return {}


def counts(questions: list[Question], videos: int, variants: list[str]) -> dict[str, Any]:
    """A probe dataset's manifest counts: questions by kind, all in test."""
    return {
        "questions": len(questions),
        "videos": videos,
        "by_type": {PROBE: len(questions)},
        "by_category": dict(collections.Counter(q.category for q in questions)),
        "by_split": {"test": len(questions)},
        "variants": variants,
    }


def prepare_text_probes(out: Path, opts: ProbeOptions) -> Manifest:
    """The textual probes: every probe's construction told as a story (`story`) before its
    question, asked with no video; scored as the video probes are (their kinds, their answers)."""
    questions, constructions = [], {}
    for kind in KINDS:
        for i in range(opts.per_kind):
            probe, q = build(kind, i, opts)
            told = f"{story(probe)} {q.question}"
            questions.append(replace(q, question=told, label=f"{story(probe)} {q.label}", subset=TEXT_PROBES))
            constructions[q.video_id] = probe.record() | {"answer": q.answer, "text": True}
    layout = DataLayout(out)
    sync_settings(layout, BLIND, {"variant": BLIND, "text_probes": PROBES_VERSION})  # asked with no clip
    manifest = Manifest(
        kind="probes-text",
        counts=counts(questions, len(questions), [BLIND]) | {"clips_rendered": 0},
        sources={"generator": f"prepare.probes version {PROBES_VERSION}, told as text"},
        options={"per_kind": opts.per_kind, "frames": opts.frames, "text": True, "variants": [BLIND]},
        seed=opts.seed,
        probes=constructions,
    )
    return write_dataset(layout, questions, manifest)
