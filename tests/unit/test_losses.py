"""Distillation losses against dense references computed independently on small tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from lantern_batch.distill.losses import (
    DIVERGENCES,
    classifier_loss,
    explainer_loss,
    hard_ce,
    lm_ce,
    soft_kd,
    sparse_token_divergence,
)

V, K = 12, 4


def _dense(p: torch.Tensor, q: torch.Tensor, divergence: str) -> torch.Tensor:
    """Reference divergences over the last axis, written from the textbook definitions."""
    if divergence == "forward_kl":
        return torch.sum(torch.where(p > 0, p * torch.log(p / q), torch.zeros_like(p)), -1)
    if divergence == "reverse_kl":
        return torch.sum(torch.where(q > 0, q * torch.log(q / p), torch.zeros_like(q)), -1)
    if divergence == "js":
        m = (p + q) / 2
        return 0.5 * _dense(p, m, "forward_kl") + 0.5 * _dense(q, m, "forward_kl")
    return 0.5 * torch.sum(torch.abs(p - q), -1)


def _teacher(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, V, generator=g, dtype=torch.float64) * 2, -1)


def _student_logits(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, V, generator=g, dtype=torch.float64)


def _topk(p: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    vals, ids = p.topk(k, dim=-1)
    return ids, vals.log().float()


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_full_coverage_equals_dense_divergence(divergence):
    p = _teacher(6)
    z = _student_logits(6)
    ids, lps = _topk(p, V)  # top-k covers the whole vocabulary: nothing outside it
    got = sparse_token_divergence(z.float(), ids, lps, divergence=divergence)
    ref = _dense(p, torch.softmax(z, -1), divergence).mean()
    assert got.item() == pytest.approx(ref.item(), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_rest_bucket_equals_dense_divergence_of_merged_distributions(divergence):
    p = _teacher(8, seed=3)
    z = _student_logits(8, seed=4)
    q = torch.softmax(z, -1)
    ids, lps = _topk(p, K)
    # Dense reference: move every non-top-k outcome into one extra outcome, for both sides.
    outside = torch.ones_like(p, dtype=torch.bool).scatter(-1, ids, False)
    p_b = torch.cat([p.gather(-1, ids), (p * outside).sum(-1, keepdim=True)], -1)
    q_b = torch.cat([q.gather(-1, ids), (q * outside).sum(-1, keepdim=True)], -1)
    ref = _dense(p_b, q_b, divergence).mean()
    got = sparse_token_divergence(z.float(), ids, lps, divergence=divergence, rest="bucket")
    assert got.item() == pytest.approx(ref.item(), rel=1e-4, abs=1e-5)
    # Merging outcomes never increases the divergence (data-processing inequality).
    full = _dense(p, q, divergence).mean()
    assert got.item() <= full.item() + 1e-5


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_renormalize_equals_dense_divergence_over_topk(divergence):
    p = _teacher(5, seed=7)
    z = _student_logits(5, seed=8)
    ids, lps = _topk(p, K)
    p_k = p.gather(-1, ids)
    q_k = torch.softmax(z, -1).gather(-1, ids)
    ref = _dense(p_k / p_k.sum(-1, keepdim=True), q_k / q_k.sum(-1, keepdim=True), divergence).mean()
    got = sparse_token_divergence(z.float(), ids, lps, divergence=divergence, rest="renormalize")
    assert got.item() == pytest.approx(ref.item(), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_zero_at_the_teacher_and_positive_elsewhere(divergence):
    p = _teacher(4, seed=11)
    ids, lps = _topk(p, K)
    assert sparse_token_divergence(p.log().float(), ids, lps, divergence=divergence).item() == pytest.approx(0.0, abs=1e-5)
    assert sparse_token_divergence(_student_logits(4).float(), ids, lps, divergence=divergence).item() > 1e-3


def test_mask_and_padded_topk_slots():
    p = _teacher(3, seed=5)
    z = _student_logits(3, seed=6).float()
    ids, lps = _topk(p, K)
    # Position mask: the mean covers only the counted positions.
    per_pos = [sparse_token_divergence(z[i : i + 1], ids[i : i + 1], lps[i : i + 1]).item() for i in range(3)]
    masked = sparse_token_divergence(z, ids, lps, mask=torch.tensor([True, False, True]))
    assert masked.item() == pytest.approx((per_pos[0] + per_pos[2]) / 2, rel=1e-5)
    # A padded slot (id -1) is the same as a top-(k-1) entry.
    ids_pad, lps_pad = ids.clone(), lps.clone()
    ids_pad[:, -1], lps_pad[:, -1] = -1, 0.0
    a = sparse_token_divergence(z, ids_pad, lps_pad, divergence="forward_kl")
    b = sparse_token_divergence(z, ids[:, :-1], lps[:, :-1], divergence="forward_kl")
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    # Nothing counted: zero loss that still back-propagates.
    zz = z.clone().requires_grad_(True)
    none = sparse_token_divergence(zz, ids, lps, mask=torch.zeros(3, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and zz.grad is not None


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_gradient_moves_the_student_toward_the_teacher(divergence):
    p = _teacher(4, seed=21)
    ids, lps = _topk(p, K)
    z = _student_logits(4, seed=22).float().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.1)
    start = sparse_token_divergence(z, ids, lps, divergence=divergence).item()
    for _ in range(100):
        opt.zero_grad()
        loss = sparse_token_divergence(z, ids, lps, divergence=divergence)
        loss.backward()
        assert torch.isfinite(z.grad).all()
        opt.step()
    assert loss.item() < 0.5 * start


def test_bad_divergence_and_rest_names():
    p = _teacher(2)
    ids, lps = _topk(p, K)
    with pytest.raises(ValueError, match="divergence"):
        sparse_token_divergence(_student_logits(2).float(), ids, lps, divergence="kl")
    with pytest.raises(ValueError, match="rest"):
        sparse_token_divergence(_student_logits(2).float(), ids, lps, rest="drop")


def test_hard_ce_and_weights():
    z = _student_logits(5)[:, :3].float()
    y = torch.tensor([0, 1, 2, 0, 1])
    assert hard_ce(z, y).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-6)
    w = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
    assert hard_ce(z, y, w).item() == pytest.approx(F.cross_entropy(z[:1], y[:1]).item(), rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_soft_kd_matches_tempered_kl_reference(temperature):
    zt = _student_logits(6, seed=31)[:, :3]
    zs = _student_logits(6, seed=32)[:, :3]
    pt = torch.softmax(zt, -1)
    ref = temperature**2 * _dense(torch.softmax(zt / temperature, -1), torch.softmax(zs / temperature, -1), "forward_kl").mean()
    got = soft_kd(zs.float(), pt.float(), temperature)
    assert got.item() == pytest.approx(ref.item(), rel=1e-4)
    assert soft_kd(zt.float(), pt.float(), temperature).item() == pytest.approx(0.0, abs=1e-5)


def test_classifier_loss_mixes_with_alpha():
    z = _student_logits(4, seed=41)[:, :3].float()
    pt = torch.softmax(_student_logits(4, seed=42)[:, :3], -1).float()
    y = pt.argmax(-1)
    ce, kd = hard_ce(z, y).item(), soft_kd(z, pt, 2.0).item()
    for alpha in (0.0, 0.3, 1.0):
        loss, parts = classifier_loss(z, y, pt, alpha=alpha, temperature=2.0)
        assert loss.item() == pytest.approx(alpha * kd + (1 - alpha) * ce, rel=1e-5)
        assert parts["ce"] == pytest.approx(ce, rel=1e-5) and parts["kd"] == pytest.approx(kd, rel=1e-5)


def test_lm_ce_counts_output_tokens_only_and_explainer_loss_sums_parts():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, V, generator=g)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, -100, -100]])
    sel = labels != -100
    ref = -F.log_softmax(logits[sel], -1).gather(-1, labels[sel].unsqueeze(-1)).mean()
    assert lm_ce(logits, labels).item() == pytest.approx(ref.item(), rel=1e-5)
    # Changing a prompt position's logits changes nothing.
    moved = logits.clone()
    moved[0, 0] += 10
    assert lm_ce(moved, labels).item() == pytest.approx(ref.item(), rel=1e-6)

    p = torch.softmax(torch.randn(2, 5, V, generator=g), -1)
    vals, ids = p.topk(K, -1)
    kd_mask = sel.clone()
    loss, parts = explainer_loss(logits, labels, ids, vals.log(), kd_mask, lambda_sft=0.5, lambda_kd=2.0)
    kd = sparse_token_divergence(logits[sel], ids[sel], vals.log()[sel])
    assert loss.item() == pytest.approx(0.5 * ref.item() + 2.0 * kd.item(), rel=1e-5)
    assert set(parts) == {"sft", "kd"} and math.isfinite(parts["kd"])
    only_sft, parts = explainer_loss(logits, labels, None, None, None)
    assert only_sft.item() == pytest.approx(ref.item(), rel=1e-5) and set(parts) == {"sft"}
