"""The ssv2 step on the real sample and on synthetic data: questions, clips, cues, manifest."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.decoding import decord
from core.errors import DataError
from core.layout import DataLayout
from core.records import Question, read_questions
from prepare.pipeline import Options, prepare_ssv2
from prepare.sources import read_boxes
from prepare.variants import CueOptions
from tests.conftest import REPO, SAMPLE, cli, needs_sample


def _frames(path):
    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy()


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    manifest = prepare_ssv2(
        SAMPLE / "videos",
        SAMPLE / "labels",
        [SAMPLE / "bounding_box_smthsmth_sample.json"],
        out,
        Options(test_videos=2, variants=("plain", "trajectory", "bbox"), workers=2),
    )
    return out, manifest


def test_real_sample_labelled_clips_give_both_types_and_unlabelled_are_reported(sample):
    out, manifest = sample
    qs = read_questions(DataLayout(out).questions)
    assert {q.video_id for q in qs} == {"57082", "80962", "2", "13201"}
    for vid in {q.video_id for q in qs}:
        assert {q.type for q in qs if q.video_id == vid} == {"verb", "object"}
    unlabeled = {d["item"] for d in manifest.dropped if d["reason"].startswith("unlabeled")}
    assert len(unlabeled) == 9
    assert manifest.counts["videos_by_split"] == {"test": 2, "train": 2}


@needs_sample
def test_rendered_clips_keep_frame_count_and_even_size(sample):
    out, _ = sample
    layout = DataLayout(out)
    for vid in ("57082", "80962", "2", "13201"):
        n = len(decord.VideoReader(str(SAMPLE / "videos" / f"{vid}.webm")))
        for variant in ("plain", "trajectory", "bbox"):
            vr = decord.VideoReader(str(layout.clip(variant, vid)))
            assert len(vr) == n
            h, w, _ = vr[0].shape
            assert h % 2 == 0 and w % 2 == 0


@needs_sample
def test_cue_pixels_lie_on_or_next_to_the_boxes(sample):
    out, _ = sample
    layout = DataLayout(out)
    vid = "57082"
    boxes = read_boxes([SAMPLE / "bounding_box_smthsmth_sample.json"], {vid})[vid]
    plain, cued = _frames(layout.clip("plain", vid)), _frames(layout.clip("bbox", vid))
    margin = 8  # stroke half-width + antialiasing + codec ringing
    changed_total = 0
    for t in range(min(len(boxes), len(plain))):
        diff = np.abs(cued[t].astype(int) - plain[t].astype(int)).max(axis=2) > 60
        allowed = np.zeros_like(diff)
        for slot, (x1, y1, x2, y2) in boxes[t].items():
            if slot == "object hand":
                continue
            allowed[max(0, int(y1) - margin) : int(y2) + margin, max(0, int(x1) - margin) : int(x2) + margin] = True
        changed_total += diff.sum()
        assert not (diff & ~allowed).any(), f"frame {t}: cue pixels away from the boxes"
    assert changed_total > 500  # the cue is really drawn


@needs_sample
def test_unknown_variant_and_malformed_json_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="unknown variants.*valid"):
        prepare_ssv2(SAMPLE / "videos", SAMPLE / "labels", [], tmp_path, Options(variants=("plain", "glow")))
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "train.json").write_text('[{"id": "1", "label": "x",\n "template": }]')
    with pytest.raises(DataError, match=r"train\.json: malformed JSON at line 2, column 14"):
        prepare_ssv2(SAMPLE / "videos", labels, [], tmp_path / "out", Options(label_files=("train",)))


def test_synthetic_dataset_is_complete_and_rerun_skips_rendering(synthetic):
    layout = DataLayout(synthetic)
    manifest = json.loads(layout.manifest.read_text())
    qs = read_questions(layout.questions)
    assert layout.variants() == ["plain", "trajectory"]
    assert manifest["counts"]["by_split"]["test"] > 0 and manifest["counts"]["by_split"]["train"] > 0
    assert {q.type for q in qs} == {"verb", "object"}
    for q in qs:
        for v in layout.variants():
            assert layout.clip(v, q.video_id).is_file()
    raw = layout.raw
    for name in ("train", "validation", "test", "labels"):
        assert (raw / "labels" / f"{name}.json").is_file()
    boxes = json.loads((raw / "bounding_box_smthsmth_part1.json").read_text())
    slots = {lab["gt_annotation"] for frames in boxes.values() for f in frames for lab in f["labels"]}
    assert {"object 0", "object 1", "object hand"} <= slots
    clip = layout.clip("plain", qs[0].video_id)
    before = clip.stat().st_mtime_ns
    prepare_ssv2(
        raw / "videos",
        raw / "labels",
        [raw / "bounding_box_smthsmth_part1.json"],
        synthetic,
        Options(test_videos=6, variants=("plain", "trajectory"), workers=1),
    )
    assert clip.stat().st_mtime_ns == before
    assert read_questions(layout.questions) == qs


def test_same_template_comes_with_different_objects(synthetic):
    qs = read_questions(DataLayout(synthetic).questions)
    by_template = {}
    for q in qs:
        if q.type == "object":
            by_template.setdefault(q.template, set()).add(q.answer)
    assert any(len(answers) > 1 for answers in by_template.values())


def _copy_sample(tmp_path):
    """A writable copy of the real sample's labels, boxes and videos (symlinked)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for clip in (SAMPLE / "videos").iterdir():
        (videos / clip.name).symlink_to(clip)
    return videos, SAMPLE / "labels", [SAMPLE / "bounding_box_smthsmth_sample.json"]


