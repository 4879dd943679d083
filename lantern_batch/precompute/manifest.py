"""The precompute manifest and the quality gate.

:func:`aggregate_counts` sums the per-file counts the writers return; :func:`build_manifest`
turns them, the timings and the run's identity into the manifest of ``scores/ds=…/``
(``_manifest-<run_id>.json``, copied to ``_manifest.json``; ``files`` is added by
:func:`lantern_batch.io.publish_partition`).
:func:`label_shift` compares the label distribution with the previous ds.
:func:`canary_agreement` is the quality gate's check: the classifier's labels on a fixed set of
teacher-labelled pairs against the teacher's.

Manifest keys (all counts are rows)::

    run_id, ds, created_at, status, config_hash, previous {ds, run_id}
    counts {rows_in, rows_scored, rows_reused, rows_error, conservation
            ("rows_in = rows_scored + rows_reused + rows_error"), conservation_ok,
            explanations_selected, explanations_generated, explanations_reused,
            explanations_failed, explanations_rejected (generated but invalid: left null),
            explanations_regenerated (published after a rejected first try),
            explanations_invalid (the validator's reasons: count each), errors_by_reason,
            members_rejected, jobs_rejected}
    models {classifier {ref, version}, explainer {ref, version} | null}
    fingerprints {run, prompt_version, explainer_prompt_version, settings}
    timings {phase: seconds}, stages {stage: {rows, busy_s, rows_per_s[, tokens, tokens_per_s]}}
    labels {counts, shares, shift {previous_ds, tvd, delta}}
    quality_gate {status: passed|failed|skipped, ...}
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lantern_batch.metrics import confusion_matrix
from lantern_batch.schema import FIT_LABELS, SCORES_SCHEMA, TS


def batch_counts(rows: pa.Table) -> dict[str, Any]:
    """Counts of one written batch of :data:`~lantern_batch.precompute.route.WORK_SCHEMA` rows."""
    route = rows.column("__route").to_pylist()
    c: Counter[str] = Counter(route)
    good = [r != "error" for r in route]
    labels = Counter(lab for lab, g in zip(rows.column("fit_label").to_pylist(), good, strict=True) if g)
    expl = rows.column("explanation").is_valid().to_pylist()
    ver = rows.column("explainer_version").is_valid().to_pylist()
    asked = [bool(x) for x in pc.fill_null(rows.column("__explain"), False).to_pylist()]
    failed = [bool(x) for x in pc.fill_null(rows.column("__explain_failed"), False).to_pylist()]
    invalid: Counter[str] = Counter()
    n_invalid = 0
    for reason, g in zip(rows.column("__explain_invalid").to_pylist(), good, strict=True):
        if reason and g:
            n_invalid += 1
            invalid.update(reason.split("+"))
    tries = rows.column("__explain_attempts").to_pylist() if "__explain_attempts" in rows.column_names else ()
    regenerated = sum(bool(a and a > 1 and e) for a, e in zip(tries, expl, strict=True))
    errors: Counter[str] = Counter()
    for t, s, r, g in zip(rows.column("__err_table").to_pylist(), rows.column("__err_stage").to_pylist(),
                          rows.column("__err_reason").to_pylist(), good, strict=True):
        if not g:
            errors[f"{t}/{s}/{r}"] += 1
    return {
        "rows_scored": c.get("score", 0),
        "rows_reused": c.get("reuse", 0) + c.get("reselect", 0),
        "rows_error": c.get("error", 0),
        "labels": dict(labels),
        "explanations_selected": sum(v and g for v, g in zip(ver, good, strict=True)) + n_invalid,
        "explanations_generated": sum(e and a for e, a in zip(expl, asked, strict=True)),
        "explanations_reused": sum(e and not a and g for e, a, g in zip(expl, asked, good, strict=True)),
        "explanations_failed": sum(f and g for f, g in zip(failed, good, strict=True)),
        "explanations_rejected": n_invalid,
        "explanations_regenerated": regenerated,
        "explanations_invalid": dict(invalid),
        "errors_by_reason": dict(errors),
    }


def aggregate_counts(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum :func:`batch_counts` dicts (nested dicts are summed key by key)."""
    total: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, dict):
                acc = total.setdefault(k, {})
                for kk, vv in v.items():
                    acc[kk] = acc.get(kk, 0) + vv
            else:
                total[k] = total.get(k, 0) + v
    for k in ("rows_scored", "rows_reused", "rows_error", "explanations_selected",
              "explanations_generated", "explanations_reused", "explanations_failed", "explanations_rejected",
              "explanations_regenerated"):
        total.setdefault(k, 0)
    total.setdefault("labels", {})
    total.setdefault("explanations_invalid", {})
    total.setdefault("errors_by_reason", {})
    return total


