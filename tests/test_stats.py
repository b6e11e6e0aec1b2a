"""Statistics against hand-computed cases."""

from __future__ import annotations

from math import isnan, sqrt

import numpy as np
import pandas as pd
import pytest

from core import runfiles
from core.layout import RunLayout
from core.runfiles import ReportRecord
from core.runs import Run
from measure import report
from measure.report import render, stats, tables
from measure.report.stats import (
    N_BOOT,
    N_PERM,
    SEED,
    bootstrap_ci,
    clusters,
    design_effect,
    holm,
    mcnemar_exact,
    mde,
    paired,
    pairs_needed,
    resampled_means,
    sign_flip_p,
)
from measure.report.tables import verdict
from tests.conftest import pred


def test_mcnemar_exact_matches_hand_computed_binomial_tails():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(5, 5) == 1.0  # capped at 1
    assert mcnemar_exact(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024)


def test_bootstrap_ci_is_zero_width_on_identical_samples_and_seeded():
    same = np.ones(50)
    assert bootstrap_ci(same) == (1.0, 1.0)
    r = paired(np.array([1, 0, 1, 1]), np.array([1, 0, 1, 1]))
    assert (r.delta, r.ci_low, r.ci_high, r.p_mcnemar) == (0.0, 0.0, 0.0, 1.0)
    x = np.random.default_rng(3).integers(0, 2, 200).astype(float)
    low, high = bootstrap_ci(x)
    assert low < x.mean() < high


def test_paired_counts_and_delta():
    a = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0])
    b = np.array([1, 0, 1, 1, 1, 1, 1, 0, 0, 0])
    r = paired(a, b)
    assert (r.n, r.only_a, r.only_b) == (10, 1, 4)
    assert r.acc_a == 30.0 and r.acc_b == 60.0 and r.delta == pytest.approx(30.0)
    assert r.p_mcnemar == pytest.approx(2 * (1 + 5) / 32)
    assert r.ci_low <= r.delta <= r.ci_high
    with pytest.raises(ValueError, match="differ in length"):
        paired(a, b[:-1])


def test_cluster_bootstrap_resamples_whole_videos_hand_computed():
    # Video A: two questions, both improved (+1, +1); video B: one question, unchanged (0).
    diffs, videos = np.array([1.0, 1.0, 0.0]), ["A", "A", "B"]
    sums, sizes = clusters(diffs, videos)  # ordered by (sum, size): B, then A
    assert sums.tolist() == [0.0, 2.0] and sizes.tolist() == [1.0, 2.0]
    # The four resamples of two videos: BB -> 0/1, BA and AB -> 2/3, AA -> 4/4.
    draws = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    assert resampled_means(sums, sizes, draws).tolist() == pytest.approx([0.0, 2 / 3, 2 / 3, 1.0])
    # The CI is the percentile of exactly those means over the seeded draws.
    rng = np.random.default_rng(SEED)
    means = resampled_means(sums, sizes, rng.integers(0, 2, size=(N_BOOT, 2)))
    assert set(np.round(means, 9)) == {0.0, round(2 / 3, 9), 1.0}
    assert abs((means == 1.0).mean() - 0.25) < 0.03 and abs((means == 0.0).mean() - 0.25) < 0.03
    assert bootstrap_ci(diffs, videos) == (np.quantile(means, 0.025), np.quantile(means, 0.975)) == (0.0, 1.0)
    # Question-level resampling would have treated A's questions as independent: other means.
    q_means = resampled_means(diffs, np.ones(3), np.random.default_rng(SEED).integers(0, 3, size=(N_BOOT, 3)))
    assert round(1 / 3, 9) in set(np.round(q_means, 9))  # impossible when videos are resampled


def test_cluster_bootstrap_equals_question_level_with_one_question_per_video():
    x = np.random.default_rng(5).integers(-1, 2, 300).astype(float)
    ids = [f"v{i}" for i in range(300)]
    # The question-level bootstrap written out by hand: resample questions (in sorted order, as
    # every statistic takes them), take the mean.
    rng = np.random.default_rng(SEED)
    means = np.sort(x)[rng.integers(0, 300, size=(N_BOOT, 300))].mean(axis=1)
    by_hand = (np.quantile(means, 0.025), np.quantile(means, 0.975))
    assert bootstrap_ci(x, ids) == pytest.approx(by_hand, abs=1e-12)
    assert bootstrap_ci(x) == pytest.approx(by_hand, abs=1e-12)
    a = (x == -1).astype(float)
    b = (x == 1).astype(float)
    assert paired(a, b, ids) == paired(a, b)


