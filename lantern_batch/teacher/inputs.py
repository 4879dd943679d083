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

De-duplication needs a global view, but no process holds one: the scan runs in shards
(:func:`scan_shard`, one Ray task each), ceil(pairs / ``shard_rows``) of them (the pairs counted
from the footers; ``shard_rows`` is a config field, so up to 2M pairs are one shard). A pair belongs to the
shard of a hash of its pair id (:func:`~lantern_batch.teacher.store.pair_shard`; a pair with a null
id, to that of its position), so every copy of a pair, and every row key of it, falls in one
shard. Each shard task reads the key columns of every row group, one at a time, in a fixed order
(file, row group, row), keeps only its own rows, and de-duplicates them ("first" is the first in
that order); it reads the done rows of its shard only, streaming the commit markers
(:func:`~lantern_batch.teacher.store.load_done_shard`). So a shard holds its bucket's distinct
pairs and done keys, bounded by ``shard_rows``, not by the table; the price is that every shard
reads the key columns of the whole table (work grows as pairs x shards, memory does not).
The same task decides which rows a pass skips (not sampled; already done, see below; of
forgotten members) and counts them, so counts conserve exactly. It writes its decisions as
Parquet *plan* files (:func:`write_plan`: the later copies and the skipped rows by ``_order``,
sorted, in small row groups; the changed done keys by marker file) and returns counts only.
Each join batch reads only the plan rows of its own ``_order`` ranges (:class:`ScanPlan`; the
reader skips the other row groups by their statistics), and the pass's retirement of changed
rows merges the changed-key files by marker file
(:func:`~lantern_batch.teacher.store.retire_stale`). The plan is deleted when the pass ends.
:func:`scan_pairs` is the same scan as one shard in memory (tests, small tables).

Resume keys on content: a row this teacher version labelled is skipped only while its
``input_fingerprint`` (the member's and the job's content hashes, without ``updated_at``, and
the query: :func:`fingerprint`) is unchanged; the scan computes it from the side tables'
content hashes (:func:`content_index`) and records the done keys whose content changed, which
the pass takes out of the output (:func:`lantern_batch.teacher.store.retire_stale`) and labels
again.

Row keys (``_row_key``): ``<pair_id>#<n>`` for the n-th copy of a pair, ``null#<order>`` for a
pair with a null id. They identify an input row across reruns for resume.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
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
from lantern_batch.teacher.store import CHANGED_SCHEMA, pair_shard, skipped

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


@dataclass
class ShardScan:
    """What the scan of one shard decided, for that shard's rows only (see the module doc)."""

    shard: int
    shards: int
    copy_index: dict[int, int]
    """{order: n >= 1} of the shard's later copies."""
    skip: dict[int, str]
    """{order: row key} of the shard's rows the join skips (sampled, and done or input errors)."""
    changed: list[tuple[str, str | None]]
    """(row key, marker file name or None) of done rows whose content changed."""
    counts: dict[str, int]
    """``rows_in``, ``duplicates``, ``not_sampled``, ``skipped_done``, ``changed_done``,
    ``forgotten``."""
    held: dict[str, int]
    """The sizes of what the shard held: ``pairs`` (distinct pairs it de-duplicated) and
    ``done`` (done and input-error row keys): each bounded by the shard's rows."""


