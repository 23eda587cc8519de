"""Membership statistics (AUC, ROC, TPR at low FPR, bootstrap) and the per-note chunks."""

import itertools

import numpy as np
import pytest

from clinical_t5x.audit import membership


def test_auc_is_the_pairwise_win_rate_with_ties_half():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 30).astype(float)
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(members, nonmembers)]
    assert membership.roc_auc(members, nonmembers) == pytest.approx(np.mean(wins))
    assert membership.roc_auc([2, 3], [0, 1]) == 1.0 and membership.roc_auc([0, 1], [2, 3]) == 0.0


def test_roc_curve_and_tpr_at_low_fpr():
    members = np.arange(100, 200, dtype=float)
    nonmembers = np.concatenate([np.arange(0, 99, dtype=float), [150.0]])  # one non-member scores 150
    fpr, tpr = membership.roc_curve(members, nonmembers)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert membership.tpr_at_fpr(members, nonmembers, 0.001) == pytest.approx(0.49)  # above 150 only
    assert membership.tpr_at_fpr(members, nonmembers, 0.01) == 1.0


def test_bootstrap_interval_covers_the_auc_and_narrows_with_more_notes():
    rng = np.random.default_rng(1)
    small = membership.bootstrap_auc(rng.normal(0.5, 1, 30), rng.normal(0, 1, 30), seed=0, rounds=300)
    big_m, big_n = rng.normal(0.5, 1, 600), rng.normal(0, 1, 600)
    big = membership.bootstrap_auc(big_m, big_n, seed=0, rounds=300)
    assert big[0] < membership.roc_auc(big_m, big_n) < big[1]
    assert big[1] - big[0] < small[1] - small[0]
    summary = membership.attack_summary(big_m, big_n, seed=0)
    assert set(summary) >= {"auc", "auc_ci95", "tpr_at_0.01_fpr", "tpr_at_0.001_fpr"}


def test_mean_by_key():
    assert membership.mean_by(["a", "b", "a"], [1.0, 5.0, 3.0]) == {"a": 2.0, "b": 5.0}


def test_note_examples_are_seeded_span_corruptions_of_the_note():
    tokens = list(range(3, 3 + 300))
    sentinels = list(range(1000, 1100))
    pairs = membership.note_examples(tokens, 70, max_chunks=2, masks=3, seed=0, stream=5,
                                     sentinels=sentinels, eos_id=1)
    assert len(pairs) == 6
    assert pairs == membership.note_examples(tokens, 70, 2, 3, 0, 5, sentinels, 1)
    assert pairs != membership.note_examples(tokens, 70, 2, 3, 0, 6, sentinels, 1)
    for chunk, (inputs, targets) in zip([tokens[:70], tokens[70:140]] * 3, pairs):
        assert inputs[-1] == targets[-1] == 1
        rebuilt, spans = [], dict()
        for sentinel, *span in _split(targets[:-1], sentinels):
            spans[sentinel] = span
        for token in inputs[:-1]:
            rebuilt += spans[token] if token in spans else [token]
        assert rebuilt == chunk
    assert len(membership.note_examples(tokens[:20], 70, 2, 2, 0, 0, sentinels, 1)) == 2  # short note


def _split(targets, sentinels):
    groups = []
    for token in targets:
        if token in sentinels:
            groups.append([token])
        else:
            groups[-1].append(token)
    return groups
