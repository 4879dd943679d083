"""Distillation losses shared by the classifier, explainer and teacher-SFT trainers.

* :func:`hard_ce` — cross-entropy on hard labels (optionally per-example weighted).
* :func:`soft_kd` — logit-level KD against teacher class probabilities at temperature ``T``
  (Hinton et al.: ``T² · KL(p_t^T ‖ p_s^T)``), and :func:`classifier_loss` mixing it with the
  hard-label loss: ``α · KD + (1 − α) · CE``.
* :func:`lm_ce` — token cross-entropy on output tokens only (prompt positions carry label -100).
* :func:`sparse_token_divergence` — token-level divergence (forward KL, reverse KL, Jensen–
  Shannon, total variation) between the student's full next-token distribution and the
  teacher's *sparse* top-k log-probabilities as stored by teacher synthesis.

The teacher-label table stores only the teacher's top-k tokens per position (k≈5–20 of a
49k vocabulary). The mass outside them is handled explicitly: both distributions are reduced to
``k + 1`` buckets — the k teacher tokens plus a *rest* bucket holding everything else
(teacher: ``1 − Σ p_topk``; student: ``1 − Σ q_topk``). Every divergence is then computed
exactly on those buckets. Merging outcomes never increases an f-divergence (data-processing
inequality), so the bucketed value is a lower bound of the dense one and equals it when the
top-k covers the teacher's whole support. ``rest="renormalize"`` instead drops the rest and
renormalises both distributions over the top-k (the common approximation, kept for comparison).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Divergence = Literal["forward_kl", "reverse_kl", "js", "tvd"]
DIVERGENCES: tuple[str, ...] = ("forward_kl", "reverse_kl", "js", "tvd")
IGNORE_INDEX = -100

_EPS = 1e-8  # floor for probabilities under a log; far below any stored top-k probability


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values [batch]`` weighted by ``weight [batch]`` (plain mean without weights)."""
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=_EPS)


def hard_ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy on hard labels.

    Args:
        logits: ``[batch, classes]``.
        labels: ``[batch]`` class indices.
        weight: optional ``[batch]`` example weights.
    """
    per_example = F.cross_entropy(logits.float(), labels, reduction="none")  # [batch]
    return _weighted_mean(per_example, weight)


def soft_kd(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    temperature: float = 2.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logit-level KD: ``T² · KL(p_t^T ‖ softmax(z_s / T))``.

    The teacher is given as probabilities (the ``p_high, p_medium, p_low`` columns); its
    tempered distribution is ``p_t^(1/T)`` renormalised, which equals ``softmax(z_t / T)`` for
    the teacher's logits ``z_t``. The ``T²`` factor keeps gradient size independent of T.

    Args:
        student_logits: ``[batch, classes]``.
        teacher_probs: ``[batch, classes]``, rows summing to 1.
        temperature: T > 0.
        weight: optional ``[batch]`` example weights.
    """
    t = float(temperature)
    log_pt = torch.log(teacher_probs.float().clamp(min=_EPS)) / t  # [batch, classes]
    log_pt = log_pt - torch.logsumexp(log_pt, dim=-1, keepdim=True)
    log_ps = F.log_softmax(student_logits.float() / t, dim=-1)  # [batch, classes]
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)  # [batch]
    return (t * t) * _weighted_mean(kl, weight)


def classifier_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_probs: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 2.0,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``α · soft_kd + (1 − α) · hard_ce``; returns the loss and its parts (floats, for logs)."""
    ce = hard_ce(logits, labels, weight)
    kd = soft_kd(logits, teacher_probs, temperature, weight)
    loss = alpha * kd + (1.0 - alpha) * ce
    return loss, {"ce": float(ce.detach()), "kd": float(kd.detach())}


def lm_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy over positions whose label is not -100 (the output tokens).

    Args:
        logits: ``[batch, seq, vocab]`` already aligned with ``labels`` (position t predicts
            ``labels[:, t]``).
        labels: ``[batch, seq]``; prompt and padding positions are -100.
    """
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


