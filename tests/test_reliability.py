"""Faults against the real vLLM server, interrupted runs and bad input: nothing answered is
lost, nothing is invented, no bad file takes a run down."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from core.decoding import decord
from core.layout import DataLayout
from core.records import load_questions, read_questions
from core.urls import ServerUrl
from serve.command import free_port
from tests.conftest import REPO, cli, needs_sample, start
from tests.faultproxy import FaultProxy, old_vllm


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def _answers(run_dir: Path) -> dict:
    """What each item got, and what was sent for it (prompt tokens): equal across server layouts."""
    rows = _rows(run_dir)
    return {(r["question_id"], r["model"], r["variant"]): (r["status"], r["reply"], r["prompt_tokens"]) for r in rows}


def _wait_lines(path: Path, n: int, proc: subprocess.Popen, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never reached {n} lines")


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started (vLLM's API server and engine)."""
    procs = psutil.Process(pid).children(recursive=True) + [psutil.Process(pid)]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def _measured(measured, run_dir: Path) -> dict:
    """The session's uninterrupted run, on the items `run_dir` holds: what each should have got."""
    clean = _answers(measured.root)
    return {k: clean[k] for k in _answers(run_dir)}


def test_the_only_server_lost_mid_run_then_resumed_equals_an_uninterrupted_run(server, measured, synthetic, tmp_path):
    """The run's one server stops accepting connections mid-run (a proxy in front of the real
    server goes away, as a killed server does): measure stops with exit 3, keeps what was
    answered, and a resume once it is back ends with the answers of an uninterrupted run."""
    port = free_port()
    common = [
        *("--data", synthetic, "--base-url", ServerUrl.local(port).v1, "--runs-dir", tmp_path, "--limit", "6"),
        *("--concurrency", "1", "--max-attempts", "3", "--down-timeout", "3"),
    ]
    with FaultProxy(server.base_url, rate=0.0, port=port):
        proc = start("measure", *common, "--run-id", "lost")
        _wait_lines(tmp_path / "lost" / "predictions.jsonl", 8, proc)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err[-2000:]
    assert "stopped answering" in err and "--resume lost" in err
    saved = _rows(tmp_path / "lost")
    assert 8 <= sum(r["status"] == "ok" for r in saved) < 6 * 2 * 2
    with FaultProxy(server.base_url, rate=0.0, port=port):
        resumed = cli("measure", *common, "--resume", "lost")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = _rows(tmp_path / "lost")
    keys = [(r["question_id"], r["model"], r["variant"]) for r in rows]
    assert len(keys) == len(set(keys)) == 6 * 2 * 2  # no duplicates, no gaps
    assert _answers(tmp_path / "lost") == _measured(measured, tmp_path / "lost")  # an uninterrupted run's answers
    for r in saved:  # what was answered before the loss stays as it was
        if r["status"] == "ok":
            kept = ("ok", r["reply"], r["prompt_tokens"])
            assert _answers(tmp_path / "lost")[(r["question_id"], r["model"], r["variant"])] == kept


def test_a_server_lost_mid_run_is_taken_out_and_taken_back(server, measured, synthetic, tmp_path):
    """Two servers, the one listed first lost mid-run (its proxy goes away: connections refused):
    its in-flight item goes to the other, nothing is lost, duplicated or recorded as an error,
    the answers are a single-server run's; back mid-run, it is used again. (The second sits
    behind a proxy adding 0.5 s per request, so the run outlasts the loss.)"""
    port = free_port()
    first = ServerUrl.local(port).v1
    with FaultProxy(server.base_url, rate=1.0, modes=("stall",), stall_s=0.5) as slow:
        with FaultProxy(server.base_url, rate=0.0, port=port):
            proc = start(
                f"measure --data {synthetic} --base-url {first} --base-url {slow.base_url} "
                f"--runs-dir {tmp_path} --run-id two --concurrency 1 --limit 6"
            )
            _wait_lines(tmp_path / "two" / "predictions.jsonl", 4, proc)
        _wait_server(tmp_path / "two" / "predictions.jsonl", slow.base_url, proc)  # taken out: the other answers
        with FaultProxy(server.base_url, rate=0.0, port=port):
            back = (tmp_path / "two" / "predictions.jsonl").read_text().count("\n")  # lines when it was back
            _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    rows = _rows(tmp_path / "two")
    keys = [(r["question_id"], r["model"], r["variant"]) for r in rows]
    assert len(keys) == len(set(keys)) == 6 * 2 * 2  # 0 lost, 0 duplicated
    assert all(r["status"] == "ok" for r in rows)
    assert _answers(tmp_path / "two") == _measured(measured, tmp_path / "two")
    assert back < len(rows) and any(r["server"] == first for r in rows[back:]), (back, len(rows))
    print(f"lines before it was back: {back}; servers after: {[r['server'] == first for r in rows[back:]]}")