def shard_count(tasks: list[ReadTask], shard_rows: int) -> int:
    """Shards of the scan: the pairs' rows (from the footers) over ``shard_rows``, at least 1."""
    rows = sum(t.num_rows for t in tasks)
    return max(1, -(-rows // max(1, int(shard_rows))))


def scan_shard(tasks: list[ReadTask], sample_fraction: float, *, shard: int = 0, shards: int = 1,
               inputs_done: AbstractSet[str] = frozenset(), done: Mapping[str, str] | None = None,
               where: Mapping[str, str] | None = None, member_hashes: Mapping[str, str] | None = None,
               job_hashes: Mapping[str, str] | None = None, forgotten: Any = None) -> ShardScan:
    """Scan one shard of the pair keys: later copies, and the rows this pass will skip.

    Every row group is read (key columns only), one at a time; only the rows of this shard
    (:func:`~lantern_batch.teacher.store.pair_shard`: every copy of a pair falls in one shard)
    are kept, so what the shard holds is bounded by its rows, not by the table.

    Args:
        tasks: the pairs' row groups, in order.
        sample_fraction: see :func:`sampled`.
        shard, shards: which shard of how many.
        inputs_done: row keys skipped whatever their content (input errors already written).
        done: {row key: input_fingerprint} this teacher version already labelled; such a row is
            skipped only while its fingerprint now is the same (:func:`~lantern_batch.teacher.store.skipped`).
        where: {done row key: marker file name} (recorded with ``changed``).
        member_hashes, job_hashes: :func:`content_index` of the good members and jobs (needed
            with ``done``).
        forgotten: the tombstone filter (:class:`~lantern_batch.forget.tombstones.ForgetFilter`):
            pairs of forgotten members that are sampled and not skipped are counted as
            ``forgotten`` (the pass drops them before the join).
    """
    done, where = done or {}, where or {}
    member_hashes, job_hashes = member_hashes or {}, job_hashes or {}
    first_seen: dict[tuple[str, str], int] = {}
    copy_index: dict[int, int] = {}
    skip: dict[int, str] = {}
    changed: list[tuple[str, str | None]] = []
    counts = {"rows_in": 0, "duplicates": 0, "not_sampled": 0, "skipped_done": 0, "changed_done": 0,
              "forgotten": 0}
    for task in tasks:
        t = read_row_group(task.__dict__, columns=["member_id", "job_id", "query"])
        mids = t.column("member_id").to_pylist()
        jids = t.column("job_id").to_pylist()
        orders = t.column("_order").to_numpy()
        pids = pair_ids(mids, jids)
        if shards > 1:
            mine = [i for i, (p, o) in enumerate(zip(pids, orders.tolist(), strict=True))
                    if pair_shard(p, o, shards) == shard]
            if not mine:
                continue
            t = t.take(pa.array(mine, pa.int64()))
            mids, jids, pids = [mids[i] for i in mine], [jids[i] for i in mine], [pids[i] for i in mine]
            orders = orders[mine]
        queries = t.column("query").to_pylist()
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
        keys = row_keys(pids, orders, local)
        fps = _fingerprints_of_done(keys, mids, jids, queries, local, orders, done, member_hashes, job_hashes)
        gone = forgotten.mask(t.column("member_id")) if forgotten else None
        for i, (pid, key, fp) in enumerate(zip(pids, keys, fps, strict=True)):
            if not sampled(pid, sample_fraction):
                counts["not_sampled"] += 1
            elif key in inputs_done or skipped(key, fp, done, frozenset()):
                counts["skipped_done"] += 1
                skip[int(orders[i])] = key
            else:
                if key in done:
                    counts["changed_done"] += 1
                    changed.append((key, where.get(key)))
                if gone is not None and gone[i]:
                    counts["forgotten"] += 1
    return ShardScan(shard, shards, copy_index, skip, changed, counts,
                     {"pairs": len(first_seen), "done": len(done) + len(inputs_done)})


def scan_pairs(tasks: list[ReadTask], sample_fraction: float, skip_keys: AbstractSet[str],
               done: Mapping[str, str] | None = None, member_hashes: Mapping[str, str] | None = None,
               job_hashes: Mapping[str, str] | None = None, forgotten: Any = None) -> dict:
    """The whole scan in one shard, in memory (tests, small tables; a synthesize pass runs
    :func:`scan_shard` per shard and writes :class:`ScanPlan` files instead).

    Returns:
        ``{"copy_index": {order: n>=1}, "skip": keys the join skips, "changed": done keys whose
        content changed, "rows_in", "duplicates", "not_sampled", "skipped_done", "changed_done",
        "forgotten"}``.
    """
    scan = scan_shard(tasks, sample_fraction, inputs_done=skip_keys, done=done, member_hashes=member_hashes,
                      job_hashes=job_hashes, forgotten=forgotten)
    return {"copy_index": scan.copy_index, "skip": frozenset(scan.skip.values()),
            "changed": frozenset(k for k, _ in scan.changed), **scan.counts}


PLAN_SCHEMA = pa.schema([pa.field("_order", pa.int64()), pa.field("copy", pa.int32()), pa.field("skip", pa.bool_())])
"""A shard's per-row decisions: rows that are a later copy (``copy`` >= 1) or that the join skips."""

PLAN_ROW_GROUP_ROWS = 8192
"""Row groups of plan files: small, so a reader of one ``_order`` range reads little."""


def write_plan(scan: ShardScan, directory: str) -> dict[str, str | None]:
    """Write a shard's decisions (sorted by ``_order``) and its changed done keys (sorted by
    marker file name) under ``directory``; returns their paths (None: nothing to write)."""
    orders = np.array(sorted(scan.copy_index.keys() | scan.skip.keys()), dtype=np.int64)
    out: dict[str, str | None] = {"decisions": None, "changed": None}
    if len(orders):
        plan = pa.Table.from_arrays([
            pa.array(orders, pa.int64()),
            pa.array([scan.copy_index.get(int(o), 0) for o in orders], pa.int32()),
            pa.array([int(o) in scan.skip for o in orders], pa.bool_()),
        ], schema=PLAN_SCHEMA)
        out["decisions"] = io.write_table(plan, directory, basename=f"decisions-{scan.shard:05d}.parquet",
                                          row_group_size=PLAN_ROW_GROUP_ROWS)
    if scan.changed:
        rows = sorted((m or "", k) for k, m in scan.changed)
        changed = pa.Table.from_arrays([pa.array([m for m, _ in rows], pa.string()),
                                        pa.array([k for _, k in rows], pa.string())], schema=CHANGED_SCHEMA)
        out["changed"] = io.write_table(changed, directory, basename=f"changed-{scan.shard:05d}.parquet",
                                        row_group_size=PLAN_ROW_GROUP_ROWS)
    return out


@dataclass(frozen=True)
class ScanPlan:
    """The scan's decisions as files (:func:`write_plan` of every shard), what the join reads.

    A join batch reads only the plan rows of its own ``_order`` ranges: the files are sorted by
    ``_order`` in small row groups, so the Parquet reader skips the rest by their statistics.
    """

    decisions: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def lookup(self, orders: np.ndarray) -> tuple[dict[int, int], set[int]]:
        """({order: copy n >= 1}, {orders the join skips}) for the rows at ``orders``."""
        if not self.decisions or len(orders) == 0:
            return {}, set()
        import pyarrow.dataset as pads

        fs, _ = io.filesystem(self.decisions[0])
        dataset = pads.dataset([io.filesystem(f)[1] for f in self.decisions], schema=PLAN_SCHEMA,
                               format="parquet", filesystem=fs)
        wanted = pa.array(np.unique(orders), pa.int64())
        rows = dataset.to_table(filter=_order_ranges(wanted.to_numpy()) & pc.field("_order").isin(wanted))
        got = rows.column("_order").to_pylist()
        copies = {o: n for o, n in zip(got, rows.column("copy").to_pylist(), strict=True) if n}
        skips = {o for o, s_ in zip(got, rows.column("skip").to_pylist(), strict=True) if s_}
        return copies, skips


def _order_ranges(sorted_orders: np.ndarray, gap: int = 1024) -> pc.Expression:
    """``_order`` within the runs of ``sorted_orders`` (runs split at gaps over ``gap``): a
    filter the Parquet reader can check against row-group statistics."""
    cut = np.nonzero(np.diff(sorted_orders) > gap)[0]
    starts = np.concatenate([sorted_orders[:1], sorted_orders[cut + 1]])
    ends = np.concatenate([sorted_orders[cut], sorted_orders[-1:]])
    field = pc.field("_order")
    return functools.reduce(operator.or_, [(field >= int(a)) & (field <= int(b)) for a, b in zip(starts, ends, strict=True)])


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
    pairs are dropped here (the scan counted them). The scan's decisions come from ``plan``
    (read per batch, for the batch's rows only) or, in memory, from ``copy_index`` and
    ``skip_keys`` (:func:`scan_pairs`).
    """

    def __init__(self, members: pa.Table, jobs: pa.Table, bad_members: dict[str, str],
                 bad_jobs: dict[str, str], copy_index: dict[int, int] | None, skip_keys: AbstractSet[str] | None,
                 sample_fraction: float, limits: RowLimits, plan: ScanPlan | None = None):
        members, jobs, bad_members, bad_jobs, copy_index, skip_keys = (
            _resolve(x) for x in (members, jobs, bad_members, bad_jobs, copy_index, skip_keys))
        self.members, self.jobs = members, jobs
        self.member_index = {m: i for i, m in enumerate(members.column("member_id").to_pylist())}
        self.job_index = {j: i for i, j in enumerate(jobs.column("job_id").to_pylist())}
        self.bad_members, self.bad_jobs = bad_members, bad_jobs
        self.copy_index, self.skip_keys = copy_index or {}, skip_keys or frozenset()
        self.plan = plan
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
        if self.plan is not None:
            copy_index, skip_orders = self.plan.lookup(orders)
            keys = row_keys(pids, orders, copy_index)
            skip = [int(o) in skip_orders for o in orders]
        else:
            copy_index = self.copy_index
            keys = row_keys(pids, orders, copy_index)
            skip = [k in self.skip_keys for k in keys]

        keep: list[int] = []
        m_idx: list[int | None] = []
        j_idx: list[int | None] = []
        err: list[tuple[str | None, str | None, str | None, str | None]] = []
        for r in range(batch.num_rows):
            if not sampled(pids[r], self.sample_fraction) or skip[r]:
                continue
            keep.append(r)
            mi = self.member_index.get(mids[r]) if mids[r] is not None else None
            ji = self.job_index.get(jids[r]) if jids[r] is not None else None
            if reasons[r] is not None:
                e = ("pairs", "validate", reasons[r], None)
            elif int(orders[r]) in copy_index:
                e = ("pairs", "dedup", "duplicate_pair", f"copy={copy_index[int(orders[r])]}")
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
