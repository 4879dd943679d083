"""The sparse top-k store of explanation-token logprobs (for token-level distillation).

For every generated token that carries part of the explanation string, the row stores the
sampled token id (``explanation_token_ids``) and the ``k`` most likely candidates at that
position (``topk_ids`` / ``topk_logprobs``, [tokens][<=k], most likely first, masked -inf
candidates dropped). Token ids are int32, logprobs float32. The distillation losses treat the
probability mass outside the stored top-k as one "rest" bucket.

A row with 120 explanation tokens and k=20 costs about 120 x 20 x 8 bytes = 19 KB before
compression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lantern_batch.teacher.soft_labels import Candidate, token_spans


def explanation_topk(
    token_ids: Sequence[int],
    token_texts: Sequence[str],
    positions: Sequence[Sequence[Candidate]],
    span: tuple[int, int],
    k: int,
) -> tuple[list[int], list[list[int]], list[list[float]]]:
    """Sparse top-k of the tokens overlapping the explanation's character span.

    Args:
        token_ids: sampled token ids of the output.
        token_texts: their decoded texts (concatenating to the output text).
        positions: top candidates per generated token.
        span: ``[start, end)`` of the explanation value in the output text.
        k: candidates kept per token.

    Returns:
        (explanation_token_ids, topk_ids [tokens][<=k], topk_logprobs [tokens][<=k]).
    """
    start, end = span
    ids: list[int] = []
    top_ids: list[list[int]] = []
    top_lps: list[list[float]] = []
    for i, (s, e) in enumerate(token_spans(token_texts)):
        if e <= start or s >= end or i >= len(positions):
            continue
        ids.append(int(token_ids[i]))
        cands = [c for c in positions[i] if c[2] is not None and math.isfinite(c[2])]
        cands.sort(key=lambda c: -c[2])
        top_ids.append([int(c[0]) for c in cands[:k]])
        top_lps.append([float(c[2]) for c in cands[:k]])
    return ids, top_ids, top_lps


def dense_logprobs(topk_ids: Sequence[Sequence[int]], topk_logprobs: Sequence[Sequence[float]],
                   vocab_size: int):
    """Expand a row's sparse top-k into a dense [tokens, vocab] float32 array (-inf elsewhere);
    for inspection and tests, not for training at scale."""
    import numpy as np

    out = np.full((len(topk_ids), vocab_size), -np.inf, dtype=np.float32)  # [tokens, vocab]
    for t, (ids, lps) in enumerate(zip(topk_ids, topk_logprobs, strict=False)):
        out[t, list(ids)] = lps
    return out
