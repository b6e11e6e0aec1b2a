"""The second real server of the suite: the SmolVLM / Idefics3 path (client-sampled frames as
images), behind an API key, and killed outright at the end (`serve run` takes its vLLM along)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import psutil
import pytest

from core.urls import ServerUrl
from serve import tiny as builder
from serve.command import free_port, port_in_use
from tests.conftest import Server, cli, start_server, stop_server

KEY = "test-key-123"


@pytest.fixture(scope="module")
def smol_server(tmp_path_factory):
    """Started on a loaded machine (a process spinning on one of the cores): what serve run knows
    of it is there as soon as it answers all the same (start_server checks)."""
    model = builder.build_idefics3(tmp_path_factory.mktemp("smol") / "tiny-smolvlm")
    port = free_port()
    base_url = ServerUrl.local(port).v1
    log = tmp_path_factory.mktemp("smol-log") / "vllm.log"
    argv = ["--model", str(model), "--port", str(port), "--frames", "6", "--no-trust-request-mm-kwargs"]
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"])]
    try:
        # Profiling the encoder's worst case (512 images) is most of a start here and none of
        # what these tests check.
        proc = start_server([*argv, "--api-key", KEY, "--", "--skip-mm-profiling"], log, base_url, KEY)
    finally:
        for spinner in load:
            spinner.kill()
    yield Server(base_url, "tiny-smolvlm", "", log, KEY), proc
    stop_server(proc)


def _measure(smol, synthetic, tmp_path, rid: str, extra: str):
    server, _ = smol
    return cli(
        f"measure --data {synthetic} --base-url {server.base_url} --api-key {KEY} --runs-dir {tmp_path} "
        f"--run-id {rid} {extra}"
    )


def test_idefics3_model_is_scored_from_sampled_frames(smol_server, synthetic, tmp_path):
    r = _measure(smol_server, synthetic, tmp_path, "smol", "--limit 5 --frames 6 --answer-format letters")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "smol" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 5 * 2 and all(row["status"] == "ok" and row["reply"] in row["choices"] for row in rows)
    assert all(row["frame_indices"] == [3, 9, 15, 21, 27, 33] for row in rows)  # the same frames for every model
    assert all(row["frame_size"] == [320, 240] for row in rows)
    assert all(abs(sum(row["probs"].values()) - 1) < 1e-3 for row in rows)
    run = json.loads((tmp_path / "smol" / "run.json").read_text())
    assert run["ask"]["profiles"] == {
        "tiny-smolvlm": {"name": "idefics3", "video_as": "frames", "reasoning_parser": None}
    }
    assert KEY not in (tmp_path / "smol" / "run.json").read_text()  # the key is never written down


def test_more_frames_than_the_server_allows_is_an_error_not_a_wrong_answer(smol_server, synthetic, tmp_path):
    r = _measure(smol_server, synthetic, tmp_path, "over", "--limit 1 --variants plain --frames 7")
    assert r.returncode == 1
    row = json.loads((tmp_path / "over" / "predictions.jsonl").read_text().splitlines()[0])
    assert row["status"] == "error" and row["error"].startswith("HTTP 400") and row["attempts"] == 1


def test_a_server_refusing_per_request_media_settings_is_a_setup_error(smol_server):
    """Every video request carries per-request media settings (the frames and their timestamps,
    or the frame count). An image-only model needs none (the tests above ran against this
    untrusting server); a run with a video model asks the self-test to send them, and this
    server's refusal stops the run before anything is asked."""
    import asyncio

    from core.errors import SetupError
    from measure.ask.client import self_test

    url = smol_server[0].url
    assert asyncio.run(self_test(url, KEY, "tiny-smolvlm", media_io=False)) is None
    with pytest.raises(SetupError, match="refuses per-request media settings.*--trust-request-mm-kwargs"):
        asyncio.run(self_test(url, KEY, "tiny-smolvlm", media_io=True))


def test_api_key_is_required_and_measure_says_so(smol_server, synthetic, tmp_path):
    server, _ = smol_server
    assert httpx.get(server.url.models).status_code == 401
    assert httpx.get(server.url.models, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    r = cli(f"measure --data {synthetic} --base-url", server.base_url, "--runs-dir", tmp_path)
    assert r.returncode == 2 and "HTTP 401" in r.stderr and "--api-key" in r.stderr


def test_an_arrow_of_time_dataset_of_own_clips_scored_end_to_end(smol_server, synthetic, tmp_path):
    """The arrow-of-time study as its author ran it: a folder of one's own short clips (nested,
    beside a corrupt file and a note) -> `prepare clips` -> SmolVLM2's architecture answers
    forward/backward for every clip both ways, reported per category."""
    import shutil

    from core.layout import DataLayout

    own = tmp_path / "my clips"
    plain = sorted(DataLayout(synthetic).clips_dir("plain").glob("*.mp4"))[:3]
    for i, clip in enumerate(plain):
        (own / f"take {i}" / "raw").mkdir(parents=True)
        shutil.copy(clip, own / f"take {i}" / "raw" / f"clip{i}.mp4")
    (own / "corrupt.mp4").write_bytes(plain[0].read_bytes()[:500])
    (own / "README.txt").write_text("my clips")
    (tmp_path / "labels.csv").write_text("video,category\nclip0,reversible\nclip1,irreversible\n")
    made = cli("prepare clips", own, "--out", tmp_path / "arrow", "--labels", tmp_path / "labels.csv", "--workers", 1)
    assert made.returncode == 0 and "6 arrow-of-time questions on 3 clips" in made.stdout, made.stderr[-2000:]
    assert "dropped corrupt.mp4" in made.stderr and "dropped README.txt" in made.stderr
    r = _measure(smol_server, tmp_path / "arrow", tmp_path, "arrow", "--frames 6 --answer-format letters")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "arrow" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(row["status"] == "ok" and row["reply"] in ("forward", "backward") for row in rows)
    assert {row["category"] for row in rows} == {"reversible", "irreversible", "unknown"}
    assert "## Arrow of time" in (tmp_path / "arrow" / "report.md").read_text()


@pytest.mark.ends_server
def test_serve_killed_outright_takes_its_vllm_with_it(smol_server):
    """SIGKILL of `serve run` (as the OOM killer would): within 15 s no process of the vLLM it
    started remains and the port is free (vLLM gets SIGTERM on its parent's death)."""
    server, proc = smol_server
    serve = psutil.Process(proc.pid)
    vllm = serve.children(recursive=True)
    assert vllm, "serve run started no vLLM process"
    serve.kill()
    proc.wait(10)
    gone, alive = psutil.wait_procs(vllm, timeout=15)
    assert alive == [], [p.pid for p in alive]
    assert not port_in_use("127.0.0.1", server.url.port)
    print(f"{len(gone)} vLLM processes gone after serve run was SIGKILLed")
