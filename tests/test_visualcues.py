"""The reference study reproduced: its published format imported, its table beside ours, its
frames, and reproduce.sh's plan."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from core import reference
from core.errors import DataError
from core.frames import FrameSpec, frame_indices
from core.layout import DataLayout
from core.records import load_questions
from core.runs import Run
from measure import report
from prepare.visualcues import VisualCuesOptions, prepare_visual_cues
from tests.conftest import REPO, SAMPLE, cli, pred

SHIPPED = reference.SHIPPED / "visual_cues_qwen3_vl_2b.csv"


def _row(video: str, question: str, choices: list, answer: str, qtype: str | None = "object") -> dict:
    meta = {"question": question, "choices": choices, "answer": answer, "video": video.removesuffix(".mp4")}
    if qtype:
        meta["type"] = qtype
    return {
        "video": video,
        "conversations": [{"from": "human", "value": "<video>\n..."}, {"from": "gpt", "value": answer}],
        "metadata": meta,
    }


@pytest.fixture(scope="module")
def study(synthetic, tmp_path_factory):
    """The study's layout, by hand: a JSON list of rows and a folder of clips per variant."""
    root = tmp_path_factory.mktemp("study")
    src = DataLayout(synthetic)
    vids = sorted(p.stem for p in (synthetic / "clips" / "plain").glob("*.mp4"))[:3]
    for variant, folder in (("plain", "plain"), ("trajectory", "trajectory")):
        (root / folder).mkdir()
        for v in vids:
            shutil.copy(src.clip(variant, v), root / folder / f"{v}.mp4")
    a, b, c = vids
    rows = [
        _row(f"{a}.mp4", "pushing _____ from left to right", ["ball", "cup", "box", "pen"], "ball"),
        _row(
            f"{a}.mp4",
            "_____ ball from left to right",
            ["pushing", "pulling", "lifting", "dropping"],
            "pushing",
            "verb",
        ),
        _row(
            f"{b}.mp4", "putting _____ on a table", ["cup", "Cup", "box", "pen"], "cup"
        ),  # duplicate after normalising
        _row(
            f"{b}.mp4", "_____ cup on a table", ["pushing", "lifting", "dropping", "tearing"], "putting", "verb"
        ),  # answer missing
        {"video": f"{c}.mp4", "metadata": {"question": "no blank here", "choices": ["a", "b"], "answer": "a"}},  # bad
        _row("404.mp4", "holding _____", ["ball", "cup", "box", "pen"], "cup"),  # no clip
        _row(f"{c}.mp4", "_____ something", ["tearing", "folding", "lifting", "opening"], "folding", None),  # no type
    ]
    (root / "qwen_format_test.json").write_text(json.dumps(rows, indent=1))
    return root, vids


def test_import_keeps_the_study_rows_and_flags_its_flaws(study, tmp_path):
    root, (a, b, c) = study
    m = prepare_visual_cues(
        root / "qwen_format_test.json",
        {"plain": root / "plain", "trajectory": root / "trajectory"},
        tmp_path / "vc",
        VisualCuesOptions(),
    )
    qs, rejected = load_questions(DataLayout(tmp_path / "vc").questions)
    assert rejected == [] and len(qs) == 5 and m.counts["by_type"] == {"object": 2, "verb": 3}
    by_id = {q.id: q for q in qs}
    assert by_id[f"{a}-0"].choices == ["ball", "cup", "box", "pen"]  # the study's order
    assert by_id[f"{b}-0"].flags == ["duplicate_choices"] and by_id[f"{b}-1"].flags == ["answer_not_in_choices"]
    assert m.flagged == {
        f"{b}-0": ["duplicate_choices"],
        f"{b}-1": ["answer_not_in_choices"],
        f"{c}-0": ["type_inferred"],
    }
    assert by_id[f"{c}-0"].type == "verb"
    reasons = {d["item"]: d["reason"] for d in m.dropped}
    assert "exactly one _____" in reasons[f"{root / 'qwen_format_test.json'}[4]"]
    assert reasons["404-0"] == "clip missing: plain/404.mp4"
    clip = DataLayout(tmp_path / "vc").clip("trajectory", a)
    assert os.path.samefile(clip, root / "trajectory" / f"{a}.mp4")  # linked, not re-rendered
    copied = prepare_visual_cues(
        root / "qwen_format_test.json",
        {"plain": root / "plain", "trajectory": root / "trajectory"},
        tmp_path / "copied",
        VisualCuesOptions(copy=True),
    )
    assert copied.counts == m.counts
    copy = DataLayout(tmp_path / "copied").clip("plain", a)
    assert (
        not os.path.samefile(copy, root / "plain" / f"{a}.mp4")
        and copy.read_bytes() == (root / "plain" / f"{a}.mp4").read_bytes()
    )
    (root / "broken.json").write_text('{"not": "a list"}')
    with pytest.raises(DataError, match="broken.json: expected a JSON list"):
        prepare_visual_cues(root / "broken.json", {"plain": root / "plain"}, tmp_path / "x", VisualCuesOptions())


