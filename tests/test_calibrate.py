"""`python -m measure calibrate`: the report's tests and intervals simulated on a run's own
videos keep their promises (false positives near alpha, coverage near 95 %, power near its
prediction), and what they cannot promise is said in the report."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from core.layout import RunLayout
from core.store import PredictionStore
from measure.report import calibrate, stats
from measure.report.tables import caveat, verdict
from tests.conftest import in_process, pred

VARIANTS = ("plain", "trajectory", "blind")


def _run(root, videos: int, seed: int = 0) -> RunLayout:
    """A run made by hand: plain right 60-80 % of the time, trajectory changing a fifth of the
    answers both ways (no effect), blind at chance; 1-4 questions per video."""
    rng = np.random.default_rng(seed)
    preds = []
    for v in range(videos):
        for i in range(int(rng.integers(1, 5))):
            qtype = "object" if i == 0 else "verb"
            plain = bool(rng.random() < (0.8 if qtype == "object" else 0.6))
            moved = plain if rng.random() < 0.8 else not plain
            for variant, right in zip(VARIANTS, (plain, moved, bool(rng.random() < 0.25))):
                q = dict(video_id=f"v{v:03d}", type=qtype, variant=variant, choices=list("abcd"))
                preds.append(pred(f"v{v:03d}-{i}", correct=right, **q))
    layout = RunLayout(root)
    root.mkdir(parents=True)
    PredictionStore(layout).rewrite(preds)
    return layout


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> RunLayout:
    layout = _run(tmp_path_factory.mktemp("calibrate") / "run", videos=50)
    r = in_process(["measure", "calibrate", str(layout.root), "--sims", "400"])
    assert r.returncode == 0, r.stderr
    assert "## Calibration (measure calibrate)" in r.stdout and "calibrating" in r.stderr
    return layout


@pytest.mark.slow  # 400 simulations of 9 comparisons: seconds
def test_calibrate_keeps_the_promises_of_the_tests_and_intervals(calibrated):
    """On 50 videos: the tests reject a true null at most about 5 % of the time (per comparison and
    family-wise after Holm), the intervals cover 0 and a planted effect about 95 % of the time."""
    c = json.loads(calibrated.calibration.read_text())
    t = pd.DataFrame(c["comparisons"])
    assert c["sims"] == 400 and set(t["family"]) == {"primary", "secondary"}
    trusted = t[t["videos_changed"] >= stats.MIN_CHANGED]
    assert len(trusted) >= 6 and trusted["null_rejection"].max() <= 8 and trusted["null_rejection"].mean() <= 6
    assert trusted["null_coverage"].min() >= 92 and all(v <= 0.07 for v in c["familywise"].values())
    planted = t[t["power"].notna()]
    assert len(planted) >= 4 and planted["coverage"].min() >= 92, planted
    assert planted["predicted_power"].between(79, 82).all()  # planted at the MDE: about 80 % power predicted
    assert planted["power"].between(50, 100).all() and abs(planted["power"].mean() - 80) <= 15, planted


@pytest.mark.slow
def test_calibration_is_a_seeded_part_of_the_report_from_the_folder_alone(calibrated, tmp_path):
    """The same seed gives the same calibration.json; the report shows it, the same bytes from any
    command and from the predictions in any order."""
    first = calibrated.calibration.read_bytes()
    report = calibrated.report_md.read_text()
    assert "## Calibration (measure calibrate)" in report and "false-positive rate at alpha 0.05" in report
    assert json.loads(calibrated.report_json.read_text())["calibration"][0].startswith("400 simulations")
    r = in_process(["measure", "calibrate", str(calibrated.root), "--sims", "400"])
    assert r.returncode == 0 and calibrated.calibration.read_bytes() == first
    lines = calibrated.predictions.read_text().splitlines(keepends=True)
    random.Random(1).shuffle(lines)
    calibrated.predictions.write_text("".join(lines))
    assert in_process(["measure", "report", str(calibrated.root)]).returncode == 0
    assert calibrated.report_md.read_text() == report


@pytest.mark.slow
def test_calibrate_plants_a_given_effect_and_refuses_bad_input(tmp_path):
    layout = _run(tmp_path / "run", videos=30, seed=1)
    r = in_process(["measure", "calibrate", str(layout.root), "--sims", "100", "--effect", "10", "--seed", "3"])
    assert r.returncode == 0, r.stderr
    c = json.loads(layout.calibration.read_text())
    assert c["effect"] == 10 and c["seed"] == 3
    assert {x["planted"] for x in c["comparisons"] if x["planted"] is not None} == {10.0}
    bad = in_process(["measure", "calibrate", str(layout.root), "--sims", "0"])
    assert bad.returncode == 2 and "--sims (0) must be at least 1" in bad.stderr
    empty = tmp_path / "plain-only"
    empty.mkdir()
    PredictionStore(RunLayout(empty)).rewrite([pred("q1"), pred("q2")])
    none = in_process(["measure", "calibrate", str(empty)])
    assert none.returncode == 2 and "no paired comparison" in none.stderr, none.stderr


def test_the_simulations_compute_p_values_as_the_report_does():
    """Vectorised over simulations, the sign-flip p-value is the report's: exactly, up to
    EXACT_PERM changed videos; within Monte Carlo error beyond."""
    rng = np.random.default_rng(5)
    for k in (5, 12, 40):
        magnitudes = rng.integers(0, 3, size=k).astype(float)
        signs = np.where(rng.random((20, k)) < 0.5, 1.0, -1.0)
        null, exact = calibrate.null_distribution(magnitudes, seed=9)
        got = calibrate.p_values((signs * magnitudes).sum(axis=1), null, exact)
        want = [stats.sign_flip_p(row * magnitudes) for row in signs]
        if exact:
            assert np.array_equal(got, want)
        else:
            assert np.abs(got - want).max() < 0.03


def test_the_interval_is_as_wide_as_t_with_few_videos():
    assert stats.t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)  # t tables
    assert stats.t_quantile(0.975, 9) == pytest.approx(2.2622, abs=1e-4)
    assert stats.expanded_tail(2) < 1e-6 and stats.expanded_tail(10) < 0.01
    assert stats.expanded_tail(100_000) == pytest.approx(0.025, abs=1e-4)


def test_a_comparison_of_too_few_videos_or_a_disagreeing_interval_says_so(tmp_path):
    """Two videos both better: the interval excludes 0, no test can reject: the verdict says why.
    An interval that excludes 0 beside a test that does not reject is never left without a word."""
    layout = tmp_path / "run"
    layout.mkdir()
    preds = [
        pred(f"v{v}-{i}", video_id=f"v{v}", variant=variant, correct=variant == "trajectory" or i == 0)
        for v in range(2)
        for i in range(3)
        for variant in ("plain", "trajectory")
    ]
    PredictionStore(RunLayout(layout)).rewrite(preds)
    r = in_process(["measure", "report", str(layout)])
    line = next(x for x in r.stdout.splitlines() if x.startswith("- trajectory vs plain, verb, m"))
    assert "only 2 changed: too few videos for the interval to be trusted" in line, line
    row = {"ci_low": 0.5, "ci_high": 9.0, "p_video": 0.06, "p_holm": 0.2, "videos_changed": 30}
    assert "the interval excludes 0 but the test does not reject" in caveat(row)
    row |= {"p_video": 0.01, "p_holm": 0.08}
    assert "not corrected for the family's other tests" in caveat(row)
    full = row | dict(n=90, videos=30, delta=4.0, only_a=3, only_b=9, mde=8.0, family="primary")
    assert verdict("x vs y", full, {"primary": 4}).endswith(caveat(full))
