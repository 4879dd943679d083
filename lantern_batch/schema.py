"""Arrow schemas of every table, and validation that splits good rows from bad ones.

Two kinds of failure, as DESIGN.md's input contract says:

* **Whole-input** (:class:`SchemaError`, exit code 2): a missing required column, or a column
  whose type differs from the contract other than by a safe widening, in *any* file of the
  table (:func:`check_files` reads every file's footer, not the first); also a table without
  rows, or a file that is not Parquet (:class:`~lantern_batch.errors.InputError`). The message
  names the table, the column, the expected type, the file and its rows; it is raised before
  any row is read.
* **Per-row** (error rows): null or duplicate ids, text that is not valid UTF-8, empty required
  text, text over the size limit, null or empty list elements. Each bad row becomes one row of
  :data:`ERRORS_SCHEMA` with a reason code; the reason and detail never contain the offending
  value (profile text may be hostile or private), only ids and column names.

What real tables hold is not an error: a ``seniority`` outside :data:`SENIORITY_LEVELS`
("Sr", "Mid-Senior level", "Senior Staff") is kept as the text it is, and every reader reads it
through :func:`lantern_batch.titles.member_seniority` / :func:`~lantern_batch.titles.job_seniority`
(the enum level it names, else the one the title names, else unknown); a ``workplace_type``
outside :data:`WORKPLACE_TYPES` is written as it reads ("On-site" -> ``onsite``, "WFH" ->
``remote``) or, when it names none ("flexible"), as :data:`UNKNOWN_WORKPLACE` by :func:`conform`
(:func:`normalise_workplace`).

Row checks are vectorised with ``pyarrow.compute`` so they run per Ray Data batch; duplicates
need a global view and are handled by :func:`first_occurrence_mask` (in memory) or by the
pipelines' own keyed de-duplication.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lantern_batch.errors import InputError

SENIORITY_LEVELS: tuple[str, ...] = (
    "intern",
    "entry",
    "mid",
    "senior",
    "lead",
    "manager",
    "director",
    "executive",
)
"""Ordered seniority scale shared by members and jobs (index = rank)."""

WORKPLACE_TYPES: tuple[str, ...] = ("onsite", "hybrid", "remote")
UNKNOWN_WORKPLACE = "unknown"
"""What :func:`conform` writes for a ``workplace_type`` that names none of :data:`WORKPLACE_TYPES`."""
FIT_LABELS: tuple[str, ...] = ("High", "Medium", "Low")
"""Fit labels in the column order of ``p_high, p_medium, p_low``."""
DIMENSIONS: tuple[str, ...] = (
    "skills",
    "seniority",
    "experience",
    "domain",
    "location",
    "education",
)
"""Policy dimensions (docs/POLICY.md), each scored 0-4."""

TS = pa.timestamp("us", tz="UTC")

EXPERIENCE_TYPE = pa.struct(
    [
        ("title", pa.string()),
        ("company", pa.string()),
        ("start_year", pa.int32()),
        ("end_year", pa.int32()),  # null = current role
        ("description", pa.string()),
    ]
)
EDUCATION_TYPE = pa.struct([("degree", pa.string()), ("field", pa.string()), ("school", pa.string())])

MEMBERS_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("headline", pa.string()),
        pa.field("summary", pa.string()),
        pa.field("current_title", pa.string()),
        pa.field("seniority", pa.string()),
        pa.field("years_experience", pa.float64()),
        pa.field("skills", pa.list_(pa.string())),
        pa.field("experience", pa.list_(EXPERIENCE_TYPE)),
        pa.field("education", pa.list_(EDUCATION_TYPE)),
        pa.field("location", pa.string()),
        pa.field("updated_at", TS),
    ]
)

JOBS_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("company", pa.string()),
        pa.field("description", pa.string()),
        pa.field("seniority", pa.string()),
        pa.field("required_skills", pa.list_(pa.string())),
        pa.field("location", pa.string()),
        pa.field("workplace_type", pa.string()),
        pa.field("updated_at", TS),
    ]
)

PAIRS_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("query", pa.string()),
    ]
)

DIMENSION_SCORES_TYPE = pa.struct([(d, pa.float32()) for d in DIMENSIONS])

SEED_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("fit_label", pa.string(), nullable=False),
        pa.field("dimension_scores", DIMENSION_SCORES_TYPE),
        pa.field("explanation", pa.string()),
        pa.field("source", pa.string()),
    ]
)
"""D_seed: labelled pairs (T1 plus human review in production; the policy in the demo)."""

APPLY_LOG_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("applied", pa.bool_(), nullable=False),
        pa.field("event_at", TS),
    ]
)

TEACHER_LABELS_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("teacher", pa.string(), nullable=False),
        pa.field("fit_label", pa.string(), nullable=False),
        pa.field("p_high", pa.float32()),
        pa.field("p_medium", pa.float32()),
        pa.field("p_low", pa.float32()),
        pa.field("dimension_scores", DIMENSION_SCORES_TYPE),
        pa.field("explanation", pa.string()),
        # Sparse top-k store for token-level KD: one entry per explanation token.
        pa.field("explanation_token_ids", pa.list_(pa.int32())),
        pa.field("topk_ids", pa.list_(pa.list_(pa.int32()))),  # [tokens][k]
        pa.field("topk_logprobs", pa.list_(pa.list_(pa.float32()))),  # [tokens][k]
        pa.field("prompt_version", pa.string()),
        pa.field("model_ref", pa.string()),
        pa.field("input_fingerprint", pa.string()),
        pa.field("created_at", TS),
    ]
)
"""The teacher-label contract (D_cls / D_t)."""

SCORES_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("fit_label", pa.string(), nullable=False),
        pa.field("p_high", pa.float32(), nullable=False),
        pa.field("p_medium", pa.float32(), nullable=False),
        pa.field("p_low", pa.float32(), nullable=False),
        pa.field("explanation", pa.string()),
        pa.field("classifier_version", pa.string(), nullable=False),
        pa.field("explainer_version", pa.string()),
        pa.field("input_fingerprint", pa.string(), nullable=False),
        pa.field("scored_at", TS, nullable=False),
    ]
)
"""The precompute ``scores`` contract."""

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("job_id", pa.string()),
        pa.field("table", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("created_at", TS, nullable=False),
    ]
)
"""One row per rejected input row: keys (never profile values), stage, reason code, detail."""

INPUT_SCHEMAS: dict[str, pa.Schema] = {
    "members": MEMBERS_SCHEMA,
    "jobs": JOBS_SCHEMA,
    "pairs": PAIRS_SCHEMA,
}

#: Columns a table must have. Every other contract column is optional (filled with nulls).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "members": ("member_id", "current_title", "skills"),
    "jobs": ("job_id", "title", "description"),
    "pairs": ("member_id", "job_id"),
}
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "members": ("member_id",),
    "jobs": ("job_id",),
    "pairs": ("member_id", "job_id"),
}
#: Text that must be present and non-blank.
REQUIRED_TEXT: dict[str, tuple[str, ...]] = {
    "members": ("member_id", "current_title"),
    "jobs": ("job_id", "title", "description"),
    "pairs": ("member_id", "job_id"),
}
LIST_OF_TEXT: dict[str, tuple[str, ...]] = {
    "members": ("skills",),
    "jobs": ("required_skills",),
    "pairs": (),
}
ENUMS: dict[str, dict[str, tuple[str, ...]]] = {
    "members": {},
    "jobs": {"workplace_type": (*WORKPLACE_TYPES, UNKNOWN_WORKPLACE)},
    "pairs": {},
}
"""Columns whose conformed values are one of a fixed set (anything else is ``unknown_enum``).
``seniority`` is free text (read through :mod:`lantern_batch.titles`); ``workplace_type`` is
rewritten onto its set by :func:`conform`, so the check only guards that step."""

#: Workplace wordings (lower case, punctuation as spaces) -> workplace type.
WORKPLACE_ALIASES: dict[str, str] = {
    "on site": "onsite", "onsite": "onsite", "in office": "onsite", "office": "onsite",
    "office based": "onsite", "in person": "onsite", "on location": "onsite",
    "on premise": "onsite", "on premises": "onsite",
    "remote": "remote", "fully remote": "remote", "full remote": "remote", "100 remote": "remote",
    "remote first": "remote", "remote only": "remote", "work from home": "remote", "wfh": "remote",
    "home based": "remote", "telecommute": "remote", "teleworking": "remote", "telework": "remote",
    "hybrid": "hybrid", "hybrid remote": "hybrid", "remote hybrid": "hybrid", "partially remote": "hybrid",
    "partly remote": "hybrid", "part remote": "hybrid",
}


def normalise_workplace(value: str | None) -> str | None:
    """A ``workplace_type`` on :data:`WORKPLACE_TYPES`: an enum value is itself; a known wording
    (:data:`WORKPLACE_ALIASES`, any case and punctuation: "On-site", "Fully Remote", "WFH") is its
    type; any other text is :data:`UNKNOWN_WORKPLACE` ("flexible", "Remote-ish": never a guess);
    None or blank is None (not given)."""
    if value is None:
        return None
    if value in WORKPLACE_TYPES or value == UNKNOWN_WORKPLACE:
        return value
    key = re.sub(r"[^a-z0-9]+", " ", value.lower()).strip()
    if not key:
        return None
    return WORKPLACE_ALIASES.get(key, UNKNOWN_WORKPLACE)


def _normalise_workplace_column(arr: pa.Array) -> pa.Array:
    """:func:`normalise_workplace` over a string array, each distinct value once. Values that
    carry U+FFFD (text that was not valid UTF-8) stay as they are, for :func:`row_reasons`."""
    if len(arr) == 0 or arr.null_count == len(arr):
        return arr
    enc = pc.dictionary_encode(arr)
    values = enc.dictionary.to_pylist()
    mapped = pa.array([v if REPLACEMENT_CHARACTER in v else normalise_workplace(v) for v in values], pa.string())
    return mapped.take(enc.indices)


class SchemaError(InputError):
    """A whole input is unusable: missing required column or an incompatible type (exit 2)."""

    def __init__(self, table: str, column: str, expected: pa.DataType, problem: str,
                 file: str | None = None, rows: int | None = None):
        self.table, self.column, self.expected, self.problem = table, column, expected, problem
        self.file, self.rows = file, rows
        where = f" in file {file} ({rows} rows)" if file is not None else ""
        super().__init__(
            f"table '{table}': column '{column}' {problem} (expected type {expected}){where}"
        )


@dataclass(frozen=True)
class FileFooter:
    """What one Parquet file's footer says, read without reading any row."""

    path: str
    schema: pa.Schema
    num_rows: int


