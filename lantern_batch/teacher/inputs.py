"""Read, validate, de-duplicate and join the input tables for teacher synthesis.

The pairs table streams through Ray Data; the members and jobs tables are validated in one
Ray task each and *broadcast* to the join actors through the object store (zero-copy Arrow),
never through the driver. A pair becomes one :data:`~lantern_batch.teacher.records.JOINED_SCHEMA`
row: its member and job rows as structs, or error columns saying why it cannot be labelled.

Why broadcast and not ``Dataset.join``: a hash join shuffles *both* sides for every teacher
pass and, on the 2-core demo machine, starts aggregator actors that compete with the engine
for the same cores; the broadcast side tables are small next to the pairs (members and jobs
are ~10x and ~100x fewer rows than pairs). Measured by ``bench/teacher.py`` (part ``join``,
30k pairs, 3k members, 600 jobs): broadcast join with validation and de-duplication ~5 s,
two left-outer hash joins without either ~26 s (``bench/RESULTS.md``). The cost of the
broadcast is memory: every join actor holds both side tables. Past a few million members,
switch the member side to ``Dataset.join`` on member_id.

De-duplication needs a global view, so one Ray task (:func:`scan_pairs`) reads only the two
key columns of every pair, in a fixed order (file, row group, row), and returns the positions
of later copies; "first" is the first in that order. The same task decides which rows a pass skips (not
sampled; already done, see below) and counts them, so counts conserve exactly; the join
actors skip exactly the keys it returns.

Resume keys on content: a row this teacher version labelled is skipped only while its
``input_fingerprint`` (the member's and the job's content hashes, without ``updated_at``, and
the query: :func:`fingerprint`) is unchanged; the scan computes it from the side tables'
content hashes (:func:`content_index`) and returns the done keys whose content changed, which
the pass takes out of the output (:func:`lantern_batch.teacher.store.retire_stale`) and labels
again.

Row keys (``_row_key``): ``<pair_id>#<n>`` for the n-th copy of a pair, ``null#<order>`` for a
pair with a null id. They identify an input row across reruns for resume.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lantern_batch import io
from lantern_batch.policy import pair_id as make_pair_id
from lantern_batch.precompute.fingerprints import (
    content_fingerprint,
    content_fingerprints,
    content_hashes,
)
from lantern_batch.schema import (
    PAIRS_SCHEMA,
    REQUIRED_COLUMNS,
    RowLimits,
    check_columns,
    conform,
    row_reasons,
    validate_table,
)
from lantern_batch.teacher.records import JOB_STRUCT, JOINED_SCHEMA, MEMBER_STRUCT
from lantern_batch.teacher.store import skipped

ORDER_BITS = 40
"""Row position = (file index << 40) | row index within the file (files of < 1e12 rows)."""


@dataclass(frozen=True)
class ReadTask:
    """One row group of one pairs file: the unit of the streaming read."""

    file_index: int
    path: str
    row_group: int
    row_offset: int
    num_rows: int


def check_inputs(members: str, jobs: str, pairs: str) -> None:
    """Fail at once (exit 2) on a missing table, a missing required column or an unsafe type,
    reading only Parquet footers."""
    for name, path in (("members", members), ("jobs", jobs), ("pairs", pairs)):
        check_columns(name, io.dataset_schema(path, name))


def pair_read_tasks(path: str) -> list[ReadTask]:
    """Row groups of the pairs table in a fixed order (reads footers only)."""
    tasks = []
    for fi, f in enumerate(io.list_parquet_files(path)):
        fs, p = io.filesystem(f)
        meta = pq.ParquetFile(p, filesystem=fs).metadata
        offset = 0
        for rg in range(meta.num_row_groups):
            n = meta.row_group(rg).num_rows
            tasks.append(ReadTask(fi, f, rg, offset, n))
            offset += n
    return tasks


def read_row_group(task: dict[str, Any], columns: list[str] | None = None) -> pa.Table:
    """Read one :class:`ReadTask` conformed to the pairs contract (only ``columns`` of it when
    given), with its ``_order`` column."""
    fs, p = io.filesystem(task["path"])
    pf = pq.ParquetFile(p, filesystem=fs)
    wanted = PAIRS_SCHEMA.names if columns is None else [*REQUIRED_COLUMNS["pairs"], *columns]
    present = [c for c in PAIRS_SCHEMA.names if c in wanted and c in pf.schema_arrow.names]
    t = conform(pf.read_row_group(int(task["row_group"]), columns=present), "pairs")
    if columns is not None:
        t = t.select(columns)
    order = (np.int64(task["file_index"]) << ORDER_BITS) + task["row_offset"] + np.arange(t.num_rows, dtype=np.int64)
    return t.append_column("_order", pa.array(order, pa.int64()))


def read_pairs_batch(batch: pa.Table) -> pa.Table:
    """Ray Data UDF: read the row groups named in a batch of :class:`ReadTask` rows."""
    tables = [read_row_group(task) for task in batch.to_pylist()]
    return pa.concat_tables(tables) if tables else pa.table({})


def pair_ids(member_ids: Iterable[str | None], job_ids: Iterable[str | None]) -> list[str | None]:
    """``lantern_batch.policy.pair_id`` per row (None where an id is null)."""
    return [make_pair_id(m, j) if m is not None and j is not None else None
            for m, j in zip(member_ids, job_ids, strict=False)]


def row_keys(pids: list[str | None], orders: np.ndarray, copy_index: dict[int, int]) -> list[str]:
    """Row keys (see module doc) from pair ids, positions and the later-copy index."""
    return [f"{p}#{copy_index.get(int(o), 0)}" if p is not None else f"null#{int(o)}"
            for p, o in zip(pids, orders, strict=False)]


def sampled(pid: str | None, fraction: float) -> bool:
    """Deterministic sample by pair id hash (null ids are always kept: they are errors)."""
    if fraction >= 1.0 or pid is None:
        return True
    return int(pid[:8], 16) / 2**32 < fraction


def scan_pairs(tasks: list[ReadTask], sample_fraction: float, skip_keys: frozenset[str],
               done: Mapping[str, str] | None = None, member_hashes: Mapping[str, str] | None = None,
               job_hashes: Mapping[str, str] | None = None) -> dict:
    """Global pass over the pair keys: later copies, and the rows this pass will skip.

    Args:
        tasks: the pairs' row groups, in order.
        sample_fraction: see :func:`sampled`.
        skip_keys: row keys skipped whatever their content (input errors already written).
        done: {row key: input_fingerprint} this teacher version already labelled; such a row is
            skipped only while its fingerprint now is the same (:func:`~lantern_batch.teacher.store.skipped`).
        member_hashes, job_hashes: :func:`content_index` of the good members and jobs (needed
            with ``done``).

    Returns:
        ``{"copy_index": {order: n>=1}, "skip": keys the join skips, "changed": done keys whose
        content changed, "rows_in", "duplicates", "not_sampled", "skipped_done", "changed_done"}``.
    """
    done = done or {}
    member_hashes, job_hashes = member_hashes or {}, job_hashes or {}
    first_seen: dict[tuple[str, str], int] = {}
    copy_index: dict[int, int] = {}
    skip: set[str] = set()
    changed: set[str] = set()
    counts = {"rows_in": 0, "duplicates": 0, "not_sampled": 0, "skipped_done": 0, "changed_done": 0}
    for task in tasks:
        t = read_row_group(task.__dict__, columns=["member_id", "job_id", "query"])
        mids = t.column("member_id").to_pylist() if "member_id" in t.column_names else [None] * t.num_rows
        jids = t.column("job_id").to_pylist() if "job_id" in t.column_names else [None] * t.num_rows
        queries = t.column("query").to_pylist() if "query" in t.column_names else [None] * t.num_rows
        orders = t.column("_order").to_numpy()
        counts["rows_in"] += t.num_rows
        local: dict[int, int] = {}
        for m, j, o in zip(mids, jids, orders, strict=False):
            if m is None or j is None:
                continue
            n = first_seen.get((m, j), 0)
            first_seen[(m, j)] = n + 1
            if n:
                local[int(o)] = n
        copy_index.update(local)
        counts["duplicates"] += len(local)
        pids = pair_ids(mids, jids)
        keys = row_keys(pids, orders, local)
        fps = _fingerprints_of_done(keys, mids, jids, queries, local, orders, done, member_hashes, job_hashes)
        for pid, key, fp in zip(pids, keys, fps, strict=True):
            if not sampled(pid, sample_fraction):
                counts["not_sampled"] += 1
            elif key in skip_keys or skipped(key, fp, done, frozenset()):
                counts["skipped_done"] += 1
                skip.add(key)
            elif key in done:
                counts["changed_done"] += 1
                changed.add(key)
    return {"copy_index": copy_index, "skip": frozenset(skip), "changed": frozenset(changed), **counts}


def _fingerprints_of_done(keys: list[str], mids: list[str | None], jids: list[str | None],
                          queries: list[str | None], later: dict[int, int], orders: np.ndarray,
                          done: Mapping[str, str], member_hashes: Mapping[str, str],
                          job_hashes: Mapping[str, str]) -> list[str | None]:
    """Each row's input_fingerprint now where its key is done (None elsewhere, and for a later
    copy or a pair whose member or job is not a good row: those cannot be labelled)."""
    fps: list[str | None] = [None] * len(keys)
    rows = [i for i, k in enumerate(keys) if k in done and int(orders[i]) not in later]
    if rows:
        got = content_fingerprints([member_hashes.get(mids[i]) for i in rows],
                                   [job_hashes.get(jids[i]) for i in rows], [queries[i] for i in rows])
        for i, fp in zip(rows, got, strict=True):
            fps[i] = fp
    return fps


def content_index(table: pa.Table, table_name: str) -> dict[str, str]:
    """{id: content hash} of a conformed good ``members`` or ``jobs`` table (what
    :func:`fingerprint` hashes of each row)."""
    key = "member_id" if table_name == "members" else "job_id"
    return dict(zip(table.column(key).to_pylist(), content_hashes(table, table_name), strict=True))


def prepare_side_table(path: str, table_name: str, limits: RowLimits, errors_out: str) -> tuple[pa.Table, dict[str, str], dict]:
    """Validate a members or jobs table; write its error rows; return the good rows.

    Returns:
        (good rows conformed to the contract, {id: reason} of rejected ids that are not
        duplicates of a good row, counts by outcome). The error rows go to
        ``errors_out/part-input-<table>.parquet`` (the same name every run).
    """
    result = validate_table(io.read_table(path, table=table_name), table_name, limits)
    key = "member_id" if table_name == "members" else "job_id"
    good_ids = set(result.good.column(key).to_pylist())
    bad: dict[str, str] = {}
    for i, r in zip(result.errors.column(key).to_pylist(), result.errors.column("reason").to_pylist(), strict=False):
        if i is not None and i not in good_ids and i not in bad:
            bad[i] = r
    target = f"part-input-{table_name}.parquet"
    if result.errors.num_rows:
        io.write_table(result.errors, errors_out, basename=target)
    else:
        io.delete_file(io.join(errors_out, target))
    return result.good, bad, result.counts


def fingerprint(member: Mapping[str, Any], job: Mapping[str, Any], query: str | None) -> str:
    """Hash of everything a label depends on besides the teacher: the member's and the job's
    content (every contract column but ``updated_at``) and the query."""
    return content_fingerprint(member, job, query)


def _struct_rows(table: pa.Table, indices: list[int | None], struct_type: pa.StructType) -> pa.Array:
    taken = table.take(pa.array(indices, pa.int64()))
    mask = pa.array([i is None for i in indices])
    return pa.StructArray.from_arrays([taken.column(f.name).combine_chunks() for f in struct_type],
                                      fields=list(struct_type), mask=mask)


def _resolve(value: Any) -> Any:
    """Fetch an object-store reference (broadcast side tables reach actors as references)."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


