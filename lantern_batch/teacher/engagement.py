"""The engagement teacher: P(apply) from pair features, mapped to fit-label probabilities.

LANTERN pairs the policy teacher with an engagement-oriented one. Here it is a logistic
regression over a few pair features, fitted on the apply log, whose apply probability is
turned into (p_high, p_medium, p_low) by an *ordinal calibration* fitted on D_seed:

    s = logit(P(apply))                       # the engagement score
    P(label <= Low)    = sigmoid(t1 - a * s)  # a > 0, t1 < t2: labels ordered Low < Medium < High
    P(label <= Medium) = sigmoid(t2 - a * s)

so a higher apply probability moves mass towards High, and the thresholds are those that best
explain the seed labels. Both fits are plain numpy (Newton steps for the logistic regression,
gradient steps for the three calibration parameters) and take well under a second on the
demo's 3,000-row apply log.

Features (:func:`pair_features`): bias, skill overlap, seniority gap and its absolute value and
square (over- and under-qualification differ), same city / remote-in-country, years of
experience (scaled), whether the job lists required skills.

    model = fit_engagement_model(cfg.engagement.model_dump(), members_path, jobs_path)
    ds.map_batches(EngagementTeacher, fn_constructor_kwargs={"teacher": ..., "model": model})
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lantern_batch import io
from lantern_batch.policy import seniority_gap, skill_overlap
from lantern_batch.schema import FIT_LABELS
from lantern_batch.teacher.records import LabeledRows

FEATURES = ("bias", "skill_overlap", "seniority_gap", "abs_seniority_gap", "seniority_gap_sq",
            "same_city", "remote", "years_scaled", "job_lists_skills")


def _city(location: str | None) -> str:
    return (location or "").split(",")[0].strip().lower()


def pair_features(member: dict, job: dict) -> np.ndarray:
    """[len(FEATURES)] feature vector of one pair (rows as dicts)."""
    gap = float(seniority_gap(member, job))
    remote = (job.get("workplace_type") or "").strip().lower() == "remote"
    mc, jc = _city(member.get("location")), _city(job.get("location"))
    years = member.get("years_experience")
    return np.array([
        1.0,
        skill_overlap(member.get("skills"), job.get("required_skills")),
        gap,
        abs(gap),
        gap * gap / 4.0,
        float(bool(mc) and mc == jc),
        float(remote),
        min(float(years), 30.0) / 10.0 if years is not None else 0.5,
        float(bool(job.get("required_skills"))),
    ], dtype=np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -35, 35)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """L2-penalised logistic regression by Newton's method (the bias is not penalised).

    Args:
        x: [n, d] features (column 0 the bias).
        y: [n] 0/1 targets.
    """
    n, d = x.shape
    w = np.zeros(d)
    penalty = np.full(d, l2)
    penalty[0] = 0.0
    for _ in range(iters):
        p = _sigmoid(x @ w)  # [n]
        grad = x.T @ (p - y) + penalty * w  # [d]
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty) + 1e-9 * np.eye(d)  # [d, d]
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def ordinal_probs(s: np.ndarray, a: float, t1: float, t2: float) -> np.ndarray:
    """[n, 3] probabilities in (High, Medium, Low) order for engagement scores ``s`` [n]."""
    c_low = _sigmoid(t1 - a * s)
    c_med = _sigmoid(t2 - a * s)
    p = np.stack([1.0 - c_med, c_med - c_low, c_low], axis=-1)
    p = np.clip(p, 1e-9, 1.0)
    return p / p.sum(axis=-1, keepdims=True)


def fit_ordinal(s: np.ndarray, labels: list[str], iters: int = 3000, lr: float = 0.05) -> tuple[float, float, float]:
    """Fit (a, t1, t2) of the cumulative-logit calibration to seed labels by gradient steps on
    the mean negative log-likelihood. a = exp(alpha) > 0 and t2 = t1 + exp(delta) > t1 keep the
    order."""
    y = np.array([FIT_LABELS.index(label) for label in labels])  # 0 High, 1 Medium, 2 Low
    mu, sd = float(np.mean(s)), float(np.std(s) or 1.0)
    z = (s - mu) / sd  # standardised scores make one learning rate fit every scale
    params = np.array([0.0, -0.5, 0.0])  # alpha, t1, delta

    def nll(theta: np.ndarray) -> float:
        a, t1, t2 = np.exp(theta[0]), theta[1], theta[1] + np.exp(theta[2])
        p = ordinal_probs(z, a, t1, t2)
        return float(-np.mean(np.log(p[np.arange(len(y)), y])))

    eps = 1e-5
    for _ in range(iters):
        base = nll(params)
        grad = np.array([(nll(params + eps * e) - base) / eps for e in np.eye(3)])
        params -= lr * grad / max(1.0, float(np.linalg.norm(grad)))
    a, t1, t2 = float(np.exp(params[0])), float(params[1]), float(params[1] + np.exp(params[2]))
    # Undo the standardisation: a*z = (a/sd)*s - a*mu/sd.
    return a / sd, t1 + a * mu / sd, t2 + a * mu / sd


def _features_for(keys: pa.Table, members: dict[str, dict], jobs: dict[str, dict]) -> tuple[np.ndarray, np.ndarray]:
    rows, keep = [], []
    for i, (m, j) in enumerate(zip(keys.column("member_id").to_pylist(), keys.column("job_id").to_pylist(), strict=False)):
        if m in members and j in jobs:
            rows.append(pair_features(members[m], jobs[j]))
            keep.append(i)
    x = np.stack(rows) if rows else np.zeros((0, len(FEATURES)))
    return x, np.array(keep, dtype=np.int64)


def fit_engagement_model(cfg: dict[str, Any], members_path: str, jobs_path: str) -> dict[str, Any]:
    """Fit the apply model on the apply log and its ordinal calibration on D_seed.

    Runs as one Ray task (it reads the apply log, members and jobs; the driver gets a few
    numbers back).

    Returns:
        ``{"weights", "features", "a", "t1", "t2", "model_ref", "train_rows", "seed_rows",
        "apply_rate", "seed_accuracy"}``.
    """
    cols_m = ["member_id", "skills", "seniority", "location", "years_experience"]
    cols_j = ["job_id", "required_skills", "seniority", "location", "workplace_type"]
    # Read as the input tables they are: each file conformed to the contract on its own (files
    # that differ by safe widenings, time units or zones, or null-typed columns read as one).
    members = {r["member_id"]: r for r in io.read_table(members_path, columns=cols_m, table="members").to_pylist()
               if r["member_id"]}
    jobs = {r["job_id"]: r for r in io.read_table(jobs_path, columns=cols_j, table="jobs").to_pylist() if r["job_id"]}
    log = io.read_table(cfg["apply_log"], columns=["member_id", "job_id", "applied"], table="apply_log")
    if log.num_rows > cfg["max_train_rows"]:
        # Deterministic sample: the rows with the smallest key hashes.
        h = [hashlib.sha1(f"{m}\x1f{j}".encode()).hexdigest() for m, j in
             zip(log.column("member_id").to_pylist(), log.column("job_id").to_pylist(), strict=False)]
        order = np.argsort(np.array(h))[: cfg["max_train_rows"]]
        log = log.take(pa.array(order))
    x, keep = _features_for(log, members, jobs)
    y = np.asarray(pc.fill_null(log.column("applied"), False).to_numpy(zero_copy_only=False), dtype=np.float64)[keep]
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("apply log: need both applied and not-applied rows that join to members and jobs")
    w = fit_logistic(x, y, l2=cfg["l2"])

    seed = io.read_table(cfg["seed"], columns=["member_id", "job_id", "fit_label"], table="seed")
    xs, keep_s = _features_for(seed, members, jobs)
    labels = [seed.column("fit_label")[int(i)].as_py() for i in keep_s]
    pairs = [(x_, lab) for x_, lab in zip(xs, labels, strict=False) if lab in FIT_LABELS]
    if len(pairs) < 3:
        raise ValueError("D_seed: too few labelled pairs join to members and jobs for the calibration")
    xs = np.stack([p[0] for p in pairs])
    labels = [p[1] for p in pairs]
    s = xs @ w
    a, t1, t2 = fit_ordinal(s, labels)
    pred = ordinal_probs(s, a, t1, t2).argmax(axis=-1)
    acc = float(np.mean(pred == np.array([FIT_LABELS.index(lab) for lab in labels])))
    blob = json.dumps([list(map(float, w)), a, t1, t2])
    return {
        "weights": [float(v) for v in w], "features": list(FEATURES), "a": a, "t1": t1, "t2": t2,
        "model_ref": "engagement:logreg-" + hashlib.sha256(blob.encode()).hexdigest()[:12],
        "train_rows": int(len(y)), "apply_rate": float(y.mean()), "seed_rows": len(labels),
        "seed_accuracy": acc,
    }


class EngagementTeacher:
    """Ray Data UDF (actor): label JOINED rows with the engagement model (no text, no LLM)."""

    def __init__(self, teacher: dict[str, Any], model: dict[str, Any]):
        self.name, self.version = teacher["name"], teacher["prompt_version"]
        self.model = model
        self.w = np.asarray(model["weights"])

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = LabeledRows(self.name, self.version, self.model["model_ref"])
        rows = batch.to_pylist()
        good = [r for r in rows if r.get("_err_reason") is None]
        for r in rows:
            if r.get("_err_reason") is not None:
                out.add_passthrough(r)
        if good:
            x = np.stack([pair_features(r["member"], r["job"]) for r in good])  # [n, d]
            probs = ordinal_probs(x @ self.w, self.model["a"], self.model["t1"], self.model["t2"])  # [n, 3]
            for r, p in zip(good, probs, strict=False):
                out.add_label(r, fit_label=FIT_LABELS[int(np.argmax(p))], probs=p, dimension_scores=None,
                              explanation=None, probs_from_logprobs=True)
        return out.to_table()