# ---------------------------------------------------------------------------------------------
# Column-level checks


def _is_safe_widening(actual: pa.DataType, expected: pa.DataType) -> bool:
    """True when a value of ``actual`` converts to ``expected`` without loss or meaning change."""
    if actual.equals(expected) or pa.types.is_null(actual):
        return True
    if pa.types.is_integer(expected) and pa.types.is_integer(actual):
        return actual.bit_width <= expected.bit_width and (
            pa.types.is_signed_integer(actual) or actual.bit_width < expected.bit_width
        )
    if pa.types.is_floating(expected):
        if pa.types.is_floating(actual):
            return actual.bit_width <= expected.bit_width
        return pa.types.is_integer(actual) and actual.bit_width <= 32
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual) or pa.types.is_string_view(actual)
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(actual)
    if pa.types.is_list(expected) and (
        pa.types.is_list(actual) or pa.types.is_large_list(actual) or pa.types.is_list_view(actual)
    ):
        return _is_safe_widening(actual.value_type, expected.value_type)
    if pa.types.is_struct(expected) and pa.types.is_struct(actual):
        names = {actual.field(i).name: actual.field(i).type for i in range(actual.num_fields)}
        for i in range(expected.num_fields):
            f = expected.field(i)
            if f.name in names and not _is_safe_widening(names[f.name], f.type):
                return False
        # Missing struct children are allowed (nullable); unknown children are dropped.
        return True
    return False


