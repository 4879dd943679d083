"""The project's one set of held-out metrics: distill's ``metrics.json`` files and the evaluation
report both call these, so the same inputs give the same numbers in both. numpy only (plus
``rouge_score`` for ROUGE, imported when called); no I/O.

Labels are indices into :data:`~lantern_batch.schema.FIT_LABELS` (0 High, 1 Medium, 2 Low) or
the label names themselves; anything else (None, -1, a typo) is *no label*. Probability
matrices are ``[n, 3]`` in FIT_LABELS order (the ``p_high, p_medium, p_low`` columns).

Classification, from the confusion matrix ``C[i, j]`` = pairs with reference label i and
predicted label j (a pair with no label on either side is not counted), ``n = Σ C``::

    accuracy     = tr(C) / n
    precision_k  = C[k, k] / Σ_i C[i, k]           (None: k never predicted)
    recall_k     = C[k, k] / Σ_j C[k, j]           (None: k never in the reference)
    F1_k         = 2 P_k R_k / (P_k + R_k)  =  2 C[k, k] / (Σ_i C[i, k] + Σ_j C[k, j])
    macro-F1     = mean of F1_k over the labels that occur in the reference or the predictions

Calibration of the top-label confidence ``c_i = max_k p_ik`` with hit ``h_i = [argmax_k p_ik = y_i]``
over ``M`` equal-width bins ``B_m = ((m − 1)/M, m/M]`` (m = 1..M; B_1 also holds 0)::

    conf(B) = mean of c_i over B,   acc(B) = mean of h_i over B
    ECE     = Σ_m |B_m| / n · |acc(B_m) − conf(B_m)|        (the reliability curve's weighted gap)

    NLL     = −(1/n) Σ_i log p_{i, y_i}
    T*      = argmin_T NLL(softmax(z / T))                 (temperature scaling, Guo et al. 2017)

ROUGE-1/2/L: mean F-measure over aligned (prediction, reference) pairs; a blank prediction
scores 0.

    report = classification_report(reference, predicted)   # accuracy, per class, macro-F1, confusion
    cal = calibration(probs, reference)                     # n, ece, bins (the reliability curve)
    m = classification_metrics(probs, labels)               # a model's held-out metrics.json block
    r = rouge_scores(predictions, references)               # rouge1, rouge2, rougeL, n, blank, skipped
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lantern_batch.schema import FIT_LABELS

NUM_CLASSES = len(FIT_LABELS)

CALIBRATION_BINS = 15
"""Equal-width confidence bins of every reliability curve and ECE in the project (Guo et al.
2017's M = 15): distill's held-out ECE before and after temperature calibration and the
evaluation report's curve use the same bins, so the report can set them side by side."""

_LOOKUP = {name: i for i, name in enumerate(FIT_LABELS)}


# ---------------------------------------------------------------------------------------------
# Labels and probabilities


def label_indices(labels: Iterable[Any]) -> np.ndarray:
    """int64 index of each label in FIT_LABELS: names and in-range integers map to 0..2,
    anything else (None, a typo, an out-of-range index, a bool) to -1."""
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
        idx = labels.astype(np.int64).ravel()
    else:
        idx = np.array([_LOOKUP.get(x, -1) if isinstance(x, str) or x is None
                        else (-1 if isinstance(x, (bool, np.bool_)) else int(x)) for x in labels],
                       dtype=np.int64)
    return np.where((idx >= 0) & (idx < NUM_CLASSES), idx, -1)


def _probs(probs: np.ndarray) -> np.ndarray:
    """``probs`` as float64 [n, 3] (an empty input of any shape is [0, 3])."""
    p = np.asarray(probs, dtype=np.float64)
    if p.size == 0:
        return p.reshape(0, NUM_CLASSES)
    if p.ndim != 2 or p.shape[1] != NUM_CLASSES:
        raise ValueError(f"probabilities must be [n, {NUM_CLASSES}], got {p.shape}")
    return p


def _aligned(probs: np.ndarray, labels: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(``probs`` [n, 3], label indices [n]); a ValueError when their lengths differ."""
    p, y = _probs(probs), label_indices(labels)
    if len(p) != len(y):
        raise ValueError(f"probs has {len(p)} rows, labels {len(y)}")
    return p, y


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row softmax of ``logits [n, c] / temperature``: ``exp(z_k / T) / Σ_j exp(z_j / T)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_label_confidence(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted label index ``argmax_k p_ik``, its probability ``max_k p_ik``) per row of ``probs``."""
    p = _probs(probs)
    pred = p.argmax(axis=1)
    return pred, p[np.arange(len(p)), pred]


# ---------------------------------------------------------------------------------------------
# Classification report


def confusion_matrix(reference: Sequence[Any], predicted: Sequence[Any]) -> np.ndarray:
    """``C[i, j]`` = pairs with reference label i and predicted label j.

    Args:
        reference: the reference labels (rows): the teacher's, the policy's or the seed labels.
        predicted: the model's labels (columns), aligned with ``reference``.

    Returns:
        int64 array [3, 3] in FIT_LABELS order; a pair where either side has no label is not
        counted.
    """
    if len(reference) != len(predicted):
        raise ValueError(f"reference has {len(reference)} labels, predicted {len(predicted)}")
    r, p = label_indices(reference), label_indices(predicted)
    ok = (r >= 0) & (p >= 0)
    k = NUM_CLASSES
    return np.bincount(r[ok] * k + p[ok], minlength=k * k).reshape(k, k).astype(np.int64)


def accuracy(confusion: np.ndarray) -> float | None:
    """``tr(C) / Σ C``: share of pairs on the diagonal; None for an empty matrix."""
    total = int(np.asarray(confusion).sum())
    return float(np.trace(confusion) / total) if total else None


def per_class_scores(confusion: np.ndarray) -> dict[str, dict[str, float | int | None]]:
    """Precision, recall, F1 and support (reference count) per label, by name.

    Precision is None for a label never predicted, recall None for a label never in the
    reference; F1 is 0 when one of them is 0 or undefined and the other defined (a label with
    support that is never predicted, or predicted but never in the reference), None when both
    are undefined (the label occurs nowhere).
    """
    confusion = np.asarray(confusion)
    out: dict[str, dict[str, float | int | None]] = {}
    for i, name in enumerate(FIT_LABELS):
        tp = int(confusion[i, i])
        predicted, support = int(confusion[:, i].sum()), int(confusion[i, :].sum())
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        if precision is None or recall is None:
            f1 = None if (precision is None and recall is None) else 0.0
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return out


def macro_f1(confusion: np.ndarray) -> float | None:
    """Unweighted mean F1 over the labels that occur in the reference or the predictions.

    A label that occurs nowhere has no F1 and is left out; one with support that is never
    predicted (or predicted but never in the reference) counts with F1 = 0. This equals
    ``sklearn.metrics.f1_score(average="macro", labels=<the labels that occur>)``. None for an
    empty matrix.
    """
    scores = [s["f1"] for s in per_class_scores(confusion).values() if s["f1"] is not None]
    return float(np.mean(scores)) if scores else None


def classification_report(reference: Sequence[Any], predicted: Sequence[Any]) -> dict[str, Any]:
    """Agreement of ``predicted`` with ``reference`` over the pairs where both are labels.

    Returns:
        ``n`` (pairs counted), ``accuracy``, ``macro_f1`` (None when ``n`` is 0), ``per_class``
        (:func:`per_class_scores`), ``confusion`` (reference rows, predicted columns) and
        ``labels`` (FIT_LABELS, the order of both).
    """
    cm = confusion_matrix(reference, predicted)
    return {"n": int(cm.sum()), "accuracy": accuracy(cm), "macro_f1": macro_f1(cm),
            "per_class": per_class_scores(cm), "confusion": cm.tolist(), "labels": list(FIT_LABELS)}


# ---------------------------------------------------------------------------------------------
# Calibration


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin ``(lower, upper]`` of a reliability curve (the first also holds 0)."""

    lower: float
    upper: float
    count: int
    confidence: float | None
    """Mean predicted confidence in the bin (None when empty)."""
    accuracy: float | None
    """Share of the bin's predictions that match the reference (None when empty)."""


def reliability_curve(confidence: Sequence[float], correct: Sequence[bool],
                      n_bins: int = CALIBRATION_BINS) -> list[ReliabilityBin]:
    """Equal-width confidence bins over [0, 1]: mean confidence vs accuracy per bin.

    Bin m (0-based) holds the confidences in ``(m/M, (m+1)/M]``; bin 0 also holds 0, so a
    confidence of 1.0 falls in the last bin and one of exactly ``m/M`` (0.6 with M = 15 or 10)
    in the bin below that edge. The edges are ``m / M`` rounded once, so a confidence written
    as the same decimal lands on the edge itself.

    Args:
        confidence: the model's probability of the label it predicted, per pair.
        correct: whether that label matches the reference, per pair.
        n_bins: M, the number of bins (the project uses :data:`CALIBRATION_BINS`).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=bool)
    if conf.shape != hit.shape:
        raise ValueError("confidence and correct must have the same length")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    idx = np.searchsorted(np.arange(1, n_bins) / n_bins, conf, side="left")
    bins = []
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        bins.append(ReliabilityBin(
            lower=b / n_bins,
            upper=(b + 1) / n_bins,
            count=n,
            confidence=float(conf[sel].mean()) if n else None,
            accuracy=float(hit[sel].mean()) if n else None,
        ))
    return bins


def expected_calibration_error(bins: Sequence[ReliabilityBin]) -> float | None:
    """ECE = Σ over bins of (bin count / total) · |bin accuracy − bin mean confidence|; None
    when the bins are empty."""
    total = sum(b.count for b in bins)
    if not total:
        return None
    return float(sum(b.count / total * abs(b.accuracy - b.confidence) for b in bins if b.count))


def calibration(probs: np.ndarray, reference: Sequence[Any], n_bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Reliability curve and ECE of the top-label confidence of ``probs`` [n, 3] against
    ``reference`` labels; rows whose reference is no label are left out.

    Returns:
        ``n`` (rows counted), ``ece`` (None when ``n`` is 0) and ``bins`` (the curve, one dict of
        :class:`ReliabilityBin` fields per bin; ``ece`` is their weighted gap).
    """
    p, ref = _aligned(probs, reference)
    keep = ref >= 0
    pred, confidence = top_label_confidence(p[keep])
    bins = reliability_curve(confidence, pred == ref[keep], n_bins)
    return {"n": int(keep.sum()), "ece": expected_calibration_error(bins), "bins": [asdict(b) for b in bins]}


def nll(probs: np.ndarray, labels: Sequence[Any]) -> float | None:
    """Mean negative log-likelihood ``−(1/n) Σ log p_{i, y_i}`` of the reference labels (rows with
    no label left out; probabilities floored at 1e-12); None when no row has a label."""
    p, y = _aligned(probs, labels)
    keep = y >= 0
    if not keep.any():
        return None
    picked = p[keep][np.arange(int(keep.sum())), y[keep]]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, labels: Sequence[Any], low: float = 0.05, high: float = 20.0) -> float:
    """Softmax temperature minimising NLL on held-out data (Guo et al. 2017); 1.0 without labels.

    NLL is unimodal in log T for fixed logits, so a coarse log-grid followed by golden-section
    refinement finds the minimum to ~1e-4 in log T without an optimiser dependency.
    """
    y = label_indices(labels)
    keep = y >= 0
    if not keep.any():
        return 1.0
    z, y = np.asarray(logits, dtype=np.float64)[keep], y[keep]

    def loss(log_t: float) -> float:
        return nll(softmax(z, float(np.exp(log_t))), y)

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


def classification_metrics(probs: np.ndarray, labels: Sequence[Any], n_bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """A model's held-out metrics from its probabilities: the predicted label is the argmax.

    Returns:
        :func:`classification_report` of the argmax against ``labels`` (``n``, ``accuracy``,
        ``macro_f1``, ``per_class``, ``confusion``, ``labels``) plus ``ece`` (:func:`calibration`,
        ``n_bins`` bins) and ``nll``; the scores are None when no row has a label.
    """
    p = _probs(probs)
    pred, _ = top_label_confidence(p)
    out = classification_report(labels, pred)
    out["ece"] = calibration(p, labels, n_bins)["ece"]
    out["nll"] = nll(p, labels)
    return out


# ---------------------------------------------------------------------------------------------
# Explanations

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def rouge_scores(predictions: Sequence[str | None], references: Sequence[str | None]) -> dict[str, Any]:
    """Mean ROUGE-1/2/L F-measure of predictions against aligned references.

    Google's ``rouge-score`` with Porter stemming (the LANTERN paper's setup): ROUGE-N F is the
    harmonic mean of the n-gram overlap's precision (over the prediction's n-grams) and recall
    (over the reference's); ROUGE-L uses the longest common subsequence instead. A missing or
    blank prediction is a failed explanation and scores 0 on every measure (counted in
    ``blank``); a pair whose reference is missing or blank has nothing to be compared with and
    is left out (counted in ``skipped``).

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
