"""The exposure estimator: its formula, ties, interval, resolution limit and no-learning value."""

import math

import numpy as np
import pytest

from clinical_t5x.audit import exposure


def test_estimate_is_minus_log2_of_the_rank_fraction():
    candidates = np.arange(10_000, dtype=float)  # 0..9999; the secret scores 9000
    result = exposure.estimate(0, 4, 9000.0, candidates, 10**10)
    assert result.better == 999.5  # 999 above, one tie counted half
    assert result.exposure == pytest.approx(-math.log2(1000.5 / 10_001))
    low, high = result.ci95
    assert low < result.exposure < high and high - low < 0.3
    assert not result.capped


def test_a_secret_no_candidate_beats_is_at_the_resolution_limit():
    result = exposure.estimate(1, 64, 1.0, np.zeros(10_000), 10**10)
    assert result.capped and result.exposure == pytest.approx(math.log2(10_001))
    assert result.ci95[0] > 11 and result.ci95[1] == pytest.approx(math.log2(10**10))


def test_a_model_that_learned_nothing_gets_about_1_44_bits():
    rng = np.random.default_rng(0)
    values = [exposure.estimate(0, 1, rng.normal(), rng.normal(size=10_000), 10**10).exposure
              for _ in range(300)]
    assert abs(np.mean(values) - exposure.NO_LEARNING_MEAN) < 0.2
    assert abs(np.median(values) - exposure.NO_LEARNING_MEDIAN) < 0.2


def test_candidates_are_distinct_uniform_and_never_the_secret():
    found = exposure.sample_candidates("0000 0000 07", 10_000, seed=1)
    assert len(set(found)) == 10_000 and "0000 0000 07" not in found
    assert found == exposure.sample_candidates("0000 0000 07", 10_000, seed=1)
    first_digits = np.bincount([int(s[0]) for s in found], minlength=10) / 10_000
    assert np.abs(first_digits - 0.1).max() < 0.02
    with pytest.raises(ValueError, match="at least 10000"):
        exposure.sample_candidates("0000 0000 07", 99, seed=1)


def test_summary_by_repeats():
    results = [exposure.estimate(i, r, s, np.arange(10_000.0), 10**10)
               for i, (r, s) in enumerate([(1, 10.0), (1, 5000.0), (4, 20_000.0)])]
    rows = exposure.summary_by_repeats(results)
    assert [r["repeats"] for r in rows] == [1, 4]
    assert rows[0]["canaries"] == 2 and rows[1]["at_resolution_limit"] == 1
    assert rows[0]["max_bits"] == round(max(results[0].exposure, results[1].exposure), 3)
