"""`python -m measure calibrate`: runs simulated from a model fitted to the run (not the test's
own randomisation), scored by the report's own code, keep the promises of its tests and
intervals (false positives near alpha under the null and a weak null, coverage near 95 %,
power near its prediction); a deliberately broken procedure is flagged; and the report's
statistics agree with textbook ones written here."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from core import runfiles
from core.layout import RunLayout
from core.runfiles import ReportRecord
from core.runs import Run
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
    """On 50 videos: the tests reject a true null, and a mean-zero skewed (weak) null, at most
    about 5 % of the time (per comparison and family-wise after Holm), the intervals cover 0 and
    a planted effect about 95 % of the time; the verdict says the promises are kept."""
    c = json.loads(calibrated.calibration.read_text())
    t = pd.DataFrame(c["comparisons"])
    assert c["sims"] == 400 and set(t["family"]) == {"primary", "secondary"} and c["procedure"] == "report"
    trusted = t[t["videos_changed"] >= stats.MIN_CHANGED]
    assert len(trusted) >= 6
    for null in ("null", "weak"):
        assert trusted[f"{null}_rejection"].max() <= 9 and trusted[f"{null}_rejection"].mean() <= 6
        assert trusted[f"{null}_coverage"].min() >= 91
    assert all(v <= 0.07 for v in [*c["familywise"].values(), *c["weak_familywise"].values()])
    planted = t[t["power"].notna()]
    assert len(planted) >= 4 and planted["coverage"].min() >= 91, planted
    assert planted["predicted_power"].between(79, 82).all()  # planted at the MDE: about 80 % power predicted
    assert planted["power"].between(50, 100).all() and abs(planted["power"].mean() - 80) <= 15, planted
    assert "the report's procedure keeps its promises" in calibrated.report_md.read_text()


def _clustered(videos: int = 40, per: int = 10, seed: int = 0) -> Run:
    """Answers whose videos matter: `per` questions a video, each video's accuracy its own, the
    adapter's and the cue's answers changed at random half the time (no effect on average)."""
    rng = np.random.default_rng(seed)
    preds = []
    for v in range(videos):
        skill = rng.normal()
        for i in range(per):
            for model in ("base", "adapter"):
                plain = bool(rng.random() < 1 / (1 + np.exp(-(0.8 + skill))))
                for variant in ("plain", "trajectory"):
                    right = plain if variant == "plain" or rng.random() < 0.5 else bool(rng.random() < 0.7)
                    q = dict(video_id=f"v{v:03d}", type=("object", "verb")[i % 2], variant=variant, model=model)
                    preds.append(pred(f"v{v:03d}-{i}", correct=right, choices=list("abcd"), **q))
    return Run(preds, parents={"base": None, "adapter": "base"})


@pytest.mark.slow  # 300 simulations of 4 procedures on 18 comparisons: seconds
def test_a_broken_procedure_is_flagged_and_the_reports_is_not():
    """The check can fail: on a run whose videos matter, calibrate flags a bootstrap that
    resamples questions, an unpaired test and interval, and no correction within a family,
    each in words; the report's procedure passes on the same run."""
    run = _clustered()
    verdicts = {p: calibrate.verdict(calibrate.calibrate(run, 300, procedure=p)) for p in calibrate.PROCEDURES}
    assert verdicts["report"].endswith(
        "keeps its promises on data like this run's: no test or interval fails its check"
    )
    assert (
        "`questions-bootstrap` FAILS" in verdicts["questions-bootstrap"]
        and "intervals under the weak null" in (verdicts["questions-bootstrap"])
    )
    assert "`unpaired` FAILS" in verdicts["unpaired"] and "is predicted" in verdicts["unpaired"]
    assert "`no-holm` FAILS" in verdicts["no-holm"] and "family-wise false positives" in verdicts["no-holm"]


def test_the_model_is_fitted_to_the_run_not_the_tests_randomisation():
    """The simulations' null is not the sign-flip test's own randomisation: videos differ in
    accuracy and in discordance as the run's do, questions of a video move together, and the
    weak null's per-video differences are skewed (mean 0, not symmetric)."""
    run = _clustered()
    g = next(
        x for x in calibrate.groups(run) if x.labels.get("variant") == "trajectory" and x.labels["model"] == "base"
    )
    f = calibrate.fit(g)
    assert f.spread > 0.3 and np.allclose(f.discordance, [(g.a != g.b)[g.kind == k].mean() for k in range(2)])
    rng = np.random.default_rng(0)
    k = g.video.max() + 1
    a, b = calibrate.simulate(g, f, calibrate.leans("weak", 2000, k, rng), rng)
    per_video = np.stack([(b - a)[:, g.video == v].sum(axis=1) for v in range(k)], axis=1)
    assert abs((b - a).mean()) < 0.01  # mean 0 ...
    below, above = (per_video < 0).mean(), (per_video > 0).mean()
    assert below - above > 0.01  # ... yet more videos lean to a than to b (80,000 of them): not a sign flip's symmetry
    acc = np.stack([((a + b) / 2)[:, g.video == v].mean(axis=1) for v in range(k)], axis=1)
    assert acc.std(axis=1).mean() > 0.12  # videos differ in accuracy, as the run's do