class PairJoiner:
    """Ray Data UDF (actor): validate pairs, mark later copies, join members and jobs.

    Holds the broadcast members/jobs tables and an id -> row index per table (built once per
    actor). Rows already done for this teacher, input errors already written, and unsampled
    pairs are dropped here (:func:`scan_pairs` counted them).
    """

    def __init__(self, members: pa.Table, jobs: pa.Table, bad_members: dict[str, str],
                 bad_jobs: dict[str, str], copy_index: dict[int, int], skip_keys: frozenset[str],
                 sample_fraction: float, limits: RowLimits):
        members, jobs, bad_members, bad_jobs, copy_index, skip_keys = (
            _resolve(x) for x in (members, jobs, bad_members, bad_jobs, copy_index, skip_keys))
        self.members, self.jobs = members, jobs
        self.member_index = {m: i for i, m in enumerate(members.column("member_id").to_pylist())}
        self.job_index = {j: i for i, j in enumerate(jobs.column("job_id").to_pylist())}
        self.bad_members, self.bad_jobs = bad_members, bad_jobs
        self.copy_index, self.skip_keys = copy_index, skip_keys
        self.sample_fraction, self.limits = sample_fraction, limits

    def __call__(self, batch: pa.Table) -> pa.Table:
        if batch.num_rows == 0:
            return JOINED_SCHEMA.empty_table()
        orders = batch.column("_order").to_numpy()
        pairs = batch.drop_columns(["_order"])
        reasons = row_reasons(pairs, "pairs", self.limits)
        mids = pairs.column("member_id").to_pylist()
        jids = pairs.column("job_id").to_pylist()
        queries = pairs.column("query").to_pylist()
        pids = pair_ids(mids, jids)
        keys = row_keys(pids, orders, self.copy_index)

        keep: list[int] = []
        m_idx: list[int | None] = []
        j_idx: list[int | None] = []
        err: list[tuple[str | None, str | None, str | None, str | None]] = []
        for r in range(batch.num_rows):
            if not sampled(pids[r], self.sample_fraction) or keys[r] in self.skip_keys:
                continue
            keep.append(r)
            mi = self.member_index.get(mids[r]) if mids[r] is not None else None
            ji = self.job_index.get(jids[r]) if jids[r] is not None else None
            if reasons[r] is not None:
                e = ("pairs", "validate", reasons[r], None)
            elif int(orders[r]) in self.copy_index:
                e = ("pairs", "dedup", "duplicate_pair", f"copy={self.copy_index[int(orders[r])]}")
            elif mi is None:
                bad = self.bad_members.get(mids[r])
                e = ("pairs", "join", "member_invalid" if bad else "unknown_member_id",
                     f"member_reason={bad}" if bad else None)
            elif ji is None:
                bad = self.bad_jobs.get(jids[r])
                e = ("pairs", "join", "job_invalid" if bad else "unknown_job_id",
                     f"job_reason={bad}" if bad else None)
            else:
                e = (None, None, None, None)
            if e[2] is not None:
                mi = ji = None
            m_idx.append(mi)
            j_idx.append(ji)
            err.append(e)
        if not keep:
            return JOINED_SCHEMA.empty_table()
        member_col = _struct_rows(self.members, m_idx, MEMBER_STRUCT)
        job_col = _struct_rows(self.jobs, j_idx, JOB_STRUCT)
        members_py = member_col.to_pylist()
        jobs_py = job_col.to_pylist()
        take = pa.array(keep, pa.int64())
        q = [queries[r] for r in keep]
        fps = [fingerprint(m, j, qq) if m is not None and j is not None else None
               for m, j, qq in zip(members_py, jobs_py, q, strict=False)]
        cols = {
            "member_id": pc.take(pairs.column("member_id"), take),
            "job_id": pc.take(pairs.column("job_id"), take),
            "query": pa.array(q, pa.string()),
            "pair_id": pa.array([pids[r] for r in keep], pa.string()),
            "_row_key": pa.array([keys[r] for r in keep], pa.string()),
            "input_fingerprint": pa.array(fps, pa.string()),
            "member": member_col,
            "job": job_col,
            "_err_table": pa.array([e[0] for e in err], pa.string()),
            "_err_stage": pa.array([e[1] for e in err], pa.string()),
            "_err_reason": pa.array([e[2] for e in err], pa.string()),
            "_err_detail": pa.array([e[3] for e in err], pa.string()),
        }
        return pa.Table.from_arrays([cols[f.name] for f in JOINED_SCHEMA], schema=JOINED_SCHEMA)
