"""The SmolVLM / Idefics3 path through the real server: client-sampled frames as images."""

from __future__ import annotations

import json

import pytest

from core.urls import ServerUrl
from serve import tiny as builder
from serve.command import free_port
from tests.conftest import cli, start_server, stop_server


@pytest.fixture(scope="module")
def smol_server(tmp_path_factory):
    model = builder.build_idefics3(tmp_path_factory.mktemp("smol") / "tiny-smolvlm")
    port = free_port()
    base_url = ServerUrl.local(port).v1
    proc = start_server(
        ["--model", str(model), "--port", str(port), "--frames", "6", "--no-trust-request-mm-kwargs"],
        tmp_path_factory.mktemp("smol-log") / "vllm.log",
        base_url,
    )
    yield base_url
    stop_server(proc)


def test_idefics3_model_is_scored_from_sampled_frames(smol_server, synthetic, tmp_path):
    r = cli(
        f"measure --data {synthetic} --base-url {smol_server} --runs-dir {tmp_path} --run-id smol "
        "--limit 5 --frames 6 --answer-format letters",
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "smol" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 5 * 2 and all(row["status"] == "ok" and row["reply"] in row["choices"] for row in rows)
    assert all(row["frame_indices"] == [3, 9, 15, 21, 27, 33] for row in rows)  # the same frames for every model
    assert all(row["frame_size"] == [320, 240] for row in rows)
    assert all(abs(sum(row["probs"].values()) - 1) < 1e-3 for row in rows)
    run = json.loads((tmp_path / "smol" / "run.json").read_text())
    assert run["ask"]["profiles"] == {"tiny-smolvlm": {"name": "idefics3", "video_as": "frames"}}


def test_more_frames_than_the_server_allows_is_an_error_not_a_wrong_answer(smol_server, synthetic, tmp_path):
    r = cli(
        f"measure --data {synthetic} --base-url {smol_server} --runs-dir {tmp_path} --run-id over "
        "--limit 1 --variants plain --frames 7",
        timeout=600,
    )
    assert r.returncode == 1
    row = json.loads((tmp_path / "over" / "predictions.jsonl").read_text().splitlines()[0])
    assert row["status"] == "error" and row["error"].startswith("HTTP 400") and row["attempts"] == 1


def test_a_server_refusing_per_request_media_settings_is_a_setup_error(smol_server):
    """Every video request carries per-request media settings (the frames and their timestamps,
    or the frame count). An image-only model needs none (the tests above ran against this
    untrusting server); a run with a video model asks the self-test to send them, and this
    server's refusal stops the run before anything is asked."""
    import asyncio

    from measure.ask.client import SetupError, self_test

    url = ServerUrl.parse(smol_server)
    assert asyncio.run(self_test(url, None, "tiny-smolvlm", media_io=False)) is None
    with pytest.raises(SetupError, match="refuses per-request media settings.*--trust-request-mm-kwargs"):
        asyncio.run(self_test(url, None, "tiny-smolvlm", media_io=True))