@needs_sample
@pytest.mark.slow
def test_side_by_side_is_raw_left_cued_right(sample, tmp_path):
    videos, labels, boxes = _copy_sample(tmp_path)
    out = tmp_path / "out"
    prepare_ssv2(videos, labels, boxes, out, Options(test_videos=2, variants=("plain", "side-by-side"), workers=1))
    layout = DataLayout(out)
    plain, sbs = _frames(layout.clip("plain", "2")), _frames(layout.clip("side-by-side", "2"))
    w = decord.VideoReader(str(SAMPLE / "videos" / "2.webm"))[0].shape[1]  # 427: odd, padded to 428 in plain
    assert w % 2 == 1 and plain.shape[2] == w + 1 and sbs.shape[2] == 2 * w
    assert len(sbs) == len(plain)
    plain = plain[:, :, :w]
    left, right = sbs[:, :, :w], sbs[:, :, w:]
    assert np.abs(left.astype(int) - plain.astype(int)).mean() < 3  # codec noise only
    assert np.abs(right.astype(int) - plain.astype(int)).mean() > np.abs(left.astype(int) - plain.astype(int)).mean()


@needs_sample
@pytest.mark.slow
def test_changed_cue_settings_rerender_and_equal_ones_reuse(tmp_path):
    videos, labels, boxes = _copy_sample(tmp_path)
    out = tmp_path / "out"
    first = prepare_ssv2(videos, labels, boxes, out, Options(test_videos=2, variants=("plain", "bbox"), workers=1))
    assert first.counts["clips_rendered"] == 8
    same = prepare_ssv2(videos, labels, boxes, out, Options(test_videos=2, variants=("plain", "bbox"), workers=1))
    assert same.counts["clips_rendered"] == 0
    thicker = Options(test_videos=2, variants=("plain", "bbox"), workers=1, cues=CueOptions(thickness=9))
    changed = prepare_ssv2(videos, labels, boxes, out, thicker)
    assert changed.counts["clips_rendered"] == 4  # bbox only; plain has no cue settings
    assert changed.counts["stale_clips_removed"] == {"plain": 0, "bbox": 4}


@needs_sample
def test_shards_split_the_render_and_the_final_run_reuses_it(tmp_path):
    videos, labels, boxes = _copy_sample(tmp_path)
    out = tmp_path / "out"
    rendered = []
    for i in range(2):
        m = prepare_ssv2(
            videos, labels, boxes, out, Options(test_videos=2, variants=("plain",), workers=1, shard=(i, 2))
        )
        rendered.append(m.counts["clips_rendered"])
        assert (out / f"manifest.shard-{i}-of-2.json").is_file()
        assert not (out / "questions.jsonl").exists()
    assert sum(rendered) == 4
    final = prepare_ssv2(videos, labels, boxes, out, Options(test_videos=2, variants=("plain",), workers=1))
    assert final.counts["clips_rendered"] == 0 and final.counts["videos"] == 4