def _bucket_log_probs(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    topk_mask: torch.Tensor,
    rest: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student log-probabilities over ``k + 1`` buckets (top-k + rest).

    Returns:
        ``(log_p, log_q)``, each ``[..., k + 1]``; padded top-k slots get probability 0 (log
        ``-inf``-like floor) in both, so they contribute nothing.
    """
    log_q_full = F.log_softmax(student_logits.float(), dim=-1)  # [..., vocab]
    ids = topk_ids.clamp(min=0).long()
    log_q_k = log_q_full.gather(-1, ids)  # [..., k]
    log_p_k = topk_logprobs.float()  # [..., k]
    neg = torch.finfo(torch.float32).min / 4
    log_q_k = torch.where(topk_mask, log_q_k, torch.full_like(log_q_k, neg))
    log_p_k = torch.where(topk_mask, log_p_k, torch.full_like(log_p_k, neg))
    if rest == "renormalize":
        log_p_k = log_p_k - torch.logsumexp(log_p_k, dim=-1, keepdim=True)
        log_q_k = log_q_k - torch.logsumexp(log_q_k, dim=-1, keepdim=True)
        return log_p_k, log_q_k
    if rest != "bucket":
        raise ValueError(f"rest must be 'bucket' or 'renormalize', got {rest!r}")
    # Mass outside the top-k: 1 - Σ exp(log p_k), computed as log1p(-Σ) with the sum kept
    # below 1 (float error can push a full-coverage top-k to 1 + 1e-7).
    sum_p = log_p_k.exp().sum(dim=-1, keepdim=True).clamp(max=1.0 - 1e-6)  # [..., 1]
    sum_q = log_q_k.exp().sum(dim=-1, keepdim=True).clamp(max=1.0 - 1e-6)
    log_p_rest = torch.log1p(-sum_p)
    log_q_rest = torch.log1p(-sum_q)
    return torch.cat([log_p_k, log_p_rest], dim=-1), torch.cat([log_q_k, log_q_rest], dim=-1)


def bucket_divergence(log_p: torch.Tensor, log_q: torch.Tensor, divergence: str) -> torch.Tensor:
    """Divergence between two distributions given as log-probabilities ``[..., n]`` → ``[...]``."""
    p, q = log_p.exp(), log_q.exp()
    if divergence == "forward_kl":  # KL(p || q): mean-seeking
        return (p * (log_p - log_q)).sum(dim=-1)
    if divergence == "reverse_kl":  # KL(q || p): mode-seeking
        return (q * (log_q - log_p)).sum(dim=-1)
    if divergence == "js":
        log_m = torch.log((0.5 * (p + q)).clamp(min=_EPS))
        return 0.5 * (p * (log_p - log_m)).sum(dim=-1) + 0.5 * (q * (log_q - log_m)).sum(dim=-1)
    if divergence == "tvd":
        return 0.5 * (p - q).abs().sum(dim=-1)
    raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")


def sparse_token_divergence(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    mask: torch.Tensor | None = None,
    divergence: str = "tvd",
    rest: str = "bucket",
    topk_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Token-level divergence between the student and the teacher's sparse top-k, averaged over
    the positions in ``mask``.

    Args:
        student_logits: ``[..., vocab]`` student logits at the positions that predict the
            output tokens (e.g. ``[batch, seq, vocab]`` or ``[tokens, vocab]``).
        topk_ids: ``[..., k]`` teacher token ids (negative = padding slot).
        topk_logprobs: ``[..., k]`` teacher log-probabilities of those ids (at T = 1).
        mask: ``[...]`` True where a position counts (output token with teacher data).
        divergence: ``forward_kl``, ``reverse_kl``, ``js`` or ``tvd``.
        rest: ``bucket`` (mass outside the top-k as one bucket) or ``renormalize``.
        topk_mask: ``[..., k]`` valid top-k slots; default ``topk_ids >= 0``.

    Returns:
        Scalar: the mean divergence over counted positions (0 when none count).
    """
    if topk_mask is None:
        topk_mask = topk_ids >= 0
    log_p, log_q = _bucket_log_probs(student_logits, topk_ids, topk_logprobs, topk_mask, rest)
    per_position = bucket_divergence(log_p, log_q, divergence)  # [...]
    if mask is None:
        mask = torch.ones_like(per_position, dtype=torch.bool)
    mask = mask & topk_mask.any(dim=-1)
    count = mask.sum()
    if count == 0:
        return per_position.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) intact
    return (per_position * mask.to(per_position.dtype)).sum() / count


def explainer_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    topk_ids: torch.Tensor | None,
    topk_logprobs: torch.Tensor | None,
    kd_mask: torch.Tensor | None,
    lambda_sft: float = 1.0,
    lambda_kd: float = 1.0,
    divergence: str = "tvd",
    rest: str = "bucket",
) -> tuple[torch.Tensor, dict[str, float]]:
    """``λ_sft · lm_ce + λ_kd · sparse_token_divergence`` on the output positions.

    Args:
        logits: ``[batch, seq, vocab]``, aligned so position t predicts ``labels[:, t]``.
        labels: ``[batch, seq]`` with -100 on prompt and padding.
        topk_ids / topk_logprobs: ``[batch, seq, k]`` teacher top-k at the same positions
            (None: SFT only).
        kd_mask: ``[batch, seq]`` positions that have teacher top-k data.
    """
    sft = lm_ce(logits, labels)
    parts = {"sft": float(sft.detach())}
    loss = lambda_sft * sft
    if lambda_kd > 0 and topk_ids is not None and topk_logprobs is not None and kd_mask is not None:
        sel = kd_mask & (labels != IGNORE_INDEX)  # [batch, seq]
        # Only the selected positions need a full-vocabulary softmax: [n_sel, vocab].
        kd = sparse_token_divergence(logits[sel], topk_ids[sel], topk_logprobs[sel],
                                     divergence=divergence, rest=rest)
        loss = loss + lambda_kd * kd
        parts["kd"] = float(kd.detach())
    return loss, parts
