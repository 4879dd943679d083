"""Evaluation-only metrics: pure functions over label arrays, probabilities and explanation text.

No I/O, no Ray: :mod:`lantern_batch.evaluate.job` loads the tables and calls these; the report
renders what they return. Labels are the strings of :data:`~lantern_batch.schema.FIT_LABELS`
(High, Medium, Low); probability matrices have the columns ``p_high, p_medium, p_low``.

The classification report (accuracy, per-class precision/recall/F1, macro-F1, confusion), the
reliability curve and ECE, and ROUGE are not here: they are :mod:`lantern_batch.metrics`, the
functions distill's ``metrics.json`` files use, so the report and those files agree on the same
inputs.

Agreement: :func:`mean_total_variation`, :func:`label_distribution`, :func:`label_agreement`
(one model's labels against a reference, the fit policy's or the teacher's, in the shape of the
report's table of models).

Explanations: :func:`consistency` (the text states exactly one fit label, the row's),
:func:`judge_explanations` / :func:`explanation_quality` (verdicts of the one explanation
validator, :mod:`lantern_batch.quality`: valid rate, reasons, grounding errors, repetition) and
:func:`worst_explanations`; :func:`explanation_labels` (the label each explanation states).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lantern_batch.metrics import classification_report, label_indices
from lantern_batch.quality import (
    REASONS,
    ExplanationCheck,
    check_explanation,
    stated_labels,
    summarise,
)
from lantern_batch.schema import FIT_LABELS

# ---------------------------------------------------------------------------------------------
# Label agreement (the counting itself is :mod:`lantern_batch.metrics`)


def mean_total_variation(p: np.ndarray, q: np.ndarray) -> float | None:
    """Mean over rows of TVD(p, q) = 0.5 * sum |p - q| between two [n, 3] distributions."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {q.shape}")
    if len(p) == 0:
        return None
    return float(0.5 * np.abs(p - q).sum(axis=1).mean())


def label_agreement(reference: Sequence[str | None], predicted: Sequence[str | None]) -> dict[str, Any]:
    """How often ``predicted`` is the ``reference`` label, over the pairs where both are fit labels.

    Returns:
        ``n`` (pairs counted), ``agreement`` (accuracy; None when ``n`` is 0), ``macro_f1`` and
        ``confusion`` (reference rows, predicted columns, FIT_LABELS order): those of
        :func:`lantern_batch.metrics.classification_report`.
    """
    report = classification_report(reference, predicted)
    return {"n": report["n"], "agreement": report["accuracy"], "macro_f1": report["macro_f1"],
            "confusion": report["confusion"]}


def label_distribution(labels: Iterable[str | None]) -> dict[str, Any]:
    """Count and share of each fit label; ``other`` counts anything else (None, typos)."""
    idx = label_indices(list(labels))
    n = len(idx)
    counts = {name: int((idx == i).sum()) for i, name in enumerate(FIT_LABELS)}
    other = int((idx < 0).sum())
    shares = {name: (c / n if n else None) for name, c in counts.items()}
    return {"n": n, "counts": counts, "shares": shares, "other": other}


# ---------------------------------------------------------------------------------------------
# Explanations
#
# ROUGE is :func:`lantern_batch.metrics.rouge_scores`, the function the explainer's own
# metrics.json uses. Everything here reads the verdicts of the one explanation validator,
# :func:`lantern_batch.quality.check_explanation`.

GROUNDING_REASONS: tuple[str, ...] = ("ungrounded_skill", "wrong_years", "wrong_seniority", "wrong_location")
"""Validator reasons that say the text states something the member and job rows do not."""


def _blank(text: str | None) -> bool:
    return text is None or not text.strip()


def consistency(labels: Sequence[str | None], explanations: Sequence[str | None]) -> dict[str, Any]:
    """How often an explanation states the label it accompanies, and only that one.

    An explanation is consistent when :func:`lantern_batch.quality.stated_labels` finds exactly
    one fit label in it and that label is the row's. Every explanation counts, blank ones
    included (a blank explanation states nothing, so it is not consistent).

    Returns:
        ``rate`` = consistent / ``n`` (None when ``n`` is 0), ``n``, ``consistent`` and the
        inconsistent ones by kind: ``empty`` (blank), ``no_label``, ``multiple_labels``
        ("High, Medium, Low"), ``wrong_label`` (one label, not the row's); ``stated`` counts the
        single stated label per fit label.
    """
    if len(labels) != len(explanations):
        raise ValueError("labels and explanations must have the same length")
    counts = {"consistent": 0, "empty": 0, "no_label": 0, "multiple_labels": 0, "wrong_label": 0}
    stated = {name: 0 for name in FIT_LABELS}
    for label, text in zip(labels, explanations, strict=True):
        if _blank(text):
            counts["empty"] += 1
            continue
        found = stated_labels(text)
        if not found:
            counts["no_label"] += 1
        elif len(found) > 1:
            counts["multiple_labels"] += 1
        else:
            stated[found[0]] += 1
            counts["consistent" if found[0] == label else "wrong_label"] += 1
    n = len(labels)
    return {"rate": counts["consistent"] / n if n else None, "n": n, **counts, "stated": stated}


