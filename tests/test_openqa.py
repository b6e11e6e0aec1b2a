"""Open questions: EgoTempo / EgoTextVQA formats, free-form asking, the LLM judge (served by
the same real vLLM), judge failures kept apart, and the per-type tables."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from core.errors import DataError
from core.layout import RunLayout
from core.records import Judgement, read_jsonl
from core.runs import Run
from measure import report
from measure.report import opentables
from prepare.openqa import OpenOptions, prepare_open, read_egotempo, read_egotextvqa
from prepare.synthetic import generate_open
from tests.conftest import assert_order_free, cli, copy_run, pred
from tests.faultproxy import FaultProxy


def test_egotempo_reader_keeps_good_rows_and_names_bad_ones(tmp_path):
    path = tmp_path / "egotempo_openQA.json"
    good = {
        "question_id": "c1_0.0_5.0_0",
        "clip_id": "c1_0.0_5.0",
        "question_type": "action counting",
        "question": "How many times does the person open the fridge?",
        "answer": "Twice.",
    }
    path.write_text(
        json.dumps(
            {
                "info": {"date": "2025", "version": "1"},
                "annotations": [
                    good,
                    {**good, "question_id": "c1_0.0_5.0_1", "answer": " "},
                    "not a dict",
                    {**good, "question_id": "c2_0_1_0", "clip_id": "../etc"},
                    {k: v for k, v in good.items() if k != "clip_id"},
                ],
            }
        )
    )
    questions, bad = read_egotempo(path)
    assert [(q.id, q.video_id, q.type, q.category, q.answer, q.choices) for q in questions] == [
        ("c1_0.0_5.0_0", "c1_0.0_5.0", "open", "action counting", "Twice.", [])
    ]
    assert bad == [
        (f"{path}:annotations[1]", "missing or empty 'answer'"),
        (f"{path}:annotations[2]", "expected a JSON object"),
        (f"{path}:annotations[3]", "video_id '../etc' is not a plain file name (it could escape the data directory)"),
        (f"{path}:annotations[4]", "missing or empty 'clip_id'"),
    ]
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match="annotations"):
        read_egotempo(tmp_path / "list.json")


def test_egotextvqa_reader_prefixes_question_ids_with_the_video(tmp_path):
    path = tmp_path / "ann.jsonl"
    row = {
        "video_id": "3",
        "question_id": "1.0",
        "question_type": "description",
        "question": "which center is on the left side of the road?",
        "correct_answer": "barclays center",
        "timestamp": 2.5,
    }
    path.write_text(
        "\n".join(
            [json.dumps(row), json.dumps({**row, "video_id": 11}), "{torn", "", json.dumps({**row, "question": ""})]
        )
        + "\n"
    )
    questions, bad = read_egotextvqa(path)
    assert [(q.id, q.video_id, q.category) for q in questions] == [
        ("3-1.0", "3", "description"),
        ("11-1.0", "11", "description"),
    ]
    assert bad[0][0] == f"{path}:3" and bad[0][1].startswith("not JSON")
    assert bad[1] == (f"{path}:5", "missing or empty 'question'")


@pytest.mark.parametrize("kind", ["egotempo", "egotextvqa"])
def test_synthetic_open_data_in_each_format_prepares_with_controls(kind, tmp_path):
    raw = generate_open(tmp_path / "raw", 6, 0, kind)
    text = raw["annotations"].read_text()
    if kind == "egotempo":
        assert set(json.loads(text)) == {"info", "annotations"}
    else:
        assert set(json.loads(text.splitlines()[0])) == {
            "video_id",
            "question_id",
            "question_type",
            "question",
            "correct_answer",
            "timestamp",
        }
    (raw["videos"] / sorted(raw["videos"].iterdir())[-1].name).unlink()  # one clip gone
    out = tmp_path / "data"
    m = prepare_open(
        kind, raw["annotations"], raw["videos"], out, OpenOptions(("plain", "blind", "reversed"), seed=0, workers=1)
    )
    assert m.counts["videos"] == 5 and {c for c in m.counts["by_category"]} <= {"counting", "direction", "locating"}
    assert m.dropped and all(d["reason"].startswith("video missing") for d in m.dropped)
    assert sorted(p.name for p in (out / "clips").iterdir()) == ["blind", "plain", "reversed"]
    rows = [row for _, row in read_jsonl(out / "questions.jsonl")]
    assert all(r["type"] == "open" and r["choices"] == [] and r["answer"] for r in rows)
    with pytest.raises(DataError, match="cues are drawn from boxes"):
        prepare_open(
            kind,
            raw["annotations"],
            raw["videos"],
            tmp_path / "x",
            OpenOptions(("plain", "trajectory"), seed=0, workers=1),
        )


def _p(qid, video, model, variant, category, status="ok"):
    return pred(
        qid,
        video_id=video,
        type="open",
        model=model,
        variant=variant,
        choices=[],
        answer="x",
        reply="y" if status == "ok" else None,
        status=status,
        correct=False,
        category=category,
    )


def _j(qid, model, variant, pred, score, judge="J", status="ok"):
    return Judgement(
        question_id=qid,
        model=model,
        variant=variant,
        judge=judge,
        status=status,
        pred=pred if status == "ok" else None,
        score=score if status == "ok" else None,
    )


def test_per_type_table_counts_judge_failures_apart_all_vs_valid():
    preds = [
        _p("q1", "v1", "m", "plain", "count"),
        _p("q2", "v1", "m", "plain", "count"),
        _p("q3", "v2", "m", "plain", "where"),
        _p("q4", "v3", "m", "plain", "where", status="invalid"),
        _p("q5", "v3", "m", "plain", "where"),
    ]
    judgements = [
        _j("q1", "m", "plain", "yes", 5),
        _j("q2", "m", "plain", "no", 1),
        _j("q3", "m", "plain", None, None, status="judge_error"),
    ]  # q5: not judged yet
    t = report.build(Run(preds, judgements)).open_accuracy.set_index("category")
    count, where, both = t.loc["count"], t.loc["where"], t.loc["all"]
    assert (count["n"], count["judged"], count["judge_failed"], count["acc_all"], count["acc_valid"]) == (
        2,
        2,
        0,
        50,
        50,
    )
    assert count["score_all"] == count["score_valid"] == 3
    # where: q3 judge error and q5 unjudged are "no"/0 in ALL, left out of VALID; q4's empty reply is the model's "no".
    assert (where["n"], where["judged"], where["judge_failed"], where["invalid"]) == (3, 1, 2, 1)
    assert where["acc_all"] == 0 and where["acc_valid"] == 0 and where["score_valid"] == 0
    assert (both["n"], both["judge_failed"]) == (5, 2)
    assert both["acc_all"] == pytest.approx(20) and both["acc_valid"] == pytest.approx(100 / 3)
    assert both["acc_valid_low"] <= both["acc_valid"] <= both["acc_valid_high"]


def test_judges_agreement_and_kappa_hand_computed():
    # 4 shared verdicts: J1 yes yes no no, J2 yes no no no -> agreement 3/4; p_e = .5*.25 + .5*.75 = .5; kappa .5
    pairs = [("yes", "yes"), ("yes", "no"), ("no", "no"), ("no", "no")]
    js = [_j(f"q{i}", "m", "plain", a, 3, judge="J1") for i, (a, _) in enumerate(pairs)]
    js += [_j(f"q{i}", "m", "plain", b, 3, judge="J2") for i, (_, b) in enumerate(pairs)]
    js.append(_j("q9", "m", "plain", "yes", 3, judge="J1"))  # judged by one judge only: not compared
    a = opentables.agreement(js).iloc[0]
    assert (a["judge_a"], a["judge_b"], a["n"], a["agreement"]) == ("J1", "J2", 4, 75.0)
    assert a["kappa"] == pytest.approx(0.5)


def test_open_deltas_pair_valid_verdicts_and_enter_the_verdicts():
    preds, js = [], []
    for i in range(12):
        for model in ("base", "lora"):
            preds.append(_p(f"q{i}", f"v{i}", model, "plain", "count"))
            js.append(
                _j(f"q{i}", model, "plain", "yes" if model == "lora" or i < 3 else "no", 4 if model == "lora" else 1)
            )
    js[-1] = _j("q11", "lora", "plain", None, None, status="judge_error")
    r = report.build(Run(preds, js, parents={"lora": "base", "base": None}))
    row = r.open_adapter_vs_base.set_index("category").loc["all"]
    assert (row["n"], row["only_b"], row["only_a"]) == (11, 8, 0)  # q11 left out: its verdict failed
    assert row["score_delta"] == pytest.approx(3.0) and row["p_video"] == pytest.approx(2 / 256)
    assert any(v.startswith("lora vs base, plain, open all, judge J: +72.7 pts") for v in r.verdicts)


# --- against the real server --------------------------------------------------------------


@pytest.fixture
def open_run(open_measured, tmp_path):
    """A copy of the session's open run, for a test that judges it."""
    run, data = open_measured
    return copy_run(run, tmp_path).root, data


