"""Statistics against hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from measure.stats import bootstrap_ci, mcnemar_exact, paired


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
    assert bootstrap_ci(x) == bootstrap_ci(x)
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
