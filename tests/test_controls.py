"""Shortcut controls and the arrow-of-time task: renders, questions, statistics, audit."""

from __future__ import annotations

import numpy as np
import pytest

from core.decoding import decord
from core.errors import DataError
from core.frames import FrameSpec
from core.layout import DataLayout
from core.profiles import QWEN_VL
from core.records import Prediction, read_questions
from core.runs import Run
from measure import report
from measure.ask.media import MediaSpec, prepare
from measure.report import render
from measure.report.stats import f1, kl
from prepare.arrow import build_arrow, category
from prepare.pipeline import Options, prepare_ssv2
from prepare.variants import shuffle_order
from tests.conftest import SAMPLE, needs_sample, pred


def _frames(path):
    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy().astype(int)


@pytest.fixture(scope="module")
def controls(tmp_path_factory):
    out = tmp_path_factory.mktemp("controls")
    prepare_ssv2(
        SAMPLE / "videos",
        SAMPLE / "labels",
        [SAMPLE / "bounding_box_smthsmth_sample.json"],
        out,
        Options(test_videos=2, variants=("plain", "reversed", "shuffled", "single-frame", "blind"), workers=2),
    )
    return DataLayout(out)


def test_control_clips_hold_the_right_frames(controls):
    for vid in ("57082", "2"):
        plain = _frames(controls.clip("plain", vid))
        n = len(plain)
        rev = _frames(controls.clip("reversed", vid))
        assert len(rev) == n
        for i in (0, n // 3, n - 1):
            assert np.abs(rev[i] - plain[n - 1 - i]).mean() < 3  # the same frame, up to codec noise
        shuffled = _frames(controls.clip("shuffled", vid))
        order = shuffle_order(n, vid, seed=0)
        assert sorted(order) == list(range(n)) and list(order) != list(range(n))
        assert (shuffle_order(n, vid, seed=0) == order).all()
        for i in (0, n // 2, n - 1):
            assert np.abs(shuffled[i] - plain[order[i]]).mean() < 3
        single = _frames(controls.clip("single-frame", vid))
        assert len(single) == 1 and np.abs(single[0] - plain[n // 2]).mean() < 3
    assert not any(controls.clip("blind", "2").parent.glob("*.mp4"))
    assert "blind" in controls.variants()


def test_single_frame_goes_out_as_one_image(controls):
    sent = prepare(
        MediaSpec(controls.clip("single-frame", "2"), "single-frame", "frames", QWEN_VL.video_as, FrameSpec())
    )
    assert [p["type"] for p in sent.parts] == ["image_url"] and sent.frame_indices == [0]
    assert sent.parts[0]["image_url"]["url"].startswith("data:image/png;base64,")


@needs_sample
def test_arrow_of_time_questions_are_balanced_and_tagged(controls, tmp_path):
    manifest = build_arrow(controls.root, tmp_path / "aot")
    qs = read_questions(DataLayout(tmp_path / "aot").questions)
    assert len(qs) == 8 and manifest.counts["by_answer"] == {"forward": 4, "backward": 4}
    for q in qs:
        assert (
            q.type == "arrow" and q.choices == ["forward", "backward"] and q.question.endswith("forward or backward?")
        )
        clip = DataLayout(tmp_path / "aot").clip("arrow", q.video_id)
        src = "plain" if q.answer == "forward" else "reversed"
        assert clip.read_bytes() == controls.clip(src, q.video_id.rsplit("-", 1)[0]).read_bytes()
    assert category("Opening [something]") == "reversible"
    assert category("Dropping [something] onto [something]") == "irreversible"
    assert category("Tearing [something] into two pieces") == "irreversible"
    assert category("Covering [something] with [something]") == "reversible"
    with pytest.raises(DataError, match="no reversed clips"):
        build_arrow(SAMPLE, tmp_path / "x")


def test_f1_and_kl_against_hand_computed_cases():
    truth = ["forward", "forward", "backward", "backward"]
    pred = ["forward", "backward", "backward", "forward"]
    assert f1(truth, pred, "forward") == pytest.approx(0.5)  # P = R = 1/2
    assert f1(truth, ["forward"] * 4, "forward") == pytest.approx(2 / 3)  # P = 1/2, R = 1
    assert f1(truth, ["forward"] * 4, "backward") == 0.0
    assert kl({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0.0
    assert kl({"a": 1.0, "b": 0.0}, {"a": 0.5, "b": 0.5}) == pytest.approx(np.log(2))
    assert kl({"a": 0.75, "b": 0.25}, {"a": 0.25, "b": 0.75}) == pytest.approx(0.5 * np.log(3))


def _p(qid, variant, correct, qtype="verb", model="m"):
    four = dict(choices=["a", "b", "c", "d"], template="Pushing [something]")
    return pred(qid, variant=variant, correct=correct, type=qtype, model=model, **four)


def test_audit_flags_a_run_where_blind_equals_plain():
    preds = [_p(str(i), v, i % 3 != 0, "verb") for i in range(30) for v in ("plain", "blind")]
    preds += [_p(f"o{i}", "plain", True, "object") for i in range(30)] + [
        _p(f"o{i}", "blind", i < 8, "object") for i in range(30)
    ]
    r = report.build(Run(preds))
    assert len(r.warnings) == 1 and "verb questions" in r.warnings[0] and "does not measure vision" in r.warnings[0]
    flags = r.audit.set_index("type")["text_solvable"].to_dict()
    assert flags == {"verb": True, "object": False, "all": False}
    assert r.warnings[0] in render.render_markdown(r)


def test_cued_deltas_restricted_to_what_blind_gets_wrong():
    preds = []
    for i in range(20):
        preds += [_p(str(i), "plain", i < 10), _p(str(i), "blind", i < 10), _p(str(i), "trajectory", i < 15)]
    r = report.build(Run(preds))
    row = r.cued_blind_wrong.set_index("type").loc["all"]
    assert row["n"] == 10 and row["acc_a"] == 0.0 and row["acc_b"] == 50.0


def test_arrow_report_gives_f1_and_kl():
    def arrow(src, direction, reply, p_forward):
        return Prediction(
            question_id=f"{src}-{direction}",
            video_id=f"{src}-{direction}",
            type="arrow",
            model="m",
            variant="arrow",
            choices=["forward", "backward"],
            answer=direction,
            reply=reply,
            status="ok",
            correct=reply == direction,
            probs={"forward": p_forward, "backward": 1 - p_forward},
            template="Dropping [something] onto [something]",
            category="irreversible",
        )

    preds = [
        arrow("1", "forward", "forward", 0.75),
        arrow("1", "backward", "backward", 0.25),
        arrow("2", "forward", "forward", 0.5),
        arrow("2", "backward", "forward", 0.5),
    ]
    t = report.build(Run(preds)).arrow.set_index("category")
    assert set(t.index) == {"all", "irreversible"}
    row = t.loc["all"]
    assert row["accuracy"] == 75.0 and row["kl_pairs"] == 2
    assert row["forward_f1"] == pytest.approx(100 * 0.8) and row["backward_f1"] == pytest.approx(100 * 2 / 3)
    assert row["temporal_kl"] == pytest.approx(0.25 * np.log(3))
