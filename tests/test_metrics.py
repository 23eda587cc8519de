"""Downstream metrics against hand-worked cases and SQuAD 2.0's documented normalisation."""
from __future__ import annotations

import pytest

from clinical_t5x.data.downstream_examples import NO_ANSWER
from clinical_t5x.eval import metrics


def test_mednli_accuracy_and_macro_f1():
    targets = ["entailment", "entailment", "neutral", "contradiction"]
    predictions = ["entailment", "neutral", "neutral", " garbage "]
    result = metrics.mednli(targets, predictions)
    # entailment: tp1 fn1 -> 2/3; neutral: tp1 fp1 -> 2/3; contradiction: fn1 -> 0.
    assert result["accuracy"] == pytest.approx(50.0)
    assert result["macro_f1"] == pytest.approx(100 * (2 / 3 + 2 / 3 + 0) / 3)


def test_squad_normalisation():
    assert metrics.normalize_answer("The  Small, LEFT-sided effusion.") == "small leftsided effusion"
    assert metrics.normalize_answer("an apple a day") == "apple day"
    assert metrics.normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_radqa_exact_and_f1():
    targets = ["a small nodule", "mild enlargement of heart", NO_ANSWER, NO_ANSWER]
    predictions = ["Small nodule.", "enlargement", NO_ANSWER, "trace fluid"]
    result = metrics.radqa(targets, predictions)
    # F1: 1; "enlargement" vs "mild enlargement of heart": p=1, r=1/4 -> 0.4; 1; 0.
    assert result["em"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(100 * (1 + 0.4 + 1 + 0) / 4)
    assert result["has_answer_em"] == pytest.approx(50.0)
    assert result["has_answer_f1"] == pytest.approx(70.0)
    assert result["no_answer_em"] == result["no_answer_f1"] == pytest.approx(50.0)


def test_squad_v2_best_gold_and_empty_groups():
    result = metrics.squad_v2([["left lung", "the left lower lung base"]], ["left lung base"])
    # vs "left lung": p=2/3 r=1 -> 0.8; vs "left lower lung base": p=1 r=3/4 -> 6/7 (the best).
    assert result["em"] == 0.0 and result["f1"] == pytest.approx(100 * 6 / 7)
    assert set(result) == {"em", "f1", "has_answer_em", "has_answer_f1"}
    assert metrics.squad_v2([[]], [""]) == metrics.squad_v2([[NO_ANSWER]], [NO_ANSWER]) == {
        "em": 100.0, "f1": 100.0, "no_answer_em": 100.0, "no_answer_f1": 100.0}


def test_best_window():
    ids = ["q1", "q1", "q1", "q2", "q2"]
    predictions = [NO_ANSWER, "cyst", "mass", NO_ANSWER, NO_ANSWER]
    assert metrics.best_window(ids, predictions) == {"q1": "cyst", "q2": NO_ANSWER}
    assert metrics.best_window(ids, predictions, [0.0, -3.0, -1.0, 0.0, -2.0]) == {"q1": "mass", "q2": NO_ANSWER}


def test_radqa_windows_through_postprocess():
    examples = [{"example_id": b"q1", "answers": b'["mass"]'}, {"example_id": b"q1", "answers": b'["mass"]'},
                {"example_id": b"q2", "answers": b'["no answer"]'}]
    targets = [metrics.radqa_postprocess(NO_ANSWER, e, is_target=True) for e in examples]
    predictions = [metrics.radqa_postprocess(p, e) for p, e in zip([" mass", "cyst", "cyst"], examples)]
    assert metrics.radqa_windows(targets, predictions, {"scores": [-1.0, -2.0, 0.0]}) == {
        "em": 50.0, "f1": 50.0, "has_answer_em": 100.0, "has_answer_f1": 100.0,
        "no_answer_em": 0.0, "no_answer_f1": 0.0}
    assert metrics.radqa_windows(targets, predictions, {"scores": [-3.0, -2.0, 0.0]})["has_answer_em"] == 0.0


def test_clip_f1s():
    lab, img, med = "Lab-related followup", "Imaging-related followup", "Medication-related followups"
    targets = [f"{img}, {lab}", lab, "none", med]
    predictions = [lab, f"{lab}, Unknown label", img, "none"]
    result = metrics.clip(targets, predictions)
    # lab: tp2 -> 1; imaging: fp1 fn1 -> 0; medication: fn1 -> 0; micro: tp2 fp1 fn2 -> 4/7.
    assert result["f1/" + lab] == pytest.approx(100.0)
    assert result["f1/" + img] == result["f1/" + med] == 0.0
    assert result["macro_f1"] == pytest.approx(100 / 3)
    assert result["micro_f1"] == pytest.approx(100 * 4 / 7)
    assert "f1/Procedure-related followup" not in result  # absent everywhere: not averaged


def test_majority_baseline():
    train = ["neutral", "entailment", "neutral"]
    result = metrics.majority_baseline(train, ["neutral", "entailment", "contradiction"], metrics.mednli)
    assert result["accuracy"] == pytest.approx(100 / 3)
    assert metrics.majority_baseline([NO_ANSWER, NO_ANSWER, "x"], ["y", NO_ANSWER], metrics.radqa)["em"] == 50.0
    with pytest.raises(ValueError):
        metrics.majority_baseline([], ["x"], metrics.mednli)


def test_seqio_accepts_the_metric_signatures():
    seqio_metrics = pytest.importorskip("seqio.metrics")
    kinds = {fn: seqio_metrics.LegacyMetric.empty(fn, metrics.strip_text).model_output_type
             for fn in (metrics.mednli, metrics.clip, metrics.radqa_windows)}
    assert kinds[metrics.mednli] == kinds[metrics.clip] == seqio_metrics.ModelOutputType.PREDICTION
    assert kinds[metrics.radqa_windows] == seqio_metrics.ModelOutputType.PREDICTION_WITH_AUX