def check_columns(table_name: str, schema: pa.Schema, *, file: str | None = None,
                  rows: int | None = None) -> None:
    """Raise :class:`SchemaError` for the first missing required column or unsafe type.

    Args:
        table_name: ``members``, ``jobs`` or ``pairs``.
        schema: the schema of the input as read (Parquet footer), before any row is read.
        file, rows: the file the schema is from and its row count, named in the error.
    """
    expected = INPUT_SCHEMAS[table_name]
    for name in REQUIRED_COLUMNS[table_name]:
        if schema.get_field_index(name) < 0:
            raise SchemaError(table_name, name, expected.field(name).type, "is missing", file, rows)
    for field in expected:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            continue
        actual = schema.field(idx).type
        if not _is_safe_widening(actual, field.type):
            raise SchemaError(
                table_name, field.name, field.type, f"has type {actual}, not a safe widening", file, rows
            )


def conformed_schema(table_name: str) -> pa.Schema:
    """The schema :func:`conform` returns: the contract's columns and types, keys nullable
    (a null id is an error row, not a whole-input failure)."""
    return pa.schema([f.with_nullable(True) for f in INPUT_SCHEMAS[table_name]])


def check_files(table_name: str, footers: Sequence[FileFooter]) -> pa.Schema:
    """Check every file of an input table against its contract, from the footers alone.

    Each file is checked on its own: files may differ by safe widenings, missing optional
    columns or extra columns (each is conformed when read), never by an unsafe type, e.g. an
    id that is a string in one file and an int in another.

    Raises:
        SchemaError: a file lacks a required column or has an unsafe type (names the file).
        InputError: the files hold no rows at all.

    Returns:
        :func:`conformed_schema`, the schema every reader returns for the table.
    """
    for f in footers:
        check_columns(table_name, f.schema, file=f.path, rows=f.num_rows)
    if not sum(f.num_rows for f in footers):
        more = f" and {len(footers) - 1} more" if len(footers) > 1 else ""
        raise InputError(f"table '{table_name}': no rows in {len(footers)} Parquet file(s) "
                         f"({footers[0].path}{more})")
    return conformed_schema(table_name)


