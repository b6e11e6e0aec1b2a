"""Every benchmark runs here in a small setting, so a change cannot break one unseen; the
numbers they print are for people, not asserted."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

from measure.client import AskConfig
from tests.conftest import REPO


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_measure_sends_what_measure_sends(server, synthetic):
    """Regression: it once passed a data URL where a list of parts belongs, so every character
    became a content part."""
    bench = _load("bench_measure")
    reqs = bench.requests(synthetic, [server.base_model], AskConfig())
    assert reqs and all([p["type"] for p in r["messages"][0]["content"]] == ["video_url", "text"] for r in reqs)
    assert all(r["extra_body"]["structured_outputs"]["choice"] for r in reqs)


def test_bench_measure_runs_small(server):
    r = subprocess.run([sys.executable, "scripts/bench_measure.py", "--videos", "4", "--sweep", "2",
                        "--base-url", server.base_url], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "measure / best bare client (c=2):" in r.stdout and "measure client CPU per request:" in r.stdout


def test_bench_prepare_runs_small():
    r = subprocess.run([sys.executable, "scripts/bench_prepare.py", "--box-mb", "1", "--videos", "8"], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "cue-render cost / plain decode+encode cost:" in r.stdout and "streamed peak RSS" in r.stdout


def test_bench_media_runs_small(server):
    r = subprocess.run([sys.executable, "scripts/bench_media.py", "--clips", "4", "--questions", "2", "--concurrency", "8",
                        "--rss-questions", "8,16", "--base-url", server.base_url], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert re.fullmatch(r"frames/data capacity ratio: \d+\.\d\d", lines[-1]), lines[-1]
    assert any(line.startswith("cache effect: frames with uuid / without:") for line in lines)


def test_bench_report_runs_small():
    r = subprocess.run([sys.executable, "scripts/bench_report.py", "--videos", "200"], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("report.build: ") and "36 paired tests" in lines[0]
    assert re.fullmatch(r"whole-number / log-space McNemar time: \d+\.\d", lines[-1]), lines[-1]


def test_bench_scale_runs_small(server):
    r = subprocess.run([sys.executable, "scripts/bench_scale.py", "--videos", "4", "--delay", "0.5", "--concurrency", "4",
                        "--base-url", server.base_url, "--base-url", server.base_url], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert re.fullmatch(r"two servers / one: \d+\.\d\dx throughput .*", lines[2]), lines[2]
    assert re.fullmatch(r"round robin / least-in-flight time: \d+\.\d\d \(goal > 1\)", lines[-1]), lines[-1]