def _pred(qid, video, model, variant, qtype, correct):
    return pred(qid, video_id=video, model=model, variant=variant, type=qtype, correct=correct)


def test_published_numbers_sit_beside_ours_with_our_ci():
    rows = reference.read(SHIPPED)
    assert len(rows) == 4 and rows[0].object_acc == 90.77
    preds = []
    for i in range(40):  # base on plain: object 30/40 right, verb 20/40; one question per video
        preds.append(_pred(f"o{i}", f"v{i}", "base", "plain", "object", i < 30))
        preds.append(_pred(f"w{i}", f"w{i}", "base", "plain", "verb", i < 20))
    parents = {"base": None, "lora": "base"}
    r = report.build(Run(preds, parents=parents, reference=reference.record(SHIPPED, parents, None)))
    t = r.reference.set_index(["reference", "variant", "metric"])
    obj = t.loc[("pretrained", "plain", "object_acc")]
    assert (obj["model"], obj["ours"], obj["n"]) == ("base", 75.0, 40)
    assert obj["ci_low"] < 75 < obj["ci_high"] and obj["inside_ci"] == (obj["ci_low"] <= 90.77 <= obj["ci_high"])
    overall = t.loc[("pretrained", "plain", "overall_acc")]
    assert overall["ours"] == 62.5 and overall["n"] == 80
    verb = t.loc[("pretrained", "plain", "verb_acc")]
    assert verb["ours"] == 50.0 and verb["inside_ci"] == (verb["ci_low"] <= 63.90 <= verb["ci_high"])
    assert t.loc[("finetuned", "plain", "object_acc")]["model"] == "lora"
    # no trajectory clips drawn as the study drew them: no trajectory row, and the report says why
    assert "trajectory" not in set(r.reference["variant"])
    assert r.reference_notes == [
        "No published `trajectory` row is shown: this run has no `trajectory` clips drawn as the study drew "
        "them (its cued clips: none)."
    ]
    from measure.report.reference import notes, table

    frame = pd.DataFrame([p.__dict__ for p in preds])
    drawn = {"trajectory": "visual-cues/annotate.py"}
    t = table(frame, reference.record(SHIPPED, parents, None), drawn).set_index(["reference", "variant", "metric"])
    assert pd.isna(t.loc[("finetuned", "trajectory", "object_acc")]["ours"])  # drawn as the study's, not asked: empty
    assert notes(reference.record(SHIPPED, parents, None), drawn)[0].startswith(
        "Our `trajectory` clips: the study's cue"
    )
    path = {"path": "path/1"}
    assert "its cued clips: `path`: centre paths alone" in notes(reference.record(SHIPPED, parents, None), path)[0]
    with pytest.raises(DataError, match="give --reference-models"):
        reference.model_names(rows, {"a": None, "b": None}, None)


def test_a_bad_reference_table_names_the_file_and_row(tmp_path):
    bad = tmp_path / "ref.csv"
    bad.write_text("model,videos,object_acc,verb_acc\npretrained,plain,90,60\n")
    with pytest.raises(DataError, match="ref.csv: missing column"):
        reference.read(bad)
    bad.write_text("model,videos,object_acc,verb_acc,overall_acc\npretrained,plain,90,sixty,70\n")
    with pytest.raises(DataError, match="ref.csv: row 2: verb_acc 'sixty'"):
        reference.read(bad)