def unify_files(table_name: str, footers: Sequence[FileFooter]) -> pa.Schema:
    """One schema for the files of a table without a contract here (seed, teacher labels).

    Types unify as Arrow's permissive promotion allows (null with anything, int32 with
    float64, string with large_string), so a null-typed column in one file does not decide
    the type.

    Raises:
        InputError: two files disagree on a column's type (names the column and the file).
    """
    schema = footers[0].schema
    for f in footers[1:]:
        try:
            schema = pa.unify_schemas([schema, f.schema], promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
            # The column that does not unify (not merely the first that differs: null-typed or
            # widened columns unify, and naming one of them would point at the wrong column).
            differ = [n for n in f.schema.names
                      if n in schema.names and not _unifies(schema.field(n), f.schema.field(n))]
            problem = (f"column '{differ[0]}' has type {f.schema.field(differ[0]).type} in file {f.path} "
                       f"({f.num_rows} rows) but {schema.field(differ[0]).type} in the files before it"
                       if differ else f"file {f.path} ({f.num_rows} rows) does not match the files before it ({exc})")
            raise InputError(f"table '{table_name}': {problem}") from None
    return schema


def _unifies(a: pa.Field, b: pa.Field) -> bool:
    try:
        pa.unify_schemas([pa.schema([a]), pa.schema([b])], promote_options="permissive")
        return True
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return False


def _cast_struct(arr: pa.Array, expected: pa.StructType) -> pa.Array:
    """Cast a struct array to ``expected``, adding missing children as nulls, dropping others."""
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), expected)
    children = []
    for i in range(expected.num_fields):
        f = expected.field(i)
        idx = arr.type.get_field_index(f.name)
        child = arr.field(idx) if idx >= 0 else pa.nulls(len(arr), f.type)
        children.append(_cast(child, f.type))
    return pa.StructArray.from_arrays(children, fields=list(expected), mask=arr.is_null())


