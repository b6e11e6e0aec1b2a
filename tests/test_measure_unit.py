"""measure without a server: planning, the report table, the append-only store."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from core.ask import AskConfig
from core.errors import DataError
from core.frames import FrameSpec
from core.layout import DataLayout, RunLayout
from core.profiles import IDEFICS3, QWEN_VL
from core.prompt import messages, question_text, targets
from core.records import read_questions
from core.runs import Run
from core.store import PredictionStore
from measure import report
from measure.ask.client import media_spec
from measure.ask.media import MediaSpec, prepare
from measure.ask.plan import plan
from measure.report import render, tables
from tests.conftest import pred


def _pred(qid, model, variant, qtype, correct, status="ok"):
    return pred(qid, video_id="v", type=qtype, model=model, variant=variant, correct=correct, status=status)


def test_table_leaves_errors_out_and_counts_invalid_as_wrong():
    preds = [
        _pred("1", "m", "plain", "object", True),
        _pred("2", "m", "plain", "object", False, status="invalid"),
        _pred("3", "m", "plain", "verb", True),
        _pred("4", "m", "plain", "verb", False, status="error"),
        _pred("1", "m", "cued", "object", False),
    ]
    t = tables.accuracy_table(tables.to_frame(preds))
    row = t.loc[("m", "plain")]
    assert row["object_acc"] == 50.0 and row["verb_acc"] == 100.0
    assert row["overall_acc"] == pytest.approx(200 / 3)
    assert (row["n"], row["invalid"], row["errors"]) == (3, 1, 1)
    cued = t.loc[("m", "cued")]
    assert cued["object_acc"] == 0.0 and math.isnan(cued["verb_acc"]) and cued["n"] == 1
    md = render.markdown(t)
    assert md.splitlines()[0].split("|")[1:3] == [" model   ", " variant   "]


def test_empty_table():
    assert tables.accuracy_table(tables.to_frame([])).empty


def test_store_appends_reloads_and_cuts_a_torn_line(tmp_path, capsys):
    store = PredictionStore(RunLayout(tmp_path / "run"))
    store.open()
    store.append(_pred("1", "m", "plain", "verb", True))
    store.append(_pred("2", "m", "plain", "verb", False))
    store.close()
    with open(store.path, "a") as f:
        f.write('{"question_id": "3", "mod')  # a crash mid-write
    done = store.load()
    assert set(done) == {("1", "m", "plain"), ("2", "m", "plain")}
    assert "torn last line" in capsys.readouterr().err
    assert store.path.read_text().endswith("\n")


def test_plan_groups_by_clip_and_checks_the_split(synthetic):
    layout = DataLayout(synthetic)
    items = plan(layout, ["a", "b"], ["plain", "trajectory"], "test", None)
    qs = [q for q in read_questions(layout.questions) if q.split == "test"]
    assert len(items) == len(qs) * 4 and len({i.key for i in items}) == len(items)
    order = [(i.variant, i.question.video_id) for i in items]
    assert order == sorted(order)  # a clip's questions go out together
    assert all(i.clip == layout.clip(i.variant, i.question.video_id) for i in items)
    with pytest.raises(DataError, match="no questions in split 'nope'"):
        plan(layout, ["a"], ["plain"], "nope", None)


def test_prompt_puts_the_video_first_and_lists_choices(synthetic):
    layout = DataLayout(synthetic)
    q = read_questions(layout.questions)[0]
    sent = prepare(MediaSpec(layout.clip("plain", q.video_id), "plain", "data", QWEN_VL.video_as, FrameSpec()))
    msg = messages(q, "text", sent.parts)[0]["content"]
    assert [p["type"] for p in msg] == ["video_url", "text"] and sent.frame_indices is None
    assert sent.media_io == {"min_frames": 8, "max_frames": 8}  # the server samples the spec's count
    assert msg[0]["video_url"]["url"].startswith("data:video/mp4;base64,")
    assert q.question in msg[1]["text"] and all(c in msg[1]["text"] for c in q.choices)
    assert targets(q.choices, "letters") == ["A", "B", "C", "D"]
    assert "D. " + q.choices[3] in question_text(q, "letters")


def _p(qid, model, variant, correct, template="Pushing [something]", qtype="verb", verb="pushing"):
    four = dict(choices=["a", "b", "c", "d"], template=template, verb=verb)
    return pred(qid, video_id="v", type=qtype, model=model, variant=variant, correct=correct, **four)


def test_cued_and_adapter_comparisons_are_paired_on_the_same_questions():
    preds = []
    for i in range(10):
        preds += [
            _p(str(i), "base", "plain", i < 3),
            _p(str(i), "base", "trajectory", i < 6),
            _p(str(i), "lora", "plain", i < 5),
        ]
    preds.append(_p("extra", "base", "trajectory", True))  # no plain twin: left out of the pairing
    r = report.build(Run(preds, parents={"base": None, "lora": "base"}))
    cued = r.cued_vs_plain.set_index("type").loc["all"]
    assert (cued["n"], cued["acc_a"], cued["acc_b"], cued["delta"], cued["only_b"]) == (10, 30.0, 60.0, 30.0, 3)
    ad = r.adapter_vs_base.set_index(["variant", "type"]).loc[("plain", "all")]
    assert (ad["n"], ad["delta"], ad["only_b"], ad["only_a"]) == (10, 20.0, 2, 0)
    top = r.moves[r.moves["level"] == "template"].iloc[0]
    assert (top["delta"], top["kind"], top["group"]) == (30.0, "gain", "Pushing [something]")
    assert set(r.moves["level"]) == {"template", "verb"} and "pushing" in set(r.moves["group"])
    pos = r.positions.set_index(["model", "variant"]).loc[("base", "plain")]
    assert pos["acc_when_answer_A"] == 30.0 and pos["predicted_A"] == 30.0 and pos["predicted_B"] == 70.0


def test_compare_runs_joins_on_shared_items():
    a = [_p(str(i), "m", "plain", i < 2) for i in range(6)]
    b = [_p(str(i), "m", "plain", i < 5) for i in range(4)]  # run B scored only 4 of them
    t = tables.compare_runs(a, b).set_index("type").loc["all"]
    assert (t["n"], t["acc_a"], t["acc_b"], t["only_b"]) == (4, 50.0, 100.0, 2)


def test_reports_are_written_from_predictions_alone(tmp_path):
    preds = [_p(str(i), "base", v, (i + k) % 2 == 0) for i in range(8) for k, v in enumerate(("plain", "bbox"))]
    render.write(RunLayout(tmp_path), report.build(Run(preds)))
    # 8 questions: plain right on the even ones, bbox on the odd ones: 50 % each, every answer changed.
    table = pd.read_csv(tmp_path / "report.csv").set_index("variant")
    assert table.loc["plain", "overall_acc"] == table.loc["bbox", "overall_acc"] == 50.0
    assert (table["n"] == 8).all() and (table["errors"] == 0).all()
    deltas = pd.read_csv(tmp_path / "deltas.csv")
    row = deltas[(deltas["comparison"] == "cued-plain") & (deltas["type"] == "all")].iloc[0]
    assert (row["n"], row["delta"], row["only_a"], row["only_b"]) == (8, 0.0, 4, 4)
    templates = pd.read_csv(tmp_path / "templates.csv")
    assert set(templates["variant"]) == {"plain", "bbox"} and (templates["n"] == 8).all()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["cued_vs_plain"][-1]["only_b"] == 4 and saved["accuracy"][0]["overall_acc"] == 50.0
    for png in ("accuracy.png", "deltas.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| bbox vs plain, all, base " in (tmp_path / "report.md").read_text()
    every = pd.read_csv(tmp_path / "comparisons.csv")  # the ledger: one row per test, the report's counts
    assert len(every) == saved["statistics"]["tests"] and set(every["family"]) == set(saved["statistics"]["families"])


def test_blind_requests_carry_no_media_and_single_frame_is_an_image(synthetic):
    layout = DataLayout(synthetic)
    q = read_questions(layout.questions)[0]
    content = messages(q, "text", [])[0]["content"]
    assert [p["type"] for p in content] == ["text"]
    items = plan(layout, ["m"], ["blind"], "test", 2)
    assert all(i.clip is None for i in items) and all(media_spec(i, AskConfig()) is None for i in items)


def test_smolvlm_profile_sends_sampled_frames_with_its_trained_text(synthetic):
    layout = DataLayout(synthetic)
    q = read_questions(layout.questions)[0]
    spec = MediaSpec(layout.clip("plain", q.video_id), "plain", "frames", IDEFICS3.video_as, FrameSpec(frames=6))
    sent = prepare(spec)
    media, idx = sent.parts, sent.frame_indices
    assert idx == [3, 9, 15, 21, 27, 33]  # 36 frames, centres of 6 equal spans
    assert media[0]["text"] == "You are provided the following series of 6 frames from a 0:00:03 [H:MM:SS] video.\n"
    assert [p["type"] for p in media[1:]] == ["text", "image_url"] * 6
    assert media[1]["text"] == "\nFrame from 00:00:" and media[-2]["text"] == "\nFrame from 00:02:"
    assert media[2]["image_url"]["url"].startswith("data:image/png;base64,")
    assert prepare(spec) == sent and sent.frame_size == [320, 240]
    assert IDEFICS3.limit_mm_per_prompt(6) == {"image": 6} and QWEN_VL.limit_mm_per_prompt(6) == {
        "video": 1,
        "image": 1,
    }


def test_run_health_tables_from_hand_made_predictions():
    from dataclasses import replace

    from core.runfiles import DatasetRecord, RunRecord, ServerPeak, ServerRecord, Session, SessionHealth
    from core.serverinfo import ServerInfo
    from measure.report import health

    a, b = "http://a/v1", "http://b/v1"
    preds = [
        replace(
            _pred(f"q{i}", "m", "plain", "object", True),
            server=a if i < 3 else b,
            latency_s=float(i + 1),
            attempts=1 + (i == 3),
            prompt_tokens=100,
        )
        for i in range(4)
    ]
    preds.append(
        replace(_pred("q9", "m", "plain", "object", False, status="error"), error="clip missing")
    )  # never sent
    serve = ServerInfo(
        port=1, pid=1, argv=[], started="t", ready_s=20.0, rss_ready_bytes=2**31, times={"engine_init_s": 0.4}
    )
    run = RunRecord(
        run_id="r",
        started="t",
        dataset=DatasetRecord("d"),
        split="test",
        models=["m"],
        variants=["plain"],
        ask=AskConfig(),
        servers=[ServerRecord(a, "0.32.0", [], serve), ServerRecord(b)],
        sessions=[
            Session(
                started="t",
                to_send=2,
                send_s=1.0,
                health=SessionHealth(2**30, {a: ServerPeak(3 * 2**30, "process group (/proc)")}),
            ),
            Session(started="t", to_send=2, send_s=1.0),
        ],
    )
    t = health.tables(preds, run)
    overall = t["overall"].iloc[0]
    assert (overall["requests"], overall["req_per_s"], overall["prompt_tok_per_s"]) == (4, 2.0, 200.0)
    assert (overall["attempts"], overall["retries"], overall["client_peak_rss_gib"]) == (5, 1, 1.0)
    servers = t["servers"].set_index("server")
    assert (
        servers.loc[a, "requests"] == 3
        and servers.loc[a, "peak_rss_gib"] == 3.0
        and servers.loc[a, "rss_ready_gib"] == 2.0
    )
    assert (
        servers.loc[a, "engine_init_s"] == 0.4
        and servers.loc[b, "requests"] == 1
        and servers.loc[b, "req_per_s"] == 0.5
    )
    lat = t["latency"].iloc[0]
    assert lat["n"] == 4 and lat["p50"] == 2.5 and lat["p99"] == round(3 + 0.97, 3)  # numpy's linear percentiles


def test_prefix_reuse_figures_by_hand():
    """Two clips x one model: clip 1 prefilled once (its sibling 96 of 100 tokens cached), clip
    2 twice (both 0 cached); a prediction with no count (an old run) is left out."""

    from measure.report import health

    def p(q: str, video: str, cached: int | None):
        return pred(q, video_id=video, prompt_tokens=100, cached_tokens=cached, frame_indices=[0, 1])

    preds = [p("a", "1", 0), p("b", "1", 96), p("c", "2", 0), p("d", "2", 0), p("e", "3", None)]
    assert health.cached_share(preds) == round(100 * 96 / 400, 1) == 24.0
    assert health.prefills_per_clip(preds) == 3 / 2
    assert health.cached_share(preds[-1:]) is None and health.prefills_per_clip(preds[-1:]) is None


def test_a_clips_questions_go_where_its_prefix_is_within_the_slack():
    """Ties are taken in turn; a clip's home is kept until it carries more than `slack` above
    the least busy server; a server taken out loses the clips it held."""
    import asyncio

    from core.urls import ServerUrl
    from measure.ask.servers import Servers

    urls = [ServerUrl.local(1), ServerUrl.local(2)]
    assert Servers(urls, None, 60.0, concurrency=16).slack == 8  # a fair share
    servers = Servers(urls, None, 60.0, concurrency=4)
    assert servers.slack == 2  # at least 2

    async def take(home=None):
        return await servers.take(home)

    a, b = asyncio.run(take("clip")), asyncio.run(take())
    assert a is not b and servers.homes["clip"] is a  # ties in turn, not all to the first
    # a carries 1, 2, 3 in flight against b's 1 and is kept; at 4 it would be 3 above: b instead
    assert [asyncio.run(take("clip")) is a for _ in range(4)] == [True, True, True, False]
    servers.lost(a)
    assert "clip" not in servers.homes and asyncio.run(take("clip")) is b


def test_data_parallel_engines_behind_one_url_are_endpoints_pinned_by_rank():
    """A URL with 2 data-parallel engines is two endpoints, each request to one carrying vLLM's
    X-data-parallel-rank header: a clip's questions stay on the engine that has its prefix, and
    a refused connection takes out every engine of that server."""
    import asyncio

    from core.urls import ServerUrl
    from measure.ask.servers import RANK_HEADER, Servers

    dp, plain = ServerUrl.local(1), ServerUrl.local(2)
    servers = Servers([dp, plain], None, 60.0, concurrency=12, ranks={dp: 2})
    assert [(e.url, e.rank) for e in servers.endpoints] == [(dp, 0), (dp, 1), (plain, None)]
    assert [e.client.default_headers.get(RANK_HEADER) for e in servers.endpoints] == ["0", "1", None]
    assert servers.slack == 4  # a fair share of the three engines

    async def take(home=None):
        return await servers.take(home)

    first = asyncio.run(take("clip"))
    assert all(asyncio.run(take("clip")) is first for _ in range(3))
    servers.lost(servers.endpoints[0])
    assert servers.endpoints[1].down_since is not None and servers.endpoints[2].down_since is None


def test_clips_drawn_otherwise_than_their_name_says_are_refused(tmp_path):
    """A dataset of before v4, whose `trajectory` clips draw the path alone (render version 1,
    no drawing recorded), is refused with the reason; clips drawn as their name says pass, each
    with its drawing for run.json; a run resumed on clips drawn otherwise is refused, and so is
    one of before v4 (it recorded no drawing)."""
    from core.runfiles import DatasetRecord, RunRecord
    from measure.ask.plan import drawings_of, same_drawings

    layout = DataLayout(tmp_path / "old")
    layout.clips_dir("trajectory").mkdir(parents=True)
    layout.clip_settings("trajectory").write_text(json.dumps({"variant": "trajectory", "render_version": 1}))
    with pytest.raises(DataError, match=r"clips/trajectory: drawn as `path` \(centre paths alone"):
        drawings_of(layout, ["plain", "trajectory"])
    new = DataLayout(tmp_path / "new")
    for v, drawing in (("trajectory", "visual-cues/annotate.py"), ("path", "path/1")):
        new.clips_dir(v).mkdir(parents=True)
        new.clip_settings(v).write_text(json.dumps({"variant": v, "render_version": 2, "drawing": drawing}))
    found = drawings_of(new, ["plain", "trajectory", "path"])
    assert found == {"trajectory": "visual-cues/annotate.py", "path": "path/1"}
    record = RunRecord("r", "t", DatasetRecord("d"), "test", ["m"], ["plain", "trajectory"], AskConfig(), [])
    same_drawings(record, {})  # a run of before v4 asking no cue again
    with pytest.raises(DataError, match="asked before drawings were recorded"):
        same_drawings(record, found)
    record.drawings = {"trajectory": "visual-cues/published"}
    with pytest.raises(DataError, match="asked `trajectory` on clips drawn as visual-cues/published"):
        same_drawings(record, found)


def test_a_refused_connection_is_told_apart_from_a_silent_server():
    """Failover rests on `refused`: openai's aiohttp transport reports a refused connection as a
    ConnectTimeout, so the check reads the transport's own error; a server that takes the
    connection and says nothing is slow, not lost."""
    import asyncio
    import socket

    from core.chat import completion, connect, refused
    from core.urls import ServerUrl

    async def error(port: int) -> BaseException:
        async with connect(ServerUrl.parse(f"http://127.0.0.1:{port}"), None, max_retries=0) as client:
            with pytest.raises(Exception) as raised:
                await completion(client, {"model": "m", "messages": [], "timeout": 0.5})
        return raised.value

    with socket.socket() as silent, socket.socket() as closed:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        assert refused(asyncio.run(error(closed.getsockname()[1])))
        assert not refused(asyncio.run(error(silent.getsockname()[1])))