def _textbook_p(diffs: np.ndarray, videos: np.ndarray) -> float:
    """The sign-flip test from its definition: each video's summed difference keeps or flips its
    sign with probability 1/2; the chance of a total at least as far from 0 as the observed one,
    its distribution built video by video (every reachable total and its probability)."""
    sums = [int(diffs[videos == v].sum()) for v in sorted(set(videos))]
    totals = {0: 1.0}
    for x in sums:
        nxt: dict[int, float] = {}
        for t, pr in totals.items():
            for step in (x, -x):
                nxt[t + step] = nxt.get(t + step, 0.0) + pr / 2
        totals = nxt
    observed = abs(sum(sums))
    return sum(pr for t, pr in totals.items() if abs(t) >= observed)


def _textbook_interval(diffs: np.ndarray, videos: np.ndarray, seed: int) -> tuple[float, float]:
    """The cluster bootstrap from its definition: draw as many videos as there are, with
    replacement, take the mean difference over all their questions; 2.5th and 97.5th percentiles."""
    rng = random.Random(seed)
    ids = sorted(set(videos))
    by_video = {v: diffs[videos == v] for v in ids}
    means = []
    for _ in range(4000):
        drawn = [by_video[rng.choice(ids)] for _ in ids]
        means.append(sum(x.sum() for x in drawn) / sum(len(x) for x in drawn))
    means.sort()
    return means[int(0.025 * len(means))], means[int(0.975 * len(means)) - 1]


def test_the_reports_statistics_agree_with_textbook_ones(calibrated):
    """On every comparison of the calibrated run: the report's p-value is the textbook sign-flip
    test's exactly, and its interval the textbook
    cluster bootstrap's within 2.5 points (it is an expanded percentile interval: a little
    wider with few videos; and another draw); the report's families are calibrate's."""
    from core import runs

    run = runs.load(calibrated)
    checked = 0
    for g in calibrate.groups(run):
        for part in g.parts:
            a, b, v = g.a[part.rows], g.b[part.rows], g.video[part.rows]
            row = stats.paired(a, b, v, seed=part.seed)
            assert row.p_video == pytest.approx(_textbook_p(b - a, v), abs=1e-12)
            low, high = _textbook_interval(b - a, v, seed=part.seed)
            assert abs(row.ci_low / 100 - low) <= 0.025 and abs(row.ci_high / 100 - high) <= 0.025
            checked += 1
    assert checked >= 9
    c = json.loads(calibrated.calibration.read_text())
    families = json.loads(calibrated.report_json.read_text())["statistics"]["families"]
    assert c["tests"] == {name: n for name, n in families.items() if name in c["tests"]}
    assert sum(c["tests"].values()) == sum(families[name] for name in ("primary", "secondary"))


@pytest.mark.slow
def test_calibration_is_a_seeded_part_of_the_report_from_the_folder_alone(calibrated, tmp_path):
    """The same seed gives the same calibration.json; the report shows it, the same bytes from any
    command and from the predictions in any order."""
    first = calibrated.calibration.read_bytes()
    report = calibrated.report_md.read_text()
    assert "## Calibration (measure calibrate)" in report and "false positives at alpha 0.05 (null)" in report
    assert json.loads(calibrated.report_json.read_text())["calibration"][1].startswith("400 simulated runs")
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
    """Vectorised over simulations, the sign-flip p-value and the interval are the report's own
    functions: each simulated row gives what the report gives on it alone."""
    rng = np.random.default_rng(5)
    for k in (5, 12, 40):
        sizes = rng.integers(1, 4, size=k).astype(float)
        sums = rng.integers(-2, 3, size=(20, k)).astype(float)
        p = stats.sign_flip_exact(sums)
        low, high = stats.bootstrap_bounds(sums, np.broadcast_to(sizes, sums.shape).copy(), seed=9)
        for row in range(len(sums)):
            assert p[row] == stats.sign_flip_p(sums[row])  # one value per cluster
            one = stats.bootstrap_bounds(sums[row][None], sizes[None], seed=9)
            assert (low[row], high[row]) == pytest.approx((one[0][0], one[1][0]), abs=1e-12)


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
    assert in_process(["measure", "report", str(layout)]).returncode == 0
    said = runfiles.read(ReportRecord, RunLayout(layout).report_json).verdicts
    line = next(x for x in said if x.startswith("trajectory vs plain, verb, m"))
    assert "only 2 videos changed: too few for the interval to be trusted" in line, line
    row = {"ci_low": 0.5, "ci_high": 9.0, "p_video": 0.06, "p_holm": 0.2, "videos_changed": 30}
    assert "the interval excludes 0 but the test does not reject" in caveat(row)
    row |= {"p_video": 0.01, "p_holm": 0.08}
    assert "not corrected for the family's other tests" in caveat(row)
    full = row | dict(n=90, videos=30, delta=4.0, only_a=3, only_b=9, mde=8.0, family="primary")
    assert verdict("x vs y", full, {"primary": 4}).endswith(caveat(full))