def label_shift(counts: dict[str, int], previous: dict[str, int] | None) -> dict[str, Any] | None:
    """Total variation distance and per-label share change against the previous ds."""
    if not previous:
        return None
    n, m = sum(counts.values()), sum(previous.values())
    if n == 0 or m == 0:
        return None
    delta = {lab: counts.get(lab, 0) / n - previous.get(lab, 0) / m for lab in FIT_LABELS}
    return {"tvd": round(0.5 * sum(abs(v) for v in delta.values()), 6),
            "delta": {k: round(v, 6) for k, v in delta.items()}}


def shares(counts: dict[str, int]) -> dict[str, float]:
    n = sum(counts.values())
    return {lab: round(counts.get(lab, 0) / n, 6) if n else 0.0 for lab in FIT_LABELS}


def stage_rates(meter: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Rows/s (and tokens/s) per stage from the summed busy seconds the stages reported."""
    out = {}
    for stage, m in sorted(meter.items()):
        busy = m.get("seconds", 0.0)
        entry = {"rows": int(m.get("rows", 0)), "busy_s": round(busy, 3),
                 "rows_per_s": round(m.get("rows", 0) / busy, 2) if busy > 0 else None}
        if m.get("tokens"):
            entry["tokens"] = int(m["tokens"])
            entry["tokens_per_s"] = round(m["tokens"] / busy, 2) if busy > 0 else None
        out[stage] = entry
    return out


def build_manifest(
    *,
    run_id: str,
    ds: str,
    counts: dict[str, Any],
    rows_in: int,
    models: dict[str, Any],
    fingerprints: dict[str, Any],
    config_hash: str,
    timings: dict[str, float],
    stages: dict[str, Any],
    previous: dict[str, Any] | None,
    previous_labels: dict[str, int] | None,
    members_rejected: dict[str, int],
    jobs_rejected: dict[str, int],
    quality_gate: dict[str, Any],
    errors_dir: str,
) -> dict[str, Any]:
    """The manifest of a scores partition's generation (see the module docstring)."""
    total = counts["rows_scored"] + counts["rows_reused"] + counts["rows_error"]
    labels = counts.get("labels", {})
    return {
        "run_id": run_id,
        "ds": ds,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "status": "published",
        "config_hash": config_hash,
        "previous": previous,
        "counts": {
            "rows_in": rows_in,
            "rows_scored": counts["rows_scored"],
            "rows_reused": counts["rows_reused"],
            "rows_error": counts["rows_error"],
            "conservation": "rows_in = rows_scored + rows_reused + rows_error",
            "conservation_ok": rows_in == total,
            "rows_published": counts["rows_scored"] + counts["rows_reused"],
            "explanations_selected": counts["explanations_selected"],
            "explanations_generated": counts["explanations_generated"],
            "explanations_reused": counts["explanations_reused"],
            "explanations_failed": counts["explanations_failed"],
            "explanations_rejected": counts["explanations_rejected"],
            "explanations_regenerated": counts["explanations_regenerated"],
            "explanations_invalid": counts["explanations_invalid"],
            "errors_by_reason": dict(sorted(counts.get("errors_by_reason", {}).items())),
            "members_rejected": dict(sorted(members_rejected.items())),
            "jobs_rejected": dict(sorted(jobs_rejected.items())),
        },
        "errors_dir": errors_dir,
        "models": models,
        "fingerprints": fingerprints,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "stages": stages,
        "labels": {
            "counts": {lab: int(labels.get(lab, 0)) for lab in FIT_LABELS},
            "shares": shares(labels),
            "shift": ({"previous_ds": (previous or {}).get("ds"), **s}
                      if (s := label_shift(labels, previous_labels)) else None),
        },
        "quality_gate": quality_gate,
    }


# ---------------------------------------------------------------------------------------------
# Writing rows


def scores_table(rows: pa.Table) -> pa.Table:
    """Rows as :data:`lantern_batch.schema.SCORES_SCHEMA` (exactly its columns and types).

    Raises:
        RuntimeError: a row lacks a required value (a pipeline bug, never bad input).
    """
    arrays = []
    for f in SCORES_SCHEMA:
        col = rows.column(f.name).combine_chunks()
        if not col.type.equals(f.type):
            col = col.cast(f.type)
        if not f.nullable and col.null_count:
            raise RuntimeError(f"precompute: {col.null_count} scored rows lack '{f.name}'")
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=SCORES_SCHEMA)


