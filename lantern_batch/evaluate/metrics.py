"""Evaluation metrics: pure functions over label arrays, probabilities and explanation text.

No I/O, no Ray: :mod:`lantern_batch.evaluate.job` loads the tables and calls these; the report
renders what they return. Labels are the strings of :data:`~lantern_batch.schema.FIT_LABELS`
(High, Medium, Low); probability matrices have the columns ``p_high, p_medium, p_low``.

Agreement: :func:`confusion_matrix`, :func:`accuracy`, :func:`per_class_scores`,
:func:`macro_f1`, :func:`reliability_curve`, :func:`expected_calibration_error`,
:func:`mean_total_variation`, :func:`label_distribution`.

Explanations: :func:`rouge_scores` (ROUGE-1/2/L F-measure via ``rouge-score``),
:func:`explanation_stance` and :func:`consistency` (does the text argue the label it was given),
:func:`claimed_skills` and :func:`unsupported_claims` (skills the text attributes to the
candidate that the member does not list).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lantern_batch.schema import FIT_LABELS

# ---------------------------------------------------------------------------------------------
# Label agreement


def _label_index(labels: Iterable[str | None]) -> np.ndarray:
    """Index of each label in FIT_LABELS; -1 for None or anything else."""
    lookup = {name: i for i, name in enumerate(FIT_LABELS)}
    return np.array([lookup.get(x, -1) for x in labels], dtype=np.int64)


def confusion_matrix(reference: Sequence[str | None], predicted: Sequence[str | None]) -> np.ndarray:
    """Counts of (reference label, predicted label) pairs.

    Args:
        reference: the teacher's labels (rows of the matrix).
        predicted: the student's labels (columns), aligned with ``reference``.

    Returns:
        int64 array [3, 3] in FIT_LABELS order; pairs where either label is not a fit label
        are not counted.
    """
    if len(reference) != len(predicted):
        raise ValueError(f"reference has {len(reference)} labels, predicted {len(predicted)}")
    r, p = _label_index(reference), _label_index(predicted)
    ok = (r >= 0) & (p >= 0)
    k = len(FIT_LABELS)
    return np.bincount(r[ok] * k + p[ok], minlength=k * k).reshape(k, k).astype(np.int64)


def accuracy(confusion: np.ndarray) -> float | None:
    """Share of pairs on the diagonal; None for an empty matrix."""
    total = int(confusion.sum())
    return float(np.trace(confusion) / total) if total else None


def per_class_scores(confusion: np.ndarray) -> dict[str, dict[str, float | int | None]]:
    """Precision, recall, F1 and support per label (reference = rows, predicted = columns).

    Precision is None for a label never predicted, recall None for a label never in the
    reference; F1 is 0 when both are defined and zero, None when either is undefined.
    """
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

    A label that is neither a reference label nor ever predicted has no F1 and is left out;
    a label with support that is never predicted (or predicted but never in the reference)
    counts with F1 = 0. None for an empty matrix.
    """
    scores = [s["f1"] for s in per_class_scores(confusion).values() if s["f1"] is not None]
    return float(np.mean(scores)) if scores else None


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin of a reliability curve."""

    lower: float
    upper: float
    count: int
    confidence: float | None
    """Mean predicted confidence in the bin (None when empty)."""
    accuracy: float | None
    """Share of the bin's predictions that match the reference (None when empty)."""


