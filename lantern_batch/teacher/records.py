"""Columns that flow between the synthesis stages, and the rows each teacher stage emits.

Every stage is a Ray Data ``map_batches`` step over ``pyarrow.Table`` batches. An input row that
fails anywhere stays in the stream as an *error row* (``_err_reason`` set) instead of being
dropped, so the writer sees every row exactly once and counts conserve:
rows in = labelled + errors (+ skipped as already done, + not sampled).

* :data:`JOINED_SCHEMA` — output of the join stage (:mod:`~lantern_batch.teacher.inputs`):
  pair keys, the member and job rows as structs, a fingerprint, error columns.
* :data:`LABELED_SCHEMA` — output of a teacher stage: the teacher-label contract
  (:data:`~lantern_batch.schema.TEACHER_LABELS_SCHEMA`, every column nullable) plus the row
  key, error columns and per-row token counts.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lantern_batch.schema import (
    DIMENSIONS,
    ERRORS_SCHEMA,
    JOBS_SCHEMA,
    MEMBERS_SCHEMA,
    TEACHER_LABELS_SCHEMA,
    TS,
)

MEMBER_STRUCT = pa.struct(list(MEMBERS_SCHEMA))
JOB_STRUCT = pa.struct(list(JOBS_SCHEMA))

ERROR_FIELDS = [
    pa.field("_err_table", pa.string()),
    pa.field("_err_stage", pa.string()),
    pa.field("_err_reason", pa.string()),
    pa.field("_err_detail", pa.string()),
]

JOINED_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("job_id", pa.string()),
        pa.field("query", pa.string()),
        pa.field("pair_id", pa.string()),
        pa.field("_row_key", pa.string()),
        pa.field("input_fingerprint", pa.string()),
        pa.field("member", MEMBER_STRUCT),
        pa.field("job", JOB_STRUCT),
        *ERROR_FIELDS,
    ]
)
"""Rows entering a teacher stage. ``_row_key`` identifies an input row across reruns:
``<pair_id>#<n>`` for the n-th copy of a pair (0 = first), ``null#<order>`` for a null key."""

LABELED_SCHEMA = pa.schema(
    [f.with_nullable(True) for f in TEACHER_LABELS_SCHEMA]
    + [
        pa.field("_row_key", pa.string()),
        *ERROR_FIELDS,
        pa.field("_prompt_tokens", pa.int64()),
        pa.field("_output_tokens", pa.int64()),
        pa.field("_cached_tokens", pa.int64()),
        pa.field("_retried", pa.bool_()),
        pa.field("_probs_from_logprobs", pa.bool_()),
        pa.field("_cache_hit", pa.bool_()),
    ]
)
"""Rows leaving a teacher stage: a label (``_err_reason`` null) or an error."""


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


class LabeledRows:
    """Collects a teacher stage's output rows and builds a :data:`LABELED_SCHEMA` table."""

    def __init__(self, teacher: str, prompt_version: str, model_ref: str):
        self.teacher, self.prompt_version, self.model_ref = teacher, prompt_version, model_ref
        self.rows: list[dict[str, Any]] = []
        self.created_at = now_utc()

    def _base(self, src: dict[str, Any]) -> dict[str, Any]:
        return {
            "pair_id": src.get("pair_id"),
            "member_id": src.get("member_id"),
            "job_id": src.get("job_id"),
            "teacher": self.teacher,
            "prompt_version": self.prompt_version,
            "model_ref": self.model_ref,
            "input_fingerprint": src.get("input_fingerprint"),
            "created_at": self.created_at,
            "_row_key": src.get("_row_key"),
        }

    def add_label(
        self,
        src: dict[str, Any],
        *,
        fit_label: str,
        probs: Any,
        dimension_scores: dict[str, float] | None,
        explanation: str | None,
        token_ids: list[int] | None = None,
        topk_ids: list[list[int]] | None = None,
        topk_logprobs: list[list[float]] | None = None,
        prompt_tokens: int = 0,
        output_tokens: int = 0,
        cached_tokens: int = 0,
        retried: bool = False,
        probs_from_logprobs: bool = True,
        cache_hit: bool = False,
    ) -> None:
        row = self._base(src)
        row.update(
            fit_label=fit_label,
            p_high=float(probs[0]), p_medium=float(probs[1]), p_low=float(probs[2]),
            dimension_scores=None if dimension_scores is None else {d: float(dimension_scores[d]) for d in DIMENSIONS},
            explanation=explanation,
            explanation_token_ids=token_ids, topk_ids=topk_ids, topk_logprobs=topk_logprobs,
            _prompt_tokens=prompt_tokens, _output_tokens=output_tokens, _cached_tokens=cached_tokens,
            _retried=retried, _probs_from_logprobs=probs_from_logprobs, _cache_hit=cache_hit,
        )
        self.rows.append(row)

    def add_error(self, src: dict[str, Any], *, stage: str, reason: str, detail: str | None = None,
                  table: str = "pairs", prompt_tokens: int = 0, output_tokens: int = 0,
                  retried: bool = False) -> None:
        row = self._base(src)
        row.update(_err_table=table, _err_stage=stage, _err_reason=reason, _err_detail=detail,
                   _prompt_tokens=prompt_tokens, _output_tokens=output_tokens, _retried=retried)
        self.rows.append(row)

    def add_passthrough(self, src: dict[str, Any]) -> None:
        """An input row that already failed upstream (validation, join) passes through."""
        row = self._base(src)
        for f in ERROR_FIELDS:
            row[f.name] = src.get(f.name)
        self.rows.append(row)

    def to_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=LABELED_SCHEMA)


def split_labeled(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Split a :data:`LABELED_SCHEMA` table into (teacher labels, error rows) in their contracts."""
    is_err = pc.is_valid(table.column("_err_reason"))
    good = table.filter(pc.invert(is_err))
    bad = table.filter(is_err)
    labels = pa.Table.from_arrays(
        [good.column(f.name).cast(f.type) for f in TEACHER_LABELS_SCHEMA], schema=TEACHER_LABELS_SCHEMA
    )
    now = now_utc()
    errors = pa.Table.from_arrays(
        [
            bad.column("member_id"),
            bad.column("job_id"),
            pc.fill_null(bad.column("_err_table"), "pairs"),
            pc.fill_null(bad.column("_err_stage"), "teacher"),
            bad.column("_err_reason"),
            bad.column("_err_detail"),
            pa.array([now] * bad.num_rows, TS),
        ],
        schema=ERRORS_SCHEMA,
    )
    return labels, errors