def _judge(run, url, *extra):
    return cli(f"measure judge {run} --base-url {url}", *extra, timeout=600)


def test_open_answers_are_free_form_and_bounded(open_run):
    run, _ = open_run
    rows = pd.read_json(run / "predictions.jsonl", lines=True)
    assert len(rows) == 6 * 2 * 2 and set(rows["type"]) == {"open"} and (rows["status"] == "ok").all()
    assert (rows["choices"].map(len) == 0).all() and rows["reply"].str.len().gt(0).all()
    assert (rows["prompt_tokens"] > 0).all()


def test_judge_failures_are_kept_apart_and_asked_again(open_run, server):
    run, _ = open_run
    # Every judge call fails (the fault proxy answers 503): judge_error, never "no"; exit 1.
    with FaultProxy(server.base_url, rate=1.0, seed=3, modes=("http503",)) as proxy:
        r = _judge(run, proxy.base_url, "--judge-model", server.base_model)
    assert r.returncode == 1, r.stderr[-2000:]
    lines = [json.loads(line) for line in (run / "judgements.jsonl").read_text().splitlines()]
    assert len(lines) == 24 and {j["status"] for j in lines} == {"judge_error"} and {j["pred"] for j in lines} == {None}
    failed = json.loads((run / "report.json").read_text())["open_accuracy"]
    assert all(row["judge_failed"] == row["n"] and row["judged"] == 0 for row in failed)
    # Again, against the server itself: every error is asked again, each item ends with one valid verdict.
    r = _judge(run, server.base_url)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(line) for line in (run / "judgements.jsonl").read_text().splitlines()]
    assert len(lines) == 24 and {j["status"] for j in lines} == {"ok"}
    assert all(j["pred"] in ("yes", "no") and 0 <= j["score"] <= 5 for j in lines)
    assert len({(j["question_id"], j["model"], j["variant"], j["judge"]) for j in lines}) == 24
    rep = json.loads((run / "report.json").read_text())
    overall = [row for row in rep["open_accuracy"] if row["category"] == "all"]
    assert len(overall) == 4 and all(row["judge_failed"] == 0 and row["n"] == 6 for row in overall)
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["judges"][0]["judge"] == server.base_model and run_json["judges"][0]["temperature"] == 0.0
    # A second judge (the adapter) on the same run: compared with the first.
    r = _judge(run, server.base_url, "--judge-model", server.adapter)
    assert r.returncode == 0, r.stderr[-2000:]
    agreement = json.loads((run / "report.json").read_text())["judge_agreement"]
    verdicts: dict = {}  # recounted from judgements.jsonl: the share of the 24 where the two judges agree
    for line in (run / "judgements.jsonl").read_text().splitlines():
        j = json.loads(line)
        verdicts.setdefault((j["question_id"], j["model"], j["variant"]), {})[j["judge"]] = j["pred"]
    same = [v[server.base_model] == v[server.adapter] for v in verdicts.values()]
    assert len(same) == agreement[0]["n"] == 24 and agreement[0]["agreement"] == pytest.approx(100 * sum(same) / 24)
    assert_order_free(RunLayout(run))  # predictions and judgements, shuffled


