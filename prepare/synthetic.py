"""Synthetic raw data in exactly the real formats: SSV2 clips (VP9 .webm, 12 fps) and label
files, Something-Else per-frame boxes (objects and "object hand").

Coloured shapes move as real SSV2 templates say. The same template text is paired with
different motions and objects (pushing vs pulling differ only by which side the hand is
on; every template comes with every object), so answering needs the video.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core import progress
from core.files import atomic_write, write_json
from prepare.video import encode
from prepare.worlds import GENERATOR_VERSION, OPENING, WORLDS

FPS = 12
N_FRAMES = 36
H, W = 240, 320
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 220), "yellow": (230, 200, 40)}
SHAPES = ("cube", "ball", "box", "bottle")
# Object sizes (w, h) in pixels of the 320x240 frame: hand-held objects near the camera, as in
# SSV2 (a fifth of the frame's width; at half that, an object was less than one vision token
# of a small model's frames, and a model trained from scratch could not learn to find it).
SIZES = {"cube": (68, 68), "ball": (68, 68), "box": (96, 68), "bottle": (52, 100)}
HAND_RGB = (224, 172, 140)

Box = tuple[float, float, float, float]
# A motion: (params, t in [0, 1]) -> {slot: box}; slots "object 0", "object 1", "object hand";
# keys starting with "_" are drawn props that are not annotated.
Motion = Callable[[dict, float], dict[str, Box]]


def _box(cx: float, cy: float, w: float, h: float) -> Box:
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * min(max(t, 0.0), 1.0)


def _push(direction: int, hand_leads: bool) -> Motion:
    """Horizontal slide; the hand trails (pushing) or leads (pulling) the object."""

    def motion(p: dict, t: float) -> dict[str, Box]:
        x0, x1 = (0.2 * W, 0.8 * W) if direction > 0 else (0.8 * W, 0.2 * W)
        cx = _lerp(x0, x1, t)
        side = direction if hand_leads else -direction
        hand = _box(cx + side * (p["w0"] / 2 + 16), p["y"], 28, 36)
        return {"object 0": _box(cx, p["y"], p["w0"], p["h0"]), "object hand": hand}

    return motion


def _vertical(direction: int) -> Motion:
    def motion(p: dict, t: float) -> dict[str, Box]:
        y0, y1 = (0.75 * H, 0.25 * H) if direction < 0 else (0.25 * H, 0.75 * H)
        cy = _lerp(y0, y1, t)
        return {
            "object 0": _box(p["x"], cy, p["w0"], p["h0"]),
            "object hand": _box(p["x"], cy + p["h0"] / 2 + 16, 28, 30),
        }

    return motion


def _drop(p: dict, t: float) -> dict[str, Box]:
    base_y = 0.85 * H - p["h1"] / 2
    rest_y = base_y - p["h1"] / 2 - p["h0"] / 2
    top = min(0.2 * H, rest_y - 0.25 * H)  # a visible fall, whatever the sizes
    cy = top if t < 0.35 else _lerp(top, rest_y, ((t - 0.35) / 0.3) ** 2)
    hand_y = top - p["h0"] / 2 - 14
    return {
        "object 0": _box(p["x"], cy, p["w0"], p["h0"]),
        "object 1": _box(p["x"], base_y, p["w1"], p["h1"]),
        "object hand": _box(p["x"], hand_y, 28, 28),
    }


def _next_to(p: dict, t: float) -> dict[str, Box]:
    target_x = 0.7 * W - p["w1"] / 2 - p["w0"] / 2 - 6
    cx = _lerp(0.15 * W, target_x, t / 0.7)
    cy = _lerp(0.3 * H, 0.6 * H, t / 0.7)
    boxes = {"object 0": _box(cx, cy, p["w0"], p["h0"]), "object 1": _box(0.7 * W, 0.6 * H, p["w1"], p["h1"])}
    if t < 0.8:
        boxes["object hand"] = _box(cx, cy - p["h0"] / 2 - 14, 28, 28)
    return boxes


def _cover(p: dict, t: float) -> dict[str, Box]:
    cx = _lerp(0.2 * W, 0.55 * W, t / 0.7)
    cy = _lerp(0.25 * H, 0.6 * H, t / 0.7)
    cover = _box(cx, cy, p["w0"] + 30, p["h0"] + 30)
    boxes = {"object 1": cover, "object hand": _box(cx, cy - (p["h0"] + 30) / 2 - 14, 28, 28)}
    if t < 0.7:  # hidden once covered: objects vanish from the annotation, as in real data
        boxes["object 0"] = _box(0.55 * W, 0.6 * H, p["w0"], p["h0"])
    return boxes


def _poke(p: dict, t: float) -> dict[str, Box]:
    cx = p["x"] + (0 if t < 0.5 else _lerp(0, 14, (t - 0.5) / 0.2))
    reach = cx - p["w0"] / 2 - 14
    hand_x = _lerp(0.05 * W, reach, t / 0.5) if t < 0.5 else _lerp(reach, 0.05 * W, (t - 0.6) / 0.4)
    return {"object 0": _box(cx, p["y"], p["w0"], p["h0"]), "object hand": _box(hand_x, p["y"], 28, 24)}


def _squeeze(p: dict, t: float) -> dict[str, Box]:
    """Pressed flat from above (to a third of its height) for most of the clip, then let go."""
    squash = 1 - 0.65 * (
        min(1.0, (t - 0.15) / 0.15) if 0.15 < t < 0.85 else 0.0 if t <= 0.15 else max(0.0, 1 - (t - 0.85) / 0.1)
    )
    h = p["h0"] * squash
    cy = p["y"] + (p["h0"] - h) / 2  # pressed down from above, bottom stays put
    return {
        "object 0": _box(p["x"], cy, p["w0"] * (2 - squash), h),
        "object hand": _box(p["x"], cy - h / 2 - 12, 30, 24),
    }


def _tear(p: dict, t: float) -> dict[str, Box]:
    gap = 0.0 if t < 0.4 else _lerp(0, 40, (t - 0.4) / 0.4)
    w = p["w0"] + gap
    return {
        "object 0": _box(p["x"], p["y"], w, p["h0"]),
        "object hand": _box(p["x"], p["y"] - p["h0"] / 2 - 14, 34, 24),
        "_gap": (p["x"], gap),
    }


def _throw(p: dict, t: float) -> dict[str, Box]:
    cx = _lerp(0.15 * W, 1.4 * W, t)  # thrown out of the frame: gone, unannotated, by the end
    cy = 0.75 * H - 4 * 0.6 * H * t * (1 - t)  # a parabola
    boxes = {"object 0": _box(cx, cy, p["w0"], p["h0"])} if cx - p["w0"] / 2 < W else {}
    if t < 0.25:
        boxes["object hand"] = _box(cx - p["w0"] / 2 - 12, cy + 8, 26, 26)
    return boxes


def _open(p: dict, t: float) -> dict[str, Box]:
    """The hand lifts the top quarter (a lid) up and aside; the object's box holds both parts."""
    x1, y1, x2, y2 = _box(p["x"], p["y"], p["w0"], p["h0"])
    lid_h = (y2 - y1) / 4
    u = 0.0 if t < 0.3 else min(1.0, (t - 0.3) / 0.4)
    lift = min(60.0, y1 - 4) * u  # never out of the frame
    aside = (70.0 if x2 + 70 < W else -70.0) * u
    lid = (x1 + aside, y1 - lift, x2 + aside, y1 + lid_h - lift)
    return {
        "object 0": (min(x1, lid[0]), lid[1], max(x2, lid[2]), y2),
        "_body": (x1, y1 + lid_h, x2, y2),
        "_lid": lid,
        "object hand": _box((lid[0] + lid[2]) / 2, lid[1] - 14, 28, 28),
    }


