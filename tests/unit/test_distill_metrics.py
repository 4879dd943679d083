"""What distill writes into a classifier's ``metrics.json``: the held-out split against teacher
and seed labels (the metrics themselves are :mod:`lantern_batch.metrics`, tested in
tests/unit/test_metrics.py) and the classifier's ranking AUC."""

import numpy as np
import pyarrow as pa
import pytest

from lantern_batch.distill.train_classifier import evaluate_heldout, ranking_auc
from lantern_batch.metrics import classification_metrics, softmax


def test_ranking_auc():
    labels = np.array([0, 0, 2, 2, 1])
    assert ranking_auc(np.array([0.9, 0.8, 0.1, 0.2, 0.5]), labels) == 1.0
    assert ranking_auc(np.array([0.1, 0.2, 0.9, 0.8, 0.5]), labels) == 0.0
    assert ranking_auc(np.array([0.5, 0.5, 0.5, 0.5, 0.5]), labels) == 0.5
    assert ranking_auc(np.array([0.5]), np.array([1])) is None


PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1],
                  [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])


def _table(labels, sources):
    return pa.table({"label": pa.array(labels, pa.int64()), "source": sources})


def test_evaluate_heldout_scores_teacher_rows_and_seed_rows_apart():
    table = _table([0, 1, 2, 1, 2, 2], ["teacher"] * 4 + ["seed"] * 2)
    out = evaluate_heldout(PROBS, table)
    assert out["against"] == "teacher"
    assert {k: out[k] for k in ("n", "accuracy", "confusion")} == {
        "n": 4, "accuracy": 0.75, "confusion": [[1, 0, 0], [1, 1, 0], [0, 0, 1]]}
    # The seed rows: [.6 .3 .1] (High, label Low: wrong) and [.1 .1 .8] (Low: right).
    assert out["seed"]["accuracy"] == 0.5 and out["seed"]["n"] == 2
    assert out == {**classification_metrics(PROBS[:4], [0, 1, 2, 1]), "against": "teacher",
                   "seed": classification_metrics(PROBS[4:], [2, 2]),
                   "ranking_auc_high_vs_low": ranking_auc(PROBS[:, 0] - PROBS[:, 2], table.column("label").to_numpy())}


def test_evaluate_heldout_seed_only_and_temperature():
    table = _table([0, 1, 2, 1], ["seed"] * 4)
    out = evaluate_heldout(PROBS[:4], table, temperature=2.0)
    assert out["against"] == "seed" and "seed" not in out
    tempered = softmax(np.log(PROBS[:4]), 2.0)
    assert out["nll"] == pytest.approx(-np.mean(np.log(tempered[[0, 1, 2, 3], [0, 1, 2, 1]])))
    assert out["ece"] == classification_metrics(tempered, [0, 1, 2, 1])["ece"]


def test_evaluate_heldout_without_heldout_rows_has_no_scores():
    # data.holdout_fraction 0: nothing was held out, so there is no accuracy (not an accuracy of 0).
    out = evaluate_heldout(np.zeros((0, 3)), _table([], []))
    assert out["n"] == 0
    assert out["accuracy"] is out["macro_f1"] is out["ece"] is out["nll"] is out["ranking_auc_high_vs_low"] is None


def test_the_temperature_is_fitted_on_held_out_seed_rows_when_there_are_enough():
    """Teacher labels that disagree with confident predictions push a temperature fitted on all
    rows up; fitted on the seed rows (the reference labels) it keeps their ECE low."""
    import pyarrow as pa

    from lantern_batch.distill.config import MIN_CALIBRATION_ROWS
    from lantern_batch.distill.train_classifier import calibration_rows
    from lantern_batch.metrics import fit_temperature

    rng = np.random.default_rng(0)
    n_seed, n_teacher = 120, 40
    labels = rng.integers(0, 3, n_seed + n_teacher)
    logits = rng.normal(0, 0.3, (len(labels), 3))
    logits[np.arange(len(labels)), labels] += 3.0  # confident and right against the seed labels
    labels[n_seed:] = (labels[n_seed:] + rng.integers(1, 3, n_teacher)) % 3  # teacher rows: wrong labels
    table = pa.table({"source": ["seed"] * n_seed + ["smollm2"] * n_teacher})
    seed_mask, fitted_on = calibration_rows(table, "seed")
    assert fitted_on == "seed" and seed_mask.tolist() == [True] * n_seed + [False] * n_teacher
    all_mask, fitted_all = calibration_rows(table, "all")
    assert fitted_all == "all" and all_mask.all()
    few = pa.table({"source": ["seed"] * (MIN_CALIBRATION_ROWS - 1) + ["smollm2"] * 20})
    assert calibration_rows(few, "seed")[1] == "all"  # too few seed rows: every row

    def seed_ece(mask):
        t = fit_temperature(logits[mask], labels[mask])
        return t, classification_metrics(softmax(logits[:n_seed], t), labels[:n_seed])["ece"]

    t_seed, ece_seed = seed_ece(seed_mask)
    t_all, ece_all = seed_ece(all_mask)
    assert t_all > t_seed and ece_seed < ece_all