@pytest.mark.slow
def test_ray_data_job_writes_a_local_runs_dataset(tmp_path):
    """`--ray local` on a 2-CPU Ray instance writes, byte for byte, what a local run writes
    (questions, parquet, manifest and every clip); a second Ray run reuses every clip."""
    raw = tmp_path / "raw"  # generated in a process of its own: decord's bundled FFmpeg, imported here, lacks libvpx
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from pathlib import Path; from prepare.synthetic import generate_raw; "
            f"generate_raw(Path({str(raw)!r}), 10, 3)",
        ],
        cwd=REPO,
        check=True,
        timeout=300,
    )
    args = [
        "--videos",
        raw / "videos",
        "--labels",
        raw / "labels",
        "--boxes",
        raw / "bounding_box_smthsmth_part1.json",
        "--test-videos",
        3,
        "--variants",
        "plain,trajectory,reversed",
        "--workers",
        2,
    ]
    for name, extra in (("local", []), ("ray", ["--ray", "local"])):
        r = cli("prepare ssv2", *map(str, args), "--out", tmp_path / name, *extra, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    local, ray = DataLayout(tmp_path / "local"), DataLayout(tmp_path / "ray")
    files = sorted(p.relative_to(local.root) for p in local.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(ray.root) for p in ray.root.rglob("*") if p.is_file())
    assert sum(f.suffix == ".mp4" for f in files) == 3 * 10 and {"questions.parquet", "manifest.json"} <= {
        f.name for f in files
    }
    for f in files:
        assert (local.root / f).read_bytes() == (ray.root / f).read_bytes(), f
    again = cli("prepare ssv2", *map(str, args), "--out", ray.root, "--ray", "local", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(ray.manifest.read_text())["counts"]["clips_rendered"] == 0


@needs_sample
def test_bad_clips_are_dropped_with_reasons_and_the_run_goes_on(tmp_path):
    videos, labels, boxes = _copy_sample(tmp_path)
    (videos / "2.webm").unlink()
    (videos / "2.webm").write_bytes(b"")  # empty
    (videos / "13201.webm").unlink()
    (videos / "13201.webm").write_bytes((SAMPLE / "videos" / "13201.webm").read_bytes()[:2000])  # truncated
    (videos / "80962.webm").unlink()  # missing
    m = prepare_ssv2(videos, labels, boxes, tmp_path / "out", Options(test_videos=2, variants=("plain",), workers=2))
    reasons = {d["item"]: d["reason"] for d in m.dropped}
    assert "empty" in reasons["2"] and "2.webm" in reasons["2"]
    assert reasons["80962"] == "video missing"
    assert "13201" in reasons and "13201.webm" in reasons["13201"]
    qs = read_questions(DataLayout(tmp_path / "out").questions)
    assert {q.video_id for q in qs} == {"57082"}


@needs_sample
def test_malformed_box_file_names_the_file(tmp_path):
    videos, labels, _ = _copy_sample(tmp_path)
    bad = tmp_path / "boxes.json"
    bad.write_text('{"57082": [{"name": "57082/0001.jpg", "labels": [}')
    with pytest.raises(DataError, match=r"boxes\.json: malformed JSON"):
        prepare_ssv2(videos, labels, [bad], tmp_path / "out", Options(variants=("plain",)))


def test_parquet_export_matches_the_jsonl(synthetic):
    from datasets import load_dataset

    layout = DataLayout(synthetic)
    ds = load_dataset("parquet", data_files=str(synthetic / "questions.parquet"))["train"]
    assert [Question(**row) for row in ds] == read_questions(layout.questions)


@pytest.mark.slow
def test_in_the_one_sentence_world_a_verb_question_has_only_the_video_to_go_by(tmp_path):
    """`--templates one-sentence`: every verb question blanks the same sentence ("_____ <the
    object>") and offers the same four verbs, so its text alone is worth chance; a thrown object
    has left the frame (and its boxes) by the end."""
    out = tmp_path / "one"
    cli(f"prepare synthetic --out {out} --videos 8 --variants plain --templates one-sentence --workers 2", check=True)
    questions = read_questions(DataLayout(out).questions)
    verbs = [q for q in questions if q.type == "verb"]
    four = {"squeezing", "throwing", "uncovering", "opening"}
    assert {q.answer for q in verbs} == four and all(set(q.choices) == four for q in verbs)
    for q in verbs:
        obj = next(p.answer for p in questions if p.video_id == q.video_id and p.type == "object")
        assert q.question == f"_____ {obj}"
    boxes = json.loads((DataLayout(out).raw / "bounding_box_smthsmth_part1.json").read_text())
    thrown = [q.video_id for q in verbs if q.answer == "throwing"]
    assert thrown and all(not [b for b in boxes[v][-1]["labels"] if b["gt_annotation"] == "object 0"] for v in thrown)
