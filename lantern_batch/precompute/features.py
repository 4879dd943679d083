"""Input reading, validation, content digests and the member/job feature join.

Plain functions over ``pyarrow.Table`` (testable without Ray); the pipeline wraps them in Ray Data
steps. Columns in, columns out:

* :func:`read_file_batches` — one Parquet file -> conformed batches with ``__order``, the row's
  input position ``(file index << 36) | row in file``. It defines "first occurrence" for
  duplicates independently of how Ray schedules the reads.
* :func:`digest_batch` — members/jobs -> the index columns (``<id>, __order, __hash, __reason``).
* :func:`finalize_index` — all index blocks of a table -> one row per id (first occurrence),
  the reason if rejected, and counts of rejected rows by reason.
* :func:`annotate_pairs` — pairs -> :data:`~lantern_batch.precompute.route.WORK_SCHEMA` rows with
  row errors, the member's/job's reason when either was rejected, ``input_fingerprint`` and the
  routing bucket.
* :func:`content_batch` / :func:`attach_content` — the member's and job's full rows as one struct
  column each (``member``, ``job``) and their content hashes (``__member_hash``,
  ``__job_hash``) next to the pairs that need them, looked up by ``__m_order`` / ``__j_order``.
* :func:`stage_inputs` — the stage's input column from the structs. The content is read a second
  time, after the digest: a row whose content is gone (``content_missing``) or is not the row
  that was digested (``content_changed``: the pair's fingerprint recomputed from the joined
  hashes differs from its ``input_fingerprint``, e.g. a file replaced mid-run) becomes an error
  row and is never built from another row's content.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lantern_batch import io
from lantern_batch.precompute.fingerprints import content_hashes, pair_fingerprints
from lantern_batch.precompute.route import member_buckets, work_table
from lantern_batch.schema import (
    INPUT_SCHEMAS,
    KEY_COLUMNS,
    RowLimits,
    conform,
    first_occurrence_mask,
    row_reasons,
)

ORDER_FILE_SHIFT = 36
"""Bits of ``__order`` for the row within a file (up to 68 billion rows per file)."""

ID_COLUMN = {"members": "member_id", "jobs": "job_id"}

INDEX_SCHEMA = {
    name: pa.schema([
        pa.field(col, pa.string()),
        pa.field("__order", pa.int64()),
        pa.field("__hash", pa.string()),
        pa.field("__reason", pa.string()),
    ])
    for name, col in ID_COLUMN.items()
}


def read_file_batches(path: str, file_idx: int, table_name: str, rows_per_batch: int) -> Iterator[pa.Table]:
    """Conformed batches of one Parquet file, each with ``__order``.

    Raises:
        SchemaError: the file lacks a required column or has an incompatible type.
    """
    fs, p = io.filesystem(path)
    with fs.open_input_file(p) as fh:
        pf = pq.ParquetFile(fh)
        start = 0
        for rb in pf.iter_batches(batch_size=rows_per_batch):
            table = conform(pa.Table.from_batches([rb]), table_name)
            n = table.num_rows
            order = (np.int64(file_idx) << ORDER_FILE_SHIFT) + np.arange(start, start + n, dtype=np.int64)
            start += n
            yield table.append_column("__order", pa.array(order))


def digest_batch(table: pa.Table, table_name: str, limits: RowLimits) -> pa.Table:
    """Index columns of a conformed members/jobs batch: id, ``__order``, content ``__hash``
    (good rows only) and the row's ``__reason`` (None when good; duplicates come later)."""
    id_col = ID_COLUMN[table_name]
    reasons = row_reasons(table.drop_columns(["__order"]), table_name, limits)
    good = np.asarray([r is None for r in reasons], dtype=bool)
    hashes: list[str | None] = [None] * table.num_rows
    if good.any():
        good_idx = np.nonzero(good)[0]
        for i, h in zip(good_idx.tolist(), content_hashes(table.take(pa.array(good_idx)), table_name), strict=True):
            hashes[i] = h
    return pa.Table.from_arrays(
        [table.column(id_col), table.column("__order"), pa.array(hashes, pa.string()),
         pa.array(reasons.tolist(), pa.string())],
        schema=INDEX_SCHEMA[table_name],
    )


