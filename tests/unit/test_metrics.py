"""The project's one metrics module against values computed by hand (the comments give the
arithmetic), and distill's metrics.json path against the evaluation report's on the same inputs."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from lantern_batch.metrics import (
    CALIBRATION_BINS,
    accuracy,
    calibration,
    classification_metrics,
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    label_indices,
    macro_f1,
    nll,
    per_class_scores,
    reliability_curve,
    rouge_scores,
    softmax,
    top_label_confidence,
)
from lantern_batch.schema import FIT_LABELS

H, M, L = "High", "Medium", "Low"


# ---------------------------------------------------------------------------------------------
# Labels


def test_label_indices_names_indices_and_non_labels():
    assert label_indices([H, M, L, None, "high", "", 0, 2, 3, -1, True]).tolist() == [0, 1, 2, -1, -1, -1, 0, 2, -1, -1, -1]
    assert label_indices(np.array([2, 0, 5])).tolist() == [2, 0, -1]
    assert label_indices([]).tolist() == []


def test_top_label_confidence():
    pred, conf = top_label_confidence(np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]]))
    assert pred.tolist() == [1, 0] and conf.tolist() == pytest.approx([0.7, 0.6])
    pred, conf = top_label_confidence(np.zeros((0, 3)))
    assert pred.shape == conf.shape == (0,)
    with pytest.raises(ValueError):
        top_label_confidence(np.ones((2, 2)))


# ---------------------------------------------------------------------------------------------
# Classification report


def test_confusion_accuracy_and_per_class_by_hand():
    ref = [H, H, M, L, L, L]
    pred = [H, M, M, L, H, None]  # the last pair has no predicted label: not counted
    cm = confusion_matrix(ref, pred)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, -1]).tolist() == cm.tolist()  # indices alike
    assert accuracy(cm) == pytest.approx(3 / 5)
    per = per_class_scores(cm)
    # High: tp 1, predicted 2, support 2 -> P .5, R .5, F1 .5
    assert per[H] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    # Medium: tp 1, predicted 2, support 1 -> P .5, R 1, F1 2/3
    assert per[M] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    # Low: tp 1, predicted 1, support 2 -> P 1, R .5, F1 2/3
    assert per[L] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert macro_f1(cm) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)


def test_classification_report_by_hand():
    r = classification_report([H, M, M, L], [H, H, M, L])
    # High: P 1/2 R 1 -> 2/3; Medium: P 1 R 1/2 -> 2/3; Low: 1.
    assert r == {
        "n": 4, "accuracy": 0.75, "macro_f1": pytest.approx(7 / 9),
        "per_class": {H: {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1},
                      M: {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2},
                      L: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}},
        "confusion": [[1, 0, 0], [1, 1, 0], [0, 0, 1]], "labels": [H, M, L],
    }


def test_macro_f1_matches_sklearn_when_every_label_occurs():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    ref = list(rng.choice(FIT_LABELS, 300))
    pred = [r if rng.random() < 0.7 else rng.choice(FIT_LABELS) for r in ref]
    cm = confusion_matrix(ref, pred)
    assert macro_f1(cm) == pytest.approx(sklearn_metrics.f1_score(ref, pred, labels=list(FIT_LABELS), average="macro"))
    assert cm.tolist() == sklearn_metrics.confusion_matrix(ref, pred, labels=list(FIT_LABELS)).tolist()


def test_macro_f1_conventions_for_absent_labels():
    # Low occurs nowhere: left out. High and Medium: F1 2/3 each.
    assert macro_f1(confusion_matrix([H, H, M], [H, M, M])) == pytest.approx(2 / 3)
    # Low is in the reference but never predicted: F1 0 counts. High: P .5, R 1 -> 2/3.
    cm = confusion_matrix([H, L], [H, H])
    assert per_class_scores(cm)[L] == {"precision": None, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per_class_scores(cm)[M] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert macro_f1(cm) == pytest.approx((2 / 3 + 0.0) / 2)
    # Medium predicted but never in the reference: precision 0, F1 0.
    assert per_class_scores(confusion_matrix([H], [M]))[M] == {"precision": 0.0, "recall": None, "f1": 0.0, "support": 0}
    empty = confusion_matrix([], [])
    assert accuracy(empty) is None and macro_f1(empty) is None
    assert classification_report([None], [H])["n"] == 0


def test_confusion_rejects_misaligned_inputs():
    with pytest.raises(ValueError):
        confusion_matrix([H], [H, M])


# ---------------------------------------------------------------------------------------------
# Calibration


def test_reliability_curve_and_ece_by_hand():
    conf = [0.95, 0.85, 0.85, 0.55, 0.15, 1.0]
    correct = [True, True, False, True, False, True]
    bins = reliability_curve(conf, correct, n_bins=10)
    by_index = {i: b for i, b in enumerate(bins) if b.count}
    assert sorted(by_index) == [1, 5, 8, 9]  # 1.0 falls in the last bin
    assert by_index[9].count == 2 and by_index[9].confidence == pytest.approx(0.975)
    assert by_index[8].accuracy == pytest.approx(0.5)
    assert (bins[8].lower, bins[8].upper) == (0.8, 0.9)
    assert bins[0].count == 0 and bins[0].confidence is None and bins[0].accuracy is None
    # (2*|1-.975| + 2*|.5-.85| + 1*|1-.55| + 1*|0-.15|) / 6 = 1.35 / 6
    assert expected_calibration_error(bins) == pytest.approx(1.35 / 6)
    assert expected_calibration_error(reliability_curve([], [], 5)) is None


def test_bins_are_right_closed_with_exact_edges():
    # Bin m holds (m/M, (m+1)/M]; bin 0 also holds 0. 0.6 is the edge 6/10 and 9/15.
    def index(c, n):
        return [i for i, b in enumerate(reliability_curve([c], [True], n)) if b.count]

    assert [index(c, 10) for c in (0.0, 0.1, 0.6, 0.6000001, 0.99, 1.0)] == [[0], [0], [5], [6], [9], [9]]
    assert [index(c, 15) for c in (1 / 3, 0.6, 0.8, 0.81, 1.0)] == [[4], [8], [11], [12], [14]]
    assert len(reliability_curve([0.5], [True])) == CALIBRATION_BINS == 15
    with pytest.raises(ValueError):
        reliability_curve([0.5], [True], 0)


def test_bin_count_changes_ece():
    # 0.62 (right) and 0.68 (wrong): one bin (0.6, 0.7] of 10 -> |0.5 - 0.65| = 0.15; with 15 bins
    # they part ((0.6, 0.667] and (0.667, 0.733]) -> (|1 - .62| + |0 - .68|) / 2 = 0.53.
    probs = np.array([[0.62, 0.2, 0.18], [0.68, 0.3, 0.02]])
    assert calibration(probs, [H, M], 10)["ece"] == pytest.approx(0.15)
    assert calibration(probs, [H, M])["ece"] == pytest.approx(0.53)
    assert classification_metrics(probs, [0, 1])["ece"] == pytest.approx(0.53)


def test_calibration_is_the_weighted_gap_of_its_curve():
    ref = [H, H, M, L, None]  # the last row has no reference label: left out
    probs = np.array([[0.9, 0.05, 0.05], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05]])
    # Kept rows: confidence .9 (right), .6 (wrong), .7 (right), .8 (right), one per bin of 10:
    # ECE = (.1 + .6 + .3 + .2) / 4.
    c = calibration(probs, ref, 10)
    assert c["n"] == 4 and c["ece"] == pytest.approx((0.1 + 0.6 + 0.3 + 0.2) / 4)
    assert [(b["lower"], b["count"]) for b in c["bins"] if b["count"]] == [(0.5, 1), (0.6, 1), (0.7, 1), (0.8, 1)]
    for n_bins in (10, CALIBRATION_BINS):
        c = calibration(probs, ref, n_bins)
        assert len(c["bins"]) == n_bins and sum(b["count"] for b in c["bins"]) == c["n"]
        gap = sum(b["count"] / c["n"] * abs(b["accuracy"] - b["confidence"]) for b in c["bins"] if b["count"])
        assert c["ece"] == pytest.approx(gap, abs=1e-15)
    assert calibration(probs[:1], [None]) == {"n": 0, "ece": None, "bins": calibration(np.zeros((0, 3)), [])["bins"]}
    with pytest.raises(ValueError):
        calibration(probs, ref[:2])


def test_nll_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.5, 0.0]])
    assert nll(probs[:2], [H, M]) == pytest.approx(-(np.log(0.7) + np.log(0.8)) / 2)
    assert nll(probs, [0, 1, 2]) == pytest.approx(-(np.log(0.7) + np.log(0.8) + np.log(1e-12)) / 3)  # floored
    assert nll(probs[:1], [None]) is None


def test_classification_metrics_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    m = classification_metrics(probs, np.array([0, 1, 2, 1]))
    # Predicted High, Medium, Low, High; the report of test_classification_report_by_hand.
    assert {k: m[k] for k in ("n", "accuracy", "macro_f1", "per_class", "confusion", "labels")} == \
        classification_report([H, M, L, M], [H, M, L, H])
    assert m["accuracy"] == 0.75 and m["macro_f1"] == pytest.approx(7 / 9)
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.6, 0.4])))
    # Confidences .7 .8 .6 .5 (right, right, right, wrong), one per bin of 15: (.3+.2+.4+.5)/4.
    assert m["ece"] == pytest.approx(0.35)
    # 80% right at 80% confidence: ECE 0; 50% right: 0.3.
    assert classification_metrics(np.array([[0.8, 0.1, 0.1]] * 10), [0] * 8 + [1] * 2)["ece"] == pytest.approx(0.0, abs=1e-9)
    assert classification_metrics(np.array([[0.8, 0.1, 0.1]] * 10), [0] * 5 + [1] * 5)["ece"] == pytest.approx(0.3)
    empty = classification_metrics(np.zeros((0, 3)), [])
    assert empty["n"] == 0 and empty["accuracy"] is empty["macro_f1"] is empty["ece"] is empty["nll"] is None


def test_softmax_and_fit_temperature():
    assert softmax(np.array([[0.0, np.log(3.0), 0.0]]))[0].tolist() == pytest.approx([0.2, 0.6, 0.2])
    assert softmax(np.array([[0.0, 2.0, 0.0]]), 2.0) == pytest.approx(softmax(np.array([[0.0, 1.0, 0.0]])))
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 3)) * 3
    true_t = 2.5
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits, true_t)])
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.1)
    assert fit_temperature(logits[:0], labels[:0]) == 1.0


# ---------------------------------------------------------------------------------------------
# ROUGE


def test_rouge_by_hand():
    # "the cat sat" vs "the cat sat on the mat": ROUGE-1 P 3/3 R 3/6 -> F 2/3; ROUGE-2 P 2/2
    # R 2/5 -> F 4/7; ROUGE-L LCS 3 -> 2/3. The identical pair scores 1; the blank and the missing
    # prediction are failed explanations and score 0; the pair without a reference is left out.
    out = rouge_scores(["the cat sat", "a b c d", None, "  ", "x"],
                       ["the cat sat on the mat", "a b c d", "x", "y", None])
    assert (out["n"], out["blank"], out["skipped"]) == (4, 2, 1)
    assert out["rouge1"] == pytest.approx((2 / 3 + 1) / 4)
    assert out["rouge2"] == pytest.approx((4 / 7 + 1) / 4)
    assert out["rougeL"] == pytest.approx((2 / 3 + 1) / 4)
    assert rouge_scores([], [])["rouge1"] is None
    with pytest.raises(ValueError):
        rouge_scores(["a"], [])


def test_rouge_identical_disjoint_partial_and_stemmed():
    r = rouge_scores(["the member has python skills"], ["the member has python skills"])
    assert r == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "n": 1, "blank": 0, "skipped": 0}
    assert rouge_scores(["zebra"], ["python skills"])["rouge1"] == 0.0
    partial = rouge_scores(["the member has java"], ["the member has python"])
    assert 0 < partial["rouge2"] < partial["rouge1"] < 1
    assert rouge_scores(["skills"], ["skill"])["rouge1"] == 1.0  # Porter stemming


def test_rouge_counts_a_blank_generation_as_zero():
    # A blank generation is a failed explanation: it stays in the mean with 0, it is not skipped.
    r = rouge_scores(["the member has python skills", "", None], ["the member has python skills"] * 3)
    assert (r["n"], r["blank"], r["skipped"]) == (3, 2, 0)
    assert r["rouge1"] == r["rouge2"] == r["rougeL"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------------
# distill's metrics.json and the evaluation report on the same inputs


def test_distill_metrics_json_and_the_evaluate_report_give_the_same_numbers(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from lantern_batch.distill import decoder, train_explainer
    from lantern_batch.distill.train_classifier import evaluate_heldout
    from lantern_batch.evaluate.job import run
    from tests.unit.test_evaluate_job import (
        PROBS,
        eval_config,
        fit_text,
        judged_pairs,
        make_eval_inputs,
    )

    def text(pair):
        if pair["index"] % 8 == 2:
            return ""  # selected, the explainer failed: a blank prediction (published as null)
        if pair["index"] % 8 == 6:
            return "   "  # a blank prediction published as whitespace
        return fit_text(pair["student_label"], pair["matched"][:1], pair["missing"])

    facts = make_eval_inputs(tmp_path, student_text=text)
    assert run(eval_config(tmp_path)) == 0
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())

    # The classifier: distill scores its held-out probabilities against the teacher's labels
    # (train_classifier.evaluate_heldout, what finalize writes to metrics.json); the report scores
    # the published probabilities and labels (float32 columns) against the same teacher labels.
    pairs = sorted(facts["pairs"], key=lambda p: (p["member_id"], p["job_id"]))
    probs = np.array([PROBS[p["student_label"]] for p in pairs], dtype=np.float32).astype(np.float64)
    held = pa.table({"label": [FIT_LABELS.index(p["teacher_label"]) for p in pairs], "source": ["teacher"] * len(pairs)})
    distill = json.loads(json.dumps(evaluate_heldout(probs, held)))  # as metrics.json stores it
    agreement, cal = report["agreement"], report["calibration"]
    assert distill["n"] == cal["n"] == agreement["pairs"] == 100
    assert {k: distill[k] for k in ("accuracy", "macro_f1", "per_class", "confusion", "labels")} == \
        {k: agreement[k] for k in ("accuracy", "macro_f1", "per_class", "confusion", "labels")}
    assert distill["ece"] == cal["ece"] and len(cal["bins"]) == CALIBRATION_BINS
    assert cal["ece"] == pytest.approx(sum(b["count"] / cal["n"] * abs(b["accuracy"] - b["confidence"])
                                           for b in cal["bins"] if b["count"]), abs=1e-15)
    assert distill["accuracy"] == pytest.approx(0.8) and 0 < distill["ece"] < 1

    # The explainer: distill's held-out ROUGE (train_explainer.rouge_of on the same predictions)
    # and the report's, blanks scoring 0 in both.
    judged = judged_pairs(facts)
    predictions = [p["student_explanation"] for p in judged]
    assert "" in predictions and "   " in predictions
    sample = pa.table({"prompt_ids": [[1]] * len(judged), "explanation": [p["teacher_explanation"] for p in judged]})
    monkeypatch.setattr(decoder, "generate", lambda model, tok, prompts, *a, **k: list(predictions))
    cfg = SimpleNamespace(eval=SimpleNamespace(max_new_tokens=8, batch_size=4), train=SimpleNamespace(bf16=False))
    rouge, _ = train_explainer.rouge_of(None, None, sample, cfg)
    assert rouge == {k: report["rouge"][k] for k in rouge}
    assert rouge["blank"] == sum(not p.strip() for p in predictions) >= 2 and rouge["n"] == len(judged)
    assert 0 < rouge["rougeL"] < 1
