"""Reasoning models: a tiny Qwen3-VL whose chat template opens a think block, served by vLLM
with its reasoning parser (`serve` picks it from the model's profile), its thinking kept
apart from its answer (stored, shown, never scored) and the choice constraint applied to the
answer after it; and the two-step ask any model can be given."""

from __future__ import annotations

import json

import pytest

from core.profiles import profile_for
from core.urls import ServerUrl
from serve import tiny as builder
from serve.command import free_port
from tests.conftest import cli, running, start_server, stop_server


@pytest.fixture(scope="module")
def thinking_server(tmp_path_factory, synthetic):
    model = builder.build_model(tmp_path_factory.mktemp("thinking") / "tiny-thinking", thinking=True)
    port = free_port()
    log = tmp_path_factory.mktemp("thinking-log") / "vllm.log"
    proc = start_server(["--model", str(model), "--port", str(port), "--adapters", ""], log, ServerUrl.local(port).v1)
    running("thinking server", proc)
    yield ServerUrl.local(port), model, log
    stop_server(proc)


@pytest.mark.server
def test_a_reasoning_models_thinking_is_kept_apart_and_its_answer_constrained(thinking_server, synthetic, tmp_path):
    url, model, log = thinking_server
    assert profile_for(str(model)).reasoning_parser == "qwen3"
    assert "--reasoning-parser qwen3" in log.read_text()  # serve started vLLM with the profile's parser
    r = cli(
        f"measure --data {synthetic} --base-url {url.v1} --runs-dir {tmp_path} --run-id think --limit 3 "
        "--variants plain --reasoning-tokens 12"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "think" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(row["status"] == "ok" and row["reply"] in row["choices"] for row in rows), rows
    assert all(row["reasoning"] and row["reasoning"] != row["reply"] for row in rows)  # thought, then answered
    assert all(row["correct"] == (row["reply"] == row["answer"]) for row in rows)  # scored on the answer alone
    record = json.loads((tmp_path / "think" / "run.json").read_text())
    assert record["ask"]["reasoning"] == "auto" and record["ask"]["reasoning_tokens"] == 12
    page = cli(f"measure view {tmp_path / 'think'}", check=True)
    assert page.returncode == 0 and rows[0]["reasoning"] in (tmp_path / "think" / "view" / "data.js").read_text()


@pytest.mark.server
def test_the_two_step_ask_keeps_a_first_free_reply_as_the_thinking(server, synthetic, tmp_path):
    """Any model: a free reply first (capped by --reasoning-tokens), then the answer, constrained,
    with that reply in the conversation; the first reply is the prediction's reasoning."""
    r = cli(
        f"measure --data {synthetic} --base-url {server.base_url} --runs-dir {tmp_path} --run-id two --limit 2 "
        f"--variants plain --models {server.base_model} --reasoning two-step --reasoning-tokens 8"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "two" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(row["reply"] in row["choices"] and row["reasoning"] for row in rows), rows
    assert all(row["attempts"] >= 2 for row in rows)  # two requests each
