"""Parse and check the teacher's structured output (one JSON object per pair).

Structured decoding makes well-formed output the norm, but a generation can still stop at
``max_tokens`` mid-string, and black-box endpoints may ignore the schema. Every failure is a
:class:`ParseError` with a short reason code (never the output text: it may echo profile text).

    parsed = parse_output('{"fit_label": "High", "dimension_scores": {...}, "explanation": "..."}')
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from lantern_batch.quality import check_dimension_scores, check_explanation
from lantern_batch.schema import DIMENSIONS, FIT_LABELS

INVALID_PREFIX = "invalid_output:"


class ParseError(ValueError):
    """An output that is not a valid teacher label; ``reason`` is a code such as
    ``invalid_json``, ``truncated``, ``bad_label``, ``missing_key:explanation``."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ParsedLabel:
    """A checked teacher output."""

    fit_label: str
    dimension_scores: dict[str, float]
    explanation: str


def _extract_object(text: str) -> Any:
    """The first JSON object in ``text`` (black-box models sometimes wrap it in prose/fences)."""
    s = text.strip()
    # ValueError also covers an integer too long to convert; RecursionError, nesting too deep.
    try:
        return json.loads(s)
    except (ValueError, RecursionError):
        pass
    start = s.find("{")
    if start < 0:
        raise ParseError("invalid_json")
    try:
        obj, _ = json.JSONDecoder().raw_decode(s[start:])
        return obj
    except (ValueError, RecursionError):
        raise ParseError("invalid_json") from None


def parse_output(text: str, *, finish_reason: str | None = None,
                 max_explanation_chars: int | None = None) -> ParsedLabel:
    """Parse one output into a :class:`ParsedLabel`.

    Args:
        text: the generated text.
        finish_reason: the engine's finish reason; ``length`` with invalid JSON is ``truncated``.
        max_explanation_chars: longer explanations are rejected (``explanation_too_long``).

    Raises:
        ParseError: with the reason code.
    """
    try:
        obj = _extract_object(text)
    except ParseError:
        raise ParseError("truncated" if finish_reason == "length" else "invalid_json") from None
    if not isinstance(obj, dict):
        raise ParseError("not_an_object")
    for key in ("fit_label", "dimension_scores", "explanation"):
        if key not in obj:
            raise ParseError(f"missing_key:{key}")
    label = obj["fit_label"]
    if not isinstance(label, str) or label.strip().capitalize() not in FIT_LABELS:
        raise ParseError("bad_label")
    label = label.strip().capitalize()
    raw_scores = obj["dimension_scores"]
    if not isinstance(raw_scores, dict):
        raise ParseError("bad_dimension_scores")
    scores: dict[str, float] = {}
    for d in DIMENSIONS:
        v = raw_scores.get(d)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 4:
            raise ParseError(f"bad_score:{d}")
        scores[d] = float(v)
    explanation = obj["explanation"]
    if not isinstance(explanation, str) or not explanation.strip():
        raise ParseError("empty_explanation")
    if max_explanation_chars is not None and len(explanation) > max_explanation_chars:
        raise ParseError("explanation_too_long")
    return ParsedLabel(label, scores, explanation.strip())


def check_label(parsed: ParsedLabel, member: dict[str, Any] | None, job: dict[str, Any] | None) -> None:
    """Raise :class:`ParseError` (``invalid_output:<reasons>``) when a parsed output is not fit
    to train on: its explanation fails :func:`lantern_batch.quality.check_explanation` for this
    pair, or its dimension scores contradict its label."""
    reasons = list(check_explanation(parsed.explanation, parsed.fit_label, member, job).reasons)
    score_reason = check_dimension_scores(parsed.fit_label, parsed.dimension_scores)
    if score_reason:
        reasons.append(score_reason)
    if reasons:
        raise ParseError(INVALID_PREFIX + "+".join(reasons))


def error_reason(reason: str) -> str:
    """The error-row reason of an output that failed twice: ``invalid_output:...`` as is, any
    parse failure as ``unparseable:<reason>``."""
    return reason if reason.startswith(INVALID_PREFIX) else f"unparseable:{reason}"


def string_value_span(text: str, key: str) -> tuple[int, int] | None:
    """Character span ``[start, end)`` of the raw JSON string value of the first ``key`` in
    ``text`` (between the quotes, escapes included), or None.

    Under structured decoding keys come in schema order, so the first ``"fit_label"`` and the
    first ``"explanation"`` are the keys themselves, not words inside another value.
    """
    m = re.search(r'"' + re.escape(key) + r'"\s*:\s*"', text)
    if not m:
        return None
    start = i = m.end()
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return start, i
        i += 1
    return start, len(text)  # unterminated (truncated) string