def test_sign_flip_test_flips_whole_videos():
    assert sign_flip_p([0, 0, 0], ["a", "b", "c"]) == 1.0
    # Per-video sums 2, 1, 1 (observed |4|): only all-plus and all-minus of 8 patterns reach it.
    assert sign_flip_p([1, 1, 1, 1], ["a", "a", "b", "c"]) == pytest.approx(2 / 8)
    # Per-video sums 2 and -1 (observed 1): every pattern is at least as extreme.
    assert sign_flip_p([1, 1, -1], ["a", "a", "b"]) == 1.0
    # Four improved questions in one video are one piece of evidence, not four.
    assert sign_flip_p([1, 1, 1, 1], ["a", "a", "a", "a"]) == 1.0
    assert sign_flip_p([1, 1, 1, 1]) == pytest.approx(2 / 16)


@pytest.mark.parametrize("b,c", [(0, 5), (1, 9), (2, 8), (5, 5), (3, 0), (7, 2)])
def test_sign_flip_with_one_question_per_video_is_exact_mcnemar(b, c):
    diffs = [-1] * b + [1] * c + [0] * 4
    assert sign_flip_p(diffs, [f"v{i}" for i in range(len(diffs))]) == pytest.approx(mcnemar_exact(b, c))


def test_sign_flip_is_exact_for_whole_number_sums_at_any_size():
    """0/1 outcomes sum to whole numbers per video: the test is exact however many videos
    changed (38 here: past the enumeration's EXACT_PERM), by the binomials' convolution, the
    same as enumerating every sign pattern; measured (float) differences past EXACT_PERM are
    drawn, seeded."""
    diffs = [-1] * 12 + [1] * 26
    assert sign_flip_p(diffs) == pytest.approx(mcnemar_exact(12, 26), abs=1e-12)
    rng = np.random.default_rng(3)
    for _ in range(20):
        k = int(rng.integers(1, 13))
        d = rng.integers(-3, 4, size=k).astype(float)
        signs = 1 - 2 * ((np.arange(2**k)[:, None] >> np.arange(k)) & 1)
        by_hand = float((np.abs(signs @ d) >= abs(d.sum()) - 1e-9).mean())
        assert stats.sign_flip_exact(d[None])[0] == pytest.approx(by_hand, abs=1e-12)
    floats = rng.random(30) - 0.3
    p = sign_flip_p(floats, seed=4)
    assert p == sign_flip_p(floats, seed=4) and p >= 1 / (N_PERM + 1)


def test_every_statistic_is_the_same_whatever_the_order_of_its_pairs():
    """Rows arrive in any order (answers come back as they finish): the same pairs, shuffled,
    give the same numbers to the last bit, for 0/1 outcomes and for measured (float) values,
    with the bootstrap and the drawn sign-flip test past their exact ranges."""
    rng = np.random.default_rng(7)
    n = 400
    videos = np.array([f"v{i:03d}" for i in rng.integers(0, 120, n)])
    a, b = rng.integers(0, 2, n).astype(float), rng.integers(0, 2, n).astype(float)
    fa, fb = rng.random(n) * 1e3, rng.random(n) * 1e3 + 0.1  # sums of these depend on their order
    for _ in range(3):
        o = rng.permutation(n)
        assert stats.paired(a[o], b[o], videos[o], seed=11) == stats.paired(a, b, videos, seed=11)
        assert stats.paired_mean(fa[o], fb[o], videos[o], seed=11) == stats.paired_mean(fa, fb, videos, seed=11)
        assert sign_flip_p((fb - fa)[o], videos[o]) == sign_flip_p(fb - fa, videos)
        assert bootstrap_ci(fa[o]) == bootstrap_ci(fa)  # one value per cluster too
        assert design_effect((fb - fa)[o], videos[o]) == design_effect(fb - fa, videos)


def test_a_comparisons_seed_is_its_name_hashed_the_same_everywhere():
    assert stats.seed_for("m", "trajectory", "all") == stats.seed_for("m", "trajectory", "all")
    assert stats.seed_for("m", "trajectory", "all") != stats.seed_for("m", "bbox", "all")
    assert stats.seed_for("x") == 0x2D711642B726B044  # sha256("x")[:8], on every machine and run


def test_holm_textbook_example():
    # p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03,
    # 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06. At alpha 0.05 the step-down rule
    # rejects 0.005 (< 0.05/4) and 0.01 (< 0.05/3), then stops at 0.03 (> 0.05/2).
    p = [0.01, 0.04, 0.03, 0.005]
    adjusted = holm(p)
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert (adjusted < 0.05).tolist() == [True, False, False, True]
    assert holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]).tolist() == []