def _cast(arr: pa.Array, expected: pa.DataType) -> pa.Array:
    if arr.type.equals(expected):
        return arr
    if pa.types.is_null(arr.type):  # a column that is all null in this file
        return pa.nulls(len(arr), expected)
    if pa.types.is_struct(expected):
        return _cast_struct(arr, expected)
    if pa.types.is_list(expected) and pa.types.is_struct(expected.value_type):
        arr = arr.cast(pa.list_(arr.type.value_type)) if not pa.types.is_list(arr.type) else arr
        values = _cast_struct(arr.flatten(), expected.value_type)
        offsets = arr.offsets
        return pa.ListArray.from_arrays(offsets, values, mask=arr.is_null())
    if pa.types.is_timestamp(expected) and pa.types.is_timestamp(arr.type):
        # Naive times are UTC; another zone is the same instant; digits finer than the
        # contract's microseconds are dropped (a plain cast refuses to lose them).
        if arr.type.tz is None:
            arr = pc.assume_timezone(arr, "UTC")
        return pc.cast(arr, options=pc.CastOptions(expected, allow_time_truncate=True))
    return arr.cast(expected)


def _valid_utf8(arr: pa.Array) -> pa.Array:
    """``arr`` with every string that is not valid UTF-8 replaced by its lossy decoding (each
    bad sequence becomes U+FFFD, which :func:`row_reasons` reports as ``invalid_utf8``).

    Parquet readers do not validate text, and one invalid value fails every later compute
    kernel or Python conversion of its whole batch; valid arrays are returned as they are.
    """
    try:
        arr.validate(full=True)
        return arr
    except pa.ArrowInvalid:
        return _repair_utf8(arr)