def errors_table(rows: pa.Table, now: datetime | None = None) -> pa.Table:
    """Error rows (:data:`lantern_batch.schema.ERRORS_SCHEMA`) of routed ``error`` rows."""
    from lantern_batch.schema import ERRORS_SCHEMA

    now = now or datetime.now(timezone.utc)
    n = rows.num_rows
    return pa.Table.from_arrays(
        [
            rows.column("member_id").combine_chunks(),
            rows.column("job_id").combine_chunks(),
            pc.fill_null(rows.column("__err_table"), "pairs").combine_chunks(),
            pc.fill_null(rows.column("__err_stage"), "unknown").combine_chunks(),
            pc.fill_null(rows.column("__err_reason"), "unknown").combine_chunks(),
            rows.column("__err_detail").combine_chunks(),
            pa.array([now] * n, TS),
        ],
        schema=ERRORS_SCHEMA,
    )


# ---------------------------------------------------------------------------------------------
# Quality gate


def gate_skipped() -> dict[str, Any]:
    return {"status": "skipped", "reason": "no canary configured (quality_gate.canary is null)"}


def agreement_report(teacher: list[str], student: list[str], min_agreement: float, min_pairs: int,
                     unusable: int = 0) -> dict[str, Any]:
    """Gate verdict from teacher and classifier labels of the usable canary pairs."""
    n = len(teacher)
    agree = float(np.mean([a == b for a, b in zip(teacher, student, strict=True)])) if n else 0.0
    cm = confusion_matrix(teacher, student)  # a pair with a non-label on either side is not counted
    confusion = {t: dict(zip(FIT_LABELS, row, strict=True)) for t, row in zip(FIT_LABELS, cm.tolist(), strict=True)}
    report: dict[str, Any] = {
        "pairs": n, "unusable_pairs": unusable, "agreement": round(agree, 4),
        "min_agreement": min_agreement, "min_pairs": min_pairs,
        "confusion_teacher_by_classifier": confusion,
    }
    if n < min_pairs:
        report["status"] = "failed"
        report["reason"] = f"only {n} usable canary pairs (need at least {min_pairs})"
    elif agree < min_agreement:
        report["status"] = "failed"
        report["reason"] = (f"classifier agrees with the teacher on {agree:.1%} of {n} canary pairs, "
                            f"below the threshold {min_agreement:.1%}")
    else:
        report["status"] = "passed"
    return report


