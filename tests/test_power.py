"""`python -m measure power`: questions and videos needed, from a dataset and a pilot run."""

from __future__ import annotations

import json
import subprocess
import sys
from math import sqrt
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.records import Prediction, to_json_line
from measure.__main__ import app


def _dataset(root, videos=30):
    root.mkdir()
    rows = []
    for v in range(videos):
        for k, qtype in enumerate(["object", "object", "verb"]):
            rows.append(
                {
                    "id": f"{v}-{k}",
                    "video_id": str(v),
                    "split": "test",
                    "type": qtype,
                    "question": "pushing _____ left",
                    "choices": ["a", "b", "c", "d"],
                    "answer": "a",
                    "template": "Pushing [something] left",
                    "label": "pushing a left",
                    "slot": 0 if k < 2 else None,
                }
            )
    (root / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    return root


def _table(output: str) -> list[dict]:
    lines = [line for line in output.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_power_with_an_assumed_discordance(tmp_path):
    data = _dataset(tmp_path / "d")
    result = CliRunner().invoke(app, ["power", "--data", str(data), "--delta", "3", "--discordance", "20"])
    assert result.exit_code == 0, result.output
    assert "90 questions on 30 videos; 1 invalid row(s) skipped" in result.output
    rows = {(r["type"], r["comparison"]): r for r in _table(result.output)}
    # Connor (1987) by hand, z(0.975) = 1.959964, z(0.8) = 0.841621, psi = 0.2, delta = 0.03:
    # (1.959964 * 0.447214 + 0.841621 * 0.446206)^2 / 0.0009 = 1.567653 / 0.0009 = 1741.84 -> 1742 pairs;
    # 60 object questions on 30 videos -> 871 videos.
    assert rows["object", "independent questions"]["questions_needed"] == "1742"
    assert rows["object", "independent questions"]["videos_needed"] == "871"
    # Worst case: a video's questions move as one; 3 questions per video -> design effect 3: 3 x 1741.84 -> 5226.
    assert float(rows["all", "worst case: videos move as one"]["deff"]) == 3
    assert rows["all", "worst case: videos move as one"]["questions_needed"] == "5226"
    # The MDE of 60 pairs at psi 0.2: D = 0.15859 solves sqrt(60) D = z_a sqrt(0.2) + z_b sqrt(0.2 - D^2)
    # (7.745967 x 0.15859 = 1.22843 = 0.87652 + 0.35192), checked here by putting it back in the equation:
    d = float(rows["object", "independent questions"]["mde"]) / 100
    assert d == pytest.approx(0.15859, abs=1e-4)
    assert sqrt(60) * d == pytest.approx(1.959964 * sqrt(0.2) + 0.841621 * sqrt(0.2 - d**2), abs=1e-4)
    assert rows["verb", "independent questions"]["mde"] == "nan"  # 30 questions: no effect detectable at 20 %
    assert "mde n/a: at this size and discordance no effect is detectable" in result.output
    assert {r["enough"] for r in rows.values()} == {"no"}


def test_power_from_a_pilot_run_and_bad_input(tmp_path):
    data = _dataset(tmp_path / "d")
    run = tmp_path / "runs" / "pilot"
    run.mkdir(parents=True)
    preds = [
        Prediction(
            question_id=f"{v}-{k}",
            video_id=str(v),
            type="object" if k < 2 else "verb",
            model="m",
            variant=variant,
            choices=["a", "b"],
            answer="a",
            reply="a" if ok else "b",
            status="ok",
            correct=ok,
        )
        for v in range(30)
        for k in range(3)
        for variant, ok in (("plain", v % 3 == 0), ("trajectory", v % 3 == 0 or (v % 3 == 1 and k == 0)))
    ]
    (run / "predictions.jsonl").write_text("".join(to_json_line(p) + "\n" for p in preds))
    result = CliRunner().invoke(app, ["power", "--data", str(data), "--run", str(run), "--delta", "5"])
    assert result.exit_code == 0, result.output
    assert "measured on pilot" in result.output
    rows = {r["type"]: r for r in _table(result.output)}
    # 10 of 60 object questions changed (one per video for videos 1, 4, ...): discordance 16.67 %.
    assert rows["object"]["comparison"] == "trajectory vs plain, m"
    assert float(rows["object"]["discordance"]) == pytest.approx(100 / 6, abs=0.01)
    assert "verb" not in rows  # no verb answer changed: nothing measured to plan with
    bad = CliRunner().invoke(app, ["power", "--data", str(data), "--delta", "0"])
    assert bad.exit_code == 2 and "--delta" in bad.output
    missing = subprocess.run(
        [sys.executable, "-m", "measure", "power", "--data", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert missing.returncode == 2 and missing.stderr.strip().endswith("nope/questions.jsonl: no questions file")
