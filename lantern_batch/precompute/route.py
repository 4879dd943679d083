"""Keyed routing of pairs, and the explain policy: plain functions over ``pyarrow.Table``.

The pipeline groups every pair (and every row of the previous partition) by a hash of its
``member_id``; one call of :func:`route_group` sees all rows of a set of members and decides, per
pair, where it goes:

* ``error``    — bad row, unknown or rejected member/job, or a later copy of a duplicate pair;
* ``score``    — good and new or changed (no previous row with the same ``input_fingerprint``);
* ``reuse``    — unchanged: the previous row is written again as is;
* ``reselect`` — unchanged, but its member's explain selection must be recomputed (another pair
  of the member changed or disappeared, under a top-N policy) or its previous explanation
  failed: it skips the classifier and joins the selection step.

:func:`select_explanations` then applies :class:`~lantern_batch.precompute.config.ExplainPolicy`
to scored and reselected rows. ``explainer_version`` non-null marks a row as selected for
explanation (its ``explanation`` is null only when the explainer failed).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lantern_batch.precompute.fingerprints import sample_hash
from lantern_batch.schema import TS, first_occurrence_mask

# ---------------------------------------------------------------------------------------------
# Row layout shared by every step between annotation and writing.

ROUTES = ("error", "score", "reuse", "reselect")

#: Score columns carried from the previous partition (reuse) or filled by the stages.
SCORE_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("fit_label", pa.string()),
    pa.field("p_high", pa.float32()),
    pa.field("p_medium", pa.float32()),
    pa.field("p_low", pa.float32()),
    pa.field("explanation", pa.string()),
    pa.field("classifier_version", pa.string()),
    pa.field("explainer_version", pa.string()),
    pa.field("scored_at", TS),
)

WORK_SCHEMA = pa.schema(
    [
        pa.field("__src", pa.string()),  # "pair" (this run's input) or "prev" (previous ds)
        pa.field("__route", pa.string()),  # one of ROUTES (set by route_group)
        pa.field("__bucket", pa.int64()),  # hash(member_id) % buckets
        pa.field("member_id", pa.string()),
        pa.field("job_id", pa.string()),
        pa.field("query", pa.string()),
        pa.field("__order", pa.int64()),  # input position: (file index << 36) | row in file
        pa.field("__m_order", pa.int64()),  # position of the member's kept row (content join key)
        pa.field("__j_order", pa.int64()),  # position of the job's kept row
        pa.field("input_fingerprint", pa.string()),
        pa.field("__err_table", pa.string()),
        pa.field("__err_stage", pa.string()),
        pa.field("__err_reason", pa.string()),
        pa.field("__err_detail", pa.string()),
        *SCORE_COLUMNS,
        pa.field("__explain", pa.bool_()),  # needs the explainer (set by select_explanations)
        pa.field("__explain_failed", pa.bool_()),
        pa.field("__explain_invalid", pa.string()),  # the validator's reasons for a rejected explanation
        pa.field("__explain_attempts", pa.int8()),  # generations it took (1 + regenerations used)
    ]
)
"""Every intermediate table of the pipeline has exactly this schema (unions stay trivial)."""


def empty_work(n: int) -> dict[str, pa.Array]:
    """Null columns of :data:`WORK_SCHEMA` for ``n`` rows (callers overwrite what they know)."""
    return {f.name: pa.nulls(n, f.type) for f in WORK_SCHEMA}


def work_table(columns: dict[str, pa.Array | pa.ChunkedArray | Sequence]) -> pa.Table:
    """A :data:`WORK_SCHEMA` table from a partial column dict (missing columns are null)."""
    n = None
    for v in columns.values():
        n = len(v)
        break
    if n is None:
        n = 0
    arrays = []
    for f in WORK_SCHEMA:
        v = columns.get(f.name)
        if v is None:
            arrays.append(pa.nulls(n, f.type))
        elif isinstance(v, (pa.Array, pa.ChunkedArray)):
            arrays.append(v.cast(f.type) if not v.type.equals(f.type) else v)
        else:
            arrays.append(pa.array(v, f.type))
    return pa.Table.from_arrays(arrays, schema=WORK_SCHEMA)


def as_work(table: pa.Table, extra: Sequence[str] = ()) -> pa.Table:
    """``table`` with exactly the :data:`WORK_SCHEMA` columns and types, then ``extra`` columns.

    Ray Data's hash join may hand back all-null columns as the null type, in another order.
    """
    arrays = []
    for f in WORK_SCHEMA:
        col = table.column(f.name)
        arrays.append(col if col.type.equals(f.type) else col.cast(f.type))
    out = pa.Table.from_arrays(arrays, schema=WORK_SCHEMA)
    for name in extra:
        out = out.append_column(name, table.column(name))
    return out


def member_buckets(member_ids: Sequence[str | None], num_buckets: int) -> np.ndarray:
    """Bucket of each member id: crc32 (stable across processes and runs) modulo ``num_buckets``."""
    return np.fromiter(
        (0 if m is None else zlib.crc32(m.encode("utf-8")) % num_buckets for m in member_ids),
        dtype=np.int64,
        count=len(member_ids),
    )


def _set(table: pa.Table, name: str, values: pa.Array | np.ndarray | list) -> pa.Table:
    idx = table.schema.get_field_index(name)
    field = table.schema.field(idx)
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, field.type)
    if not arr.type.equals(field.type):
        arr = arr.cast(field.type)
    return table.set_column(idx, field, arr)


def _where(mask: np.ndarray, a: pa.Array, b: pa.Array) -> pa.Array:
    return pc.if_else(pa.array(mask), a, b)


# ---------------------------------------------------------------------------------------------
# Routing


@dataclass(frozen=True)
class RouteOptions:
    """What routing needs to know about the run."""

    incremental: bool = True
    explainer_enabled: bool = True
    per_member_policy: bool = False  # a top-N policy: a member's selection depends on all its pairs


def route_group(group: pa.Table, opts: RouteOptions) -> pa.Table:
    """Route all rows of a set of members (``__src`` pair/prev) — see the module docstring.

    Returns:
        One row per input pair (previous rows are consumed), with ``__route`` set; ``score``
        rows have their score columns cleared, ``reuse``/``reselect`` rows carry the previous ones.
    """
    src = group.column("__src")
    pairs = group.filter(pc.equal(src, "pair"))
    prev = group.filter(pc.equal(src, "prev"))
    n = pairs.num_rows
    if n == 0:
        return pairs.slice(0, 0)
    pairs = pairs.sort_by([("__order", "ascending")])

    # Duplicates: the first occurrence (by input order) is kept, every later copy is an error.
    reason = pairs.column("__err_reason").combine_chunks()
    first = first_occurrence_mask(pairs, ("member_id", "job_id"))
    dup = (~first) & ~_np_valid(reason)
    if dup.any():
        pairs = _set(pairs, "__err_table", _where(dup, pa.scalar("pairs"), pairs.column("__err_table").combine_chunks()))
        pairs = _set(pairs, "__err_stage", _where(dup, pa.scalar("validate"), pairs.column("__err_stage").combine_chunks()))
        pairs = _set(pairs, "__err_reason", _where(dup, pa.scalar("duplicate_pair"), reason))
        reason = pairs.column("__err_reason").combine_chunks()
    bad = _np_valid(reason)

    route = np.full(n, "score", dtype=object)
    route[bad] = "error"

    # Previous scores of the same keys (only good rows can be reused).
    if opts.incremental and prev.num_rows:
        prev_cols = ["member_id", "job_id", "input_fingerprint"] + [f.name for f in SCORE_COLUMNS]
        prev_sel = prev.select(prev_cols).rename_columns(
            ["member_id", "job_id"] + [f"__prev_{c}" for c in prev_cols[2:]]
        )
        keyed = pairs.select(["member_id", "job_id"]).append_column(
            "__row", pa.array(np.arange(n, dtype=np.int64))
        )
        joined = keyed.join(prev_sel, keys=["member_id", "job_id"], join_type="left outer",
                            use_threads=False).sort_by("__row")
        same = _np_bool(pc.equal(joined.column("__prev_input_fingerprint"),
                                 pairs.column("input_fingerprint")))
        reusable = same & ~bad
        for f in SCORE_COLUMNS:
            prev_vals = joined.column(f"__prev_{f.name}").combine_chunks()
            pairs = _set(pairs, f.name, _where(reusable, prev_vals, pa.nulls(n, f.type)))
        route[reusable] = "reuse"

        if opts.explainer_enabled:
            # A selected pair whose explanation failed last time is tried again.
            retry = reusable & _np_valid(pairs.column("explainer_version")) & ~_np_valid(pairs.column("explanation"))
            route[retry] = "reselect"
        if opts.per_member_policy:
            affected = _affected_members(pairs, prev, route)
            if affected:
                in_affected = _np_bool(pc.is_in(pairs.column("member_id"), value_set=pa.array(sorted(affected), pa.string())))
                route[(route == "reuse") & in_affected] = "reselect"
    else:
        for f in SCORE_COLUMNS:
            pairs = _set(pairs, f.name, pa.nulls(n, f.type))

    pairs = _set(pairs, "__route", pa.array(route.tolist(), pa.string()))
    return pairs


def _affected_members(pairs: pa.Table, prev: pa.Table, route: np.ndarray) -> set[str]:
    """Members whose selection may change: one of their pairs is re-scored, or a pair they had
    in the previous partition is gone."""
    members = np.asarray(pairs.column("member_id").to_pylist(), dtype=object)
    affected = set(members[route == "score"].tolist())
    good = route != "error"
    current = set(zip(members[good].tolist(), np.asarray(pairs.column("job_id").to_pylist(), dtype=object)[good].tolist(), strict=True))
    for m, j in zip(prev.column("member_id").to_pylist(), prev.column("job_id").to_pylist(), strict=True):
        if (m, j) not in current:
            affected.add(m)
    affected.discard(None)
    return affected


def _np_valid(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


# ---------------------------------------------------------------------------------------------
# Explain policy


@dataclass(frozen=True)
class Policy:
    """Plain form of :class:`~lantern_batch.precompute.config.ExplainPolicy` (no pydantic in workers)."""

    labels: tuple[str, ...]
    top_n_per_member: int | None
    sample_rate: float
    seed: int


def select_explanations(rows: pa.Table, policy: Policy | None, explainer_version: str | None) -> pa.Table:
    """Mark the rows to explain; keep, or clear, the explanations of reused rows.

    ``rows`` hold ``score`` rows (freshly classified) and ``reselect`` rows. Under a top-N policy
    ``rows`` must hold *all* scored/reselected rows of each member it contains (the pipeline
    groups by member); other policies decide row by row.

    A selected row keeps a previous explanation when it has one and was not re-scored; otherwise
    it is marked ``__explain``. An unselected row has ``explanation`` and ``explainer_version``
    cleared.
    """
    n = rows.num_rows
    if n == 0:
        return rows
    if policy is None or explainer_version is None:
        selected = np.zeros(n, dtype=bool)
    else:
        labels = np.asarray(rows.column("fit_label").to_pylist(), dtype=object)
        members = rows.column("member_id").to_pylist()
        jobs = rows.column("job_id").to_pylist()
        candidate = np.isin(labels, np.asarray(policy.labels, dtype=object))
        if policy.sample_rate < 1.0:
            candidate &= np.asarray(sample_hash(members, jobs, policy.seed)) < policy.sample_rate
        if policy.top_n_per_member is not None:
            selected = np.zeros(n, dtype=bool)
            p_high = rows.column("p_high").to_numpy(zero_copy_only=False).astype(np.float64)
            idx = np.nonzero(candidate)[0]
            # Highest p_high first, ties broken by job_id so every run picks the same pairs.
            idx = sorted(idx.tolist(), key=lambda i: (members[i], -p_high[i], jobs[i]))
            taken: dict[str, int] = {}
            for i in idx:
                k = taken.get(members[i], 0)
                if k < policy.top_n_per_member:
                    selected[i] = True
                    taken[members[i]] = k + 1
        else:
            selected = candidate
    rescored = np.asarray([r == "score" for r in rows.column("__route").to_pylist()], dtype=bool)
    has_expl = _np_valid(rows.column("explanation"))
    explain = selected & (rescored | ~has_expl)
    expl = rows.column("explanation").combine_chunks()
    keep = selected & ~explain
    rows = _set(rows, "explanation", _where(keep, expl, pa.nulls(n, pa.string())))
    ver = pa.array([explainer_version] * n, pa.string())
    rows = _set(rows, "explainer_version", _where(selected, ver, pa.nulls(n, pa.string())))
    rows = _set(rows, "__explain", pa.array(explain))
    return rows