def test_mde_is_the_closed_form_of_connors_paired_binomial_formula():
    za, zb = 1.959963984540054, 0.8416212335729143
    # By hand for 100 pairs at psi 0.2: sqrt(0.2) (1.959964 x 10 + 0.841621 x sqrt(96.866867)) / 100.708326
    # = 0.447214 x 27.883 / 100.708 = 0.123819.
    assert mde(100, 0.2) == pytest.approx(0.123819, abs=1e-6)
    for n, psi in [(100, 0.2), (2500, 0.1), (1000, 0.05), (60, 0.6)]:
        d = mde(n, psi)
        # Connor's sample size at that difference gives back n, and it satisfies the equation.
        assert pairs_needed(d, psi) == pytest.approx(n)
        assert sqrt(n) * d == pytest.approx(za * sqrt(psi) + zb * sqrt(psi - d * d))
    assert mde(10**8, 0.1) == pytest.approx((za + zb) * sqrt(0.1 / 10**8), rel=1e-3)  # large-n limit
    assert isnan(mde(100, 0.0)) and isnan(mde(10, 0.05))  # nothing changes / nothing detectable
    with pytest.raises(ValueError, match="discordance"):
        pairs_needed(0.3, 0.2)


def test_mde_has_the_promised_power_by_simulation():
    n, psi = 400, 0.2
    d = mde(n, psi)
    rng = np.random.default_rng(0)
    counts = rng.multinomial(n, [(psi - d) / 2, (psi + d) / 2, 1 - psi], size=3000)
    power = np.mean([mcnemar_exact(int(b), int(c)) < 0.05 for b, c, _ in counts])
    assert 0.75 < power < 0.85


def test_design_effect_is_one_for_independent_questions_and_grows_when_videos_move_as_one():
    d = np.random.default_rng(2).integers(-1, 2, 200).astype(float)
    assert design_effect(d, np.arange(200)) == pytest.approx(1.0)
    together = np.repeat(np.random.default_rng(3).choice([-1.0, 1.0], 100), 3)  # 3 equal questions per video
    assert design_effect(together, np.repeat(np.arange(100), 3)) == pytest.approx(3.0, rel=0.05)
    # By hand: 4 questions, 2 videos, differences [1, 1, 0, 0]: the mean 0.5; independent variance
    # 4 x 0.25 / 3 / 4 = 1/12; clustered 2/1 x ((2 - 1)^2 + (0 - 1)^2) / 16 = 1/4; design effect 3.
    assert design_effect([1.0, 1.0, 0.0, 0.0], ["a", "a", "b", "b"]) == pytest.approx(3.0)
    r = paired(np.zeros(300), (together > 0).astype(float), np.repeat(np.arange(100), 3))
    # 50 videos all right on B, 50 all wrong (300 questions, mean 0.5): independent variance 0.25 / 299,
    # clustered 100/99 x 100 x 1.5^2 / 300^2 = 1/396: the design effect is 299/99 = 3.0202.
    assert (r.videos, r.only_b) == (100, 150) and r.deff == pytest.approx(299 / 99)
    # The MDE at 300 pairs, psi 0.5 (closed form, by hand): 0.707107 x (33.9475 + 14.5010) / 300.7083 =
    # 0.113925, times sqrt(299/99) = 1.737873: 19.80 pts.
    assert r.mde == pytest.approx(19.80, abs=0.01)


ROW = {
    "n": 61,
    "videos": 50,
    "delta": -3.2787,
    "ci_low": -8.2,
    "ci_high": 0.0,
    "only_a": 3,
    "only_b": 1,
    "p_video": 0.25,
    "p_holm": 0.5,
    "mde": 6.07,
}


def test_verdict_wording_from_fixed_inputs():
    label = "trajectory vs plain, object, tiny-vlm"
    assert verdict(label, ROW) == (
        "trajectory vs plain, object, tiny-vlm: −3.3 pts [−8.2, 0.0], not significant after "
        "Holm (p = 0.50), MDE 6.1 pts; 61 questions, 50 videos"
    )
    assert verdict("x", ROW | {"delta": 7.04, "ci_low": 2.1, "ci_high": 11.9, "p_video": 0.0002, "p_holm": 0.004}) == (
        "x: +7.0 pts [2.1, 11.9], significant after Holm (p = 0.004), MDE 6.1 pts; 61 questions, 50 videos"
    )
    assert verdict("x", ROW | {"p_video": 0.0457, "p_holm": 0.46}).split(", MDE")[0] == (
        "x: −3.3 pts [−8.2, 0.0], significant before correction (p = 0.046) but not after Holm (p = 0.46)"
    )
    assert (
        verdict("x", ROW | {"p_holm": 0.0001, "p_video": 0.00001})
        .split("],")[1]
        .startswith(" significant after Holm (p < 0.001)")
    )
    assert verdict("x", ROW | {"mde": float("nan"), "only_a": 1, "only_b": 0}).endswith(
        "MDE n/a: only 1 of 61 answers changed; 61 questions, 50 videos"
    )