def reliability_curve(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> list[ReliabilityBin]:
    """Equal-width confidence bins over [0, 1]: mean confidence vs accuracy per bin.

    Args:
        confidence: the student's probability of the label it predicted, per pair.
        correct: whether that label matches the reference, per pair.
        n_bins: number of bins; bin b holds confidences in [b/n, (b+1)/n), the last bin
            includes 1.0.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=bool)
    if conf.shape != hit.shape:
        raise ValueError("confidence and correct must have the same length")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    idx = np.clip((conf * n_bins).astype(np.int64), 0, n_bins - 1)
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
    """ECE = sum over bins of (bin count / total) * |bin accuracy - bin mean confidence|."""
    total = sum(b.count for b in bins)
    if not total:
        return None
    return float(sum(b.count / total * abs(b.accuracy - b.confidence) for b in bins if b.count))


def top_label_confidence(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted label index, its probability) per row of ``probs`` [n, 3]."""
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    return pred, probs[np.arange(len(probs)), pred]


def mean_total_variation(p: np.ndarray, q: np.ndarray) -> float | None:
    """Mean over rows of TVD(p, q) = 0.5 * sum |p - q| between two [n, 3] distributions."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {q.shape}")
    if len(p) == 0:
        return None
    return float(0.5 * np.abs(p - q).sum(axis=1).mean())


def label_distribution(labels: Iterable[str | None]) -> dict[str, Any]:
    """Count and share of each fit label; ``other`` counts anything else (None, typos)."""
    idx = _label_index(labels)
    n = len(idx)
    counts = {name: int((idx == i).sum()) for i, name in enumerate(FIT_LABELS)}
    other = int((idx < 0).sum())
    shares = {name: (c / n if n else None) for name, c in counts.items()}
    return {"n": n, "counts": counts, "shares": shares, "other": other}


# ---------------------------------------------------------------------------------------------
# ROUGE


def rouge_scores(predictions: Sequence[str | None], references: Sequence[str | None]) -> dict[str, Any]:
    """Mean ROUGE-1/2/L F-measure of predictions against aligned references.

    Uses Google's ``rouge-score`` implementation (Porter stemming on, as in the LANTERN paper's
    setup and most summarisation work). Pairs where either side is missing or blank are skipped
    and counted in ``skipped``.

    Returns:
        ``{"rouge1", "rouge2", "rougeL"}`` means (None when no pair is scored), ``n`` scored
        pairs and ``skipped``.
    """
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError("predictions and references must have the same length")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    n = skipped = 0
    for pred, ref in zip(predictions, references, strict=True):
        if not pred or not ref or not pred.strip() or not ref.strip():
            skipped += 1
            continue
        scores = scorer.score(ref, pred)  # score(target, prediction)
        for key in sums:
            sums[key] += scores[key].fmeasure
        n += 1
    out: dict[str, Any] = {k: (v / n if n else None) for k, v in sums.items()}
    out.update(n=n, skipped=skipped)
    return out


# ---------------------------------------------------------------------------------------------
# Label / explanation consistency
#
# The judge is deliberately simple and readable, so its verdicts can be checked by hand:
# 1. An explicit statement wins: the first "<label> fit|match", "rate(d) it <label>",
#    "fit: <label>", or a synonym ("strong fit", "partial match", "weak match", ...) that is not
#    negated ("not a High fit") decides the stance.
# 2. Otherwise cue words vote: positive cues (matches, meets, strong, every required ...) and
#    negative cues (lacks, missing, none of, below, unrelated ...); with s = (pos - neg) /
#    (pos + neg), s >= 0.5 reads as High, s <= -0.5 as Low, anything between as Medium.
# 3. No statement and no cue: undetermined (None); such texts are counted, not judged.

_LABEL_WORDS = {
    "high": "High", "medium": "Medium", "low": "Low",
    "strong": "High", "excellent": "High", "great": "High", "good": "High",
    "partial": "Medium", "moderate": "Medium", "reasonable": "Medium", "mixed": "Medium",
    "fair": "Medium",
    "weak": "Low", "poor": "Low", "bad": "Low",
}
_WORDS = "|".join(_LABEL_WORDS)
_STATEMENT = re.compile(
    rf"\b(?P<a>{_WORDS})[\s-]+(?:fit|match|candidate)\b"
    r"|\b(?:rate|rated|rating|label|labelled|labeled|classify|classified)\s+(?:it|this|them|you)?\s*"
    r"(?:as\s+)?(?:an?\s+)?(?P<b>high|medium|low)\b"
    r"|\bfit(?:\s+label)?\s*(?:is|:|=|-)\s*(?:an?\s+)?(?P<c>high|medium|low)\b",
    re.IGNORECASE,
)
_NEGATED = re.compile(r"\b(?:not|isn't|is\s+not|no|never|hardly)\s+(?:an?\s+|the\s+|really\s+)?$", re.IGNORECASE)

_POSITIVE_CUES = (
    "matches", "match", "meets", "meet", "exceeds", "aligns", "aligned", "lines up", "strong",
    "excellent", "well suited", "well-suited", "every required", "all the required", "all required",
    "right level", "seniority is right", "no barrier", "not an issue", "covers", "relevant",
    "extensive", "solid", "experienced", "proficient", "qualified", "bring", "brings",
)
_NEGATIVE_CUES = (
    "lack", "lacks", "lacking", "missing", "none of", "no experience", "not mentioned",
    "do not", "does not", "doesn't", "don't", "below", "above their", "step back", "unrelated",
    "far from", "relocate", "gap", "gaps", "mismatch", "insufficient", "limited", "weak",
    "not the same", "another country", "falls short", "short of", "junior to", "however",
)


def _count_cues(text: str, cues: Iterable[str]) -> int:
    return sum(len(re.findall(rf"(?<![\w-]){re.escape(cue)}(?![\w-])", text)) for cue in cues)


def explanation_stance(text: str | None) -> str | None:
    """The fit label an explanation argues for, by the documented rule above; None if unclear.

    >>> explanation_stance("This is a High fit: they list every required skill.")
    'High'
    >>> explanation_stance("They lack Kubernetes and are two levels below the role.")
    'Low'
    """
    if not text or not text.strip():
        return None
    for m in _STATEMENT.finditer(text):
        if _NEGATED.search(text[max(0, m.start() - 20): m.start()]):
            continue
        word = (m.group("a") or m.group("b") or m.group("c")).lower()
        return _LABEL_WORDS[word]
    lowered = text.lower()
    pos, neg = _count_cues(lowered, _POSITIVE_CUES), _count_cues(lowered, _NEGATIVE_CUES)
    if pos + neg == 0:
        return None
    score = (pos - neg) / (pos + neg)
    if score >= 0.5:
        return "High"
    if score <= -0.5:
        return "Low"
    return "Medium"


def consistency(labels: Sequence[str | None], explanations: Sequence[str | None]) -> dict[str, Any]:
    """How often an explanation argues the label it accompanies.

    Returns:
        ``rate`` = consistent / judged (None when nothing could be judged), ``judged``,
        ``consistent``, ``undetermined`` (explanations the judge could not read a stance from),
        ``missing`` (null or blank explanations) and ``stances`` (count per stance).
    """
    if len(labels) != len(explanations):
        raise ValueError("labels and explanations must have the same length")
    judged = consistent = undetermined = missing = 0
    stances = {name: 0 for name in FIT_LABELS}
    for label, text in zip(labels, explanations, strict=True):
        if not text or not text.strip():
            missing += 1
            continue
        stance = explanation_stance(text)
        if stance is None:
            undetermined += 1
            continue
        stances[stance] += 1
        judged += 1
        consistent += int(stance == label)
    return {
        "rate": consistent / judged if judged else None,
        "judged": judged,
        "consistent": consistent,
        "undetermined": undetermined,
        "missing": missing,
        "stances": stances,
    }


# ---------------------------------------------------------------------------------------------
# Skill claims
#
# A skill is *claimed* when a vocabulary skill is mentioned in a clause that attributes it to
# the candidate: the clause names the candidate (you, your, they, their, the candidate, the
# profile, ...) or says the skill matches/covers/meets the requirements, and carries no
# negation or lack cue (not, no, none, lacks, missing, without, would need, ...). Sentences are
# split into clauses at ``. ! ? ;`` and at "but", "while", "whereas", "although", "though",
# "however", so "They bring SQL but do not list Spark" claims SQL and not Spark. A claim is
# *unsupported* when the skill is not in the member's own ``skills`` list (case-insensitive).

_CLAUSE_SPLIT = re.compile(
    r"[.!?;]+\s*|\s*\b(?:but|while|whereas|although|though|however|yet)\b\s*", re.IGNORECASE
)
_CANDIDATE_CUE = re.compile(
    r"\b(?:you|your|you're|you've|yours|they|their|they're|they've|them|he|she|his|her|"
    r"candidate|candidate's|member|member's|applicant|profile|seeker|"
    r"match(?:es|ed)?|cover(?:s|ed)?|meet(?:s)?|bring(?:s)?)\b",
    re.IGNORECASE,
)
_NEGATION_CUE = re.compile(
    r"\b(?:not|no|none|never|nor|lack|lacks|lacking|lacked|missing|without|absent|"
    r"would need|needs to|need to|should learn|unclear|isn't|aren't|doesn't|don't|didn't)\b|n't\b",
    re.IGNORECASE,
)


def normalise_skill(skill: str) -> str:
    """Case- and space-insensitive form of a skill name."""
    return " ".join(skill.lower().split())


class SkillMatcher:
    """Finds vocabulary skills in text, longest names first, on word boundaries.

    Skills of one or two characters ("R", "Go", "C") are matched case-sensitively, so the verb
    "go" is not the language Go; longer names match in any case. ``+``, ``#`` and ``.`` count as
    word characters at the edges, so "C" does not match inside "C++" or "C#".
    """

    def __init__(self, vocabulary: Iterable[str]):
        names = sorted({s.strip() for s in vocabulary if s and s.strip()}, key=len, reverse=True)
        self.canonical = {normalise_skill(s): s for s in names}
        short = [s for s in names if len(s) <= 2]
        long = [s for s in names if len(s) > 2]
        edge_l, edge_r = r"(?<![\w+#.])", r"(?![\w+#]|\.\w)"

        def alternation(items: list[str]) -> str:
            return "|".join(r"\s+".join(re.escape(part) for part in s.split()) for s in items)

        self._long = re.compile(rf"{edge_l}(?:{alternation(long)}){edge_r}", re.IGNORECASE) if long else None
        self._short = re.compile(rf"{edge_l}(?:{alternation(short)}){edge_r}") if short else None

    def find(self, text: str) -> list[str]:
        """Vocabulary skills mentioned in ``text``, normalised, in order of first mention."""
        found: list[tuple[int, str]] = []
        taken: list[tuple[int, int]] = []
        for pattern in (self._long, self._short):
            if pattern is None:
                continue
            for m in pattern.finditer(text):
                if any(a < m.end() and m.start() < b for a, b in taken):
                    continue  # inside a longer skill already found ("Go" in "Google Ads")
                taken.append((m.start(), m.end()))
                found.append((m.start(), normalise_skill(m.group(0))))
        seen: dict[str, None] = {}
        for _, name in sorted(found):
            seen.setdefault(name, None)
        return list(seen)


def claimed_skills(text: str | None, matcher: SkillMatcher) -> list[str]:
    """Skills the explanation attributes to the candidate (normalised), by the rule above."""
    if not text:
        return []
    claims: dict[str, None] = {}
    for clause in _CLAUSE_SPLIT.split(text):
        if not clause or not _CANDIDATE_CUE.search(clause) or _NEGATION_CUE.search(clause):
            continue
        for skill in matcher.find(clause):
            claims.setdefault(skill, None)
    return list(claims)


def unsupported_claims(
    explanations: Sequence[str | None],
    member_skills: Sequence[Sequence[str] | None],
    matcher: SkillMatcher,
) -> dict[str, Any]:
    """Rate of explanations that claim at least one skill the member does not list.

    Args:
        explanations: one explanation per pair (None/blank: not evaluated).
        member_skills: the member's ``skills`` list for each pair, aligned.
        matcher: built from the skill vocabulary (all members' skills and jobs' required skills).

    Returns:
        ``rate`` = explanations with an unsupported claim / explanations evaluated,
        ``claim_rate`` = unsupported claims / all claims, counts, and up to 20 ``examples`` of
        (row index, unsupported skills).
    """
    if len(explanations) != len(member_skills):
        raise ValueError("explanations and member_skills must have the same length")
    evaluated = with_unsupported = claims_total = claims_unsupported = with_claims = 0
    examples: list[dict[str, Any]] = []
    for i, (text, skills) in enumerate(zip(explanations, member_skills, strict=True)):
        if not text or not text.strip():
            continue
        evaluated += 1
        claims = claimed_skills(text, matcher)
        if not claims:
            continue
        with_claims += 1
        own = {normalise_skill(s) for s in (skills or []) if s}
        bad = [c for c in claims if c not in own]
        claims_total += len(claims)
        claims_unsupported += len(bad)
        if bad:
            with_unsupported += 1
            if len(examples) < 20:
                examples.append({"row": i, "skills": bad})
    return {
        "rate": with_unsupported / evaluated if evaluated else None,
        "claim_rate": claims_unsupported / claims_total if claims_total else None,
        "evaluated": evaluated,
        "with_claims": with_claims,
        "with_unsupported": with_unsupported,
        "claims": claims_total,
        "unsupported": claims_unsupported,
        "examples": examples,
    }


# ---------------------------------------------------------------------------------------------
# Throughput


_RATE_KEY = re.compile(r"(?:per_s(?:ec(?:ond)?)?|_per_second|/s|throughput)$", re.IGNORECASE)


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
