"""Temporal probes: seeded generation, balanced answers, no single frame giving the answer
away (checked on the decoded clips), the reversed/shuffled scoring, and one real run."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from core.decoding import decord
from core.errors import DataError
from core.layout import DataLayout
from core.records import read_questions
from measure.report import tables
from prepare.probes import KINDS, ProbeOptions, alternatives, build, prepare_probes, render, story, unsolvable
from tests.conftest import cli, pred


def _decode(path) -> np.ndarray:
    r = decord.VideoReader(str(path))
    return r.get_batch(list(range(len(r)))).asnumpy()


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    out = tmp_path_factory.mktemp("probes") / "probes"
    prepare_probes(out, ProbeOptions(per_kind=8, workers=2))
    return out


def test_generation_is_seeded_and_identical_across_runs(probes, tmp_path):
    again = tmp_path / "again"
    prepare_probes(again, ProbeOptions(per_kind=8, workers=1))
    files = sorted(p.relative_to(probes) for p in probes.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert sum(f.suffix == ".mp4" for f in files) == 4 * 8 * 5  # sources + plain, reversed, shuffled, single-frame
    for f in files:
        assert (probes / f).read_bytes() == (again / f).read_bytes(), f
    other = prepare_probes(tmp_path / "seed1", ProbeOptions(per_kind=8, workers=1, seed=1))
    assert other.probes != json.loads((probes / "manifest.json").read_text())["probes"]
    rerun = prepare_probes(again, ProbeOptions(per_kind=8, workers=1))
    assert rerun.counts["clips_rendered"] == 0  # sources with the same frames are kept, clips reused


def test_answers_are_balanced(probes):
    qs = read_questions(DataLayout(probes).questions)
    by_kind = collections.defaultdict(list)
    for q in qs:
        by_kind[q.category].append(q)
    assert {k: len(v) for k, v in by_kind.items()} == {k: 8 for k in KINDS}
    assert set(collections.Counter(q.answer for q in by_kind["direction"]).values()) == {2}
    assert set(collections.Counter(q.answer for q in by_kind["count"]).values()) == {2}
    assert collections.Counter(q.question.split()[1] for q in by_kind["order"]) == {"first": 4, "last": 4}
    change = collections.Counter((q.question.split(",")[0], q.answer in ("small", "large")) for q in by_kind["change"])
    assert set(change.values()) == {2}  # start/end x colour/size
    for kind in KINDS:  # the answer's place among the choices moves
        assert len({q.choices.index(q.answer) for q in by_kind[kind]}) >= 2, kind
    for q in qs:
        assert q.type == "probe" and q.reversed_answer in q.choices
        assert (q.reversed_answer == q.answer) == (q.category == "count")


def test_no_single_frame_gives_the_answer_decoded_clips(probes):
    """Every decoded frame of every clip also occurs in a clip of the same construction with
    another answer; a clip where one frame does give it away is caught."""
    manifest = json.loads((probes / "manifest.json").read_text())
    opts = ProbeOptions(per_kind=8)
    for q in read_questions(DataLayout(probes).questions):
        assert manifest["probes"][q.video_id]["single_frame_solvable"] is False
        probe, again = build(q.category, int(q.video_id.rsplit("-", 1)[1]), opts)
        assert again == q and probe.record().items() <= manifest["probes"][q.video_id].items()
        decoded = _decode(DataLayout(probes).clip("plain", q.video_id))
        others = [render(a) for a in alternatives(probe)]
        assert unsolvable(decoded, others, noise=64, share=0.01), q.video_id
        assert not unsolvable(decoded, [np.full_like(decoded, 128)], noise=64, share=0.01)  # the check can fail
    probe, _ = build("order", 0, opts)
    frames = render(probe)
    both = np.where(frames[0] != 128, frames[0], frames[-1])  # the objects on screen together: order shows
    assert not unsolvable(np.concatenate([frames, both[None]]), [render(a) for a in alternatives(probe)])


def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="--frames 5"):
        prepare_probes(tmp_path / "x", ProbeOptions(per_kind=1, frames=5))
    with pytest.raises(DataError, match="cues are drawn"):
        prepare_probes(tmp_path / "x", ProbeOptions(per_kind=1, variants=("plain", "trajectory")))
    r = cli("prepare probes --out", str(tmp_path / "y"), "--size", "224by160", timeout=120)
    assert r.returncode == 2 and "WxH" in r.stderr


def _pred(qid: str, kind: str, variant: str, reply: str, answer: str, flipped: str, choices: list[str]):
    right = reply == (flipped if variant == "reversed" else answer)
    return pred(
        qid,
        type="probe",
        variant=variant,
        choices=choices,
        answer=answer,
        reply=reply,
        correct=right,
        category=kind,
        reversed_answer=flipped,
    )


def test_reversed_clips_are_scored_against_the_flipped_answer():
    lr = ["from left to right", "from right to left", "up", "down"]
    counts = ["once", "twice", "three times", "four times"]
    preds = [
        # direction: d1 flips as it should, d2 keeps the forward answer, d3 is wrong on plain
        _pred("d1", "direction", "plain", lr[0], lr[0], lr[1], lr),
        _pred("d1", "direction", "reversed", lr[1], lr[0], lr[1], lr),
        _pred("d2", "direction", "plain", lr[2], lr[2], lr[3], lr),
        _pred("d2", "direction", "reversed", lr[2], lr[2], lr[3], lr),
        _pred("d3", "direction", "plain", lr[3], lr[1], lr[0], lr),
        _pred("d3", "direction", "reversed", lr[0], lr[1], lr[0], lr),
        _pred("d1", "direction", "shuffled", lr[2], lr[0], lr[1], lr),
        # count: the same answer either way
        _pred("c1", "count", "plain", counts[1], counts[1], counts[1], counts),
        _pred("c1", "count", "reversed", counts[1], counts[1], counts[1], counts),
    ]
    t = tables.temporal_probes(tables.to_frame(preds)).set_index("kind")
    d = t.loc["direction"]
    assert (d["n"], d["chance"], d["expected_reversed"]) == (3, 25.0, "flips")
    assert d["plain_acc"] == pytest.approx(200 / 3) and d["reversed_acc"] == pytest.approx(200 / 3)
    assert d["reversed_as_forward"] == pytest.approx(100 / 3) and d["answer_flips"] == pytest.approx(200 / 3)
    assert d["shuffled_acc"] == 0.0
    c = t.loc["count"]
    assert (c["reversed_acc"], c["reversed_as_forward"], c["answer_flips"], c["expected_reversed"]) == (
        100,
        100,
        0,
        "same",
    )
    assert np.isnan(c["shuffled_acc"])


def test_probes_end_to_end_on_the_real_server(server, tmp_path):
    data = tmp_path / "probes"
    r = cli(f"prepare probes --out {data} --per-kind 2", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "8 probe questions (order 2, direction 2, change 2, count 2)" in r.stdout
    m = cli(f"measure --data {data} --base-url {server.base_url} --runs-dir {tmp_path} --run-id p", timeout=600)
    assert m.returncode == 0, m.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    # The choice constraint holds: every reply is one of the choices.
    assert len(rows) == 8 * 2 * 5 and all(r["status"] == "ok" and r["reply"] in r["choices"] for r in rows)
    assert all(r["reversed_answer"] in r["choices"] for r in rows)
    for r in rows:  # scored against the answer of the clip it saw
        assert r["correct"] == (r["reply"] == (r["reversed_answer"] if r["variant"] == "reversed" else r["answer"]))
    probes = json.loads((tmp_path / "p" / "report.json").read_text())["probes"]
    assert {(p["model"], p["kind"]) for p in probes} == {
        (m, k) for m in (server.base_model, server.adapter) for k in KINDS
    }
    for p in probes:  # every number of the table, recounted from the predictions
        mine = [r for r in rows if r["model"] == p["model"] and r["category"] == p["kind"]]
        rev = [r for r in mine if r["variant"] == "reversed"]
        shuffled = [r for r in mine if r["variant"] == "shuffled"]
        assert p["n"] == 2 and p["reversed_acc"] == pytest.approx(100 * sum(r["correct"] for r in rev) / len(rev))
        assert p["reversed_as_forward"] == pytest.approx(100 * sum(r["reply"] == r["answer"] for r in rev) / len(rev))
        assert p["shuffled_acc"] == pytest.approx(100 * sum(r["correct"] for r in shuffled) / len(shuffled))
    audit = json.loads((tmp_path / "p" / "report.json").read_text())["audit"]
    assert {a["type"] for a in audit} == {"probe", "all"} and {a["control"] for a in audit} == {"blind", "single-frame"}
    assert "## Temporal probes" in (tmp_path / "p" / "report.md").read_text()


def test_a_textual_probe_tells_its_clip_and_no_other(tmp_path):
    """`prepare probes --text`: the same constructions and answers as the video probes, each
    told as a story that tells it apart from every construction with another answer (the text
    carries what the clip shows), asked with no video."""
    opts = ProbeOptions(per_kind=4, text=True)
    manifest = prepare_probes(tmp_path / "text", opts)
    assert manifest.kind == "probes-text" and manifest.counts["variants"] == ["blind"]
    told = {q.id: q for q in read_questions(DataLayout(tmp_path / "text").questions)}
    assert len(told) == 4 * len(KINDS)
    for kind in KINDS:
        for i in range(opts.per_kind):
            probe, q = build(kind, i, opts)
            mine = told[q.id]
            assert (mine.answer, mine.choices, mine.subset) == (q.answer, q.choices, "text")
            assert mine.question == f"{story(probe)} {q.question}"
            assert all(story(other) != story(probe) for other in alternatives(probe)), (kind, i)


def test_textual_probes_are_scored_like_the_video_probes(server, tmp_path):
    """Measured on the real server with no video: the probes table's text column, per kind, is
    the share of right replies, recounted from the predictions."""
    cli(f"prepare probes --out {tmp_path / 'text'} --per-kind 2 --text", check=True)
    cli(
        f"measure --data {tmp_path / 'text'} --base-url {server.base_url} --runs-dir {tmp_path} --run-id t "
        f"--models {server.base_model} --variants blind",
        check=True,
    )
    rows = [json.loads(line) for line in (tmp_path / "t" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["status"] == "ok" and r["reply"] in r["choices"] for r in rows)
    probes = json.loads((tmp_path / "t" / "report.json").read_text())["probes"]
    assert sorted(p["kind"] for p in probes) == sorted(KINDS)
    for p in probes:
        mine = [r for r in rows if r["category"] == p["kind"]]
        assert p["n"] == 2 and p["text_acc"] == pytest.approx(100 * sum(r["correct"] for r in mine) / len(mine))
    assert "text_acc: the clip told as a story" in (tmp_path / "t" / "report.md").read_text()