def _pred(qid, video, variant, correct, model="m", qtype="object"):
    return pred(qid, video_id=video, variant=variant, correct=correct, model=model, type=qtype)


def test_report_clusters_by_video_and_holm_corrects_within_each_family(tmp_path):
    # 40 videos x 3 object questions: trajectory fixes all three questions of videos 0-9.
    preds = []
    for v in range(40):
        for k in range(3):
            qid = f"v{v}-q{k}"
            plain = v % 2 == 0
            preds += [
                _pred(qid, f"v{v}", "plain", plain),
                _pred(qid, f"v{v}", "trajectory", plain or v < 10),
                _pred(qid, f"v{v}", "blind", k == 0),
            ]
    r = report.build(Run(preds))
    cued = r.cued_vs_plain.set_index("type").loc["object"]
    assert (cued["n"], cued["videos"], cued["only_b"]) == (120, 40, 15)  # the odd videos below 10
    # Five videos changed, each by 3: the sign-flip test sees 5 pieces of evidence (exact: 2/32),
    # McNemar sees 15 questions (2/2^15).
    assert cued["p_video"] == pytest.approx(2 / 32) and cued["p_mcnemar"] == pytest.approx(2 / 2**15)
    assert cued["deff"] > 2
    family = pd.concat([r.cued_vs_plain, r.adapter_vs_base, r.audit, r.cued_blind_wrong])
    assert r.tests == len(family) == 2 + 2 + 2  # object + all for cued, audit (blind), cued-where-blind-fails
    assert r.families == {"primary": 2, "secondary": 4}  # cued vs plain; the audit and where blind fails
    for name, rows in family.groupby("family"):
        assert rows["p_holm"].tolist() == pytest.approx(holm(rows["p_video"]).tolist()), name
    assert family["survives_holm"].tolist() == (family["p_holm"] < 0.05).tolist()
    assert r.verdicts[0].startswith("trajectory vs plain, object, m: +12.5 pts [")
    assert f"p = {cued['p_holm']:.2f}" in r.verdicts[0]
    # Every number is in report.json next to the verdicts, with the methods that made them.
    layout = RunLayout(tmp_path)
    render.write(layout, r)
    saved = runfiles.read(ReportRecord, layout.report_json)
    assert saved.verdicts == r.verdicts and saved.statistics["tests"] == 6
    assert saved.cued_vs_plain[0]["p_holm"] == pytest.approx(r.cued_vs_plain["p_holm"][0])
    # The ledger holds every test once, so every count the report gives is the families' own.
    assert len(r.ledger) == r.tests and r.ledger["family"].value_counts().to_dict() == r.families
    assert saved.summary == r.summary and len(saved.ledger) == r.tests
    md = render.render_markdown(r)  # first the summary: the primary family as a table, then sentences
    assert md.startswith("## Summary\n\n") and len(r.primary) == 2
    assert md.index("| trajectory vs plain, object, m ") < md.index("\n- Primary: 0 of 2 comparisons significant")
    assert "secondary 0 of 4" in md and "## Tests by family" in md and "### secondary: 0 of 4 significant" in md
    # Accuracy CIs resample videos too: with each video's questions all right or all wrong,
    # the interval is wider than when questions are taken as independent.
    low, high = r.cis[("m", "plain")]
    q_low, q_high = stats.bootstrap_ci(np.array([v % 2 == 0 for v in range(40) for _ in range(3)], dtype=float))
    assert high - low > 100 * (q_high - q_low)


def test_compare_runs_is_clustered_and_holm_corrected():
    a = [_pred(f"v{v}-q{k}", f"v{v}", "plain", v % 2 == 0) for v in range(20) for k in range(2)]
    b = [_pred(f"v{v}-q{k}", f"v{v}", "plain", v % 2 == 0 or v < 6) for v in range(20) for k in range(2)]
    t = tables.compare_runs(a, b).set_index("type")
    assert t.loc["object", "videos"] == 20 and t.loc["object", "only_b"] == 6
    assert t.loc["object", "p_video"] == pytest.approx(2 / 8)
    assert t["p_holm"].tolist() == pytest.approx(holm(t["p_video"]).tolist())
