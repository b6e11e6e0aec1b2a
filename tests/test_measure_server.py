"""measure against the real vLLM server: resume, interruption, errors, frames, media, bad setup."""

from __future__ import annotations

import json
import re
import shutil
import signal
import time

from core.ask import AskConfig
from core.frames import FrameSpec
from core.layout import DataLayout
from core.records import read_questions
from core.urls import ServerUrl
from measure.ask.client import Item
from measure.ask.options import PER_SERVER
from serve.command import free_port
from tests.conftest import ask_each, cli, copy_run, start
from tests.faultproxy import FaultProxy, old_vllm


def _lines(run_dir):
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def _keys(rows):
    return [(r["question_id"], r["model"], r["variant"]) for r in rows]


def test_resume_sends_nothing_and_errors_are_asked_again(server, measured, synthetic, tmp_path):
    run = copy_run(measured, tmp_path)
    common = ["--data", synthetic, "--base-url", server.base_url, "--runs-dir", tmp_path]
    rows = _lines(run.root)
    n = len(rows)
    assert n == len(set(_keys(rows)))
    again = cli("measure", *common, "--resume", run.id)
    assert again.returncode == 0 and "0 to send" in again.stderr
    assert _lines(run.root) == rows
    assert [s["to_send"] for s in json.loads(run.run_json.read_text())["sessions"]] == [n, 0]

    broken = dict(rows[3], status="error", reply=None, correct=False, error="HTTP 503: injected")
    run.predictions.write_text("".join(json.dumps(r) + "\n" for r in [*rows[:3], broken, *rows[4:]]))
    healed = cli("measure", *common, "--resume", run.id)
    assert healed.returncode == 0, healed.stderr[-2000:]
    after = _lines(run.root)
    assert len(after) == len(set(_keys(after))) == n
    again = {k: r for k, r in zip(_keys(after), after)}[_keys([broken])[0]]
    assert (again["status"], again["reply"]) == ("ok", rows[3]["reply"])  # asked again: the same reply
    assert json.loads(run.run_json.read_text())["sessions"][-1]["retried_errors"] == 1


def test_interrupted_run_resumes_to_exactly_one_line_per_item(server, synthetic, tmp_path):
    proc = start(
        f"measure --data {synthetic} --base-url {server.base_url} --runs-dir {tmp_path} --run-id cut --concurrency 1"
    )
    preds = tmp_path / "cut" / "predictions.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (preds.is_file() and len(preds.read_text().splitlines()) >= 5):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    partial = _lines(tmp_path / "cut")
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "--resume cut" in err
    resumed = cli(f"measure --data {synthetic} --base-url {server.base_url} --runs-dir {tmp_path} --resume cut")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = _lines(tmp_path / "cut")
    n_test = sum(q.split == "test" for q in read_questions(DataLayout(synthetic).questions))
    assert len(rows) == len(set(_keys(rows))) == n_test * 2 * 2
    assert rows[: len(partial)] == partial  # append-only: what was saved stays as it was


def _one(synthetic, variant="plain"):
    layout = DataLayout(synthetic)
    q = next(q for q in read_questions(layout.questions) if q.split == "test")
    return Item(q, "tiny-vlm", variant, layout.clip(variant, q.video_id))


def _ask(server, items, cfg):
    return ask_each(server.base_url, [(i, cfg) for i in items])


def test_frames_per_request_reach_the_model(server, synthetic):
    item = _one(synthetic)
    four = _ask(server, [item], AskConfig(media="data", frames=FrameSpec(4)))[0]
    eight = _ask(server, [item], AskConfig(media="data", frames=FrameSpec(8)))[0]
    assert four.status == eight.status == "ok"
    assert four.prompt_tokens < eight.prompt_tokens


def test_file_urls_give_the_same_answers_as_inline_bytes(server, synthetic):
    items = [_one(synthetic, v) for v in ("plain", "trajectory")]
    inline = _ask(server, items, AskConfig(answer_format="letters", media="data"))
    files = _ask(server, items, AskConfig(answer_format="letters", media="file"))
    for a, b in zip(inline, files):
        assert b.status == "ok", b.error
        assert b.reply == a.reply and max(abs(a.probs[c] - b.probs[c]) for c in a.choices) < 1e-3