def _wait_server(path: Path, url: str, proc: subprocess.Popen, limit: float = 120) -> None:
    """Until a line of `path` says `url` answered it."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if any(json.loads(line)["server"] == url for line in path.read_text().splitlines()):
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered an item of {path}")


def test_a_run_starts_with_the_servers_that_answer_and_takes_in_the_rest(server, measured, synthetic, tmp_path):
    """Three base URLs, two down at start: one warning line, the run starts on the one up (slowed
    by a proxy, so it outlasts what follows). Then both come up: the good one (the real server
    behind a proxy) passes the self-test and is used; the other ignores the choice constraint
    and is never used. The answers are a single-server run's. With none up: exit 2."""
    common = f"--data {synthetic} --runs-dir {tmp_path} --limit 4 --concurrency 2"
    good, bad = ServerUrl.local(free_port()), ServerUrl.local(free_port())
    with FaultProxy(server.base_url, rate=1.0, modes=("stall",), stall_s=1.0) as slow:
        proc = start(f"measure {common} --base-url {slow.base_url} --base-url {good} --base-url {bad} --run-id r")
        _wait_lines(tmp_path / "r" / "predictions.jsonl", 2, proc)
        with (
            FaultProxy(server.base_url, rate=0.0, port=good.port),
            FaultProxy(server.base_url, rate=0.0, rewrite=old_vllm, port=bad.port),
        ):
            _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    down = [line for line in err.splitlines() if "unreachable" in line]
    assert len(down) == 1 and str(good) in down[0] and str(bad) in down[0] and slow.base_url in down[0], err
    assert f"{bad} answers but is not used" in err and "ignores the choice constraint" in err
    rows = _rows(tmp_path / "r")
    served = {r["server"] for r in rows}
    assert str(good) in served and str(bad) not in served and all(r["status"] == "ok" for r in rows)
    assert len(rows) == 4 * 2 * 2 and _answers(tmp_path / "r") == _measured(measured, tmp_path / "r")
    none = cli(f"measure {common} --base-url {good} --base-url {bad} --run-id none")
    assert none.returncode == 2 and f"no server answers: {good}, {bad}" in none.stderr.splitlines()[-1]


def test_injected_faults_are_survived_with_identical_results(server, measured, synthetic, tmp_path):
    common = [
        *("--data", synthetic, "--runs-dir", tmp_path, "--limit", "10", "--concurrency", "1"),
        *("--timeout", "2", "--max-attempts", "8"),
    ]
    with FaultProxy(server.base_url, rate=0.1, seed=7, stall_s=2.5) as proxy:
        faulty = cli("measure", *common, "--base-url", proxy.base_url, "--run-id", "faulty")
    assert faulty.returncode == 0, faulty.stderr[-2000:]
    assert set(proxy.injected) == {"http500", "http503", "cut", "stall"}, proxy.injected
    assert len(_rows(tmp_path / "faulty")) == 10 * 2 * 2
    assert _answers(tmp_path / "faulty") == _measured(measured, tmp_path / "faulty")
    extra = sum(r["attempts"] - 1 for r in _rows(tmp_path / "faulty"))  # one retry per fault met
    injected = sum(proxy.injected.values())
    assert injected - 3 <= extra <= injected  # the warm-up request (3 tries) may meet up to 3 of them
    print(f"faults injected and survived: {dict(proxy.injected)}; retries recorded: {extra}")


def test_each_request_goes_to_the_server_with_the_fewest_in_flight(server, measured, synthetic, tmp_path):
    """Two endpoints of one real server, one behind a proxy adding 2 s to every request (far
    more than a request takes here, even on a loaded machine): the slow one gets fewer
    requests, the answers are those of a single-server run, and every prediction says which
    server answered."""
    common = ["--data", synthetic, "--runs-dir", tmp_path, "--limit", "12", "--concurrency", "8"]
    with FaultProxy(server.base_url, rate=1.0, modes=("stall",), stall_s=2.0) as slow:
        slow_url = slow.base_url
        two = cli("measure", *common, "--base-url", server.base_url, "--base-url", slow_url, "--run-id", "two")
    assert two.returncode == 0, two.stderr[-2000:]
    rows = _rows(tmp_path / "two")
    counts = {url: sum(r["server"] == url for r in rows) for url in (server.base_url, slow_url)}
    assert sum(counts.values()) == len(rows) == 12 * 2 * 2
    assert counts[server.base_url] > 2 * counts[slow_url] > 0, counts
    assert _answers(tmp_path / "two") == _measured(measured, tmp_path / "two")
    print(f"requests per server (fast, +2 s): {list(counts.values())}")