def explanation_labels(explanations: Sequence[str | None]) -> tuple[list[str | None], dict[str, int]]:
    """The one fit label each explanation states (:func:`lantern_batch.quality.stated_labels`).

    Returns:
        (label per explanation, None where it states none or several; counts ``stated``,
        ``none`` (blank texts included) and ``several``).
    """
    labels: list[str | None] = []
    counts = {"stated": 0, "none": 0, "several": 0}
    for text in explanations:
        found = [] if _blank(text) else stated_labels(text)
        labels.append(found[0] if len(found) == 1 else None)
        counts["stated" if len(found) == 1 else "none" if not found else "several"] += 1
    return labels, counts


def judge_explanations(
    explanations: Sequence[str | None],
    labels: Sequence[str | None],
    members: Sequence[Mapping[str, Any] | None],
    jobs: Sequence[Mapping[str, Any] | None],
) -> list[ExplanationCheck]:
    """:func:`lantern_batch.quality.check_explanation` of each explanation against its row's
    label, member and job (rows as ``to_pylist()`` gives them; None: grounding not checked)."""
    if not len(explanations) == len(labels) == len(members) == len(jobs):
        raise ValueError("explanations, labels, members and jobs must have the same length")
    return [check_explanation(t, lab, mem, job)
            for t, lab, mem, job in zip(explanations, labels, members, jobs, strict=True)]