def test_missing_clip_is_a_per_item_error_not_a_wrong_answer(server, synthetic, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic, data, ignore=shutil.ignore_patterns("raw"))
    item = _one(data)
    DataLayout(data).clip("plain", item.question.video_id).unlink()
    r = cli(
        f"measure --data {data} --base-url {server.base_url} --runs-dir {tmp_path} --run-id m "
        "--limit 3 --variants plain"
    )
    assert r.returncode == 1 and "ended as errors" in r.stderr
    rows = [row for row in _lines(tmp_path / "m") if row["video_id"] == item.question.video_id]
    assert rows and all(
        row["status"] == "error" and row["error"] == "clip missing" and not row["correct"] for row in rows
    )
    table = json.loads((tmp_path / "m" / "report.json").read_text())["accuracy"]
    assert all(row["errors"] == len(rows) // 2 for row in table)


def test_bad_setup_fails_fast_with_a_clear_message(server, synthetic, tmp_path):
    dead = ServerUrl.local(free_port()).v1
    r = cli(f"measure --data {synthetic} --base-url {dead} --runs-dir {tmp_path}")
    assert r.returncode == 2 and dead in r.stderr and "unreachable" in r.stderr
    r = cli(f"measure --data {synthetic} --base-url {server.base_url} --models nope --runs-dir {tmp_path}")
    assert r.returncode == 2 and "nope" in r.stderr and "tiny-cued" in r.stderr
    r = cli("measure --data", tmp_path / "empty", "--base-url", server.base_url, "--runs-dir", tmp_path)
    assert r.returncode == 2 and str(tmp_path / "empty") in r.stderr
    assert not any(tmp_path.glob("*/predictions.jsonl"))


def test_every_run_records_its_health(server, measured, synthetic):
    """run.json holds what serve wrote (arguments, start-up times, memory once ready) and each
    session's peak memory (the server's process group from /proc); the report's Run health
    section is computed from them and the predictions."""
    assert "serve: ready in" in server.log.read_text() and "resident memory" in server.log.read_text()
    run = json.loads(measured.run_json.read_text())
    assert run["concurrency"] == PER_SERVER  # no --concurrency: a server's worth, one engine behind it
    serve = run["servers"][0]["serve"]
    assert serve["argv"][2:4] == ["serve.launch", "serve"] and serve["ready_s"] > 0
    assert {"weights_load_s", "engine_init_s"} <= set(serve["times"]) and serve["rss_ready_bytes"] > 2**28
    assert run["servers"][0]["version"]
    import importlib.metadata

    shaping = ("opencv-python-headless", "transformers", "numpy", "torch", "av", "decord")
    assert {k: run["client_packages"][k] for k in shaping} == {k: importlib.metadata.version(k) for k in shaping}
    health = run["sessions"][-1]["health"]
    peak = health["servers"][server.base_url]
    assert peak["source"] == "process group (/proc)" and peak["peak_rss_bytes"] >= 2**28
    assert health["client_peak_rss_bytes"] > 2**24
    tables = json.loads(measured.report_json.read_text())["health"]
    rows = _lines(measured.root)
    n = sum(q.split == "test" for q in read_questions(DataLayout(synthetic).questions))
    assert tables["overall"][0]["requests"] == len(rows) == n * 2 * 2
    assert tables["overall"][0]["attempts"] == sum(x["attempts"] for x in rows)
    assert (
        tables["servers"][0]["requests"] == len(rows) and tables["servers"][0]["vllm"] == run["servers"][0]["version"]
    )
    latency = {(t["model"], t["variant"]): t for t in tables["latency"]}
    assert set(latency) == {(m, v) for m in (server.base_model, server.adapter) for v in ("plain", "trajectory")}
    for t in latency.values():
        assert t["n"] == n and 0 < t["p50"] <= t["p95"] <= t["p99"]
    assert "## Run health" in measured.report_md.read_text()


def test_a_server_seen_only_over_http_is_sampled_through_its_metrics(server):
    from measure.ask.health import Sampler

    with FaultProxy(server.base_url, rate=0.0) as proxy:  # no serve file for this port
        url = ServerUrl.parse(proxy.url)
        with Sampler([url], interval_s=0.1) as sampler:
            time.sleep(0.3)
    result = sampler.result().servers[str(url)]
    assert result.source.startswith("/metrics") and result.peak_rss_bytes > 2**27


def test_a_server_ignoring_the_choice_constraint_is_refused_before_anything_is_asked(server, synthetic, tmp_path):
    """A vLLM that does not read `structured_outputs` (played by a proxy dropping the field, as
    vLLM >= 0.12 silently drops the reference study's `guided_choice`): the run does not start."""
    with FaultProxy(server.base_url, rate=0.0, rewrite=old_vllm) as proxy:
        r = cli(f"measure --data {synthetic} --base-url {proxy.base_url} --runs-dir {tmp_path} --run-id old --limit 2")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "ignores the choice constraint" in r.stderr and "structured_outputs" in r.stderr
    assert not (tmp_path / "old" / "predictions.jsonl").is_file() or not _lines(tmp_path / "old")


def test_the_report_says_how_a_run_was_served_and_compare_when_two_differ(measured, tmp_path):
    """run.json keeps whether each server was batch-invariant (`serve run --batch-invariant`):
    the report's legend says it, and `measure compare` says when two runs were served otherwise."""
    a, b = copy_run(measured, tmp_path, "a"), copy_run(measured, tmp_path, "b")
    record = json.loads(b.run_json.read_text())
    assert all(s["serve"]["batch_invariant"] is False for s in record["servers"])  # started by `serve run`
    for s in record["servers"]:
        s["serve"]["batch_invariant"] = True  # as a GPU server started with --batch-invariant records it
    b.run_json.write_text(json.dumps(record))
    said = {}
    for run in (a, b):
        assert cli("measure", "report", run.root).returncode == 0
        said[run.id] = next(x for x in run.report_md.read_text().splitlines() if x.startswith("- serving: "))
    assert said == {"a": "- serving: not batch-invariant", "b": "- serving: batch-invariant (VLLM_BATCH_INVARIANT=1)"}
    r = cli("measure", "compare", a.root, b.root)
    assert r.returncode == 0 and "Served differently: a: not batch-invariant; b: batch-invariant" in r.stdout
    assert "Served differently" not in cli("measure", "compare", a.root, a.root).stdout


def test_a_ray_data_job_answers_as_measures_own_client_and_resumes(server, synthetic, measured, tmp_path):
    """`measure --engine ray` on a local Ray: the plan as a Ray Data job whose LLM stage is Ray's
    HTTP stage against the served URL gives the replies, prompt tokens and frames measure's own
    client got for the same items; a second call sends only what the first did not. The vLLM
    engine stage (one engine per GPU replica) is built from serve's own settings through vLLM's
    parser and accepted by Ray, not run (no GPU here)."""
    from measure.ask import rayjob
    from serve.command import Settings, build_argv

    base = f"measure --data {synthetic} --base-url {server.base_url} --runs-dir {tmp_path} --run-id r --engine ray"
    cli(f"{base} --limit 2", check=True)
    again = cli(f"{base} --limit 4", check=True)
    done = [int(x) for x in re.search(r"(\d+) items, (\d+) already done", again.stderr).groups()]
    assert done[0] == 2 * done[1] > 0, again.stderr
    rows = [json.loads(x) for x in (tmp_path / "r" / "predictions.jsonl").read_text().splitlines()]
    theirs = {(r["question_id"], r["model"], r["variant"]): r for r in map(json.loads, measured.predictions.open())}
    assert len(rows) == done[0] and all(r["status"] == "ok" and r["server"] == str(server.base_url) for r in rows)
    for r in rows:
        same = theirs[r["question_id"], r["model"], r["variant"]]
        assert (r["reply"], r["prompt_tokens"], r["frame_indices"]) == (
            same["reply"],
            same["prompt_tokens"],
            same["frame_indices"],
        ), r
    kw = rayjob.engine_kwargs(build_argv(Settings(model="Qwen/Qwen3-VL-2B-Instruct"), gpus=1))
    stage = rayjob.engine_stage(kw.pop("model"), kw, replicas=8, batch_size=16, lora_path="data/adapters")
    assert stage.concurrency == 8 and stage.engine_kwargs["limit_mm_per_prompt"] == {"video": 1, "image": 1}
    assert stage.engine_kwargs["max_model_len"] == 16384 and stage.dynamic_lora_loading_path == "data/adapters"


def test_the_ray_engine_refuses_what_it_cannot_do(synthetic):
    """`--engine ray` sends through one URL's HTTP stage, once per item."""
    two = cli(
        f"measure --data {synthetic} --base-url http://127.0.0.1:9/v1 --base-url http://127.0.0.1:8/v1 --engine ray"
    )
    assert two.returncode == 2 and "--engine ray sends through one --base-url" in two.stderr
    think = cli(f"measure --data {synthetic} --base-url http://127.0.0.1:9/v1 --engine ray --reasoning two-step")
    assert think.returncode == 2 and "--reasoning two-step needs the default engine" in think.stderr