def test_any_judge_reads_a_schema_or_text_and_says_which(open_run, server):
    """A judge on any OpenAI-compatible server: with the JSON schema (`response_format`) its
    verdicts are read as schema; asked in text (a server without structured outputs) they are
    parsed from the text, and a reply that cannot be read is a judge error, counted apart and
    never a "no"; a server that ignores the schema is read as text (auto). Each verdict says how."""
    run, _ = open_run
    schema = _judge(run, server.base_url, "--judge-model", server.base_model)
    assert schema.returncode == 0, schema.stderr[-2000:]
    lines = [json.loads(x) for x in (run / "judgements.jsonl").read_text().splitlines()]
    assert {j["path"] for j in lines} == {"schema"} and {j["status"] for j in lines} == {"ok"}
    text = _judge(run, server.base_url, "--judge-model", server.adapter, "--judge-format", "text")
    mine = [json.loads(x) for x in (run / "judgements.jsonl").read_text().splitlines()]
    mine = [j for j in mine if j["judge"] == server.adapter]
    assert len(mine) == 24 and {j["path"] for j in mine} == {"text"}
    failed = [j for j in mine if j["status"] == "judge_error"]
    assert all(j["pred"] is None and "not readable" in j["error"] for j in failed)  # never a "no"
    assert text.returncode == (1 if failed else 0)
    rows = json.loads((run / "report.json").read_text())["open_accuracy"]
    adapter_all = [r for r in rows if r["judge"] == server.adapter and r["category"] == "all" and r["subset"] == "all"]
    assert sum(r["judge_failed"] for r in adapter_all) == len(failed)
    record = json.loads((run / "run.json").read_text())
    assert [j["format"] for j in record["judges"]] == ["auto", "text"]
    ignored = copy_run(RunLayout(run), run.parent / "ignored")
    ignored.judgements.unlink()

    def no_schema(body: dict) -> dict:  # a server that ignores `response_format`
        return {k: v for k, v in body.items() if k != "response_format"}

    with FaultProxy(server.base_url, rate=0.0, rewrite=no_schema) as proxy:
        cli(f"measure judge {ignored.root} --base-url {proxy.base_url} --judge-model {server.base_model}")
    read = [json.loads(x) for x in ignored.judgements.read_text().splitlines()]
    # the schema ignored: each reply read as text where it can be (random weights seldom write
    # "yes 4"), else a judge error, never a "no"
    assert len(read) == 24 and all(j["path"] == "text" for j in read if j["status"] == "ok")
    assert all(j["pred"] is None and "neither the schema's JSON nor" in j["error"] for j in read if j["status"] != "ok")


