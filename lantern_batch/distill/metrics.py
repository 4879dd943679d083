"""Held-out metrics of the students: classification (accuracy, macro-F1, confusion, ECE, NLL),
temperature calibration, and ROUGE-1/2/L of generated explanations. numpy only (plus
``rouge_score`` for ROUGE), so evaluation code elsewhere can reuse it.

    m = classification_metrics(probs, labels)       # probs [n, 3], labels [n] (FIT_LABELS idx)
    t = fit_temperature(logits, labels)              # minimum-NLL softmax temperature
    r = rouge_scores(predictions, references)        # {"rouge1": .., "rouge2": .., "rougeL": .., "n": ..}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lantern_batch.schema import FIT_LABELS


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row softmax of ``logits [n, c] / temperature``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int = len(FIT_LABELS)) -> np.ndarray:
    """``[true, predicted]`` counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return cm


def macro_f1(cm: np.ndarray) -> float:
    """Mean over classes of F1 (a class absent from both truth and predictions is skipped)."""
    scores = []
    for c in range(cm.shape[0]):
        tp = cm[c, c]
        fp = cm[:, c].sum() - tp
        fn = cm[c, :].sum() - tp
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-label confidence over ``bins`` equal-width bins."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean()) if len(labels) else 0.0


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, macro-F1, confusion (rows true, columns predicted, FIT_LABELS order), ECE, NLL."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(probs).argmax(axis=1) if len(labels) else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(labels, preds)
    return {
        "n": int(len(labels)),
        "accuracy": float((preds == labels).mean()) if len(labels) else 0.0,
        "macro_f1": macro_f1(cm),
        "ece": expected_calibration_error(probs, labels),
        "nll": nll(probs, labels),
        "confusion": cm.tolist(),
        "labels": list(FIT_LABELS),
    }


def fit_temperature(logits: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """Softmax temperature minimising held-out NLL (Guo et al. 2017).

    NLL is unimodal in log T for fixed logits, so a coarse log-grid followed by golden-section
    refinement finds the minimum to ~1e-4 in log T without an optimiser dependency.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0

    def loss(log_t: float) -> float:
        return nll(softmax(logits, float(np.exp(log_t))), labels)

    grid = np.linspace(np.log(low), np.log(high), 61)
    values = [loss(g) for g in grid]
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    phi = (np.sqrt(5) - 1) / 2
    c, d = b - phi * (b - a), a + phi * (b - a)
    for _ in range(40):
        if loss(c) < loss(d):
            b = d
        else:
            a = c
        c, d = b - phi * (b - a), a + phi * (b - a)
    return float(np.exp((a + b) / 2))


ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def rouge_scores(predictions: Sequence[str | None], references: Sequence[str | None]) -> dict[str, Any]:
    """Mean ROUGE-1/2/L F-measure of predictions against aligned references.

    The project's one ROUGE: the explainer's held-out ``metrics.json`` (distill) and the
    evaluation report (evaluate) both call it, so the same predictions and references give the
    same numbers in both. Google's ``rouge-score`` with Porter stemming (the LANTERN paper's
    setup). A missing or blank prediction is a failed explanation and scores 0 on every
    measure (counted in ``blank``); a pair whose reference is missing or blank has nothing to be
    compared with and is left out (counted in ``skipped``).

    Returns:
        ``rouge1``, ``rouge2``, ``rougeL`` means over the ``n`` scored pairs (None when none is
        scored), ``n``, ``blank`` (scored pairs with a blank prediction) and ``skipped``.
    """
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    n = blank = skipped = 0
    for pred, ref in zip(predictions, references, strict=True):
        if not ref or not ref.strip():
            skipped += 1
            continue
        n += 1
        if not pred or not pred.strip():
            blank += 1
            continue
        scores = scorer.score(ref, pred)  # score(target, prediction)
        for key in totals:
            totals[key] += scores[key].fmeasure
    out: dict[str, Any] = {k: (v / n if n else None) for k, v in totals.items()}
    out.update(n=n, blank=blank, skipped=skipped)
    return out
