"""`measure profile` on the real server: the tiny Idefics3 (SmolVLM2's architecture) and the
organism, each served in two dtypes by the servers the command starts; every measure of
the SmolVLM2 test plan stored and reported, every edge input survived, the targets judged;
and a server that stops answering caught."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core import runfiles
from core.layout import ProfileLayout
from core.runfiles import ProfileRecord
from measure.profile import figures, measures, render
from measure.profile.inputs import edges
from measure.profile.options import TARGETS_EXAMPLE
from measure.profile.run import rewrite
from serve import tiny as builder
from tests.conftest import REPO, cli

SMALL = "--video-frames 4,64 --in-flight 1,8 --warm 1 --session 2 --repeats 2"


@pytest.fixture(scope="module")
def profiled(organism, tmp_path_factory) -> Path:
    smol = builder.build_idefics3(tmp_path_factory.mktemp("smol") / "tiny-smolvlm")
    out = tmp_path_factory.mktemp("profile") / "profile"
    cli(
        f"measure profile --models {smol},{organism} --targets {REPO / TARGETS_EXAMPLE} "
        f"--dtypes float32,bfloat16 {SMALL} --out {out}",
        check=True,
        timeout=900,
    )
    return out


def test_every_measure_of_the_test_plan_is_there_for_both_models(profiled):
    r = runfiles.read(ProfileRecord, ProfileLayout(profiled).json)
    assert [m.family for m in r.models] == ["idefics3", "qwen-vl"]
    for m in r.models:
        assert set(m.ready) == {"float32", "bfloat16"} and all(x["ready_s"] > 0 for x in m.ready.values())
        kinds = {(x["dtype"], x["kind"]) for x in m.latency}
        assert kinds == {(d, k) for d in m.dtypes for k in ("text", "image", "video-4", "video-64")}, kinds
        for row in m.latency:  # every kind answered, cold and warm, the server's memory seen
            assert not row["errors"] and len(row["seconds"]) == 2 and row["peak_rss_bytes"] > 2**30, row
        tokens = {x["kind"]: x["prompt_tokens"][0] for x in m.latency if x["dtype"] == "float32"}
        assert tokens["text"] < tokens["image"] < tokens["video-4"] < tokens["video-64"], tokens
        assert [x["in_flight"] for x in m.throughput] == [1, 8] and not any(x["errors"] for x in m.throughput)
        assert [x["requests"] for x in m.throughput] == [8, 16]
        s = m.session
        assert s["n"] == 2 and s["errors"] == 0 and s["rss_after_n_bytes"] > 2**30 and s["rss_after_10n_bytes"] > 2**30
        assert {k: len(v) for k, v in m.repeats.items()} == {
            "temperature 0": 2,
            "temperature 0.7, seed 1234": 2,
            "temperature 0.7, no seed": 2,
        }
        f = figures.figures(m)
        assert f["temperature0_identical_pct"] == 100 and f["seeded_identical_pct"] == 100, m.repeats
        assert 0 <= f["dtype_agreement_pct.bfloat16"] <= 100


def test_every_edge_input_gets_an_answer_or_a_clear_refusal_and_the_server_lives(profiled):
    r = runfiles.read(ProfileRecord, ProfileLayout(profiled).json)
    for m in r.models:
        assert [e["input"] for e in m.edges] == list(edges("video", 1))
        for e in m.edges:
            assert e["alive"], (m.model, e)
            assert e["outcome"].startswith("answered: ") or re.match(r"refused \(HTTP 4\d\d\): \S", e["outcome"]), e
        said = {e["input"]: e["outcome"] for e in m.edges}
        for bad in ("corrupt file", "wrong format (text as PNG)", "prompt over the context length"):
            assert said[bad].startswith("refused (HTTP 400)"), (m.model, bad, said[bad])
        assert said["4K frame (3840x2160)"].startswith("answered"), said


def test_the_targets_are_judged_from_the_figures_and_the_report_is_the_records(profiled):
    """profile.md: a line per model first, then the targets (the test plan's file), each
    verdict the figure against its bounds; written again from profile.json alone, the same
    bytes."""
    layout = ProfileLayout(profiled)
    r = runfiles.read(ProfileRecord, layout.json)
    md = layout.md.read_text()
    lines = md.splitlines()
    assert lines[0].startswith("# Serving profile: tiny-smolvlm, organism")
    assert lines[2].startswith("- **tiny-smolvlm** (idefics3, float32): ready in ") and lines[3].startswith(
        "- **organism**"
    )
    assert len(r.targets) == len(figures.read_targets(REPO / TARGETS_EXAMPLE)) >= 8
    table = render.targets_table(r)
    assert len(table) == 2 * len(r.targets)
    for _, row in table.iterrows():
        m = next(m for m in r.models if render.name(m) == row["model"])
        target = next(t for t in r.targets if t["figure"] == row["figure"])
        assert row["verdict"] == figures.verdict(figures.figures(m)[row["figure"]], target) != "not measured", row
        assert f"| {row['verdict']} " in md
    before = {p.name: p.read_bytes() for p in (layout.md, layout.latency_png, layout.throughput_png)}
    rewrite(layout)
    assert {p.name: p.read_bytes() for p in (layout.md, layout.latency_png, layout.throughput_png)} == before


def test_the_documented_profile_lines_are_run_here_with_every_option_they_show():
    """docs/measure.md's `measure profile` lines (test_documented.py leaves them to this module):
    every option they show is one the `profiled` fixture passes, and the full line shows them all."""
    from tests.test_documented import documented

    lines = [x for x in documented() if x.startswith("python -m measure profile")]
    ran = {w for w in f"--models --targets --dtypes --out {SMALL}".split() if w.startswith("--")}
    shown = [{w.strip("[]") for w in x.split() if w.strip("[]").startswith("--")} for x in lines]
    assert len(lines) == 2 and all(s <= ran for s in shown) and ran in shown, (lines, ran)


def test_a_server_that_has_died_is_caught():
    """The planted fault: no server where the edge inputs go (one that died), so the first gets
    no HTTP answer, the server is found dead, the rest are not sent, and the test plan's
    target on it is not met."""
    import asyncio

    from openai import AsyncOpenAI

    from core.urls import ServerUrl
    from measure.profile.server import answers
    from serve.command import free_port

    url = ServerUrl.local(free_port())

    async def go():
        async with AsyncOpenAI(base_url=url.v1, api_key="x", max_retries=0, timeout=10) as client:
            return await measures.edges(client, url, "organism", edges("video", 64), answers, lambda: None)

    rows = asyncio.run(go())
    assert rows[0]["outcome"].startswith("no HTTP answer") and not rows[0]["alive"], rows[0]
    assert [r["outcome"] for r in rows[1:]] == ["not sent: the server had died"] * (len(rows) - 1)
    alive = next(t for t in figures.read_targets(REPO / TARGETS_EXAMPLE) if t["figure"] == "edges_server_alive_pct")
    assert figures.verdict(0.0, alive) == "NOT met"


@pytest.mark.parametrize(
    "csv, said",
    [
        ("figure,at_most,at_least,source\nready_s,soon,,x\n", "row 2: at_most 'soon' is not a number"),
        ("figure,at_most,at_least,source\nready_s,,,x\n", "row 2: a target names a figure and at least one bound"),
        ("figure,at_most\nready_s,3\n", "no column at_least, source"),
    ],
)
def test_a_bad_targets_file_is_refused_before_any_server_starts(tmp_path, csv, said):
    (tmp_path / "targets.csv").write_text(csv)
    r = cli(f"measure profile --models data/models/organism --targets {tmp_path / 'targets.csv'} --out {tmp_path}")
    assert r.returncode != 0 and said in r.stderr and "targets.csv" in r.stderr, r.stderr
    assert not (tmp_path / "servers").exists()


def test_bad_profile_options_are_clear_errors(tmp_path):
    r = cli(f"measure profile --models x --warm 0 --out {tmp_path}")
    assert r.returncode != 0 and "--warm must be 1 or more" in r.stderr, r.stderr
    r = cli(f"measure profile --models x --in-flight 1,zero --out {tmp_path}")
    assert r.returncode != 0 and "positive whole numbers" in r.stderr, r.stderr


def test_profile_json_reads_back_as_written(profiled):
    raw = json.loads(ProfileLayout(profiled).json.read_text())
    assert raw["schema_version"] == runfiles.SCHEMA_VERSION and len(raw["models"]) == 2
