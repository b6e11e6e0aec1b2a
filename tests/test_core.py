"""core: file modes, one key, typed run files that read the files written before them, the
CLI built from one dataclass, and a floor that imports none of the rooms above it."""

from __future__ import annotations

import ast
import json
import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from core import runfiles
from core.cli import comma_list, command, group, option
from core.errors import DataError
from core.files import atomic_dir, atomic_path, atomic_write, umask
from core.layout import RunLayout
from core.records import Question, key, key_of, read_questions, to_json_line
from core.runfiles import Manifest, ReportRecord, RunRecord, TrainArgs
from core.runs import Run
from core.store import PredictionStore
from measure import report
from measure.ask.client import Item
from tests.conftest import REPO, cli

V1 = Path(__file__).parent / "data" / "v1"  # files written by the code before core/ existed


@pytest.fixture
def mask():
    """Set the umask for one test, then put it back."""
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    "m, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)]
)
def test_written_files_get_the_mode_a_plain_open_would(tmp_path, mask, m, file_mode, dir_mode):
    mask(m)
    assert umask() == m
    atomic_write(tmp_path / "a.md", "x")
    with atomic_path(tmp_path / "b.mp4") as tmp:
        tmp.write_bytes(b"y")
    atomic_dir(tmp_path / "model", lambda d: (d / "w").write_text("z"))
    with open(tmp_path / "plain", "w"):
        pass
    assert _mode(tmp_path / "plain") == file_mode
    assert _mode(tmp_path / "a.md") == _mode(tmp_path / "b.mp4") == file_mode
    assert _mode(tmp_path / "model") == dir_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "b.mp4", "model", "plain"]  # no temp files left


def test_models_and_adapters_are_readable_by_others(tiny, tmp_path):
    """safetensors writes its files private (0600): the models and adapters built here are not
    (the tiny model and its adapter, under umask 022)."""
    for path in [tiny.model / "model.safetensors", tiny.adapter / "adapter_model.safetensors"]:
        assert _mode(path) & 0o044 == 0o044, (path, oct(_mode(path)))
    atomic_dir(tmp_path / "m", lambda d: os.close(os.open(d / "w.safetensors", os.O_CREAT | os.O_WRONLY, 0o600)))
    assert _mode(tmp_path / "m" / "w.safetensors") == 0o666 & ~umask()


def test_prepared_data_is_readable_by_others(synthetic):
    """The session dataset was written by the real CLI under umask 022."""
    for path in [
        synthetic / "questions.jsonl",
        synthetic / "manifest.json",
        *sorted((synthetic / "clips").rglob("*.mp4"))[:3],
    ]:
        assert _mode(path) & 0o044 == 0o044, path


def test_one_key_for_items_predictions_and_rows():
    q = read_questions_from_rows()[0]
    item = Item(q, "m", "plain", None)
    row = {"question_id": q.id, "model": "m", "variant": "plain", "other": 1}
    assert item.key == key(q.id, "m", "plain") == key_of(row)


def read_questions_from_rows() -> list[Question]:
    path = V1 / "questions.jsonl"
    return read_questions(path)


def test_v1_run_files_are_read(tmp_path):
    run = runfiles.read(RunRecord, V1 / "run.json")
    assert run.run_id.startswith("synthetic-") and run.sessions[0].to_send > 0
    assert run.parents() == {"tiny-vlm": None, "tiny-trained": "tiny-vlm"}
    manifest = runfiles.read(Manifest, V1 / "manifest.json")
    assert manifest.kind == "ssv2" and manifest.counts["questions"] > 0
    assert runfiles.read(TrainArgs, V1 / "train_args.json").rank == 16
    assert runfiles.read(ReportRecord, V1 / "report.json").accuracy[0]["model"]
    # what is written now reads back the same, with the current schema_version
    runfiles.write(tmp_path / "run.json", run)
    assert json.loads((tmp_path / "run.json").read_text())["schema_version"] == runfiles.SCHEMA_VERSION
    assert runfiles.read(RunRecord, tmp_path / "run.json") == run