def test_persistent_errors_are_errors_not_wrong_answers(server, synthetic, tmp_path):
    with FaultProxy(server.base_url, rate=1.0, seed=1, modes=("http503",)) as proxy:
        r = cli(
            f"measure --data {synthetic} --base-url {proxy.base_url} --runs-dir {tmp_path} "
            "--run-id down --limit 2 --variants plain --max-attempts 2"
        )
    assert r.returncode == 1 and "ended as errors" in r.stderr
    rows = _rows(tmp_path / "down")
    assert rows and all(x["status"] == "error" and not x["correct"] and x["attempts"] == 2 for x in rows)
    table = json.loads((tmp_path / "down" / "report.json").read_text())["accuracy"]
    assert all(t["n"] == 0 and t["errors"] == 2 for t in table)


def test_measure_killed_mid_run_resumes_to_exactly_one_line_each(server, synthetic, tmp_path):
    common = [
        *("--data", synthetic, "--base-url", server.base_url, "--runs-dir", tmp_path, "--concurrency", "1"),
        *("--frame-store", tmp_path / "frames"),  # a store of its own: every clip is decoded, by workers
    ]
    proc = start("measure", *common, "--run-id", "k", quiet=True)
    preds = tmp_path / "k" / "predictions.jsonl"
    _wait_lines(preds, 5, proc)
    workers = psutil.Process(proc.pid).children(recursive=True)  # the media workers, their fork server, ...
    assert workers, "measure prepares clips in worker processes"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"media workers outlived a killed measure: {alive}"
    with open(preds, "a") as f:
        f.write('{"question_id": "torn')  # what a kill in the middle of a write leaves
    r = cli("measure", *common, "--resume", "k")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "torn last line" in r.stderr
    rows = _rows(tmp_path / "k")
    keys = [(x["question_id"], x["model"], x["variant"]) for x in rows]
    n_test = sum(q.split == "test" for q in read_questions(DataLayout(synthetic).questions))
    assert len(keys) == len(set(keys)) == n_test * 2 * 2


@pytest.mark.slow
def test_prepare_killed_mid_render_never_leaves_a_truncated_clip(tmp_path):
    out = tmp_path / "syn"
    command = f"prepare synthetic --out {out} --videos 30 --workers 1"
    proc = start(command, quiet=True)
    clips = out / "clips" / "plain"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (clips.is_dir() and len(list(clips.glob("[0-9]*.mp4"))) >= 6):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    done = {p: p.stat().st_mtime_ns for p in (out / "clips").glob("*/[0-9]*.mp4")}
    assert done and not (out / "questions.jsonl").exists()
    for clip in done:
        assert len(decord.VideoReader(str(clip))) == 36, clip  # complete, never truncated
    cli(command, check=True)
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # finished clips are not re-rendered
    assert not list((out / "clips").glob("*/.*.mp4"))  # no temp file left behind
    qs = read_questions(DataLayout(out).questions)
    assert all(DataLayout(out).clip(v, q.video_id).is_file() for q in qs for v in ("plain", "trajectory"))


BAD_ROWS = {
    "not JSON": "{not json",
    "missing fields": json.dumps({"id": "x1", "video_id": "1000"}),
    "answer not among the choices": None,
    "duplicate choices": None,
    "fewer than 2 choices": None,
    "duplicate id": None,
    "video id escaping the data directory": None,
}


def _bad_questions(good: list[dict]) -> list[str]:
    base = dict(good[0])
    rows = {
        "answer not among the choices": dict(base, id="bad-answer", answer="nothing like it"),
        "duplicate choices": dict(
            base, id="bad-dup", choices=[base["choices"][0], base["choices"][0].upper(), "x", "y"]
        ),
        "fewer than 2 choices": dict(base, id="bad-few", choices=[base["answer"]]),
        "duplicate id": dict(good[1], id=good[0]["id"]),
        "video id escaping the data directory": dict(base, id="bad-path", video_id="../../../etc/passwd"),
    }
    return [BAD_ROWS[k] or json.dumps(rows[k]) for k in BAD_ROWS]


