"""Every error exit of the command lines: one line naming the file or URL and the reason,
exit code 2, no traceback (one helper, `core.cli`, for all of them)."""

from __future__ import annotations

import subprocess

import pytest

from core.urls import ServerUrl
from serve.command import free_port
from tests.conftest import SAMPLE, cli, needs_sample


def _one_error_line(r: subprocess.CompletedProcess, *names: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr + r.stdout
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


@needs_sample
def test_prepare_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing_boxes.json"
    r = cli(
        "prepare ssv2 --videos",
        str(SAMPLE / "videos"),
        "--labels",
        str(SAMPLE / "labels"),
        "--boxes",
        str(missing),
        "--out",
        str(tmp_path / "out"),
    )
    _one_error_line(r, str(missing), "No such file")
    r = cli(
        "prepare ssv2 --videos",
        str(SAMPLE / "videos"),
        "--labels",
        str(tmp_path / "nolabels"),
        "--boxes",
        str(missing),
        "--out",
        str(tmp_path / "out"),
    )
    _one_error_line(r, str(tmp_path / "nolabels"))
    r = cli("prepare arrow-of-time --from", str(tmp_path / "nodata"))
    _one_error_line(r, str(tmp_path / "nodata"), "reversed")


def test_measure_errors_name_the_file(tmp_path, synthetic):
    r = cli("measure --data", str(tmp_path / "nodata"), "--base-url", ServerUrl.local(free_port()).v1)
    _one_error_line(r, str(tmp_path / "nodata"))
    r = cli(f"measure --data {synthetic} --base-url {ServerUrl.local(free_port()).v1}")
    _one_error_line(r, "unreachable")
    r = cli(f"measure report no-such-run --runs-dir {tmp_path}")
    _one_error_line(r, str(tmp_path / "no-such-run"), "predictions.jsonl")
    run = tmp_path / "run"
    run.mkdir()
    (run / "predictions.jsonl").write_text('{"question_id": "1"}\nnot json\n')
    r = cli(f"measure report {run}")
    _one_error_line(r, f"{run / 'predictions.jsonl'}:1")


def test_serve_errors_name_the_url_or_path(tmp_path, tiny):
    dead = ServerUrl.local(free_port()).v1
    _one_error_line(cli(f"serve wait --base-url {dead} --timeout 1"), dead, "not ready")
    r = cli(f"serve run --model {tiny.model} --adapters", f"x={tmp_path / 'nope'}", "--port", str(free_port()))
    _one_error_line(r, str(tmp_path / "nope"), "not found")


@pytest.mark.timeout(300)
def test_train_errors_name_the_file(tmp_path, tiny):
    r = cli(f"train --model {tiny.model} --data", str(tmp_path / "nodata"), "--out", str(tmp_path / "a"))
    _one_error_line(r, str(tmp_path / "nodata"), "no questions file")