def finalize_index(blocks: list[pa.Table], table_name: str) -> tuple[pa.Table, dict[str, int]]:
    """One index row per id from every digest block of a table.

    The first occurrence of an id (by ``__order``) decides: a later copy counts as
    ``duplicate_id``; rows with a null id cannot be looked up and are only counted.

    Returns:
        ``(index, rejected)``: the index sorted by id (``__reason`` set when the kept row was
        rejected), and the number of rejected input rows by reason.
    """
    id_col = ID_COLUMN[table_name]
    schema = INDEX_SCHEMA[table_name]
    table = pa.concat_tables([b.select(schema.names).cast(schema) for b in blocks]) if blocks else schema.empty_table()
    table = table.sort_by([("__order", "ascending")])
    first = first_occurrence_mask(table, KEY_COLUMNS[table_name])
    reasons = table.column("__reason").to_pylist()
    counts: Counter[str] = Counter()
    for i, r in enumerate(reasons):
        if r is not None:
            counts[r] += 1
        elif not first[i]:
            counts["duplicate_id"] += 1
    valid_id = np.asarray(table.column(id_col).is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    index = table.filter(pa.array(first & valid_id)).sort_by([(id_col, "ascending")])
    return index, dict(counts)


class IndexLookup:
    """An index table with a hash lookup on its id column, built once per worker process.

    ``pyarrow.compute.index_in`` would rebuild its hash table on every call: with millions of
    members that is ~1 s per batch of pairs; the pandas hash index is built once (~1 s for
    10M ids) and then costs ~50 ns a lookup.
    """

    def __init__(self, index: pa.Table, id_col: str):
        import pandas as pd

        self.table = index
        self.id_col = id_col
        self._index = pd.Index(index.column(id_col).to_numpy(zero_copy_only=False))

    def positions(self, keys: pa.Array) -> tuple[np.ndarray, pa.Table | None]:
        """Found mask of ``keys`` and the index rows (row 0 where not found)."""
        pos = self._index.get_indexer(keys.to_numpy(zero_copy_only=False))
        found = pos >= 0
        if not self.table.num_rows:
            return found, None
        return found, self.table.take(pa.array(np.where(found, pos, 0)))


def _lookup(keys: pa.Array, index: pa.Table | IndexLookup, id_col: str) -> tuple[np.ndarray, pa.Table | None]:
    """Positions of ``keys`` in ``index`` (found mask) and the matching index rows."""
    if not isinstance(index, IndexLookup):
        index = IndexLookup(index, id_col)
    return index.positions(keys)


def annotate_pairs(
    pairs: pa.Table,
    member_index: pa.Table | IndexLookup,
    job_index: pa.Table | IndexLookup,
    run_fp: str,
    limits: RowLimits,
    num_buckets: int,
) -> pa.Table:
    """Validate a conformed pairs batch against the member and job indexes.

    Reason precedence per pair: its own row problem (null id, blank id), then an unknown
    member, the member's own reason, an unknown job, the job's own reason. Duplicates need all
    pairs of a member and are marked later (:func:`~lantern_batch.precompute.route.route_group`).

    Returns:
        :data:`~lantern_batch.precompute.route.WORK_SCHEMA` rows (``__src`` = pair).
    """
    n = pairs.num_rows
    order = pairs.column("__order")
    base = pairs.drop_columns(["__order"])
    reasons = row_reasons(base, "pairs", limits)
    err_table = np.full(n, None, dtype=object)
    err_stage = np.full(n, None, dtype=object)
    err_detail = np.full(n, None, dtype=object)
    err_table[reasons != None] = "pairs"  # noqa: E711
    err_stage[reasons != None] = "validate"  # noqa: E711

    def mark(mask: np.ndarray, table: str, stage: str, reason, detail: str | None) -> None:
        sel = mask & (reasons == None)  # noqa: E711
        if not sel.any():
            return
        err_table[sel] = table
        err_stage[sel] = stage
        reasons[sel] = reason[sel] if isinstance(reason, np.ndarray) else reason
        err_detail[sel] = detail

    lookups = {}
    for table_name, key, index in (("members", "member_id", member_index), ("jobs", "job_id", job_index)):
        keys = pairs.column(key).combine_chunks()
        found, rows = _lookup(keys, index, ID_COLUMN[table_name])
        noun = table_name[:-1]
        mark(~found, "pairs", "join", f"unknown_{noun}", f"no valid {noun} row with this {key}")
        if rows is not None:
            own = np.asarray(rows.column("__reason").to_pylist(), dtype=object)
            rejected = found & (own != None)  # noqa: E711
            mark(rejected, table_name, "validate", own, f"the pair's {noun} was rejected")
            lookups[table_name] = (found, rows)
        else:
            lookups[table_name] = (found, None)

    good = reasons == None  # noqa: E711
    m_found, m_rows = lookups["members"]
    j_found, j_rows = lookups["jobs"]

    def taken(rows: pa.Table | None, col: str, dtype: pa.DataType) -> pa.Array:
        if rows is None:
            return pa.nulls(n, dtype)
        return pc.if_else(pa.array(good), rows.column(col).combine_chunks(), pa.nulls(n, dtype))

    m_hash = taken(m_rows, "__hash", pa.string()).to_pylist()
    j_hash = taken(j_rows, "__hash", pa.string()).to_pylist()
    queries = pairs.column("query").to_pylist()
    fps = pair_fingerprints(m_hash, j_hash, queries, run_fp)
    member_ids = pairs.column("member_id").to_pylist()
    return work_table({
        "__src": pa.array(["pair"] * n, pa.string()),
        "__bucket": pa.array(member_buckets(member_ids, num_buckets)),
        "member_id": pairs.column("member_id"),
        "job_id": pairs.column("job_id"),
        "query": pairs.column("query"),
        "__order": order,
        "__m_order": taken(m_rows, "__order", pa.int64()),
        "__j_order": taken(j_rows, "__order", pa.int64()),
        "input_fingerprint": pa.array(fps, pa.string()),
        "__err_table": pa.array(err_table.tolist(), pa.string()),
        "__err_stage": pa.array(err_stage.tolist(), pa.string()),
        "__err_reason": pa.array(reasons.tolist(), pa.string()),
        "__err_detail": pa.array(err_detail.tolist(), pa.string()),
    })


def prev_rows(scores: pa.Table, num_buckets: int) -> pa.Table:
    """Rows of the previous partition as :data:`WORK_SCHEMA` rows (``__src`` = prev)."""
    n = scores.num_rows
    cols = {c: scores.column(c) for c in scores.column_names if c in
            ("member_id", "job_id", "input_fingerprint", "fit_label", "p_high", "p_medium", "p_low",
             "explanation", "classifier_version", "explainer_version", "scored_at")}
    cols["__src"] = pa.array(["prev"] * n, pa.string())
    cols["__bucket"] = pa.array(member_buckets(scores.column("member_id").to_pylist(), num_buckets))
    return work_table(cols)


# ---------------------------------------------------------------------------------------------
# Content join

CONTENT_COLUMN = {"members": "member", "jobs": "job"}
HASH_COLUMN = {"members": "__member_hash", "jobs": "__job_hash"}
ORDER_COLUMN = {"members": "__m_order", "jobs": "__j_order"}
JOINED_COLUMNS: tuple[str, ...] = (*CONTENT_COLUMN.values(), *HASH_COLUMN.values())
"""What the content join appends to work rows (and :func:`stage_inputs` consumes)."""


def content_type(table_name: str) -> pa.StructType:
    """The struct type holding one member's (or job's) full contract row."""
    return pa.struct(list(INPUT_SCHEMAS[table_name]))


def content_batch(table: pa.Table, table_name: str, needed: np.ndarray | None = None) -> pa.Table:
    """``(__order, member|job struct, its content hash)`` of a conformed batch; only rows whose
    ``__order`` is in ``needed`` (sorted int64) when given."""
    if needed is not None:
        order = table.column("__order").to_numpy()
        pos = np.searchsorted(needed, order)
        pos = np.minimum(pos, max(len(needed) - 1, 0))
        keep = (needed[pos] == order) if len(needed) else np.zeros(len(order), dtype=bool)
        table = table.filter(pa.array(keep))
    names = INPUT_SCHEMAS[table_name].names
    struct = pa.StructArray.from_arrays(
        [table.column(c).combine_chunks() for c in names],
        fields=list(content_type(table_name)),
    )
    return pa.table({"__order": table.column("__order"), CONTENT_COLUMN[table_name]: struct,
                     HASH_COLUMN[table_name]: pa.array(content_hashes(table, table_name), pa.string())})


def attach_content(rows: pa.Table, content: pa.Table, table_name: str) -> pa.Table:
    """Append the ``member`` (or ``job``) struct and its content hash to each row by its
    ``__m_order``/``__j_order``.

    ``content`` is a :func:`content_batch` table sorted by ``__order``. Rows whose content is
    missing get nulls (:func:`stage_inputs` then fails those rows, never the batch).
    """
    key = rows.column(ORDER_COLUMN[table_name]).to_numpy(zero_copy_only=False)
    orders = content.column("__order").to_numpy()
    key = np.nan_to_num(key.astype(np.float64), nan=-1).astype(np.int64) if key.dtype != np.int64 else key
    pos = np.searchsorted(orders, key)
    pos = np.minimum(pos, max(len(orders) - 1, 0))
    found = (orders[pos] == key) if len(orders) else np.zeros(len(key), dtype=bool)
    for col, dtype in ((CONTENT_COLUMN[table_name], content_type(table_name)), (HASH_COLUMN[table_name], pa.string())):
        if len(orders):
            values = pc.if_else(pa.array(found), content.column(col).take(pa.array(pos)), pa.nulls(len(key), dtype))
        else:
            values = pa.nulls(len(key), dtype)
        rows = rows.append_column(col, values)
    return rows


def sorted_content(tables: list[pa.Table], table_name: str) -> pa.Table:
    """Concatenate :func:`content_batch` tables and sort them by ``__order`` for lookups."""
    if not tables:
        return pa.table({"__order": pa.array([], pa.int64()),
                         CONTENT_COLUMN[table_name]: pa.array([], content_type(table_name)),
                         HASH_COLUMN[table_name]: pa.array([], pa.string())})
    return pa.concat_tables(tables).sort_by([("__order", "ascending")])


# ---------------------------------------------------------------------------------------------
# Stage inputs built from the joined content


def content_problems(rows: pa.Table, run_fp: str) -> list[str | None]:
    """Per joined row: ``content_missing`` (no member or job row at its input position any
    more), ``content_changed`` (the row there is not the one the digest saw: the fingerprint
    recomputed from the joined content hashes differs from ``input_fingerprint``), or None.

    The content is read after the digest, so a file replaced or rewritten in between would
    otherwise join a pair to changed content, or to another member's or job's row.
    """
    present = pc.and_(rows.column("member").is_valid(), rows.column("job").is_valid()).to_pylist()
    fps = pair_fingerprints(rows.column("__member_hash").to_pylist(), rows.column("__job_hash").to_pylist(),
                            rows.column("query").to_pylist(), run_fp)
    return [None if ok and fp is not None and fp == want else "content_missing" if not ok else "content_changed"
            for ok, fp, want in zip(present, fps, rows.column("input_fingerprint").to_pylist(), strict=True)]


CONTENT_PROBLEM_DETAIL = {
    "content_missing": "no member or job row at its input position when the content was read",
    "content_changed": "the member or job row at its input position changed after the digest",
}


def _fail_joined(out: pa.Table, problems: list[str | None]) -> pa.Table:
    """Rows with a content problem become error rows (stage ``join``)."""
    if not any(problems):
        return out
    mask = pa.array([p is not None for p in problems])
    values = {"__route": pa.scalar("error"), "__err_table": pa.scalar("pairs"), "__err_stage": pa.scalar("join"),
              "__err_reason": pa.array(problems, pa.string()),
              "__err_detail": pa.array([CONTENT_PROBLEM_DETAIL.get(p) for p in problems], pa.string())}
    for name, value in values.items():
        i = out.schema.get_field_index(name)
        out = out.set_column(i, out.schema.field(i), pc.if_else(mask, value, out.column(name)))
    return out


def stage_inputs(rows: pa.Table, mode: str, options: dict) -> pa.Table:
    """Build a stage's input column from the ``member``/``job`` structs, then drop the joined
    columns.

    A row with a :func:`content_problems` problem becomes an error row (stage ``join``) and gets
    no input (checked with ``options["run_fp"]``, the run fingerprint of ``input_fingerprint``).
    ``classifier``: ``__text`` = :func:`lantern_batch.prompts.classifier_text`.
    ``explainer``: ``__messages`` = JSON of :func:`lantern_batch.prompts.explainer_messages`
    with the row's ``fit_label`` (null for a failed row, which the prompt step then skips);
    ``__facts`` = what the explanation validator checks the text against.
    """
    from lantern_batch import prompts
    from lantern_batch.precompute.explainer_stage import explanation_facts

    problems = content_problems(rows, options["run_fp"])
    usable = [p is None for p in problems]
    members = [m if ok else None for m, ok in zip(rows.column("member").to_pylist(), usable, strict=True)]
    jobs = [j if ok else None for j, ok in zip(rows.column("job").to_pylist(), usable, strict=True)]
    queries = rows.column("query").to_pylist()
    out = _fail_joined(rows.drop_columns(list(JOINED_COLUMNS)), problems)
    if mode == "classifier":
        texts = [prompts.classifier_text(m, j, q, max_chars=options["max_chars"]) if ok else None
                 for m, j, q, ok in zip(members, jobs, queries, usable, strict=True)]
        return out.append_column("__text", pa.array(texts, pa.string()))
    if mode == "explainer":
        labels = rows.column("fit_label").to_pylist()
        blobs = [
            json.dumps(prompts.explainer_messages(
                m, j, q, lab, member_tokens=options["member_tokens"], job_tokens=options["job_tokens"],
                version=options.get("prompt_version", prompts.EXPLAINER_PROMPT_VERSION)),
                ensure_ascii=False) if ok else None
            for m, j, q, lab, ok in zip(members, jobs, queries, labels, usable, strict=True)
        ]
        out = out.append_column("__messages", pa.array(blobs, pa.string()))
        facts = [explanation_facts(m, j) for m, j in zip(members, jobs, strict=True)]
        return out.append_column("__facts", pa.array(facts, pa.string()))
    raise ValueError(f"unknown stage input mode {mode!r}")


class BroadcastJoin:
    """Ray Data callable class: look up member and job content in tables broadcast through the
    object store (read zero-copy by every actor), then build the stage's input column."""

    def __init__(self, content_refs: dict, mode: str, options: dict, meter=None):
        import ray

        # The refs come wrapped in a list so Ray does not resolve them on the way in.
        self.content = {name: ray.get(holder[0]) for name, holder in content_refs.items()}
        self.mode, self.options, self.meter = mode, options, meter

    def __call__(self, rows: pa.Table) -> pa.Table:
        import time

        start = time.perf_counter()
        for name in ("members", "jobs"):
            rows = attach_content(rows, self.content[name], name)
        out = stage_inputs(rows, self.mode, self.options)
        if self.meter is not None:
            self.meter.add.remote(f"join_{self.mode}", rows.num_rows, time.perf_counter() - start)
        return out