def _uncover(p: dict, t: float) -> dict[str, Box]:
    """Covering played backwards; the cloth is a prop (no placeholder, so not annotated)."""
    boxes = _cover(p, 1 - t)
    cloth = boxes.pop("object 1")
    boxes["_cloth"] = cloth
    boxes["object hand"] = _box((cloth[0] + cloth[2]) / 2, cloth[1] - 14, 28, 28)
    return boxes


@dataclass(frozen=True)
class Template:
    text: str
    motion: Motion


TEMPLATES: tuple[Template, ...] = (
    Template("Pushing [something] from left to right", _push(+1, hand_leads=False)),
    Template("Pushing [something] from right to left", _push(-1, hand_leads=False)),
    Template("Pulling [something] from left to right", _push(+1, hand_leads=True)),
    Template("Pulling [something] from right to left", _push(-1, hand_leads=True)),
    Template("Moving [something] up", _vertical(-1)),
    Template("Moving [something] down", _vertical(+1)),
    Template("Dropping [something] onto [something]", _drop),
    Template("Putting [something] next to [something]", _next_to),
    Template("Covering [something] with [something]", _cover),
    Template("Uncovering [something]", _uncover),
    Template("Poking [something] so it slightly moves", _poke),
    Template("Squeezing [something]", _squeeze),
    Template("Tearing [something] into two pieces", _tear),
    Template("Throwing [something]", _throw),
    Template(OPENING, _open),
)


