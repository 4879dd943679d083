"""A teacher-label table labelled by the written policy (docs/POLICY.md): a *perfect teacher*.

Benchmarks (``bench/quality.py``) and tests use it to measure what the students can learn when
the teacher is right, independently of how good the demo's 135M teacher is. Rows follow
:data:`lantern_batch.schema.TEACHER_LABELS_SCHEMA`: the policy's label, soft probabilities
(the label's one-hot mixed with a smooth function of the policy's total score, so the argmax is
always the label), the policy's dimension scores and its explanation; optionally the top-k
token log-probabilities of a real causal LM over that explanation (:func:`add_topk`).

    table = policy_teacher_labels(members, jobs, pairs)      # pyarrow tables in, table out
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from lantern_batch.logs import Progress, get_logger
from lantern_batch.schema import DIMENSIONS, FIT_LABELS, TEACHER_LABELS_SCHEMA

log = get_logger(__name__)

#: Centre of each label on the policy's total score (thresholds 0.75 / 0.50).
_CENTRES = np.array([0.875, 0.625, 0.3])


def soft_probs(label: str, total: float, sharpness: float = 0.7, width: float = 0.12) -> np.ndarray:
    """``sharpness · onehot(label) + (1 − sharpness) · softmax(−(total − centre)² / 2w²)``."""
    z = -((total - _CENTRES) ** 2) / (2 * width**2)
    smooth = np.exp(z - z.max())
    smooth /= smooth.sum()
    onehot = np.zeros(3)
    onehot[FIT_LABELS.index(label)] = 1.0
    p = sharpness * onehot + (1 - sharpness) * smooth
    return (p / p.sum()).astype(np.float32)


def policy_teacher_labels(members: pa.Table, jobs: pa.Table, pairs: pa.Table, teacher: str = "policy",
                          explain_seed: int = 0) -> pa.Table:
    """Label ``pairs`` with the policy (one row per pair whose member and job exist)."""
    from lantern_batch.policy import explain, pair_id, score_pair

    by_member = {m["member_id"]: m for m in members.to_pylist()}
    by_job = {j["job_id"]: j for j in jobs.to_pylist()}
    now = datetime.now(timezone.utc)
    rows: list[dict[str, Any]] = []
    for pair in pairs.select(["member_id", "job_id"]).to_pylist():
        m, j = by_member.get(pair["member_id"]), by_job.get(pair["job_id"])
        if m is None or j is None:
            continue
        res = score_pair(m, j)
        p = soft_probs(res.fit_label, res.total)
        rows.append({
            "pair_id": pair_id(m["member_id"], j["job_id"]),
            "member_id": m["member_id"],
            "job_id": j["job_id"],
            "teacher": teacher,
            "fit_label": res.fit_label,
            "p_high": float(p[0]), "p_medium": float(p[1]), "p_low": float(p[2]),
            "dimension_scores": {d: float(res.dimension_scores[d]) for d in DIMENSIONS},
            "explanation": explain(m, j, res, seed=explain_seed),
            "prompt_version": "policy",
            "model_ref": "policy",
            "input_fingerprint": None,
            "created_at": now,
        })
    return pa.Table.from_pylist(rows, schema=TEACHER_LABELS_SCHEMA)


def add_topk(table: pa.Table, members: pa.Table, jobs: pa.Table, model_dir: str, k: int = 8,
             member_tokens: int = 150, job_tokens: int = 150, batch_size: int = 8) -> pa.Table:
    """Fill ``explanation_token_ids`` / ``topk_ids`` / ``topk_logprobs`` with a real causal LM's
    top-k over each explanation, under the explainer prompt (what synthesis stores for D_t)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lantern_batch.distill.decoder import chat_prompt_ids, teacher_topk
    from lantern_batch.prompts import explainer_messages

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    by_member = {m["member_id"]: m for m in members.to_pylist()}
    by_job = {j["job_id"]: j for j in jobs.to_pylist()}
    rows = table.to_pylist()
    progress = Progress(log, "policy_teacher.topk", total=len(rows), every_s=10.0)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        prompts, targets = [], []
        for r in chunk:
            msgs = explainer_messages(by_member[r["member_id"]], by_job[r["job_id"]], None, r["fit_label"],
                                      member_tokens=member_tokens, job_tokens=job_tokens)
            prompts.append(chat_prompt_ids(tokenizer, msgs))
            targets.append(tokenizer(r["explanation"], add_special_tokens=False)["input_ids"])
        ids, lps = teacher_topk(model, prompts, targets, k=k, pad_id=tokenizer.pad_token_id or 0)
        for r, t, i, lp in zip(chunk, targets, ids, lps, strict=True):
            r["explanation_token_ids"] = t
            r["topk_ids"] = i
            r["topk_logprobs"] = lp
        progress.update(len(chunk))
    return pa.Table.from_pylist(rows, schema=TEACHER_LABELS_SCHEMA)