def _repair_utf8(arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_string(t):
        raw = arr.view(pa.binary()).to_pylist()
        return pa.array([None if b is None else b.decode("utf-8", "replace") for b in raw], t)
    if pa.types.is_list(t):
        return pa.ListArray.from_arrays(arr.offsets, _repair_utf8(arr.values), type=t, mask=arr.is_null())
    if pa.types.is_struct(t):
        return pa.StructArray.from_arrays([_repair_utf8(c) for c in arr.flatten()], fields=list(t),
                                          mask=arr.is_null())
    return arr


def conform(table: pa.Table, table_name: str) -> pa.Table:
    """Check the columns, then return ``table`` with exactly the contract's columns and types.

    Optional columns the input lacks, or that are null-typed, become nulls; extra columns are
    dropped; timestamps become microseconds in UTC; text that is not valid UTF-8 is decoded
    lossily (the row then fails :func:`row_reasons` with ``invalid_utf8:<column>``); a jobs
    ``workplace_type`` becomes one of :data:`WORKPLACE_TYPES` or :data:`UNKNOWN_WORKPLACE`
    (:func:`normalise_workplace`; blank is null). ``seniority`` is kept as it is.
    """
    check_columns(table_name, table.schema)
    expected = INPUT_SCHEMAS[table_name]
    arrays = []
    for field in expected:
        if field.name in table.column_names:
            col = _valid_utf8(_cast(table.column(field.name).combine_chunks(), field.type))
            if table_name == "jobs" and field.name == "workplace_type":
                col = _normalise_workplace_column(col)
            arrays.append(col)
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    # Keys are checked row by row (null id -> error row), so relax nullability here.
    return pa.Table.from_arrays(arrays, schema=conformed_schema(table_name))


# ---------------------------------------------------------------------------------------------
# Row-level checks


@dataclass(frozen=True)
class RowLimits:
    """Per-row limits (see :class:`lantern_batch.config.ValidationConfig`)."""

    max_text_chars: int = 20_000
    max_list_items: int = 500


def _np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def row_reasons(table: pa.Table, table_name: str, limits: RowLimits = RowLimits()) -> np.ndarray:
    """Reason code of each row's first problem, or None for a good row (duplicates excluded).

    ``table`` must already be conformed (:func:`conform`). Codes look like
    ``null_id:member_id``, ``invalid_utf8:summary`` (text that was not valid UTF-8, or that
    carries U+FFFD from an earlier failed decode), ``empty_text:title``, ``text_too_long:summary``,
    ``bad_list_element:skills``, ``too_many_items:skills``; ``unknown_enum:workplace_type`` is a
    value :func:`conform` never writes (a guard for tables built another way)."""
    n = table.num_rows
    reasons = np.full(n, None, dtype=object)

    def mark(mask: np.ndarray, code: str) -> None:
        sel = mask & (reasons == None)  # noqa: E711 (object array comparison)
        reasons[sel] = code

    for col in KEY_COLUMNS[table_name]:
        mark(_np_bool(table.column(col).is_null()), f"null_id:{col}")
    for field in table.schema:
        mark(_rows_with_text(table.column(field.name), _has_replacement), f"invalid_utf8:{field.name}")
    for col in REQUIRED_TEXT[table_name]:
        arr = table.column(col)
        blank = pc.or_kleene(arr.is_null(), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(arr)), 0))
        mark(_np_bool(blank), f"empty_text:{col}")
    for field in table.schema:
        col = table.column(field.name)
        if pa.types.is_string(field.type):
            mark(_np_bool(pc.greater(pc.utf8_length(col), limits.max_text_chars)), f"text_too_long:{field.name}")
        elif pa.types.is_list(field.type):
            mark(_np_bool(pc.greater(pc.list_value_length(col), limits.max_list_items)), f"too_many_items:{field.name}")
            if pa.types.is_struct(field.type.value_type):
                mark(_nested_text_too_long(col, field.type.value_type, limits), f"text_too_long:{field.name}")
    for col in LIST_OF_TEXT[table_name]:
        mark(_bad_list_elements(table.column(col)), f"bad_list_element:{col}")
    for col, allowed in ENUMS[table_name].items():
        arr = table.column(col)
        unknown = pc.and_(pc.is_valid(arr), pc.invert(pc.is_in(arr, value_set=pa.array(allowed))))
        mark(_np_bool(unknown), f"unknown_enum:{col}")
    return reasons


REPLACEMENT_CHARACTER = "\ufffd"
"""What :func:`conform` decodes invalid UTF-8 to (and what an earlier lossy decode left)."""


def _has_replacement(values: pa.Array) -> pa.Array:
    return pc.match_substring(values, REPLACEMENT_CHARACTER)


def _rows_with_text(col: pa.ChunkedArray | pa.Array, pred: Callable[[pa.Array], pa.Array]) -> np.ndarray:
    """Rows where ``pred`` holds for some string in the column, inside lists and structs too."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n, t = len(arr), arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _np_bool(pred(arr))
    out = np.zeros(n, dtype=bool)
    if n == 0:
        return out
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _rows_with_text(pc.list_flatten(arr), pred)
        out[pc.list_parent_indices(arr).to_numpy()[inner]] = True
    elif pa.types.is_struct(t):
        for child in arr.flatten():
            out |= _rows_with_text(child, pred)
    return out


def _bad_list_elements(col: pa.ChunkedArray) -> np.ndarray:
    """Rows whose list holds a null or blank element."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=bool)
    parent = pc.list_parent_indices(arr).to_numpy()
    values = pc.list_flatten(arr)
    bad = pc.or_kleene(values.is_null(), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0))
    bad_np = _np_bool(bad)
    out = np.zeros(n, dtype=bool)
    out[parent[bad_np]] = True
    return out