def test_study_sampling_is_vllm_0_11s(tiny):
    """More than k frames: k from np.linspace, as vLLM 0.11's loader; k or fewer: the model's
    own processor at its fps, as vLLM 0.11 then left to it."""
    from transformers import AutoVideoProcessor
    from transformers.video_utils import VideoMetadata

    vp = AutoVideoProcessor.from_pretrained(str(tiny.model))
    study, processor = FrameSpec(64, "study"), FrameSpec(8, "processor")
    assert frame_indices(100, 12.0, study, str(tiny.model)) == np.linspace(0, 99, 64, dtype=int).tolist()
    for n in (36, 64):
        own = vp.sample_frames(VideoMetadata(total_num_frames=n, fps=12.0)).tolist()
        assert (
            frame_indices(n, 12.0, study, str(tiny.model)) == own == frame_indices(n, 12.0, processor, str(tiny.model))
        )
    assert len(frame_indices(36, 12.0, study, str(tiny.model))) == 6  # 3 s at 2 fps
    with pytest.raises(ValueError, match="video processor"):
        frame_indices(36, 12.0, FrameSpec(64, "processor"), None)


def test_sampling_by_the_processor_is_refused_up_front_without_one(tiny, tmp_path):
    """A model whose video processor is not at hand cannot be sampled by it: a SetupError before
    anything is asked, not an error on every item."""
    from core.ask import AskConfig
    from core.errors import SetupError
    from measure.ask.plan import ask_config

    bare = tmp_path / "tiny-vlm"  # the model's folder without its processor configs
    bare.mkdir()
    (bare / "config.json").write_text((tiny.model / "config.json").read_text())
    listed = [{"id": "tiny-vlm", "root": str(bare)}]
    uniform = AskConfig(frames=FrameSpec(sampling="uniform", frame_size=(64, 64)))
    assert ask_config(uniform, listed, ["tiny-vlm"]).frames.sampling == "uniform"
    with pytest.raises(SetupError, match="--sampling study asks the model's video processor.*tiny-vlm"):
        ask_config(AskConfig(frames=FrameSpec(sampling="study", frame_size=(64, 64))), listed, ["tiny-vlm"])