def canary_pairs(gate: dict[str, Any], limits: Any) -> tuple[list[tuple[dict, dict, str | None, str]], int]:
    """The usable canary pairs as ``(member, job, query, label)`` and the count of unusable ones
    (member or job missing, invalid or duplicated, or a label that is not High/Medium/Low)."""
    from lantern_batch import io
    from lantern_batch.schema import validate_table

    labels = io.read_table(gate["canary"], table="canary")
    for col in ("member_id", "job_id", "fit_label"):
        if col not in labels.column_names:
            from lantern_batch.errors import InputError

            raise InputError(f"table 'canary': column '{col}' is missing (expected type string)")
    labels = labels.slice(0, gate["max_pairs"])
    query = labels.column("query") if "query" in labels.column_names else pa.nulls(labels.num_rows, pa.string())

    def rows_of(path: str, table_name: str, key: str, ids: list[str]) -> dict[str, dict]:
        import pyarrow.dataset as pads

        files = io.list_parquet_files(path)
        fs, _ = io.filesystem(files[0])
        dset = pads.dataset([io.filesystem(f)[1] for f in files], filesystem=fs, format="parquet")
        table = dset.to_table(filter=pc.field(key).isin(sorted(set(ids))))
        good = validate_table(table, table_name, limits).good
        return {r[key]: r for r in good.to_pylist()}

    m_ids = labels.column("member_id").to_pylist()
    j_ids = labels.column("job_id").to_pylist()
    members = rows_of(gate["members"], "members", "member_id", [m for m in m_ids if m])
    jobs = rows_of(gate["jobs"], "jobs", "job_id", [j for j in j_ids if j])
    usable, unusable = [], 0
    for m, j, q, lab in zip(m_ids, j_ids, query.to_pylist(), labels.column("fit_label").to_pylist(), strict=True):
        if m not in members or j not in jobs or lab not in FIT_LABELS:
            unusable += 1
            continue
        usable.append((members[m], jobs[j], q, lab))
    return usable, unusable


def combine_gate_reports(agreement: dict[str, Any], explanations: dict[str, Any] | None = None) -> dict[str, Any]:
    """One gate verdict: the classifier's agreement report, with the explainer's canary report
    under ``explanations``; failed when either failed (the reasons joined)."""
    if explanations is None:
        return agreement
    report = {**agreement, "explanations": explanations}
    failed = [r["reason"] for r in (agreement, explanations) if r["status"] != "passed"]
    report["status"] = "failed" if failed else "passed"
    if failed:
        report["reason"] = "; ".join(failed)
    return report


def canary_agreement(gate: dict[str, Any], classifier: Any, limits: Any) -> dict[str, Any]:
    """Score the canary pairs with the classifier and compare with the teacher's labels.

    Runs in one Ray task (the canary is small). Canary pairs whose member or job is missing,
    invalid or duplicated, or whose teacher label is not High/Medium/Low, are counted as
    unusable.

    Args:
        gate: ``canary``, ``members``, ``jobs`` paths and ``min_agreement``, ``min_pairs``,
            ``max_pairs``.
        classifier: :class:`~lantern_batch.precompute.classifier_stage.ClassifierSettings`.
        limits: :class:`lantern_batch.schema.RowLimits` for validating the canary's members/jobs.
    """
    from lantern_batch import prompts
    from lantern_batch.precompute import classifier_stage

    usable, unusable = canary_pairs(gate, limits)
    texts = [prompts.classifier_text(m, j, q, max_chars=classifier.max_chars) for m, j, q, _ in usable]
    teacher = [lab for _, _, _, lab in usable]
    student: list[str] = []
    if texts:
        model, tokenizer, _, bf16 = classifier_stage.load(classifier)
        probs = classifier_stage.probabilities(model, tokenizer, texts, classifier, bf16)
        student = [FIT_LABELS[i] for i in probs.argmax(axis=1)]
    return agreement_report(teacher, student, gate["min_agreement"], gate["min_pairs"], unusable)


def dumps(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, default=str)
