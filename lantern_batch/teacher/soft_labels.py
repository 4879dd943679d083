"""Soft labels: p_high / p_medium / p_low from the logprobs at the fit-label position.

Structured decoding applies the grammar's mask before vLLM computes logprobs, so at the first
token of the ``fit_label`` value only tokens that can start ``High``, ``Medium`` or ``Low``
have finite logprobs (``Med``, ``High``, ``Low``, ``M``, ``L``, ...). The probability of a label
is the summed probability of the top-k candidates that begin it, renormalised over the three
labels (mass on other tokens, e.g. ones that merge the opening quote differently, is dropped).

A position is a list of ``(token_id, token_text, logprob)`` candidates; an output is the list
of sampled tokens' texts plus one position per generated token.

    probs, found = label_probs(token_texts, positions, value_start)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lantern_batch.schema import FIT_LABELS

Candidate = tuple[int, str, float]
"""(token id, decoded token text, logprob)."""


def token_spans(token_texts: Sequence[str]) -> list[tuple[int, int]]:
    """Character span of each generated token in the concatenated text."""
    spans, pos = [], 0
    for t in token_texts:
        spans.append((pos, pos + len(t)))
        pos += len(t)
    return spans


def token_at(spans: Sequence[tuple[int, int]], char: int) -> int | None:
    """Index of the token whose span contains character ``char``."""
    for i, (s, e) in enumerate(spans):
        if s <= char < e:
            return i
    return None


def one_hot(label: str) -> np.ndarray:
    """[3] probabilities with all mass on ``label`` (order: High, Medium, Low)."""
    p = np.zeros(len(FIT_LABELS), dtype=np.float64)
    p[FIT_LABELS.index(label)] = 1.0
    return p


def label_probs(
    token_texts: Sequence[str],
    positions: Sequence[Sequence[Candidate]],
    value_start: int,
) -> tuple[np.ndarray, bool]:
    """Label probabilities at the fit-label position.

    Args:
        token_texts: decoded text of each sampled token (they concatenate to the output).
        positions: top-k candidates per generated token.
        value_start: character offset of the label's first character in the output.

    Returns:
        ([3] probabilities in High/Medium/Low order summing to 1, True) or (zeros, False)
        when no candidate at that position begins a label.
    """
    spans = token_spans(token_texts)
    i = token_at(spans, value_start)
    if i is None or i >= len(positions):
        return np.zeros(len(FIT_LABELS)), False
    # Text of the sampled token before the value (e.g. '"' when the token is '"High').
    pre = token_texts[i][: value_start - spans[i][0]]
    mass = np.zeros(len(FIT_LABELS), dtype=np.float64)
    for _, text, logprob in positions[i]:
        if logprob is None or not math.isfinite(logprob) or not text.startswith(pre):
            continue
        rest = text[len(pre):]
        if not rest:
            continue
        for j, label in enumerate(FIT_LABELS):
            if label.startswith(rest) or rest.startswith(label):
                mass[j] += math.exp(logprob)
                break
    total = mass.sum()
    if total <= 0:
        return np.zeros(len(FIT_LABELS)), False
    return mass / total, True


def sharpen(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``p^(1/T)`` renormalised over the last axis (T < 1 sharpens, T > 1 softens).

    Args:
        probs: [..., 3] probabilities.
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0) ** (1.0 / temperature)
    return p / p.sum(axis=-1, keepdims=True)