def world(name: str) -> tuple[int, ...]:
    """The indices into TEMPLATES of the world `name` (`prepare.worlds`)."""
    return tuple(k for k, t in enumerate(TEMPLATES) if WORLDS[name](t.text))


def _draw(frame: np.ndarray, shape: str, colour: tuple[int, int, int], box: Box) -> None:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    if shape == "ball":
        cv2.ellipse(frame, ((x1 + x2) // 2, (y1 + y2) // 2), ((x2 - x1) // 2, (y2 - y1) // 2), 0, 0, 360, colour, -1)
    elif shape == "bottle":
        cv2.rectangle(frame, (x1 + (x2 - x1) // 4, y1), (x2 - (x2 - x1) // 4, y2), colour, -1)
    else:
        cv2.rectangle(frame, (x1, y1), (x2, y2), colour, -1)
        if shape == "box":
            cv2.rectangle(frame, (x1, y1), (x2, y2), (40, 40, 40), 2)


def _clip_box(box: Box) -> Box:
    return (max(0.0, box[0]), max(0.0, box[1]), min(float(W), box[2]), min(float(H), box[3]))


def make_video(vid: str, template: Template, objects: list[tuple[str, str]], rng: random.Random):
    """Frames [T, H, W, 3] and Something-Else frame annotations for one clip."""
    p = {"y": rng.uniform(0.35, 0.65) * H, "x": rng.uniform(0.35, 0.65) * W}
    for k, (_, shape) in enumerate(objects):
        p[f"w{k}"], p[f"h{k}"] = SIZES[shape]
    p.setdefault("w1", 112.0)
    p.setdefault("h1", 80.0)
    background = np.full((H, W, 3), rng.randint(90, 150), np.uint8)
    frames, annotations = [], []
    for i in range(N_FRAMES):
        boxes = template.motion(p, i / (N_FRAMES - 1))
        frame = background.copy()
        gap = boxes.pop("_gap", None)
        cloth = boxes.pop("_cloth", None)
        body, lid = boxes.pop("_body", None), boxes.pop("_lid", None)  # an object opened: two parts
        order = sorted(boxes, key=lambda s: (s == "object hand", s))  # hand on top
        for slot in order:
            if slot == "object hand" and cloth is not None:
                _draw(frame, "box", (70, 70, 80), cloth)
            if slot == "object hand":
                x1, y1, x2, y2 = (int(round(v)) for v in boxes[slot])
                cv2.ellipse(
                    frame, ((x1 + x2) // 2, (y1 + y2) // 2), ((x2 - x1) // 2, (y2 - y1) // 2), 0, 0, 360, HAND_RGB, -1
                )
            else:
                colour, shape = objects[int(slot[-1])]
                _draw(frame, shape, COLOURS[colour], boxes[slot] if body is None else body)
                if lid is not None and slot == "object 0":
                    _draw(frame, "bottle" if shape == "bottle" else "box", COLOURS[colour], lid)
                if gap is not None and slot == "object 0" and gap[1] > 0:  # torn: two pieces
                    x = int(round(gap[0]))
                    half = int(round(gap[1] / 2))
                    frame[:, x - half : x + half] = background[:, x - half : x + half]
        frames.append(frame)
        labels = []
        for slot, box in sorted(boxes.items()):
            x1, y1, x2, y2 = _clip_box(box)
            category = "hand" if slot == "object hand" else " ".join(objects[int(slot[-1])])
            labels.append(
                {
                    "box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2},
                    "category": category,
                    "gt_annotation": slot,
                    "standard_category": "hand" if slot == "object hand" else f"{int(slot[-1]):04d}",
                }
            )
        annotations.append(
            {
                "name": f"{vid}/{i + 1:04d}.jpg",
                "gt_placeholders": [" ".join(o) for o in objects],
                "nr_instances": len(labels),
                "labels": labels,
            }
        )
    return np.stack(frames), annotations


@dataclass(frozen=True)
class VideoJob:
    """One raw clip to draw and encode: its template, objects and the RNG state it starts from."""

    path: Path
    template: int
    objects: list[tuple[str, str]]
    state: tuple


def write_video(job: VideoJob) -> None:
    rng = random.Random()
    rng.setstate(job.state)
    frames, _ = make_video(job.path.stem, TEMPLATES[job.template], job.objects, rng)
    encode(job.path, frames, FPS, "libvpx-vp9", crf="30", deadline="realtime", **{"cpu-used": "8"})


def _write_videos(jobs: list[VideoJob], workers: int) -> None:
    """Every raw clip drawn and encoded, in `workers` processes; the same bytes either way."""
    with progress.bar("drawing raw videos", len(jobs), "videos") as advance:
        if workers <= 1:
            for job in jobs:
                write_video(job)
                advance()
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(write_video, jobs, chunksize=8):
                advance()


def generate_raw(raw: Path, n_videos: int, seed: int, workers: int = 1, templates: str = "default") -> dict[str, Path]:
    """Write raw SSV2-format data of the world `templates` (`prepare.worlds`) under `raw` (clips encoded
    in `workers` processes); returns the paths the `ssv2` step reads.

    Raw data made with the same (seed, videos, templates, version) is reused as it is; any
    other is replaced whole, so videos, labels and boxes always belong together.
    """
    videos_dir, labels_dir = raw / "videos", raw / "labels"
    paths = {"videos": videos_dir, "labels": labels_dir, "boxes": raw / "bounding_box_smthsmth_part1.json"}
    spec = {"seed": seed, "videos": n_videos, "templates": templates, "version": GENERATOR_VERSION}
    marker = raw / "generator.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return paths
    marker.unlink(missing_ok=True)
    chosen = world(templates)
    for old in videos_dir.glob("*.webm") if videos_dir.is_dir() else []:
        old.unlink()
    rng = random.Random(f"{seed}/synthetic")
    names = [(c, s) for c in COLOURS for s in SHAPES]
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    boxes: dict[str, list] = {}
    jobs: list[VideoJob] = []
    n_unlabeled = max(1, n_videos // 20)  # like real SSV2: test.json ids come without labels
    for i in range(n_videos + n_unlabeled):
        vid = str(1000 + i)
        k = chosen[i % len(chosen)]
        template = TEMPLATES[k]
        n_objects = template.text.count("[something]")
        objects = rng.sample(names, n_objects)
        jobs.append(VideoJob(videos_dir / f"{vid}.webm", k, objects, rng.getstate()))
        _, annotations = make_video(vid, template, objects, rng)  # the draws the job repeats
        boxes[vid] = annotations
        placeholders = [" ".join(o) for o in objects]
        label = template.text
        for ph in placeholders:
            label = label.replace("[something]", ph, 1)
        if i >= n_videos:
            splits["test"].append({"id": vid})
        else:
            split = "validation" if rng.random() < 0.2 else "train"
            splits[split].append(
                {"id": vid, "label": label.lower(), "template": template.text, "placeholders": placeholders}
            )
    _write_videos(jobs, workers)
    for name, rows in splits.items():
        write_json(labels_dir / f"{name}.json", rows)
    write_json(
        labels_dir / "labels.json",
        {TEMPLATES[k].text.replace("[something]", "something"): str(n) for n, k in enumerate(chosen)},
    )
    atomic_write(paths["boxes"], json.dumps(boxes))
    write_json(marker, spec)
    return paths


# Open questions over the same scenes, answerable only from the motion or the objects seen.
_DIRECTION = {
    "from left to right": "from left to right",
    "from right to left": "from right to left",
    "up": "up",
    "down": "down",
}
_COUNT_WORDS = ("zero", "one", "two", "three")


def open_questions(template: Template, objects: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(question type, question, answer) for one scene: counting, direction, locating."""
    names = [" ".join(o) for o in objects]
    text = template.text.lower()
    out = [
        (
            "counting",
            "How many coloured objects does the person handle or use in the video?",
            _COUNT_WORDS[len(objects)],
        )
    ]
    for phrase, answer in _DIRECTION.items():
        if text.endswith(phrase) and ("pushing" in text or "pulling" in text or "moving" in text):
            out.append(("direction", f"In which direction does the {names[0]} move?", answer))
    if text.startswith("dropping"):
        out.append(("locating", f"Where does the {names[0]} end up?", f"on top of the {names[1]}"))
    elif text.startswith("putting"):
        out.append(("locating", f"Where does the {names[0]} end up?", f"next to the {names[1]}"))
    elif text.startswith("covering"):
        out.append(("locating", f"Where is the {names[0]} at the end?", f"under the {names[1]}"))
    return out


def generate_open(raw: Path, n_videos: int, seed: int, kind: str) -> dict[str, Path]:
    """Write an open-QA dataset in EgoTempo's (`egotempo_openQA.json`) or EgoTextVQA's (JSONL)
    exact format over synthetic scenes (mp4 clips); returns {"annotations", "videos"}.
    Reused as it is when made with the same (kind, seed, videos, version)."""
    videos_dir = raw / "videos"
    name = "egotempo_openQA.json" if kind == "egotempo" else "egotextvqa_annotation.jsonl"
    paths = {"annotations": raw / name, "videos": videos_dir}
    spec = {"kind": kind, "seed": seed, "videos": n_videos, "version": GENERATOR_VERSION}
    marker = raw / "generator.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return paths
    marker.unlink(missing_ok=True)
    rng = random.Random(f"{seed}/synthetic-open/{kind}")
    choices = [(c, s) for c in COLOURS for s in SHAPES]
    rows = []
    chosen = world("default")
    for i in range(n_videos):
        template = TEMPLATES[chosen[i % len(chosen)]]
        objects = rng.sample(choices, template.text.count("[something]"))
        frames, _ = make_video(str(i), template, objects, rng)
        clip = f"synth{i:04d}_0.0_{N_FRAMES / FPS:.1f}" if kind == "egotempo" else str(i)
        encode(videos_dir / f"{clip}.mp4", frames, FPS, "libx264", crf="23", preset="veryfast")
        for k, (qtype, question, answer) in enumerate(open_questions(template, objects)):
            if kind == "egotempo":
                rows.append(
                    {
                        "question_id": f"{clip}_{k}",
                        "clip_id": clip,
                        "question_type": qtype,
                        "question": question,
                        "answer": answer,
                    }
                )
            else:
                rows.append(
                    {
                        "video_id": clip,
                        "question_id": f"{k}.0",
                        "question_type": qtype,
                        "question": question,
                        "correct_answer": answer,
                        "timestamp": round(N_FRAMES / FPS, 1),
                    }
                )
    if kind == "egotempo":
        write_json(
            paths["annotations"],
            {"info": {"date": "synthetic", "version": f"visual-cues {GENERATOR_VERSION}"}, "annotations": rows},
        )
    else:
        atomic_write(paths["annotations"], "".join(json.dumps(r) + "\n" for r in rows))
    write_json(marker, spec)
    return paths