def test_bad_and_newer_run_files_name_the_file_and_field(tmp_path):
    raw = json.loads((V1 / "run.json").read_text())
    (tmp_path / "newer.json").write_text(json.dumps(raw | {"schema_version": 99}))
    with pytest.raises(DataError, match=r"newer.json: schema_version 99 is newer"):
        runfiles.read(RunRecord, tmp_path / "newer.json")
    (tmp_path / "bad.json").write_text(json.dumps(raw | {"sessions": [{"started": "x", "to_send": "many"}]}))
    with pytest.raises(DataError, match=r"bad.json: not a RunRecord file: sessions.0.to_send"):
        runfiles.read(RunRecord, tmp_path / "bad.json")


def test_v1_predictions_load_and_report(tmp_path):
    run = tmp_path / "old-run"
    shutil.copytree(V1, run)
    preds = PredictionStore(RunLayout(run)).load()
    assert len(preds) == 40 and all(p.schema_version == runfiles.SCHEMA_VERSION for p in preds.values())
    assert all(p.verb and p.verb in p.template.lower() for p in preds.values())  # upgraded: verb from the template
    r = report.build(Run(list(preds.values()), parents=runfiles.read(RunRecord, run / "run.json").parents()))
    assert set(r.table.index.get_level_values("model")) == {"tiny-vlm", "tiny-trained"}
    assert not r.adapter_vs_base.empty and set(r.moves["level"]) <= {"template", "verb"}
    out = cli(f"measure report {run}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert runfiles.read(ReportRecord, run / "report.json").schema_version == runfiles.SCHEMA_VERSION
    again = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert all("schema_version" not in row for row in again)  # reports never rewrite the source of truth


def test_records_carry_their_schema_version():
    q = read_questions_from_rows()[0]
    row = json.loads(to_json_line(q))
    assert row["schema_version"] == runfiles.SCHEMA_VERSION and row["verb"] == q.verb


@dataclass
class _Inner:
    frames: int = option(8, "Frames.")


@dataclass
class _Opts:
    names: Sequence[str] = option(("a", "b"), "Names.", parser=comma_list)
    port: int = option(8000, "Port.", envvar="TEST_CORE_PORT")
    flag: bool = option(False, "A flag.")
    inner: _Inner = group(_Inner)
    not_an_option: str = "kept"


def test_a_command_is_built_from_one_dataclass():
    app = typer.Typer()
    seen = []
    command(app, _Opts)(seen.append)
    runner = CliRunner()
    assert runner.invoke(app, []).exit_code == 0
    assert seen[-1] == _Opts()  # the CLI's defaults are the dataclass's
    assert (
        runner.invoke(app, ["--names", "x, y", "--flag", "--frames", "3"], env={"TEST_CORE_PORT": "9"}).exit_code == 0
    )
    assert seen[-1] == _Opts(names=("x", "y"), port=9, flag=True, inner=_Inner(frames=3))
    bad = runner.invoke(app, ["--frames", "many"])
    assert bad.exit_code == 2 and "--frames" in bad.output


def _imports(folder: Path) -> list[tuple[str, str]]:
    """(file, module imported) for every import of the .py files under `folder`."""
    out = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out += [(path.name, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                out.append((path.name, node.module or ""))
    return out


def test_core_imports_none_of_the_packages_above_it():
    rooms = {"prepare", "serve", "measure", "train", "interpret"}
    wrong = [(f, m) for f, m in _imports(REPO / "core") if m.split(".")[0] in rooms]
    assert not wrong, wrong


def test_within_measure_the_arrows_run_one_way():
    """ask -> score -> report: asking scores each reply as it comes; scoring and reporting never
    reach back into asking (what both need, prompts and transport, lives in core)."""
    back = [(f"score/{f}", m) for f, m in _imports(REPO / "measure" / "score") if m.startswith("measure.ask")]
    back += [(f"report/{f}", m) for f, m in _imports(REPO / "measure" / "report") if m.startswith("measure.ask")]
    assert not back, back
    private = [
        (f, m)
        for folder in ("core", "measure", "prepare", "serve", "train", "interpret", "scripts")
        for f, m in _imports(REPO / folder)
        if any(part.startswith("_") and part != "__future__" for part in m.split("."))
        and m.split(".")[0] in ("typer", "click")
    ]
    assert not private, private  # nothing private of typer or click
