"""`prepare clips`: a folder of one's own videos (good, corrupt, not videos, too long, nested) as
an arrow-of-time dataset or with one's own questions; every bad file and row named, the rest kept."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from core.layout import DataLayout
from core.records import load_questions
from prepare.video import read_video
from tests.conftest import cli


def _clip(path: Path, frames: int, fps: int = 10, codec: str = "libx264") -> None:
    """A small moving-square clip: a bright square crossing a dark frame left to right."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}[path.suffix]
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for t in range(frames):
            img = np.full((48, 64, 3), 30, np.uint8)
            img[16:32, 4 + 3 * t : 20 + 3 * t] = 220
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Good clips of every container (one nested two deep, one with a space in its name), a
    corrupt one, a text file and a clip over the length limit."""
    root = tmp_path_factory.mktemp("own") / "clips"
    _clip(root / "pour.mp4", 12)
    _clip(root / "kitchen" / "egg 1.mov", 12)
    _clip(root / "kitchen" / "deep" / "drop.mkv", 12)
    _clip(root / "roll.webm", 12, codec="libvpx-vp9")
    _clip(root / "long.mp4", 40)  # 4 s: over --max-seconds 3
    (root / "broken.mp4").write_bytes((root / "pour.mp4").read_bytes()[:600])
    (root / "notes.txt").write_text("not a video")
    return root


def test_a_folder_of_own_clips_asks_the_arrow_of_time(folder, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "video,category\npour.mp4,irreversible\nkitchen/egg 1.mov,reversible\ndrop,irreversible\n"
        "missing.mp4,reversible\nroll.webm,sideways\n"
    )
    r = cli(f"prepare clips {folder} --out {tmp_path / 'arrow'} --labels {labels} --max-seconds 3 --workers 2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "8 arrow-of-time questions on 4 clips" in r.stdout
    for said in (
        "dropped broken.mp4: not a readable video",
        "dropped notes.txt: not a video (.txt)",
        "dropped long.mp4: 4.0 s, over --max-seconds 3",
        f"dropped {labels}:5: video 'missing.mp4' names no clip",
        f"dropped {labels}:6: category 'sideways' is not one of reversible, irreversible",
    ):
        assert said in r.stderr, said
    layout = DataLayout(tmp_path / "arrow")
    qs, rejected = load_questions(layout.questions)
    assert rejected == [] and {q.answer for q in qs} == {"forward", "backward"}
    cats = {q.id: q.category for q in qs}
    assert cats["kitchen--egg-1-forward"] == "reversible" and cats["pour-backward"] == "irreversible"
    assert cats["kitchen--deep--drop-forward"] == "irreversible" and cats["roll-forward"] == "unknown"
    forward, _ = read_video(layout.clip("arrow", "pour-forward"))
    backward, _ = read_video(layout.clip("arrow", "pour-backward"))
    assert len(forward) == len(backward) == 12
    assert np.abs(forward[::-1].astype(int) - backward.astype(int)).mean() < 3  # reversed, as decoded
    manifest = json.loads(layout.manifest.read_text())
    assert manifest["sources"]["clips"]["kitchen--egg-1"] == "kitchen/egg 1.mov" and len(manifest["dropped"]) == 5
    again = cli(f"prepare clips {folder} --out {tmp_path / 'arrow'} --labels {labels} --max-seconds 3 --workers 2")
    assert again.returncode == 0 and json.loads(layout.manifest.read_text())["counts"]["clips_rendered"] == 0


def test_own_questions_from_a_csv_with_bad_rows(folder, tmp_path):
    """A questions CSV (choices as a|b|c or a JSON list; a type; boxes as a Something-Else file):
    each bad row named by file:row and why, the good rows asked, cued clips drawn from the boxes."""
    frames = [
        {"name": f"pour/{t + 1:04d}.jpg", "labels": [{"gt_annotation": "object 0", "box2d": box}]}
        for t, box in enumerate({"x1": 4 + 3 * t, "y1": 16, "x2": 20 + 3 * t, "y2": 32} for t in range(12))
    ]
    (tmp_path / "pour_boxes.json").write_text(json.dumps({"pour": frames}))
    questions = tmp_path / "questions.csv"
    questions.write_text(
        "video,question,choices,answer,type,boxes\n"
        "pour.mp4,Which way does the square move?,left|right,right,direction,pour_boxes.json\n"
        'pour.mp4,The square moves _____,"[""up"", ""right""]",right,verb,pour_boxes.json\n'
        "kitchen/egg 1.mov,What moves?,a square|a ball,a square,,\n"
        "pour.mp4,Which way?,left|right,down,,pour_boxes.json\n"
        "nowhere.mp4,Which way?,left|right,left,,\n"
        "roll.webm,Which way?,left,left,,\n"
        "roll.webm,,left|right,left,,\n"
    )
    r = cli(f"prepare clips {folder} --out {tmp_path / 'mcq'} --questions {questions} --variants plain,trajectory")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 multiple-choice questions on 1 clips" in r.stdout
    for said in (
        f"{questions}:5: answer 'down' is not exactly once among the choices ['left', 'right']",
        f"{questions}:6: video 'nowhere.mp4' names no clip",
        f"{questions}:7: choices must be at least 2 non-empty strings",
        f"{questions}:8: missing question",
        "kitchen--egg-1-0: no boxes for its clip: --variants trajectory draw from them",
    ):
        assert said in r.stderr, said
    layout = DataLayout(tmp_path / "mcq")
    qs = {q.id: q for q in load_questions(layout.questions)[0]}
    assert (qs["pour-0"].type, qs["pour-0"].category) == ("mcq", "direction") and qs["pour-1"].type == "verb"
    assert layout.boxes("pour").is_file() and layout.drawing("trajectory") == "visual-cues/annotate.py"
    plain, cued = read_video(layout.clip("plain", "pour"))[0], read_video(layout.clip("trajectory", "pour"))[0]
    assert np.abs(cued.astype(int) - plain.astype(int)).max() > 60  # the study's cue drawn from the row's boxes


def test_bad_folders_and_options_are_one_error_line(folder, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    for args, said in (
        (f"{tmp_path / 'nothing'} --out {tmp_path / 'o'}", "not a folder of videos"),
        (f"{empty} --out {tmp_path / 'o'}", "no readable video (1 file(s) skipped)"),
        (f"{folder} --out {tmp_path / 'o'} --variants plain,reversed", "the arrow of time asks each clip forward"),
    ):
        r = cli(f"prepare clips {args}")
        assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr, r.stderr
