"""One run reader: a report is a function of the run folder alone (every command that writes
it writes the same bytes), old runs report the numbers they reported, and run.json is typed
all the way down."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from core import runfiles, runs
from core.runfiles import RunRecord, TrainArgs
from tests.conftest import REPO, cli, copy_run

DATA = Path(__file__).parent / "data"
SHIPPED = REPO / "measure" / "references" / "visual_cues_qwen3_vl_2b.csv"


def _report(run: Path) -> tuple[bytes, bytes]:
    return (run / "report.md").read_bytes(), (run / "report.json").read_bytes()


CHANGED = ("schema_version", "frames", "p_holm", "survives_holm", "family", "families", "verdicts", "statistics")
NEW = (
    "interventions",
    "attention",
    "cached_pct",
    "prefills_per_clip_model",
    "videos_changed",
    "calibration",
    "summary",
    "ledger",
    "primary",
    "reference_notes",
)
# Since December 2026 each comparison draws from its own seed, and the interval is the expanded
# percentile interval (wider with few videos)
RESEEDED = ("ci_low", "ci_high")


def _numbers(x, path="", but=()):
    """Every value of a report.json but how the frames were described (reworded in v3), Holm's
    correction (within named families since v3: checked apart), the sections added since, and
    the keys `but` names."""
    if isinstance(x, dict):
        return {k: _numbers(v, f"{path}.{k}", but) for k, v in x.items() if k not in CHANGED + NEW + but}
    if isinstance(x, list):
        return [_numbers(v, path, but) for v in x]
    return "nan" if isinstance(x, float) and math.isnan(x) else x


def _as_named_now(report: dict) -> dict:
    """A report of the v2 code as this code names what it showed: the path-only cue, called
    `trajectory` before v4, is `path` (`core.runs.drawn_before_v4`), and a published
    `trajectory` row is no longer put beside it (it was not the study's cue)."""
    renamed = json.loads(json.dumps(report).replace("trajectory", "path"))
    renamed["reference"] = [r for r in renamed.get("reference", []) if r["variant"] != "path"]
    return renamed


def _unordered(x):
    """Lists compared as multisets: the tables' rows are sorted by variant name, which changed."""
    if isinstance(x, dict):
        return {k: _unordered(v) for k, v in x.items()}
    if isinstance(x, list):
        return sorted((_unordered(v) for v in x), key=lambda v: json.dumps(v, sort_keys=True))
    return x


def _intervals(report: dict) -> list[float]:
    """Every interval's ends, rows in the order of what they compare (not of the table)."""
    labels = ("model", "variant", "comparison", "type", "reference", "metric", "a", "b")
    return [
        row[k]
        for name in ("cued_vs_plain", "adapter_vs_base", "reference")
        for row in sorted(report.get(name, []), key=lambda r: [str(r.get(x)) for x in labels])
        for k in RESEEDED
        if k in row
    ]


@pytest.mark.parametrize("version, expected", [("v1", "reported-by-v2.json"), ("v2", "report.json")])
def test_old_runs_report_the_numbers_they_reported(tmp_path, version, expected):
    """The report the v2 code wrote for these runs (kept beside them), recomputed by this code
    from the upgraded files: every table, verdict and statistic the same, but the bootstrap
    intervals, which moved by at most 2.5 points when each comparison got a seed of its own and
    then widened (never narrowed) when they became expanded percentile intervals (and all of them
    are what this code wrote when it changed: recomputed.json)."""
    run = tmp_path / version
    shutil.copytree(DATA / version, run)
    r = cli(f"measure report {run}")
    assert r.returncode == 0, r.stderr[-2000:]
    before = _as_named_now(json.loads((DATA / version / expected).read_text()))
    after = json.loads((run / "report.json").read_text())
    # whether a published number lies in an interval moves with it; which of the tied template
    # moves make the top five goes by the comparisons' names, which the rename changed
    moved = (*RESEEDED, "inside_ci", "template_moves")
    assert _unordered(_numbers(after, but=moved)) == _unordered(_numbers(before, but=moved))
    low_high = list(
        zip(_intervals(before)[::2], _intervals(before)[1::2], _intervals(after)[::2], _intervals(after)[1::2])
    )
    assert len(low_high) > 5 and all(lo <= was_lo + 2.5 and hi >= was_hi - 2.5 for was_lo, was_hi, lo, hi in low_high)
    assert after == json.loads((DATA / version / "recomputed.json").read_text())
    assert after["schema_version"] == runfiles.SCHEMA_VERSION == 4
    tested = [row for name in ("cued_vs_plain", "adapter_vs_base", "audit") for row in after[name]]
    for family in {row["family"] for row in tested}:
        rows = [row for row in tested if row["family"] == family]
        assert [row["p_holm"] for row in rows] == pytest.approx(_holm([row["p_video"] for row in rows]))
        assert after["statistics"]["families"][family] == len(rows)


def _holm(p: list[float]) -> list[float]:
    """Holm's step-down adjustment, written out: the i-th smallest p times (m - i), running max."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def test_old_run_files_read_typed_all_the_way_down(tmp_path):
    for version in ("v1", "v2"):
        record = runfiles.read(RunRecord, DATA / version / "run.json")
        assert record.ask.frames.frames == 8 and record.servers[0].models[0].id == "tiny-vlm"
        assert {"tiny-vlm": None, "tiny-trained": "tiny-vlm"}.items() <= record.parents().items()
        assert all(s.req_per_s for s in record.sessions)  # derived now, no longer stored
        runfiles.write(tmp_path / "run.json", record)
        written = json.loads((tmp_path / "run.json").read_text())
        assert written["schema_version"] == 4 and "config" not in written and "frames" not in written
        assert "req_per_s" not in written["sessions"][0] and runfiles.read(RunRecord, tmp_path / "run.json") == record
    v2 = runfiles.read(RunRecord, DATA / "v2" / "run.json")
    assert v2.ask.answer_format == "letters" and v2.limit == 24
    assert v2.reference.source.endswith("visual_cues_qwen3_vl_2b.csv") and v2.reference.rows is None
    assert runs.load(DATA / "v2").reference.models == {"pretrained": "tiny-vlm", "finetuned": "tiny-trained"}
    assert runfiles.read(TrainArgs, DATA / "v2" / "train_args.json").frames.sampling == "centers"


def test_an_old_runs_cued_variants_are_named_by_what_drew_them():
    """Before v4 `prepare` drew the centre path alone as `trajectory`; the run reader names those
    clips `path` (the study's cue took the name), in its record and every record, and knows
    the drawing; the files stay as written."""
    for version in ("v1", "v2"):
        run = runs.load(DATA / version)
        assert run.record.drawings == {"path": "path/1"} and "trajectory" not in run.record.variants
        assert {p.variant for p in run.predictions} == set(run.record.variants) and run.renamed == {
            "trajectory": "path"
        }
        assert '"variant": "trajectory"' in (DATA / version / "predictions.jsonl").read_text()


def test_every_command_writes_the_same_report(server, measured, synthetic, tmp_path):
    """measure (resumed, with a reference table), measure report, measure view and measure
    rescore on the same run state: the same report.md and report.json, byte for byte."""
    run = copy_run(measured, tmp_path, "same").root
    r = cli(
        f"measure --data {synthetic} --base-url {server.base_url} --runs-dir {tmp_path} --resume same "
        f"--reference {SHIPPED} --reference-models pretrained={server.base_model},finetuned={server.adapter}"
    )
    assert r.returncode == 0 and "0 to send" in r.stderr, r.stderr[-2000:]
    first = _report(run)
    assert b"## Published numbers beside ours" in first[0] and b"## Run health" in first[0]
    for command in (["report", run], ["view", run], ["rescore", run]):
        again = cli("measure", *command)
        assert again.returncode == 0, again.stderr[-2000:]
        assert _report(run) == first, command


def test_the_judge_writes_the_report_every_other_command_writes(open_measured, tmp_path):
    copy_run(open_measured[0], tmp_path, "o")
    judged = cli("measure judge", tmp_path / "o")
    assert judged.returncode == 0, judged.stderr[-2000:]
    first = _report(tmp_path / "o")
    assert b"## Open questions" in first[0] and b"## Run health" in first[0]
    for command in (["report", tmp_path / "o"], ["view", tmp_path / "o"], ["judge", tmp_path / "o"]):
        again = cli("measure", *command)
        assert again.returncode == 0, again.stderr[-2000:]
        assert _report(tmp_path / "o") == first, command


def test_compare_leaves_out_a_variant_the_two_runs_drew_differently(tmp_path):
    """Two runs with the same variant name on clips drawn differently are never compared as one:
    that variant is left out, saying so; the rest are compared."""
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(DATA / "v2", a)
    shutil.copytree(DATA / "v2", b)
    record = runfiles.read(RunRecord, b / "run.json")  # as v4 writes it
    record.drawings = {"path": "box-path/1"}
    record.variants = ["path" if v == "trajectory" else v for v in record.variants]
    runfiles.write(b / "run.json", record)
    (b / "predictions.jsonl").write_text((b / "predictions.jsonl").read_text().replace('"trajectory"', '"path"'))
    r = cli(f"measure compare {a} {b}")
    assert r.returncode == 0, r.stderr
    assert "`path` left out: its clips were drawn as path/1 in a and as box-path/1 in b." in r.stderr
    side, pairs = r.stdout.split("\n# b − a ")
    assert "| path " in side  # each run's own accuracy, side by side
    assert "| path " not in pairs and "| plain " in pairs  # never paired across drawings