def test_a_verdict_is_read_from_the_schema_or_from_text():
    from measure.score.judge import read_reply

    assert read_reply('{"pred":"yes","score":4}', True)[1] == "schema"
    assert read_reply("Yes. Score: 4", True) == (read_reply("yes 4", False)[0], "text")
    assert read_reply("no, 1 - the colour differs", False)[0].model_dump() == {"pred": "no", "score": 1}
    with pytest.raises(ValueError, match="neither the schema's JSON nor"):
        read_reply("maybe", False)


def test_the_exact_match_judge_needs_no_server(open_run):
    run, _ = open_run
    r = cli(f"measure judge {run} --judge-model exact-match")
    assert r.returncode == 0 and "judge exact-match at no server" in r.stderr, r.stderr[-2000:]
    preds = {
        (p["question_id"], p["model"], p["variant"]): p
        for p in map(json.loads, (run / "predictions.jsonl").read_text().splitlines())
    }
    for j in map(json.loads, (run / "judgements.jsonl").read_text().splitlines()):
        p = preds[j["question_id"], j["model"], j["variant"]]
        same = p["reply"].strip().lower().rstrip(".!") == p["answer"].strip().lower().rstrip(".!")
        assert j["path"] == "exact" and (j["pred"] == "yes") == same and j["score"] == (5 if same else 0)


def test_subsets_are_kept_and_reported_apart(server, tmp_path):
    """EgoTextVQA's subsets as the study reports them: its indoor and outdoor files imported
    together, each question keeping its file's subset; the open-QA table per subset (each with
    its question types) and overall; and runs of different models side by side (`measure
    compare`), refused when they asked different questions."""
    cli(f"prepare synthetic-open --format egotextvqa --out {tmp_path / 'raw'} --videos 8 --variants plain", check=True)
    rows = (tmp_path / "raw" / "raw" / "egotextvqa_annotation.jsonl").read_text().splitlines()
    (tmp_path / "indoor.jsonl").write_text("\n".join(rows[: len(rows) // 2]) + "\n")
    (tmp_path / "outdoor.jsonl").write_text("\n".join(rows[len(rows) // 2 :]) + "\n")
    cli(
        f"prepare egotextvqa --jsonl {tmp_path / 'indoor.jsonl'} --jsonl {tmp_path / 'outdoor.jsonl'} "
        f"--videos {tmp_path / 'raw' / 'raw' / 'videos'} --out {tmp_path / 'both'} --variants plain --test-share 1",
        check=True,
    )
    subsets = {json.loads(x)["subset"] for x in (tmp_path / "both" / "questions.jsonl").read_text().splitlines()}
    assert subsets == {"indoor", "outdoor"}
    for model in (server.base_model, server.adapter):
        cli(
            f"measure --data {tmp_path / 'both'} --base-url {server.base_url} --runs-dir {tmp_path} --run-id {model} "
            f"--models {model} --open-max-tokens 8",
            check=True,
        )
        cli(f"measure judge {tmp_path / model} --judge-model exact-match", check=True)
    table = json.loads((tmp_path / server.base_model / "report.json").read_text())["open_accuracy"]
    assert {(r["subset"], r["category"] == "all") for r in table} == {
        (s, a) for s in ("indoor", "outdoor", "all") for a in (True, False)
    }
    side = cli(f"measure compare {tmp_path / server.base_model} {tmp_path / server.adapter}")
    assert side.returncode == 0, side.stderr[-2000:]
    assert f"{server.base_model}: {server.base_model} (judge exact-match)" in side.stdout
    assert f"{server.adapter}: {server.adapter} (judge exact-match)" in side.stdout and "| indoor " in side.stdout
    shorter = cli(
        f"measure --data {tmp_path / 'both'} --base-url {server.base_url} --runs-dir {tmp_path} --run-id short "
        f"--models {server.base_model} --open-max-tokens 8 --limit 2"
    )
    assert shorter.returncode == 0
    refused = cli(f"measure compare {tmp_path / server.base_model} {tmp_path / 'short'}")
    assert refused.returncode == 2 and "asked different questions" in refused.stderr and "shared" in refused.stderr
