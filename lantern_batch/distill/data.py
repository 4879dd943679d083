"""Training examples for the distillation jobs: read, check, join, split, build, write.

Sources (each optional, at least one needed):

* the **teacher-label table** (:data:`lantern_batch.schema.TEACHER_LABELS_SCHEMA`): soft labels
  (p_high, p_medium, p_low), the explanation and, for token-level KD, the explanation's token
  ids with the teacher's top-k ids / log-probabilities per token;
* **D_seed** (:data:`lantern_batch.schema.SEED_SCHEMA`): hard labels, weighted by
  ``data.seed_weight``, as one-hot probabilities.

Only the labels of one prompt version enter a training set: ``data.prompt_version`` (the
teacher's ``prompt_version`` in synthesis), or the table's only one; a table holding several
with none configured is an error naming them (:func:`label_source`). A fused table carries no
prompt version (fusion kept each teacher's configured one). Rows of other versions are not read
into the examples at all (:func:`keep_prompt_version`), so they are neither trained on nor
counted as rejected.

Bad input: a table that lacks a column the task needs fails at once, before any row is read,
with :class:`TeacherLabelsError` naming the table, the column and the task. Rows with an
unknown fit label, missing / negative / NaN probabilities or probabilities that do not sum to 1
(within ``data.probability_tolerance``), an empty explanation, top-k lists whose lengths do not
match, or a member / job that is not in the input tables (``unknown_member``) or fails the input
contract's row checks there (``invalid_member:invalid_utf8:summary``,
``invalid_job:empty_text:description``, ...) become error rows
(:data:`~lantern_batch.schema.ERRORS_SCHEMA`, table ``teacher_labels`` or ``seed``, stage
``distill``) under ``<work_dir>/errors/`` and are counted in the job's metrics — never silently
dropped. The tasks that train on text (``explainer``, ``teacher_sft``) also reject, after the
join, every row whose explanation fails :func:`lantern_batch.quality.check_explanation` against
its label and its member and job rows (reason ``invalid_explanation:<reasons>``, e.g.
``invalid_explanation:too_short+not_prose+multiple_labels``); ``teacher_sft`` also rejects rows
whose dimension scores contradict the label (``scores_contradict_label``). The classifier trains
on labels only and gets neither check.

The pipeline is Ray Data end to end (:func:`prepare_examples`): read → check rows (per batch)
→ left-join members and jobs (packed as one struct column each, so their columns cannot clash)
and pairs (for the query) → build task examples with a builder (text for the classifier, token
ids for decoders) → write Parquet under ``<work_dir>/examples/``. Each row carries ``heldout``
(a stable hash of member_id and job_id), so the training ingest streams ``heldout == False``
and the evaluation reads the (small) held-out split. The pure per-batch functions here are
what the unit tests exercise.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lantern_batch import io
from lantern_batch.errors import InputError
from lantern_batch.logs import event, get_logger
from lantern_batch.schema import DIMENSIONS, ERRORS_SCHEMA, FIT_LABELS, error_rows
from lantern_batch.teacher.store import FUSED_MARKER, fused_marker

log = get_logger(__name__)

PROB_COLUMNS = ("p_high", "p_medium", "p_low")
KEY_COLUMNS = ("member_id", "job_id")

#: Columns each task needs in the teacher-label table.
REQUIRED_LABEL_COLUMNS: dict[str, tuple[str, ...]] = {
    "classifier": ("member_id", "job_id", "fit_label", *PROB_COLUMNS),
    "explainer": ("member_id", "job_id", "fit_label", "explanation"),
}
#: Optional teacher-label columns a task reads when present.
OPTIONAL_LABEL_COLUMNS: dict[str, tuple[str, ...]] = {
    "classifier": ("pair_id", "teacher"),
    "explainer": ("pair_id", "teacher", *PROB_COLUMNS, "explanation_token_ids", "topk_ids", "topk_logprobs"),
}
#: Columns each task needs in D_seed.
REQUIRED_SEED_COLUMNS: dict[str, tuple[str, ...]] = {
    "classifier": ("member_id", "job_id", "fit_label"),
    "teacher_sft": ("member_id", "job_id", "fit_label", "dimension_scores", "explanation"),
    "explainer": ("member_id", "job_id", "fit_label", "explanation"),
}

#: Tasks whose examples train on the explanation text: it must pass the explanation validator.
TEXT_TASKS = ("explainer", "teacher_sft")
#: Tasks whose examples train on the dimension scores: they must not contradict the label.
SCORE_TASKS = ("teacher_sft",)

#: The common row layout after reading and checking, before the join.
LABEL_ROW_SCHEMA = pa.schema([
    pa.field("member_id", pa.string()),
    pa.field("job_id", pa.string()),
    pa.field("fit_label", pa.string()),
    pa.field("p_high", pa.float32()),
    pa.field("p_medium", pa.float32()),
    pa.field("p_low", pa.float32()),
    pa.field("dimension_scores", pa.string()),  # JSON object text (or null)
    pa.field("explanation", pa.string()),
    pa.field("explanation_token_ids", pa.list_(pa.int32())),
    pa.field("topk_ids", pa.list_(pa.list_(pa.int32()))),
    pa.field("topk_logprobs", pa.list_(pa.list_(pa.float32()))),
    pa.field("source", pa.string()),
    pa.field("weight", pa.float32()),
    pa.field("heldout", pa.bool_()),
    pa.field("reason", pa.string()),
])


class TeacherLabelsError(InputError):
    """A teacher-label or seed table is unusable for a task: a required column is missing."""

    def __init__(self, table: str, column: str, task: str, path: str):
        self.table, self.column, self.task = table, column, task
        super().__init__(
            f"table '{table}' at {path}: column '{column}' is missing (required for {task} training)"
        )


# ---------------------------------------------------------------------------------------------
# Locating and checking the tables


def resolve_teacher_labels(path: str, teacher: str | None = None) -> str:
    """The teacher-label table under ``path``.

    ``path`` may be the table itself or a synthesis output directory: then ``fused/`` is used
    when it holds a complete fusion (its ``_SUCCESS``), else ``labels/teacher=NAME``
    (``teacher`` chooses; with one teacher it is taken).

    Raises:
        InputError: nothing usable found, or several teachers and none chosen.
    """
    fused = io.join(path, "fused")
    labels = io.join(path, "labels")
    if teacher:
        chosen = io.join(labels, f"teacher={teacher}")
        if not io.list_parquet_files(chosen):
            raise InputError(f"teacher-label table for teacher '{teacher}' not found at {chosen}")
        return chosen
    if io.list_parquet_files(fused):
        if fused_marker(path) is None:
            raise InputError(
                f"fused teacher labels at {fused} have no {FUSED_MARKER}: a synthesis run stopped "
                "while fusing them; rerun synthesize, or set data.teacher to one teacher")
        return fused
    files = io.list_parquet_files(labels)
    if files:
        names = sorted({f.split("teacher=", 1)[1].split("/", 1)[0] for f in files if "teacher=" in f})
        if len(names) > 1:
            raise InputError(
                f"{labels} holds several teachers ({', '.join(names)}) and no fused table: "
                "set data.teacher to one of them, or fuse them in synthesis"
            )
        return io.join(labels, f"teacher={names[0]}") if names else labels
    if io.list_parquet_files(path):
        return path
    raise InputError(f"teacher-label table: no Parquet files found at {path}")


@dataclass(frozen=True)
class LabelSource:
    """The teacher-label table one job reads: where, which columns, which prompt version."""

    path: str
    columns: list[str]
    prompt_version: str | None
    """Rows of other prompt versions are dropped; None: no filter (a fused table, or a table
    whose rows record none)."""


def label_source(data: Any, label_task: str) -> LabelSource:
    """Locate, check and pin the teacher-label table of :class:`~lantern_batch.distill.config.DataSettings`.

    Raises:
        TeacherLabelsError: a column ``label_task`` needs is missing.
        InputError: no table; several teachers and none chosen; several prompt versions and none
            configured, or a configured one the table lacks (naming the versions found).
    """
    from lantern_batch.teacher.store import choose_prompt_version, label_prompt_versions

    path = resolve_teacher_labels(data.teacher_labels, data.teacher)
    found = check_columns("teacher_labels", path, REQUIRED_LABEL_COLUMNS[label_task], label_task)
    columns = [c for c in (*REQUIRED_LABEL_COLUMNS[label_task], *OPTIONAL_LABEL_COLUMNS[label_task])
               if found.get_field_index(c) >= 0]
    version = None
    if found.get_field_index("prompt_version") >= 0:
        version = choose_prompt_version(label_prompt_versions(io.list_parquet_files(path)), data.prompt_version,
                                        f"teacher labels at {path}")
    if version is not None:
        columns.append("prompt_version")
    return LabelSource(path, columns, version)


def keep_prompt_version(table: pa.Table, version: str | None) -> pa.Table:
    """The rows of one prompt version (all rows when ``version`` is None)."""
    if version is None or "prompt_version" not in table.column_names:
        return table
    return table.filter(pc.fill_null(pc.equal(table.column("prompt_version"), version), False))


def check_columns(table: str, path: str, required: tuple[str, ...], task: str) -> pa.Schema:
    """Read the schema from the Parquet footers and fail on the first missing column."""
    schema = io.dataset_schema(path, table)
    for name in required:
        if schema.get_field_index(name) < 0:
            raise TeacherLabelsError(table, name, task, path)
    return schema


# ---------------------------------------------------------------------------------------------
# Per-batch functions (pure: pyarrow / numpy in, pyarrow out)


def heldout_mask(member_ids: list[str | None], job_ids: list[str | None], fraction: float,
                 salt: str = "lantern") -> np.ndarray:
    """True for pairs in the held-out split: a stable hash of (salt, member_id, job_id) < fraction.

    The same pair is held out in every job and every run (classifier, explainer, evaluation).
    """
    out = np.zeros(len(member_ids), dtype=bool)
    if fraction <= 0:
        return out
    for i, (m, j) in enumerate(zip(member_ids, job_ids, strict=True)):
        digest = hashlib.blake2b(f"{salt}\x1f{m}\x1f{j}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2**64 < fraction
    return out


def _column(table: pa.Table, name: str, type_: pa.DataType) -> pa.Array:
    if name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_struct(col.type) and pa.types.is_string(type_):
            return pa.array([None if v is None else json.dumps(v, sort_keys=True) for v in col.to_pylist()],
                            pa.string())
        return col.cast(type_)
    return pa.nulls(table.num_rows, type_)


def label_row_reasons(table: pa.Table, task: str, tolerance: float = 1e-3) -> np.ndarray:
    """Reason code of each teacher-label row's first problem, or None for a usable row.

    Codes: ``null_id:member_id`` / ``null_id:job_id``, ``invalid_label:fit_label``,
    ``bad_probabilities`` (null, NaN, negative or > 1), ``probabilities_do_not_sum_to_1``,
    ``empty_text:explanation`` (explainer), ``topk_length_mismatch`` (explainer: top-k lists
    not one entry per explanation token).
    """
    n = table.num_rows
    reasons = np.full(n, None, dtype=object)

    def mark(mask: np.ndarray, code: str) -> None:
        reasons[mask & (reasons == None)] = code  # noqa: E711

    for col in KEY_COLUMNS:
        mark(_np(table.column(col).is_null()), f"null_id:{col}")
    labels = table.column("fit_label")
    mark(~_np(pc.is_in(labels, value_set=pa.array(FIT_LABELS))), "invalid_label:fit_label")
    if task == "classifier" or all(c in table.column_names for c in PROB_COLUMNS):
        probs = np.stack([_float_np(table, c) for c in PROB_COLUMNS], axis=1)  # [n, 3]
        present = ~np.isnan(probs).all(axis=1)
        if task == "classifier":
            present = np.ones(n, dtype=bool)
        bad = present & (np.isnan(probs).any(axis=1) | (probs < 0).any(axis=1) | (probs > 1 + tolerance).any(axis=1))
        mark(bad, "bad_probabilities")
        off = present & ~bad & (np.abs(np.nan_to_num(probs).sum(axis=1) - 1.0) > tolerance)
        mark(off, "probabilities_do_not_sum_to_1")
    if task == "explainer":
        text = table.column("explanation")
        blank = pc.or_kleene(text.is_null(), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0))
        mark(_np(blank), "empty_text:explanation")
        if "topk_ids" in table.column_names and "explanation_token_ids" in table.column_names:
            mark(_topk_mismatch(table), "topk_length_mismatch")
    return reasons


def _np(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _float_np(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).cast(pa.float64())
    return np.asarray(pc.fill_null(col, float("nan")).to_numpy(zero_copy_only=False), dtype=np.float64)


def _topk_mismatch(table: pa.Table) -> np.ndarray:
    """Rows whose top-k lists are present but not one entry per explanation token."""
    ids = table.column("explanation_token_ids")
    out = np.zeros(table.num_rows, dtype=bool)
    n_tok = pc.fill_null(pc.list_value_length(ids), -1).to_numpy(zero_copy_only=False)
    for name in ("topk_ids", "topk_logprobs"):
        if name not in table.column_names:
            continue
        col = table.column(name)
        n_k = pc.fill_null(pc.list_value_length(col), -1).to_numpy(zero_copy_only=False)
        out |= (n_k >= 0) & (n_k != n_tok)
    return out


def teacher_label_rows(table: pa.Table, task: str, holdout_fraction: float, salt: str,
                       tolerance: float = 1e-3) -> pa.Table:
    """Teacher-label batch → :data:`LABEL_ROW_SCHEMA` rows (``reason`` set on bad rows)."""
    reasons = label_row_reasons(table, task, tolerance)
    n = table.num_rows
    members = _column(table, "member_id", pa.string())
    jobs = _column(table, "job_id", pa.string())
    arrays = {
        "member_id": members,
        "job_id": jobs,
        "fit_label": _column(table, "fit_label", pa.string()),
        **{c: _column(table, c, pa.float32()) for c in PROB_COLUMNS},
        "dimension_scores": _column(table, "dimension_scores", pa.string()),
        "explanation": _column(table, "explanation", pa.string()),
        "explanation_token_ids": _column(table, "explanation_token_ids", pa.list_(pa.int32())),
        "topk_ids": _column(table, "topk_ids", pa.list_(pa.list_(pa.int32()))),
        "topk_logprobs": _column(table, "topk_logprobs", pa.list_(pa.list_(pa.float32()))),
        "source": _column(table, "teacher", pa.string()).fill_null("teacher")
        if "teacher" in table.column_names else pa.array(["teacher"] * n, pa.string()),
        "weight": pa.array(np.ones(n, dtype=np.float32)),
        "heldout": pa.array(heldout_mask(members.to_pylist(), jobs.to_pylist(), holdout_fraction, salt)),
        "reason": pa.array(reasons.tolist(), pa.string()),
    }
    return pa.Table.from_pydict(arrays, schema=LABEL_ROW_SCHEMA)


def seed_rows(table: pa.Table, task: str, weight: float, holdout_fraction: float, salt: str) -> pa.Table:
    """D_seed batch → :data:`LABEL_ROW_SCHEMA` rows: one-hot probabilities, ``source='seed'``."""
    n = table.num_rows
    labels = table.column("fit_label").to_pylist()
    onehot = np.zeros((n, 3), dtype=np.float32)
    reasons = np.full(n, None, dtype=object)
    for i, label in enumerate(labels):
        if label in FIT_LABELS:
            onehot[i, FIT_LABELS.index(label)] = 1.0
        else:
            reasons[i] = "invalid_label:fit_label"
    for col in KEY_COLUMNS:
        reasons[_np(table.column(col).is_null()) & (reasons == None)] = f"null_id:{col}"  # noqa: E711
    if task in ("teacher_sft", "explainer"):
        text = table.column("explanation")
        blank = _np(pc.or_kleene(text.is_null(), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0)))
        reasons[blank & (reasons == None)] = "empty_text:explanation"  # noqa: E711
    if task == "teacher_sft":
        missing = _np(table.column("dimension_scores").is_null())
        reasons[missing & (reasons == None)] = "missing:dimension_scores"  # noqa: E711
    members = _column(table, "member_id", pa.string())
    jobs = _column(table, "job_id", pa.string())
    arrays = {
        "member_id": members,
        "job_id": jobs,
        "fit_label": _column(table, "fit_label", pa.string()),
        "p_high": pa.array(onehot[:, 0]),
        "p_medium": pa.array(onehot[:, 1]),
        "p_low": pa.array(onehot[:, 2]),
        "dimension_scores": _column(table, "dimension_scores", pa.string()),
        "explanation": _column(table, "explanation", pa.string()),
        "explanation_token_ids": pa.nulls(n, pa.list_(pa.int32())),
        "topk_ids": pa.nulls(n, pa.list_(pa.list_(pa.int32()))),
        "topk_logprobs": pa.nulls(n, pa.list_(pa.list_(pa.float32()))),
        "source": pa.array(["seed"] * n, pa.string()),
        "weight": pa.array(np.full(n, weight, dtype=np.float32)),
        "heldout": pa.array(heldout_mask(members.to_pylist(), jobs.to_pylist(), holdout_fraction, salt)),
        "reason": pa.array(reasons.tolist(), pa.string()),
    }
    return pa.Table.from_pydict(arrays, schema=LABEL_ROW_SCHEMA)


def pack_entities(table: pa.Table, key: str, name: str, table_name: str) -> pa.Table:
    """``members`` / ``jobs`` batch → ``{key, name: struct, name_invalid}`` (conformed to the
    contract). ``<name>_invalid`` is the row's input-validation reason
    (:func:`lantern_batch.schema.row_reasons`: ``invalid_utf8:summary``, ``empty_text:title``,
    ``too_many_items:skills``, ...), None for a good row: a label row joined to a bad member or
    job becomes an error row (:func:`mark_unjoined`), as synthesis and precompute reject it."""
    from lantern_batch.schema import conform, row_reasons

    conformed = conform(table, table_name)
    struct = pa.StructArray.from_arrays([conformed.column(c).combine_chunks() for c in conformed.column_names],
                                        names=conformed.column_names)
    invalid = pa.array(row_reasons(conformed, table_name).tolist(), pa.string())
    return pa.table({key: conformed.column(key), name: struct, f"{name}_invalid": invalid})


def pair_queries(table: pa.Table) -> pa.Table:
    """``pairs`` batch → ``{member_id, job_id, query}``."""
    query = table.column("query") if "query" in table.column_names else pa.nulls(table.num_rows, pa.string())
    return pa.table({"member_id": table.column("member_id"), "job_id": table.column("job_id"),
                     "query": query.cast(pa.string())})


def mark_unjoined(table: pa.Table) -> pa.Table:
    """After the left joins: rows whose member or job failed input validation get
    ``invalid_member:<reason>`` / ``invalid_job:<reason>``; rows without one, ``unknown_member`` /
    ``unknown_job``."""
    reasons = np.asarray(table.column("reason").to_pylist(), dtype=object)
    for side in ("member", "job"):
        if f"{side}_invalid" in table.column_names:
            invalid = np.asarray(table.column(f"{side}_invalid").to_pylist(), dtype=object)
            sel = (invalid != None) & (reasons == None)  # noqa: E711
            reasons[sel] = [f"invalid_{side}:{r}" for r in invalid[sel]]
    no_member = _np(table.column("member").is_null())
    no_job = _np(table.column("job").is_null())
    reasons[no_member & (reasons == None)] = "unknown_member"  # noqa: E711
    reasons[no_job & (reasons == None)] = "unknown_job"  # noqa: E711
    return table.set_column(table.schema.get_field_index("reason"), "reason", pa.array(reasons.tolist(), pa.string()))


def text_reasons(table: pa.Table, task: str | None) -> np.ndarray:
    """Reason code of each joined row whose training text is invalid for ``task``, else None.

    Rows that already carry a reason are left as they are (None here). For :data:`TEXT_TASKS`
    the explanation is checked with :func:`lantern_batch.quality.check_explanation` against the
    row's ``fit_label`` and its ``member`` / ``job`` structs (the contract's columns):
    ``invalid_explanation:<check.reason>``. For :data:`SCORE_TASKS` the dimension scores the
    example trains on (:func:`dimension_scores_json`) are then checked with
    :func:`lantern_batch.quality.check_dimension_scores`: ``scores_contradict_label`` (missing
    scores are :func:`seed_rows`' concern).
    """
    from lantern_batch.quality import check_dimension_scores, check_explanation

    out = np.full(table.num_rows, None, dtype=object)
    if task not in TEXT_TASKS and task not in SCORE_TASKS:
        return out
    names = ("reason", "fit_label", "explanation", "dimension_scores", "member", "job")
    cols = {c: table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows for c in names}
    for i, reason in enumerate(cols["reason"]):
        if reason is not None:
            continue
        label = cols["fit_label"][i]
        if task in TEXT_TASKS:
            check = check_explanation(cols["explanation"][i], label, cols["member"][i], cols["job"][i])
            if not check.ok:
                out[i] = f"invalid_explanation:{check.reason}"
                continue
        if task in SCORE_TASKS:
            scores = cols["dimension_scores"][i]
            out[i] = check_dimension_scores(label, dimension_scores_json(scores) if scores else None)
    return out


def mark_invalid_text(table: pa.Table, task: str | None) -> pa.Table:
    """After the join: rows whose training text is invalid for ``task`` get a reason
    (:func:`text_reasons`)."""
    found = text_reasons(table, task)
    if not (found != None).any():  # noqa: E711
        return table
    reasons = np.asarray(table.column("reason").to_pylist(), dtype=object)
    reasons[found != None] = found[found != None]  # noqa: E711
    return table.set_column(table.schema.get_field_index("reason"), "reason", pa.array(reasons.tolist(), pa.string()))


def row_hash_columns(table: pa.Table, fields: tuple[str, ...]) -> dict[str, pa.Array]:
    """Two 31-bit halves of a per-row content hash; their sums over all rows form an
    order-independent fingerprint of a dataset (summed by Ray without collecting rows)."""
    cols = [table.column(f).to_pylist() for f in fields]
    lo = np.zeros(table.num_rows, dtype=np.int64)
    hi = np.zeros(table.num_rows, dtype=np.int64)
    for i, values in enumerate(zip(*cols, strict=True)):
        d = int.from_bytes(hashlib.blake2b(repr(values).encode(), digest_size=8).digest(), "big")
        lo[i], hi[i] = d & 0x7FFFFFFF, (d >> 31) & 0x7FFFFFFF
    return {"_hash_lo": pa.array(lo), "_hash_hi": pa.array(hi)}


def error_table(bad: pa.Table, stage: str = "distill") -> pa.Table:
    """ERRORS_SCHEMA rows for rejected label rows (table = ``seed`` or ``teacher_labels``)."""
    sources = bad.column("source").to_pylist()
    tables = ["seed" if s == "seed" else "teacher_labels" for s in sources]
    errs = error_rows(bad, bad.column("reason").to_pylist(), table="teacher_labels", stage=stage)
    errs = errs.set_column(errs.schema.get_field_index("table"), "table", pa.array(tables, pa.string()))
    return errs.cast(ERRORS_SCHEMA)


def dimension_scores_json(text: str | None) -> dict[str, int]:
    """Seed ``dimension_scores`` (JSON text of the struct) → integer 0-4 per dimension."""
    raw = json.loads(text) if text else {}
    return {d: int(round(min(max(float(raw.get(d) or 0.0), 0.0), 4.0))) for d in DIMENSIONS}


# ---------------------------------------------------------------------------------------------
# The Ray Data pipeline


@dataclass
class PreparedData:
    """Where the examples are and what happened to every input row."""

    examples: str
    """Parquet directory of examples: built rows (``reason`` null; ``heldout`` marks the split)
    and rejected rows (``reason`` set, example columns null)."""
    errors: str
    """Parquet directory of rejected rows (ERRORS_SCHEMA)."""
    num_train: int
    num_heldout: int
    counts: dict[str, int] = field(default_factory=dict)
    """Input rows by source and outcome, e.g. ``rows:teacher``, ``excluded:teacher:bad_probabilities``.
    Conservation: the ``rows:*`` counts sum to ``num_train + num_heldout + counts["excluded"]``."""
    fingerprint: str = ""
    """Order-independent content hash of the training examples (+ the builder's settings)."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Rejected rows by reason over all sources, most frequent first, e.g.
    ``{"invalid_explanation:too_short+not_prose+multiple_labels": 2, "unknown_member": 1}``."""

    def rejected_summary(self) -> str:
        """One line for people: ``3 rows rejected: invalid_explanation:too_short=2, unknown_member=1``."""
        total = sum(self.rejected.values())
        if not total:
            return "0 rows rejected"
        return f"{total} rows rejected: " + ", ".join(f"{r}={n}" for r, n in self.rejected.items())

    def to_json(self) -> dict[str, Any]:
        return {"num_train": self.num_train, "num_heldout": self.num_heldout,
                "counts": self.counts, "rejected": self.rejected, "rejected_summary": self.rejected_summary(),
                "fingerprint": self.fingerprint}


class ExampleStage:
    """``map_batches`` callable class: label rows → examples, in one pass.

    Joins each row to its member, job and query (from lookups broadcast to the actor, or from
    columns a shuffle join already added), marks rows whose member or job is missing, then rows
    whose training text is invalid for ``task`` (:func:`mark_invalid_text`: explanations for
    :data:`TEXT_TASKS`, dimension scores for :data:`SCORE_TASKS`), runs the task's builder on
    the usable rows and passes rejected rows through with their reason, so every input row
    leaves as exactly one output row.
    """

    def __init__(self, builder: type, builder_kwargs: dict[str, Any], schema: pa.Schema,
                 hash_fields: tuple[str, ...], lookups: dict[str, Any] | None = None, task: str | None = None):
        self.builder = builder(**builder_kwargs)
        self.schema = schema
        self.hash_fields = hash_fields
        self.task = task
        self.members = self.jobs = self.queries = None
        self.invalid: dict[str, dict[str, str]] = {}
        if lookups:
            # Broadcast join: the packed tables are in the object store; index them once.
            members = _resolve(lookups["members"])
            jobs = _resolve(lookups["jobs"])
            self.members = dict(zip(members.column("member_id").to_pylist(), members.column("member").to_pylist(), strict=True))
            self.jobs = dict(zip(jobs.column("job_id").to_pylist(), jobs.column("job").to_pylist(), strict=True))
            self.invalid = {side: {k: r for k, r in zip(t.column(f"{side}_id").to_pylist(),
                                                        t.column(f"{side}_invalid").to_pylist(), strict=True) if r}
                            for side, t in (("member", members), ("job", jobs)) if f"{side}_invalid" in t.column_names}
            if lookups.get("pairs") is not None:
                pairs = _resolve(lookups["pairs"])
                self.queries = {}
                for m, j, q in zip(pairs.column("member_id").to_pylist(), pairs.column("job_id").to_pylist(),
                                   pairs.column("query").to_pylist(), strict=True):
                    self.queries.setdefault((m, j), q)  # first occurrence wins (input contract)

    def _attach(self, table: pa.Table) -> pa.Table:
        if self.members is None:
            return table
        mids, jids = table.column("member_id").to_pylist(), table.column("job_id").to_pylist()
        member = [self.members.get(m) for m in mids]
        job = [self.jobs.get(j) for j in jids]
        query = [self.queries.get((m, j)) if self.queries is not None else None for m, j in zip(mids, jids, strict=True)]
        table = table.append_column("member", pa.array(member)) if any(x is not None for x in member) else \
            table.append_column("member", pa.nulls(table.num_rows, pa.struct([("member_id", pa.string())])))
        table = table.append_column("job", pa.array(job)) if any(x is not None for x in job) else \
            table.append_column("job", pa.nulls(table.num_rows, pa.struct([("job_id", pa.string())])))
        for side, ids in (("member", mids), ("job", jids)):
            if side in self.invalid:
                table = table.append_column(f"{side}_invalid", pa.array([self.invalid[side].get(k) for k in ids], pa.string()))
        return table.append_column("query", pa.array(query, pa.string()))

    def __call__(self, table: pa.Table) -> pa.Table:
        table = mark_invalid_text(mark_unjoined(self._attach(table)), self.task)
        ok = table.column("reason").is_null()
        good, bad = table.filter(ok), table.filter(pc.invert(ok))
        parts = []
        if good.num_rows:
            built = self.builder(good)
            if built.num_rows != good.num_rows:
                raise RuntimeError(f"example builder returned {built.num_rows} rows for {good.num_rows}")
            parts.append(_conform_examples(built, self.schema, None))
        if bad.num_rows:
            parts.append(_conform_examples(bad, self.schema, bad.column("reason")))
        out = pa.concat_tables(parts) if parts else _conform_examples(table.slice(0, 0), self.schema, None)
        for name, arr in row_hash_columns(out, tuple(f for f in self.hash_fields if f in out.column_names)).items():
            out = out.append_column(name, arr)
        return out


def _conform_examples(table: pa.Table, schema: pa.Schema, reason: pa.ChunkedArray | None) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (missing ones null) plus ``reason``."""
    arrays = []
    for f in schema:
        if f.name in table.column_names:
            arrays.append(table.column(f.name).combine_chunks().cast(f.type))
        else:
            arrays.append(pa.nulls(table.num_rows, f.type))
    arrays.append(reason.combine_chunks().cast(pa.string()) if reason is not None else pa.nulls(table.num_rows, pa.string()))
    return pa.Table.from_arrays(arrays, schema=pa.schema([*schema, pa.field("reason", pa.string())]))


def _split_rows(table: pa.Table, heldout: bool) -> pa.Table:
    """The rows of one side of the split (``map_batches``)."""
    mask = pc.fill_null(table.column("heldout"), False)
    return table.filter(mask if heldout else pc.invert(mask))


def _count_rows(path: str) -> int:
    import pyarrow.dataset as pads

    files = io.list_parquet_files(path)
    fs, _ = io.filesystem(path)
    return pads.dataset([io.filesystem(f)[1] for f in files], format="parquet", filesystem=fs).count_rows()


def _packed_table(path: str, table_name: str, key: str, name: str) -> pa.Table:
    return pack_entities(io.read_table(path, table=table_name), key, name, table_name)


@dataclass(frozen=True)
class CheckedSources:
    """What :func:`check_sources` found: the label sources to read and the input tables checked."""

    sources: list[tuple[str, str, list[str]]]
    """(table name, path, columns) of each label source: ``teacher_labels`` and/or ``seed``."""
    prompt_version: str | None
    """The teacher labels' prompt version kept (:func:`label_source`), None for no filter."""


def check_sources(*, task: str, inputs: Any, data: Any, label_task: str | None = None) -> CheckedSources:
    """Locate and check every table a distill job reads, from the Parquet footers (and the teacher
    labels' prompt versions): no Ray, no model, no example row. The jobs call it before they
    start Ray or load a model, so bad input fails at once (exit 2) naming the table, the column
    and the file.

    Raises:
        TeacherLabelsError: a label table lacks a column the task needs.
        InputError: no source configured; a table that is missing, empty, not Parquet, or whose
            files break the input contract or disagree with each other (``SchemaError``).
    """
    from lantern_batch.schema import check_columns as check_input_columns

    label_task = label_task or task
    sources: list[tuple[str, str, list[str]]] = []
    prompt_version = None
    if data.teacher_labels and task != "teacher_sft":
        source = label_source(data, label_task)
        prompt_version = source.prompt_version
        sources.append(("teacher_labels", source.path, source.columns))
    if data.seed:
        seed_task = "teacher_sft" if task == "teacher_sft" else label_task
        found = check_columns("seed", data.seed, REQUIRED_SEED_COLUMNS[seed_task], seed_task)
        wanted = [c for c in ("member_id", "job_id", "fit_label", "dimension_scores", "explanation")
                  if found.get_field_index(c) >= 0]
        sources.append(("seed", data.seed, wanted))
    if not sources:
        raise InputError(f"{task}: no training data: set data.teacher_labels and/or data.seed")
    for name in ("members", "jobs", "pairs"):
        check_input_columns(name, io.dataset_schema(getattr(inputs, name), name))
    return CheckedSources(sources, prompt_version)


def prepare_examples(
    *,
    task: str,
    inputs: Any,
    data: Any,
    work_dir: str,
    builder: type,
    builder_kwargs: dict[str, Any],
    schema: pa.Schema,
    hash_fields: tuple[str, ...],
    settings_for_fingerprint: dict[str, Any],
    label_task: str | None = None,
    checked: CheckedSources | None = None,
) -> PreparedData:
    """Read, check, join, build and write the examples of one job (Ray must be running).

    One Ray Data pass writes every input row to ``<work_dir>/examples/`` — built examples, or
    the row's keys and ``reason``. The driver then streams the small bookkeeping columns
    (reason, source, split, row hashes) to count outcomes, fingerprint the training split and
    write the rejected rows to ``<work_dir>/errors/``.

    The join with members/jobs/pairs is a *broadcast* join when those tables together hold at
    most ``data.broadcast_join_max_rows`` rows (indexed once per actor: no shuffle, which on a
    small machine costs more than the work) and Ray Data's hash join otherwise.

    Args:
        task: ``classifier``, ``explainer`` or ``teacher_sft``.
        inputs: :class:`lantern_batch.config.InputTables`.
        data: :class:`lantern_batch.distill.config.DataSettings`.
        work_dir: ``examples/`` and ``errors/`` are (re)written under it.
        builder: class whose instances turn usable joined rows (LABEL_ROW_SCHEMA + ``member``
            and ``job`` structs + ``query``) into example rows; constructed once per actor with
            ``builder_kwargs`` (e.g. loading a tokenizer).
        schema: the builder's output schema (must include member_id, job_id, source, heldout).
        hash_fields: example columns that define the training data's fingerprint.
        settings_for_fingerprint: builder settings mixed into the fingerprint.
        label_task: which checks the teacher-label rows get (default: ``task``).
        checked: what :func:`check_sources` returned for the same arguments (the jobs check
            before Ray starts); None checks here.

    Raises:
        TeacherLabelsError: a required column is missing (before any row is read).
        InputError: no usable source, or no usable rows at all.
    """
    label_task = label_task or task
    if checked is None:
        checked = check_sources(task=task, inputs=inputs, data=data, label_task=label_task)
    sources, prompt_version = checked.sources, checked.prompt_version

    entity_rows = _count_rows(inputs.members) + _count_rows(inputs.jobs)
    pair_rows = _count_rows(inputs.pairs)
    broadcast = entity_rows + pair_rows <= data.broadcast_join_max_rows
    errors_dir = io.join(work_dir, "errors")
    examples_dir = io.join(work_dir, "examples")
    stage_kwargs: dict[str, Any] = {"builder": builder, "builder_kwargs": builder_kwargs, "schema": schema,
                                    "hash_fields": hash_fields, "task": task}
    for table_name, path, _ in sources:
        event(log, "distill.source", table=table_name, path=path,
              prompt_version=prompt_version if table_name == "teacher_labels" else None)
    io.delete_dir(errors_dir)
    io.delete_dir(examples_dir)
    label_rows = sum(_count_rows(path) for _, path, _ in sources)
    if broadcast and label_rows <= data.in_process_max_rows:
        event(log, "distill.join", strategy="in_process", members_jobs_rows=entity_rows, pairs_rows=pair_rows,
              label_rows=label_rows)
        _build_in_process(sources, prompt_version, task, label_task, data, inputs, stage_kwargs, examples_dir)
        return _summarise(task, examples_dir, errors_dir, settings_for_fingerprint)

    import ray

    datasets = []
    for table_name, path, wanted in sources:
        # The files' own columns, as the driver reads them (no hive columns from the path).
        ds = io.ray_read_parquet(path, columns=wanted, partitioning=None)
        if table_name == "teacher_labels" and prompt_version is not None:
            ds = ds.map_batches(keep_prompt_version, batch_format="pyarrow", fn_kwargs={"version": prompt_version})
        fn, kwargs = _label_rows_fn(table_name, task, label_task, data)
        datasets.append(ds.map_batches(fn, batch_format="pyarrow", fn_kwargs=kwargs))
    rows = datasets[0] if len(datasets) == 1 else datasets[0].union(*datasets[1:])
    if data.max_examples:
        # The cap is on training rows; every held-out row stays, so evaluation has its whole split.
        # The first rows in source order (teacher labels, then D_seed), as in the driver: without
        # preserve_order the union yields whichever blocks finish first, and a cap the seed rows
        # fill alone trained on no teacher row at all.
        rows.context.execution_options.preserve_order = True
        train = rows.map_batches(_split_rows, batch_format="pyarrow", fn_kwargs={"heldout": False})
        held = rows.map_batches(_split_rows, batch_format="pyarrow", fn_kwargs={"heldout": True})
        rows = train.limit(int(data.max_examples)).union(held)

    if broadcast:
        stage_kwargs["lookups"] = {name: ray.put(t) for name, t in _lookups(inputs).items()}
        join = "broadcast"
    else:
        parts = _join_partitions()
        members = ray_read_input(inputs.members, "members").map_batches(
            pack_entities, batch_format="pyarrow",
            fn_kwargs={"key": "member_id", "name": "member", "table_name": "members"})
        jobs = ray_read_input(inputs.jobs, "jobs").map_batches(
            pack_entities, batch_format="pyarrow", fn_kwargs={"key": "job_id", "name": "job", "table_name": "jobs"})
        pairs = ray_read_input(inputs.pairs, "pairs").map_batches(pair_queries, batch_format="pyarrow")
        rows = (rows.join(members, join_type="left_outer", num_partitions=parts, on=("member_id",))
                .join(jobs, join_type="left_outer", num_partitions=parts, on=("job_id",))
                .join(pairs, join_type="left_outer", num_partitions=parts, on=("member_id", "job_id")))
        join = "shuffle"
    event(log, "distill.join", strategy=join, members_jobs_rows=entity_rows, pairs_rows=pair_rows)

    built = rows.map_batches(ExampleStage, fn_constructor_kwargs=stage_kwargs, batch_format="pyarrow",
                             batch_size=64, concurrency=data.prep_actors)
    built.write_parquet(_ray_path(examples_dir), **_fs_kwargs(examples_dir))
    return _summarise(task, examples_dir, errors_dir, settings_for_fingerprint)


INPUT_BATCH_ROWS = 65_536
"""Rows per batch of :func:`read_input_files`."""


def read_input_files(batch: pa.Table, table_name: str) -> Iterator[pa.Table]:
    """Ray Data UDF: the input-table files named in ``batch`` (column ``path``), each conformed to
    the contract on its own (:func:`lantern_batch.schema.conform`), in batches."""
    from lantern_batch.schema import INPUT_SCHEMAS, conform

    for path in batch.column("path").to_pylist():
        fs, p = io.filesystem(path)
        with fs.open_input_file(p) as fh:
            pf = pq.ParquetFile(fh)
            present = [c for c in INPUT_SCHEMAS[table_name].names if c in pf.schema_arrow.names]
            for rb in pf.iter_batches(batch_size=INPUT_BATCH_ROWS, columns=present):
                yield conform(pa.Table.from_batches([rb], schema=rb.schema), table_name)


def ray_read_input(path: str, table_name: str):
    """A Ray Data dataset of an input table (``members``, ``jobs``, ``pairs``) read as
    :func:`lantern_batch.io.read_table` reads it: every file conformed on its own, so files
    that differ by safe widenings, time units or zones, null-typed or missing optional columns
    read as one table (``ray.data.read_parquet`` merges the files' schemas and fails on them),
    and text that is not valid UTF-8 arrives decoded for the row checks."""
    import ray.data

    files = [f.path for f in io.file_footers(path, table_name) if f.num_rows]
    return ray.data.from_items([{"path": f} for f in files], override_num_blocks=max(1, len(files))).map_batches(
        read_input_files, batch_size=1, batch_format="pyarrow", fn_kwargs={"table_name": table_name})


def _label_rows_fn(table_name: str, task: str, label_task: str, data: Any) -> tuple[Any, dict[str, Any]]:
    """The function (and its keyword arguments) turning one source's batches into label rows."""
    if table_name == "seed":
        return _seed_batch, {"task": "teacher_sft" if task == "teacher_sft" else label_task, "weight": data.seed_weight,
                             "holdout_fraction": data.holdout_fraction, "salt": data.split_salt}
    return teacher_label_rows, {"task": label_task, "holdout_fraction": data.holdout_fraction,
                                "salt": data.split_salt, "tolerance": data.probability_tolerance}


def _lookups(inputs: Any) -> dict[str, pa.Table]:
    """The broadcast join's tables: packed members and jobs, the pairs' queries."""
    return {
        "members": _packed_table(inputs.members, "members", "member_id", "member"),
        "jobs": _packed_table(inputs.jobs, "jobs", "job_id", "job"),
        "pairs": pair_queries(io.read_table(inputs.pairs, table="pairs")),
    }


def _resolve(value: Any) -> Any:
    """A broadcast lookup: an object-store reference (Ray Data actors) or the table itself."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


IN_PROCESS_CHUNK_ROWS = 4096
"""Rows per example file written by the in-process path."""


def _build_in_process(sources: list[Any], prompt_version: str | None, task: str, label_task: str, data: Any,
                      inputs: Any, stage_kwargs: dict[str, Any], examples_dir: str) -> None:
    """The Ray Data pass of :func:`prepare_examples`, in the driver: the same functions in the
    same order (label rows per source, the training cap on the first rows read, the broadcast
    join and the builder), written as Parquet files to ``examples_dir``."""
    parts = []
    for table_name, path, wanted in sources:
        table = io.read_table(path, columns=wanted)
        if table_name == "teacher_labels" and prompt_version is not None:
            table = keep_prompt_version(table, prompt_version)
        fn, kwargs = _label_rows_fn(table_name, task, label_task, data)
        parts.append(fn(table, **kwargs))
    rows = pa.concat_tables(parts)
    if data.max_examples:
        rows = pa.concat_tables([_split_rows(rows, heldout=False).slice(0, int(data.max_examples)),
                                 _split_rows(rows, heldout=True)])
    stage = ExampleStage(**stage_kwargs, lookups=_lookups(inputs))
    for i, start in enumerate(range(0, max(rows.num_rows, 1), IN_PROCESS_CHUNK_ROWS)):
        io.write_table(stage(rows.slice(start, IN_PROCESS_CHUNK_ROWS)), examples_dir, basename=f"part-{i:05d}.parquet")


def _summarise(task: str, examples_dir: str, errors_dir: str, settings: dict[str, Any]) -> PreparedData:
    """Stream the bookkeeping columns: counts, fingerprint, error rows (memory stays flat)."""
    import pyarrow.dataset as pads

    files = io.list_parquet_files(examples_dir)
    fs, _ = io.filesystem(examples_dir)
    dataset = pads.dataset([io.filesystem(f)[1] for f in files], format="parquet", filesystem=fs)
    counts: Counter[str] = Counter()
    num_train = num_heldout = 0
    lo = hi = 0
    for batch in dataset.to_batches(columns=["reason", "source", "heldout", "_hash_lo", "_hash_hi"]):
        t = pa.Table.from_batches([batch])
        src = ["seed" if s == "seed" else "teacher" for s in t.column("source").to_pylist()]
        reasons = t.column("reason").to_pylist()
        held = t.column("heldout").to_pylist()
        for s_, r, h in zip(src, reasons, held, strict=True):
            counts[f"rows:{s_}"] += 1
            if r is not None:
                counts[f"excluded:{s_}:{r}"] += 1
            elif h:
                num_heldout += 1
        train = pc.and_(t.column("reason").is_null(), pc.invert(pc.fill_null(t.column("heldout"), False)))
        num_train += int(pc.sum(train.cast(pa.int64())).as_py() or 0)
        lo += int(pc.sum(pc.if_else(train, t.column("_hash_lo"), 0)).as_py() or 0)
        hi += int(pc.sum(pc.if_else(train, t.column("_hash_hi"), 0)).as_py() or 0)
    excluded = sum(v for k, v in counts.items() if k.startswith("excluded:"))
    if excluded:
        scanner = dataset.scanner(columns=["member_id", "job_id", "source", "reason"],
                                  filter=pads.field("reason").is_valid())
        for i, batch in enumerate(scanner.to_batches()):
            if batch.num_rows:
                io.write_table(error_table(pa.Table.from_batches([batch])), errors_dir, basename=f"part-{i:05d}.parquet")
    counts["excluded"] = excluded
    rows = sum(v for k, v in counts.items() if k.startswith("rows:"))  # = train + heldout + excluded
    by_reason: Counter[str] = Counter()
    for key, value in counts.items():
        if key.startswith("excluded:"):
            by_reason[key.split(":", 2)[2]] += value
    rejected = dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])))
    fingerprint = hashlib.sha256(json.dumps(
        {"n": num_train, "lo": lo, "hi": hi, "task": task, **settings}, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    prepared = PreparedData(examples_dir, errors_dir, num_train, num_heldout, dict(counts), fingerprint, rejected)
    event(log, "distill.examples", task=task, rows=rows, train=num_train, heldout=num_heldout, excluded=excluded,
          fingerprint=fingerprint)
    for key, value in sorted(counts.items()):
        if key.startswith("excluded:"):
            event(log, "distill.excluded", what=key.split(":", 1)[1], rows=value)
    if rejected:
        event(log, "distill.rejected", rows=excluded, summary=prepared.rejected_summary())
    if num_train == 0:
        raise InputError(f"{task}: no usable training rows ({prepared.rejected_summary()}; see {errors_dir})")
    return prepared


def _join_partitions() -> int:
    import ray

    return int(max(2, min(32, ray.cluster_resources().get("CPU", 2) // 2)))


def _seed_batch(table: pa.Table, task: str, weight: float, holdout_fraction: float, salt: str) -> pa.Table:
    return seed_rows(table, task, weight, holdout_fraction, salt)


def _usable(table: pa.Table, heldout: bool | None) -> pa.Table:
    mask = table.column("reason").is_null()
    if heldout is not None:
        held = pc.fill_null(table.column("heldout"), False)
        mask = pc.and_(mask, held if heldout else pc.invert(held))
    return table.filter(mask)


def _ray_path(path: str) -> str:
    return io.filesystem(path)[1]


def _fs_kwargs(path: str) -> dict[str, Any]:
    return {"filesystem": io.filesystem(path)[0]}


def read_examples(examples_dir: str, heldout: bool | None = None, columns: list[str] | None = None) -> pa.Table:
    """Usable (built) examples, driver side: for the small held-out split and bookkeeping."""
    need = None if columns is None else sorted({*columns, "reason", "heldout"})
    table = _usable(io.read_table(examples_dir, columns=need), heldout)
    return table if columns is None else table.select(columns)


def train_dataset(prepared: PreparedData):
    """The training split (usable, not held out) as a lazily read, streamed Ray Dataset."""
    return io.ray_read_parquet(prepared.examples).map_batches(
        _usable, batch_format="pyarrow", fn_kwargs={"heldout": False})