def explanation_quality(
    explanations: Sequence[str | None],
    labels: Sequence[str | None],
    checks: Sequence[ExplanationCheck],
    grounded: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """What a reader would judge of a set of explanations, from the validator's verdicts.

    Args:
        explanations: the texts (blank ones included: a blank explanation is a failed one).
        labels: the label each explanation accompanies, aligned.
        checks: :func:`judge_explanations` of the same rows.
        grounded: per row, whether the member and job were known (the grounding checks ran);
            None: all were.

    Returns:
        ``n``; ``valid`` / ``valid_rate`` (no reason at all); ``by_reason`` (count of every
        reason of :data:`~lantern_batch.quality.REASONS`, zeros included); ``consistency``
        (:func:`consistency`); ``grounding``: ``n`` (non-blank texts with member and job known),
        ``errors`` (texts with at least one of :data:`GROUNDING_REASONS`), ``rate`` and
        ``by_reason``; ``repetition``: ``n`` (non-blank texts), ``count`` and ``rate``.
    """
    if not len(explanations) == len(labels) == len(checks):
        raise ValueError("explanations, labels and checks must have the same length")
    grounded = [True] * len(checks) if grounded is None else list(grounded)
    summary = summarise(checks)
    by_reason = {r: summary["by_reason"].get(r, 0) for r in REASONS}
    present = [not _blank(t) for t in explanations]
    n_grounded = sum(1 for p, g in zip(present, grounded, strict=True) if p and g)
    errors = sum(1 for c in checks if set(c.reasons) & set(GROUNDING_REASONS))
    n_text = sum(present)
    return {
        "n": summary["checked"],
        "valid": summary["valid"],
        "valid_rate": summary["valid_rate"],
        "by_reason": by_reason,
        "consistency": consistency(labels, explanations),
        "grounding": {
            "n": n_grounded,
            "errors": errors,
            "rate": errors / n_grounded if n_grounded else None,
            "by_reason": {r: by_reason[r] for r in GROUNDING_REASONS},
        },
        "repetition": {
            "n": n_text,
            "count": by_reason["repetition"],
            "rate": by_reason["repetition"] / n_text if n_text else None,
        },
    }


def worst_explanations(checks: Sequence[ExplanationCheck], k: int = 5) -> list[int]:
    """Indices of the ``k`` invalid explanations with the most reasons (ties: first row first)."""
    invalid = [i for i, c in enumerate(checks) if not c.ok]
    return sorted(invalid, key=lambda i: (-len(checks[i].reasons), i))[:k]


# ---------------------------------------------------------------------------------------------
# Throughput


_RATE_KEY = re.compile(r"(?:per_s(?:ec(?:ond)?)?|_per_second|/s|throughput)$", re.IGNORECASE)


def published_explanations(manifest: dict[str, Any] | None) -> dict[str, Any]:
    """What precompute did with every explanation it generated for the ds (its manifest), and
    the quality gate's canary explanations: the validator judges all of them, not a held-out
    sample, so at demo scale (a handful of held-out pairs get an explanation) these are the
    numbers that describe the explainer.

    Returns:
        ``available``; ``selected`` / ``published`` / ``withheld`` / ``failed`` pairs and
        ``published_rate``, ``regenerated`` and its ``regenerated_rate`` (of published),
        ``withheld_by_reason``; ``canary`` (``pairs``, ``valid``, ``valid_first_try``,
        ``valid_rate``, ``consistency``, ``regenerations``) or None.
    """
    counts = (manifest or {}).get("counts") or {}
    if "explanations_selected" not in counts:
        return {"available": False, "reason": "no precompute manifest with explanation counts"}
    selected = int(counts["explanations_selected"])
    published = int(counts.get("explanations_generated", 0))
    regenerated = counts.get("explanations_regenerated")
    gate = (((manifest or {}).get("quality_gate") or {}).get("explanations")) or None
    canary = None
    if gate and gate.get("pairs"):
        canary = {k: gate.get(k) for k in ("pairs", "valid", "valid_first_try", "valid_rate", "consistency",
                                           "regenerations", "status")}
    return {
        "available": True, "selected": selected, "published": published,
        "published_rate": published / selected if selected else None,
        "withheld": int(counts.get("explanations_rejected", 0)), "failed": int(counts.get("explanations_failed", 0)),
        "withheld_by_reason": dict(sorted((counts.get("explanations_invalid") or {}).items(), key=lambda kv: -kv[1])),
        "regenerated": regenerated,
        "regenerated_rate": regenerated / published if regenerated is not None and published else None,
        "canary": canary,
    }


def teacher_outputs(summary: dict[str, Any] | None) -> dict[str, Any]:
    """What synthesis kept of each LLM teacher's outputs (its ``run_summary.json``): the share
    that passed the validator on the first, greedy try and after the retries, and the reasons
    of the rest. Only kept outputs are trained on, so this is the teacher's text quality.

    Returns:
        ``available``; ``teachers``: name -> ``judged`` (labelled + rejected outputs),
        ``labelled``, ``labelled_first_try``, ``valid_rate``, ``valid_first_try_rate``,
        ``invalid_by_reason`` (the top five).
    """
    passes = (summary or {}).get("passes") or {}
    teachers: dict[str, Any] = {}
    for name, p in passes.items():
        judged = int(p.get("labelled", 0)) + int(p.get("teacher_errors", 0))
        if not judged or p.get("output_tokens", 0) == 0:  # a teacher that writes no text
            continue
        first = p.get("labelled_first_try")
        teachers[name] = {
            "judged": judged, "labelled": int(p["labelled"]), "labelled_first_try": first,
            "valid_rate": p.get("valid_rate"),
            "valid_first_try_rate": p.get("valid_first_try_rate"),
            "invalid_by_reason": dict(list((p.get("invalid_by_reason") or {}).items())[:5]),
        }
    if not teachers:
        return {"available": False, "reason": "no synthesis run summary with an LLM teacher's outputs"}
    return {"available": True, "teachers": teachers}


def _flatten(obj: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], obj


def throughput_rows(stage: str, summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rates and timings a stage's summary or manifest reports, as table rows.

    Keeps numeric entries whose key, or a parent key, ends in ``per_s`` / ``_per_second`` /
    ``throughput`` (rates: ``{"rows_per_s": {"classifier": 30}}`` counts), and numeric entries
    under a ``timings`` key (seconds), at any depth.

    Returns:
        ``{"stage", "metric", "value", "kind"}`` rows, kind ``rate`` or ``seconds``.
    """
    rows: list[dict[str, Any]] = []
    for key, value in _flatten(summary or {}):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        parts = key.split(".")
        if any(_RATE_KEY.search(part) for part in parts):
            rows.append({"stage": stage, "metric": key, "value": float(value), "kind": "rate"})
        elif "timings" in parts[:-1]:
            rows.append({"stage": stage, "metric": key, "value": float(value), "kind": "seconds"})
    return rows
