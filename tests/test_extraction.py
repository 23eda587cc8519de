"""Extraction: one masked stretch per note, exact-match scoring, rates per split."""

import numpy as np

from clinical_t5x.audit import extraction


def test_masked_stretch_hides_k_tokens_with_context_on_both_sides():
    tokens = list(range(10, 110))
    for seed in range(20):
        inputs, hidden = extraction.masked_stretch(tokens, 16, 60, np.random.default_rng(seed), 999, 1)
        at = inputs.index(999)
        assert at >= 1 and len(hidden) == 16 and inputs[-1] == 1
        assert inputs[:at] + hidden + inputs[at + 1:-1] == tokens[:60]
        assert at + 16 < 60
    assert extraction.masked_stretch(tokens[:17], 16, 60, np.random.default_rng(0), 999, 1) is None


def test_exact_match_needs_the_sentinel_and_every_token():
    assert extraction.exact_match([999, 5, 6, 7], [5, 6], 999)
    assert not extraction.exact_match([999, 5, 8], [5, 6], 999)
    assert not extraction.exact_match([5, 6], [5, 6], 999)
    assert not extraction.exact_match([999, 5], [5, 6], 999)


def test_rate_summary():
    summary = extraction.rate_summary([True, False, True, True], [False, True])
    assert summary["train_exact_match"] == 0.75 and summary["validation_exact_match"] == 0.5
    assert summary["difference"] == 0.25 and summary["train_notes"] == 4
