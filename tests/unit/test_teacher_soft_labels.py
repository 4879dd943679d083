"""Soft labels from the fit-label position's logprobs, and the sparse top-k store."""

import math

import numpy as np

from lantern_batch.teacher.soft_labels import label_probs, one_hot, sharpen, token_at, token_spans
from lantern_batch.teacher.topk import dense_logprobs, explanation_topk

LN = math.log


def _output(label_tokens):
    """``{"fit_label":"`` + label candidates at one position + the rest."""
    texts = ['{"', "fit", "_label", '":"', "Med", "ium", '","', "explanation", '":"', "Good", " fit", '"}']
    positions = [[(i, t, 0.0)] for i, t in enumerate(texts)]
    positions[4] = label_tokens
    return texts, positions, len("".join(texts[:4]))


def test_label_probs_sum_candidates_per_label_and_renormalise():
    texts, positions, start = _output([
        (1, "Med", LN(0.5)), (2, "High", LN(0.2)), (3, "M", LN(0.1)), (4, "Low", LN(0.05)),
        (5, "H", LN(0.05)), (6, "<pad>", float("-inf")),
    ])
    p, found = label_probs(texts, positions, start)
    assert found
    np.testing.assert_allclose(p, np.array([0.25, 0.6, 0.05]) / 0.9, rtol=1e-6)


def test_label_probs_when_the_token_merges_the_quote():
    texts = ['{"fit_label":', '"H', 'igh"}']
    positions = [[(0, texts[0], 0.0)], [(1, '"H', LN(0.6)), (2, '"M', LN(0.3)), (3, '"', LN(0.1))], [(4, texts[2], 0.0)]]
    p, found = label_probs(texts, positions, len('{"fit_label":"'))
    assert found
    np.testing.assert_allclose(p, [2 / 3, 1 / 3, 0.0], rtol=1e-6)


def test_label_probs_not_found():
    texts, positions, start = _output([(1, "xyz", 0.0)])
    p, found = label_probs(texts, positions, start)
    assert not found and p.sum() == 0
    assert not label_probs(texts, positions, 10_000)[1]


def test_spans_one_hot_and_sharpen():
    assert token_spans(["ab", "", "c"]) == [(0, 2), (2, 2), (2, 3)]
    assert token_at(token_spans(["ab", "c"]), 2) == 1
    assert one_hot("Low").tolist() == [0, 0, 1]
    p = np.array([[0.6, 0.3, 0.1]])
    np.testing.assert_allclose(sharpen(p, 1.0), p)
    assert sharpen(p, 0.5)[0, 0] > 0.6 and sharpen(p, 2.0)[0, 0] < 0.6
    np.testing.assert_allclose(sharpen(p, 0.5).sum(), 1.0)


def test_explanation_topk_keeps_only_explanation_tokens_sorted_and_finite():
    texts = ['{"explanation":"', "Good", " fit", '"}']
    ids = [10, 11, 12, 13]
    positions = [
        [(10, texts[0], 0.0)],
        [(7, "Bad", LN(0.2)), (11, "Good", LN(0.7)), (8, "Fine", LN(0.1)), (9, "x", float("-inf"))],
        [(12, " fit", LN(0.9)), (5, " match", LN(0.1))],
        [(13, '"}', 0.0)],
    ]
    span = (len(texts[0]), len(texts[0]) + len("Good fit"))
    tok, top_ids, top_lps = explanation_topk(ids, texts, positions, span, k=2)
    assert tok == [11, 12]
    assert top_ids == [[11, 7], [12, 5]]
    np.testing.assert_allclose(top_lps[0], [LN(0.7), LN(0.2)], rtol=1e-6)
    dense = dense_logprobs(top_ids, top_lps, vocab_size=16)  # [tokens, vocab]
    assert dense.shape == (2, 16) and np.isfinite(dense).sum() == 4