def test_bad_question_rows_are_rejected_by_line_and_the_run_goes_on(server, synthetic, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic, data, ignore=shutil.ignore_patterns("raw"))
    lines = (data / "questions.jsonl").read_text().splitlines()
    good = [json.loads(x) for x in lines]
    bad = _bad_questions(good)
    (data / "questions.jsonl").write_text("\n".join([*lines[:2], *bad, *lines[2:]]) + "\n")
    questions, rejected = load_questions(data / "questions.jsonl")
    assert len(questions) == len(lines) and len(rejected) == len(bad)
    for n, (message, _) in enumerate(zip(rejected, BAD_ROWS), start=3):
        assert message.startswith(f"{data / 'questions.jsonl'}:{n}:"), message
    assert "not JSON" in rejected[0] and "missing fields" in rejected[1] and "exactly once" in rejected[2]
    assert "duplicate choices" in rejected[3] and "fewer than 2" in rejected[4] and "duplicate id" in rejected[5]
    assert "escape the data directory" in rejected[6]
    r = cli(
        f"measure --data {data} --base-url {server.base_url} --runs-dir {tmp_path} --run-id b "
        "--limit 2 --variants plain"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("skipped question:") == len(bad)
    assert len(_rows(tmp_path / "b")) == 2 * 2


@needs_sample
def test_bad_clips_and_boxes_are_reported_and_the_rest_goes_on(tmp_path):
    import av
    import numpy as np

    from prepare.pipeline import Options, prepare_ssv2
    from tests.conftest import SAMPLE

    videos = tmp_path / "videos"
    videos.mkdir()
    for clip in (SAMPLE / "videos").iterdir():
        (videos / clip.name).symlink_to(clip)
    (videos / "2.webm").unlink()
    (videos / "2.webm").write_text("this is not a video at all\n" * 100)  # not a video
    (videos / "13201.webm").unlink()
    with av.open(str(videos / "13201.webm"), "w", format="mp4") as c:  # a container with zero frames
        s = c.add_stream("libx264", rate=12)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()
    boxes = json.loads((SAMPLE / "bounding_box_smthsmth_sample.json").read_text())
    frames = boxes["57082"]
    frames[0]["labels"][0]["box2d"] |= {"x1": -50.0, "x2": 9999.0}  # outside the frame
    frames[1]["labels"][0]["box2d"] |= {"x1": 200.0, "x2": 100.0}  # negative size
    boxes["999999"] = frames[:2]  # a video that does not exist
    box_file = tmp_path / "boxes.json"
    box_file.write_text(json.dumps(boxes))
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("validation", "test", "labels"):
        (labels / f"{name}.json").write_text((SAMPLE / "labels" / f"{name}.json").read_text())
    train = json.loads((SAMPLE / "labels" / "train.json").read_text())
    train.append(dict(train[0], id="../../escape"))  # a video path escaping the videos dir
    (labels / "train.json").write_text(json.dumps(train))
    m = prepare_ssv2(
        videos, labels, [box_file], tmp_path / "out", Options(test_videos=1, variants=("plain", "bbox"), workers=1)
    )
    reasons = {d["item"]: d["reason"] for d in m.dropped}
    assert "not a readable video" in reasons["2"] and "2.webm" in reasons["2"]
    assert "13201.webm" in reasons["13201"]
    assert "escape" in reasons["../../escape"]
    assert m.boxes_fixed["57082"] == {"clamped_to_frame": 1, "dropped_empty_or_inverted": 1}
    assert m.boxes_for_other_videos >= 1
    assert {q.video_id for q in read_questions(DataLayout(tmp_path / "out").questions)} == {"57082", "80962"}
    assert np.asarray(decord.VideoReader(str(DataLayout(tmp_path / "out").clip("bbox", "57082")))[0].shape)[0] == 240


def test_no_shell_strings_anywhere():
    sources = [
        p for d in ("prepare", "serve", "measure", "train", "scripts", "tests") for p in (REPO / d).rglob("*.py")
    ]
    assert len(sources) > 20
    offenders = [
        str(p)
        for p in sources
        if re.search(r"shell\s*=\s*True|os\.system\(", p.read_text()) and p.name != "test_reliability.py"
    ]
    assert offenders == []