def test_reproduce_dry_run_prints_every_command_and_runs_none(tmp_path):
    env = dict(os.environ, PATH=os.environ["PATH"], REF_DIR=str(tmp_path / "ref"), OUT=str(tmp_path / "out"))
    r = subprocess.run(
        ["sh", "scripts/reproduce.sh", "--dry-run"], cwd=REPO, capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    commands = [line[2:] for line in r.stdout.splitlines() if line.startswith("+ ")]
    assert [c.split()[0:3] for c in commands][:1] == [["sh", "scripts/setup.sh"]]
    assert any("snapshot_download('apurvagup/visual_cues_ssv2', repo_type='dataset'" in c for c in commands)
    assert any(" -m prepare visual-cues --test " in c for c in commands)
    assert any(" -m serve run --model Qwen/Qwen3-VL-2B-Instruct --adapters finetuned=" in c for c in commands)
    assert any(" -m measure " in c and "--sampling study" in c and "visual_cues_qwen3_vl_2b.csv" in c for c in commands)
    assert "study sampling" in r.stdout and not (tmp_path / "ref").exists() and not (tmp_path / "out").exists()
    other = subprocess.run(
        ["sh", "scripts/reproduce.sh", "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(env, SAMPLING="processor"),
        timeout=60,
    )
    assert "--sampling processor" in other.stdout
    wrong = subprocess.run(
        ["sh", "scripts/reproduce.sh", "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(env, SAMPLING="fast"),
        timeout=60,
    )
    assert wrong.returncode == 2 and "SAMPLING must be" in wrong.stderr


def test_imported_study_scored_on_the_real_server_with_its_frames_and_table(server, study, tmp_path):
    root, _ = study
    data = tmp_path / "vc"
    r = cli(
        "prepare visual-cues --test",
        str(root / "qwen_format_test.json"),
        "--videos-plain",
        str(root / "plain"),
        "--videos-trajectory",
        str(root / "trajectory"),
        "--out",
        str(data),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "5 questions" in r.stdout and "dropped 2" in r.stdout
    m = cli(
        f"measure --data {data} --base-url {server.base_url} --runs-dir {tmp_path} --run-id vc "
        f"--frames 64 --sampling study --reference {SHIPPED} "
        f"--reference-models pretrained={server.base_model},finetuned={server.adapter}",
        timeout=600,
    )
    assert m.returncode == 0, m.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "vc" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 5 * 2 * 2 and all(r["status"] == "ok" and r["reply"] in r["choices"] for r in rows)
    assert all(len(r["frame_indices"]) == 6 for r in rows)  # 36-frame clips: the processor's 2 fps, as in the study
    assert not any(r["correct"] for r in rows if r["answer"] not in r["choices"])  # kept, and never right
    run = json.loads((tmp_path / "vc" / "run.json").read_text())
    assert run["ask"]["frames"] == {"frames": 64, "sampling": "study", "frame_size": None}
    assert "64 frames by study sampling" in (tmp_path / "vc" / "report.md").read_text()
    published = json.loads((tmp_path / "vc" / "report.json").read_text())["reference"]
    assert len(published) == 12 and {p["model"] for p in published} == {server.base_model, server.adapter}
    for p in published:  # ours, recounted from the predictions of that model, variant and type
        qtype = {"object_acc": "object", "verb_acc": "verb", "overall_acc": None}[p["metric"]]
        cell = [
            r for r in rows if r["model"] == p["model"] and r["variant"] == p["variant"] and qtype in (None, r["type"])
        ]
        assert p["n"] == len(cell) and p["ours"] == pytest.approx(100 * sum(r["correct"] for r in cell) / len(cell))
    again = cli("measure report", str(tmp_path / "vc"), timeout=300)
    assert again.returncode == 0 and "Published numbers beside ours: " in again.stdout


# ---------- the study's own format, made from the real SSV2 sample ----------


@pytest.fixture(scope="module")
def sample_study(tmp_path_factory):
    """The study's published shape made from the real SSV2 sample: `prepare ssv2 --subset
    visual-cues` (its subset rule, its cue drawn by its rule, its clip encoding), then its clips
    laid out as the study's folders and its questions as the study's rows."""
    root = tmp_path_factory.mktemp("sample-study")
    made = cli(
        f"prepare ssv2 --videos {SAMPLE / 'videos'} --labels {SAMPLE / 'labels'} --boxes {BOXES} "
        f"--out {root / 'ours'} --subset visual-cues --variants plain,trajectory --workers 2"
    )
    assert made.returncode == 0, made.stderr[-2000:]
    ours = DataLayout(root / "ours")
    rows = []
    for q in load_questions(ours.questions)[0]:
        meta = {"question": q.question, "choices": q.choices, "answer": q.answer, "type": q.type}
        rows.append({"video": f"{q.video_id}.mp4", "metadata": meta})
        for variant in ("plain", "trajectory"):
            (root / variant).mkdir(exist_ok=True)
            shutil.copy(ours.clip(variant, q.video_id), root / variant / f"{q.video_id}.mp4")
    (root / "qwen_format_test.json").write_text(json.dumps(rows))
    return root, made


BOXES = SAMPLE / "bounding_box_smthsmth_sample.json"


def _frames(path) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def test_the_study_subset_and_cue_on_the_real_sample(sample_study):
    """`prepare ssv2 --subset visual-cues` on the real sample: its counts printed beside the
    study's, the study's split (test: the first videos in label-file order), clips written as
    the study wrote them (cropped to even size, 12 fps), and in every decoded `trajectory` clip
    the pixels the cue changed lie on the study's strokes (within the codec's 2 px), most of
    the strokes visibly drawn."""
    import cv2

    from interpret.regions import strokes

    root, made = sample_study
    assert "subset visual-cues: 4 videos (4 test : 0 train), 3 verbs, 5 objects" in made.stdout
    assert "the study reported ~9,500 videos" in made.stdout and made.stdout.count("deliberate difference") == 3
    ours = DataLayout(root / "ours")
    manifest = json.loads(ours.manifest.read_text())
    assert manifest["subset"]["found"]["videos"] == 4 and manifest["options"]["encoding"] == "study"
    assert manifest["render_settings"]["trajectory"]["drawing"] == "visual-cues/annotate.py"
    for vid in ("57082", "80962", "2", "13201"):
        plain, cued = _frames(ours.clip("plain", vid)), _frames(ours.clip("trajectory", vid))
        source = _frames(SAMPLE / "videos" / f"{vid}.webm")
        assert plain.shape[1:3] == (source.shape[1] // 2 * 2, source.shape[2] // 2 * 2) and len(plain) == len(source)
        mask = strokes(ours.boxes(vid), "trajectory")[:, : cued.shape[1], : cued.shape[2]]
        changed = np.abs(cued.astype(int) - plain.astype(int)).max(axis=-1) > 60
        near = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 for m in mask])
        assert changed.sum() > 1000 and not (changed & ~near).any(), vid
        assert (changed & mask).sum() >= 0.75 * mask.sum(), vid  # measured 0.83-1.0: a stroke near the frame's colour
    assert [json.loads(x)["split"] for x in ours.questions.read_text().splitlines()] == ["test"] * 9


def test_the_study_clips_get_their_boxes_or_are_named(sample_study, tmp_path):
    """`prepare visual-cues --boxes`: every imported clip whose Something-Else boxes fit it gets
    boxes/<video>.json (the study's stroke width); one whose boxes do not fit (another video's
    52 annotated frames on a clip of 38) or that has none is named and kept without regions."""
    root, _ = sample_study
    args = (
        f"prepare visual-cues --test {root / 'qwen_format_test.json'} --videos-plain {root / 'plain'} "
        f"--videos-trajectory {root / 'trajectory'}"
    )
    good = cli(f"{args} --out {tmp_path / 'vc'} --boxes {BOXES}")
    assert good.returncode == 0 and "boxes: 4 of 4 clips have regions for interpret" in good.stdout, good.stderr
    layout = DataLayout(tmp_path / "vc")
    assert all(layout.boxes(v).is_file() for v in ("57082", "80962", "2", "13201"))
    assert json.loads(layout.boxes("57082").read_text())["thickness"] == 2
    assert layout.drawing("trajectory") == "visual-cues/published"
    boxes = json.loads(BOXES.read_text())
    (tmp_path / "wrong.json").write_text(json.dumps({"57082": boxes["22983"], "80962": boxes["80962"]}))
    wrong = cli(f"{args} --out {tmp_path / 'vc2'} --boxes {tmp_path / 'wrong.json'}")
    assert wrong.returncode == 0 and "boxes: 1 of 4 clips have regions for interpret" in wrong.stdout
    assert "no regions for 57082: 52 annotated frames, but its clip has 38" in wrong.stderr
    assert "no regions for 2: no boxes for it in wrong.json" in wrong.stderr
    manifest = json.loads((tmp_path / "vc2" / "manifest.json").read_text())
    assert manifest["counts"]["questions"] == 9 and set(manifest["no_regions"]) == {"57082", "2", "13201"}


def test_interpret_splits_the_study_clips_by_region(sample_study, server, tmp_path):
    """The study's left-open question asked of its own clips: imported with their boxes, scored
    on the real server beside its published table (its `trajectory` row shown, saying whose
    clips these are), then `interpret` maps attention and removal effects onto the regions of
    the study's strokes."""
    root, _ = sample_study
    cli(
        f"prepare visual-cues --test {root / 'qwen_format_test.json'} --videos-plain {root / 'plain'} "
        f"--videos-trajectory {root / 'trajectory'} --out {tmp_path / 'vc'} --boxes {BOXES}",
        check=True,
    )
    cli(
        f"measure --data {tmp_path / 'vc'} --base-url {server.base_url} --runs-dir {tmp_path} --run-id vc "
        f"--models {server.base_model} --reference {SHIPPED} --reference-models pretrained={server.base_model},"
        f"finetuned={server.base_model}",
        check=True,
    )
    record = json.loads((tmp_path / "vc" / "run.json").read_text())
    assert record["drawings"] == {"trajectory": "visual-cues/published"}
    report_md = (tmp_path / "vc" / "report.md").read_text()
    assert "Our `trajectory` clips: the study's own published clips." in report_md
    reported = json.loads((tmp_path / "vc" / "report.json").read_text())["reference"]
    assert {r["variant"] for r in reported} == {"plain", "trajectory"} and all(r["n"] > 0 for r in reported)
    cli(f"interpret {tmp_path / 'vc'} --limit 2 --effects ablation --pictures 0", check=True, timeout=900)
    regions = pd.read_csv(tmp_path / "vc" / "interpret" / "regions.csv")
    cued = regions[(regions["variant"] == "trajectory") & (regions["cue_of"] == "trajectory")]
    assert len(cued) and (cued[cued["region"] == "cue"]["area"] > 0).all()
    effects = pd.read_csv(tmp_path / "vc" / "interpret" / "effects.csv")
    assert {"trajectory", "plain"} <= set(effects["variant"])