def _nested_text_too_long(col: pa.ChunkedArray, struct_type: pa.StructType, limits: RowLimits) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    out = np.zeros(len(arr), dtype=bool)
    if len(arr) == 0:
        return out
    parent = pc.list_parent_indices(arr).to_numpy()
    values = pc.list_flatten(arr)
    for i in range(struct_type.num_fields):
        if pa.types.is_string(struct_type.field(i).type):
            too_long = _np_bool(pc.greater(pc.utf8_length(values.field(i)), limits.max_text_chars))
            out[parent[too_long]] = True
    return out


def first_occurrence_mask(table: pa.Table, keys: tuple[str, ...]) -> np.ndarray:
    """True for the first row of each key (rows with a null key count as first)."""
    n = table.num_rows
    if n == 0:
        return np.zeros(0, dtype=bool)
    idx = pa.array(np.arange(n, dtype=np.int64))
    t = pa.table({**{k: table.column(k) for k in keys}, "__row": idx})
    firsts = t.group_by(list(keys), use_threads=False).aggregate([("__row", "min")])
    mask = np.zeros(n, dtype=bool)
    mask[firsts.column("__row_min").to_numpy()] = True
    return mask


def error_rows(
    keys: pa.Table,
    reasons: np.ndarray | list[str],
    *,
    table: str,
    stage: str,
    detail: np.ndarray | list[str | None] | None = None,
    now: datetime | None = None,
) -> pa.Table:
    """Build :data:`ERRORS_SCHEMA` rows for rejected rows.

    Args:
        keys: the rejected rows (only ``member_id`` / ``job_id`` are read, when present).
        reasons: one reason code per row.
        table: the input table the rows came from.
        stage: pipeline stage that rejected them (``validate``, ``join``, ``teacher``, ...).
        detail: optional per-row detail (never profile values).
    """
    n = keys.num_rows
    now = now or datetime.now(timezone.utc)

    def key(name: str) -> pa.Array:
        if name in keys.column_names:
            return keys.column(name).combine_chunks().cast(pa.string())
        return pa.nulls(n, pa.string())

    return pa.Table.from_arrays(
        [
            key("member_id"),
            key("job_id"),
            pa.array([table] * n, pa.string()),
            pa.array([stage] * n, pa.string()),
            pa.array(list(reasons), pa.string()),
            pa.array(list(detail) if detail is not None else [None] * n, pa.string()),
            pa.array([now] * n, TS),
        ],
        schema=ERRORS_SCHEMA,
    )


@dataclass
class ValidationResult:
    """Good rows (conformed to the contract) and one error row per bad input row."""

    table_name: str
    good: pa.Table
    errors: pa.Table

    @property
    def counts(self) -> dict[str, int]:
        """Rows by outcome: ``good`` plus one entry per reason code."""
        out: dict[str, int] = {"good": self.good.num_rows}
        out.update(Counter(self.errors.column("reason").to_pylist()))
        return out


def validate_table(
    table: pa.Table,
    table_name: str,
    limits: RowLimits = RowLimits(),
    stage: str = "validate",
) -> ValidationResult:
    """Validate an in-memory input table.

    Raises:
        SchemaError: missing required column or incompatible type.

    Returns:
        Good rows (first occurrence of each key, all row checks passed) and error rows; every
        input row is in exactly one of the two.
    """
    conformed = conform(table, table_name)
    reasons = row_reasons(conformed, table_name, limits)
    first = first_occurrence_mask(conformed, KEY_COLUMNS[table_name])
    dup_code = "duplicate_pair" if table_name == "pairs" else "duplicate_id"
    reasons[(~first) & (reasons == None)] = dup_code  # noqa: E711
    bad = reasons != None  # noqa: E711
    good = conformed.filter(pa.array(~bad))
    bad_rows = conformed.filter(pa.array(bad))
    errors = error_rows(bad_rows, reasons[bad].tolist(), table=table_name, stage=stage)
    return ValidationResult(table_name, good, errors)
