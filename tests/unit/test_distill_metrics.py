"""Held-out metrics against hand-computed values: confusion, macro-F1, ECE, NLL, temperature
fitting, ROUGE, and the classifier's ranking AUC."""

import numpy as np
import pytest

from lantern_batch.distill.metrics import (
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    macro_f1,
    rouge_scores,
    softmax,
)
from lantern_batch.distill.train_classifier import ranking_auc


def test_confusion_and_macro_f1_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    cm = confusion_matrix(labels, preds)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # F1: High 2*1/(2+1+1)=0.5, Medium 2*2/(4+1+0)=0.8, Low 2*1/(2+0+1)=2/3
    assert macro_f1(cm) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_ece_of_perfectly_calibrated_and_overconfident_predictions():
    probs = np.array([[0.8, 0.1, 0.1]] * 10)
    labels = np.array([0] * 8 + [1] * 2)  # 80% right at 80% confidence
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-9)
    labels = np.array([0] * 5 + [1] * 5)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.3)


def test_classification_metrics_keys_and_values():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    m = classification_metrics(probs, np.array([0, 1, 2, 1]))
    assert m["accuracy"] == 0.75 and m["n"] == 4 and m["labels"] == ["High", "Medium", "Low"]
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.6, 0.4])))
    assert sum(map(sum, m["confusion"])) == 4


def test_fit_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 3)) * 3
    true_t = 2.5
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits, true_t)])
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.1)
    assert fit_temperature(logits[:0], labels[:0]) == 1.0


def test_rouge_identical_disjoint_and_partial():
    r = rouge_scores(["the member has python skills"], ["the member has python skills"])
    assert r == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "n": 1, "blank": 0, "skipped": 0}
    assert rouge_scores(["zebra"], ["python skills"])["rouge1"] == 0.0
    partial = rouge_scores(["the member has java"], ["the member has python"])
    assert 0 < partial["rouge2"] < partial["rouge1"] < 1


def test_rouge_counts_a_blank_generation_as_zero():
    # A blank generation is a failed explanation: it stays in the mean with 0, it is not skipped.
    r = rouge_scores(["the member has python skills", "", None], ["the member has python skills"] * 3)
    assert (r["n"], r["blank"], r["skipped"]) == (3, 2, 0)
    assert r["rouge1"] == r["rouge2"] == r["rougeL"] == pytest.approx(1 / 3)


def test_ranking_auc():
    labels = np.array([0, 0, 2, 2, 1])
    assert ranking_auc(np.array([0.9, 0.8, 0.1, 0.2, 0.5]), labels) == 1.0
    assert ranking_auc(np.array([0.1, 0.2, 0.9, 0.8, 0.5]), labels) == 0.0
    assert ranking_auc(np.array([0.5, 0.5, 0.5, 0.5, 0.5]), labels) == 0.5
    assert ranking_auc(np.array([0.5]), np.array([1])) is None
