"""The precompute pipeline on Ray Data: read → validate → route → join → classify → select →
explain → write. :func:`run_pipeline` builds and runs it for one ``ds``; publishing is the job's
(:mod:`lantern_batch.precompute.job`).

Data flow (every intermediate table has :data:`~lantern_batch.precompute.route.WORK_SCHEMA`)::

    members ─┐ digest (validate, content hash) → index task: one row per id, rejected counts
    jobs ────┘           │ broadcast (ids + hashes only: ~70 bytes a row)
    pairs ── read in input order → annotate (row checks, member/job lookup, input_fingerprint)
    previous ds ─────────────────┐
                                 ├ groupby member bucket → route: error | score | reuse | reselect
                                 ▼   (materialised in the object store)
      score ── join member/job content → classifier actors ─┐
      reselect ──────────────────────────────────────────────┼ select (policy; by member for top-N)
                                                              ▼   (materialised)
      __explain ── join content → vLLM explainer actors ──────┐
      rest, reuse, error ─────────────────────────────────────┴ write part files (scores, errors)

Nothing is collected in the driver but file lists, counts and object references. Member and job
content is joined only onto the pairs that need it: the needed rows are filtered out of the
tables, put in the object store once and looked up by every join actor (``broadcast``), or, when
they are larger than ``join.broadcast_max_bytes``, joined by Ray Data's hash join (``shuffle``).
bench/RESULTS.md has the measurement behind that default.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lantern_batch import io
from lantern_batch.forget.tombstones import ForgetFilter, drop_forgotten, mark_forgotten
from lantern_batch.logs import event, get_logger
from lantern_batch.precompute import features, manifest
from lantern_batch.precompute.classifier_stage import ClassifierActor, ClassifierSettings
from lantern_batch.precompute.explainer_stage import (
    ExplainerActor,
    ExplainerSettings,
    PromptBuilder,
    drop_prompt_ids,
)
from lantern_batch.precompute.route import (
    Policy,
    RouteOptions,
    as_work,
    route_group,
    select_explanations,
)
from lantern_batch.schema import SCORES_SCHEMA, RowLimits

log = get_logger(__name__)

PAIRS_ROWS_PER_BATCH = 50_000
ENTITY_ROWS_PER_BATCH = 5_000


# ---------------------------------------------------------------------------------------------
# Worker-side helpers (module-level functions: Ray pickles them by reference)

_REF_CACHE: dict[str, Any] = {}


def _resolve(holder: list) -> Any:
    """The object behind a broadcast reference (wrapped in a list so Ray passes the ref itself);
    cached per worker process."""
    import ray

    ref = holder[0]
    key = ref.hex()
    if key not in _REF_CACHE:
        if len(_REF_CACHE) > 16:
            _REF_CACHE.clear()
        _REF_CACHE[key] = ray.get(ref)
    return _REF_CACHE[key]


def _read_then(batch: pa.Table, table_name: str, rows_per_batch: int, then: Callable | None,
               then_kwargs: dict, meter: Any, stage: str):
    """Read the files of ``batch`` (columns path, file_idx) and apply ``then`` to each chunk."""
    for path, idx in zip(batch.column("path").to_pylist(), batch.column("file_idx").to_pylist(), strict=True):
        for chunk in _file_chunks(path, idx, table_name, rows_per_batch):
            start = time.perf_counter()
            out = then(chunk, **{k: _resolve(v) if _is_holder(v) else v for k, v in then_kwargs.items()}) if then else chunk
            if meter is not None:
                meter.add.remote(stage, chunk.num_rows, time.perf_counter() - start)
            yield out


def _is_holder(v: Any) -> bool:
    if not (isinstance(v, list) and len(v) == 1):
        return False
    import ray

    return isinstance(v[0], ray.ObjectRef)


def _file_chunks(path: str, idx: int, table_name: str, rows_per_batch: int):
    if table_name != "scores":
        yield from features.read_file_batches(path, idx, table_name, rows_per_batch)
        return
    fs, p = io.filesystem(path)
    with fs.open_input_file(p) as fh:
        for rb in pq.ParquetFile(fh).iter_batches(batch_size=rows_per_batch):
            t = pa.Table.from_batches([rb])
            yield pa.Table.from_arrays([t.column(f.name).cast(f.type) for f in SCORES_SCHEMA],
                                       schema=SCORES_SCHEMA.remove_metadata())


def _digest(chunk: pa.Table, table_name: str, limits: RowLimits) -> pa.Table:
    return features.digest_batch(chunk, table_name, limits)


def _content(chunk: pa.Table, table_name: str, needed: np.ndarray | None) -> pa.Table:
    return features.content_batch(chunk, table_name, needed)


def _index_lookup(index: pa.Table, id_col: str) -> features.IndexLookup:
    """The hash lookup of a broadcast index, built once per worker process."""
    key = ("lookup", id(index))
    found = _REF_CACHE.get(key)
    if found is None or found.table is not index:
        found = _REF_CACHE[key] = features.IndexLookup(index, id_col)
    return found


def _annotate(chunk: pa.Table, member_index: pa.Table, job_index: pa.Table, run_fp: str,
              limits: RowLimits, num_buckets: int, forgotten: ForgetFilter | None = None) -> pa.Table:
    # Pairs of forgotten members become id-less "forgotten" error rows (lantern_batch.forget).
    return mark_forgotten(features.annotate_pairs(chunk, _index_lookup(member_index, "member_id"),
                                                  _index_lookup(job_index, "job_id"), run_fp, limits,
                                                  num_buckets), forgotten)


def _prev(chunk: pa.Table, num_buckets: int, forgotten: ForgetFilter | None = None) -> pa.Table:
    # A forgotten member's previous rows are never routed, so they can never be reused.
    return features.prev_rows(drop_forgotten(chunk, forgotten), num_buckets)


def _route(group: pa.Table, opts: RouteOptions, meter: Any) -> pa.Table:
    start = time.perf_counter()
    out = route_group(group, opts)
    if meter is not None:
        meter.add.remote("route", out.num_rows, time.perf_counter() - start)
    return out


def _select(rows: pa.Table, policy: Policy | None, explainer_version: str | None) -> pa.Table:
    return select_explanations(rows, policy, explainer_version)


def _keep(rows: pa.Table, column: str, values: tuple) -> pa.Table:
    col = rows.column(column)
    if pa.types.is_boolean(col.type):
        mask = pc.equal(pc.fill_null(col, False), bool(values[0]))
    else:
        mask = pc.is_in(col, value_set=pa.array(list(values), col.type))
    return rows.filter(pc.fill_null(mask, False))


def _count_by(rows: pa.Table, column: str) -> pa.Table:
    vals = rows.column(column)
    if pa.types.is_boolean(vals.type):
        vals = pc.cast(pc.fill_null(vals, False), pa.string())
    counts = pc.value_counts(vals)
    return pa.table({"value": counts.field("values").cast(pa.string()), "n": counts.field("counts")})


def _orders(rows: pa.Table) -> pa.Table:
    return rows.select(["__m_order", "__j_order"])


def _write(rows: pa.Table, scores_dir: str, errors_dir: str, run_id: str, meter: Any) -> pa.Table:
    start = time.perf_counter()
    route = rows.column("__route")
    bad = pc.fill_null(pc.equal(route, "error"), False)
    good_rows, bad_rows = rows.filter(pc.invert(bad)), rows.filter(bad)
    scores_file = errors_file = None
    if good_rows.num_rows:
        scores_file = io.write_table(manifest.scores_table(good_rows), scores_dir,
                                     basename=f"part-{run_id}-{uuid.uuid4().hex[:12]}.parquet")
    if bad_rows.num_rows:
        errors_file = io.write_table(manifest.errors_table(bad_rows), errors_dir,
                                     basename=f"part-{run_id}-{uuid.uuid4().hex[:12]}.parquet")
    counts = manifest.batch_counts(rows)
    if meter is not None:
        meter.add.remote("write", rows.num_rows, time.perf_counter() - start)
    return pa.table({"scores_file": pa.array([scores_file], pa.string()),
                     "errors_file": pa.array([errors_file], pa.string()),
                     "counts": pa.array([json.dumps(counts)], pa.string())})


def _unique_orders(*blocks: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    if not blocks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    t = pa.concat_tables(blocks)
    m = pc.drop_null(t.column("__m_order")).to_numpy()
    j = pc.drop_null(t.column("__j_order")).to_numpy()
    return np.unique(m), np.unique(j)


def _finalize_index(table_name: str, *blocks: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    return features.finalize_index(list(blocks), table_name)


def _sorted_content(table_name: str, *blocks: pa.Table) -> pa.Table:
    return features.sorted_content(list(blocks), table_name)


# ---------------------------------------------------------------------------------------------
# The stage meter: busy seconds, rows and tokens per stage, and progress lines


def _meter_class():
    import ray

    @ray.remote(num_cpus=0)
    class StageMeter:
        """Collects (rows, busy seconds, tokens) per stage from the workers; logs progress."""

        def __init__(self, every_s: float = 10.0):
            from lantern_batch.logs import get_logger

            self.stats: dict[str, dict[str, float]] = {}
            self.totals: dict[str, int] = {}
            self.every_s = every_s
            self.started: dict[str, float] = {}
            self.last = time.monotonic()
            self.log = get_logger("lantern_batch.precompute.progress")

        def set_total(self, stage: str, total: int) -> None:
            self.totals[stage] = int(total)

        def add(self, stage: str, rows: int, seconds: float, tokens: int = 0) -> None:
            s = self.stats.setdefault(stage, {"rows": 0, "seconds": 0.0, "tokens": 0})
            s["rows"] += rows
            s["seconds"] += seconds
            s["tokens"] += tokens
            now = time.monotonic()
            self.started.setdefault(stage, now - seconds)
            total = self.totals.get(stage)
            if now - self.last >= self.every_s or (total and s["rows"] >= total):
                self.last = now
                wall = max(now - self.started[stage], 1e-6)
                rate = s["rows"] / wall
                fields = {"stage": stage, "done": int(s["rows"]), "rate_per_s": round(rate, 1)}
                if total:
                    fields.update(total=total, pct=round(100 * s["rows"] / total, 1),
                                  eta_s=round(max(total - s["rows"], 0) / rate, 1) if rate else None)
                event(self.log, "precompute.progress", **fields)

        def snapshot(self) -> dict[str, dict[str, float]]:
            return self.stats

    return StageMeter


# ---------------------------------------------------------------------------------------------
# Driver side


@dataclass
class PipelineSpec:
    """Everything the pipeline needs, resolved by the job before Ray work starts."""

    run_id: str
    ds: str
    member_files: list[str]
    job_files: list[str]
    pair_files: list[str]
    rows_in: int
    prev_files: list[str]
    scores_dir: str
    errors_dir: str
    classifier: ClassifierSettings
    explainer: ExplainerSettings | None
    policy: Policy | None
    run_fp: str
    limits: RowLimits
    incremental: bool
    rows_per_partition: int
    rows_per_file: int
    join_strategy: str
    broadcast_max_bytes: int
    join_partitions: int | None
    classifier_resources: dict[str, Any]
    explainer_resources: dict[str, Any]
    gate_ref: Any = None
    gate_check: Callable[[dict], None] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    forgotten: ForgetFilter | None = None
    """Tombstoned members (:func:`lantern_batch.forget.tombstones.load_filter`); None or empty: none."""


@dataclass
class PipelineResult:
    """What the job needs to publish: files written, counts, rejected members/jobs, stage stats."""

    scores_files: list[str]
    errors_files: list[str]
    counts: dict[str, Any]
    members_rejected: dict[str, int]
    jobs_rejected: dict[str, int]
    stages: dict[str, Any]
    route_counts: dict[str, int]
    join_strategy_used: dict[str, str]
    gate: dict[str, Any] | None
    explainer_started: bool = False


def _file_items(files: list[str]):
    import ray.data

    items = [{"path": f, "file_idx": i} for i, f in enumerate(files)]
    return ray.data.from_items(items, override_num_blocks=max(1, len(items)))


def read_files(files: list[str], table_name: str, rows_per_batch: int, then: Callable | None,
               then_kwargs: dict, meter: Any, stage: str):
    """A dataset of ``then(chunk)`` over every chunk of ``files``, read in input order per file."""
    return _file_items(files).map_batches(
        _read_then, batch_size=1, batch_format="pyarrow", zero_copy_batch=True,
        fn_kwargs={"table_name": table_name, "rows_per_batch": rows_per_batch, "then": then,
                   "then_kwargs": then_kwargs, "meter": meter, "stage": stage},
    )


def count_rows(files: list[str]) -> int:
    """Rows of Parquet files from their footers (no data read)."""
    total = 0
    for f in files:
        fs, p = io.filesystem(f)
        with fs.open_input_file(p) as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


def _pairs_of(ds, column: str, values: tuple):
    return ds.map_batches(_keep, batch_format="pyarrow", fn_kwargs={"column": column, "values": values})


def _counts(ds, column: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in ds.map_batches(_count_by, batch_format="pyarrow", fn_kwargs={"column": column}).take_all():
        out[r["value"]] = out.get(r["value"], 0) + int(r["n"])
    return out


class Pipeline:
    """One precompute run over Ray Data (the job calls :meth:`run`)."""

    def __init__(self, spec: PipelineSpec):
        import ray

        self.spec = spec
        self.ray = ray
        self.meter = _meter_class().remote()
        self.join_used: dict[str, str] = {}
        self.explainer_started = False

    # -- steps

    def _index(self, files: list[str], table_name: str):
        s = self.spec
        digests = read_files(files, table_name, ENTITY_ROWS_PER_BATCH, _digest,
                             {"table_name": table_name, "limits": s.limits}, self.meter, f"digest_{table_name}")
        refs = digests.to_arrow_refs()
        index_ref, rejected_ref = self.ray.remote(_finalize_index).options(num_returns=2).remote(table_name, *refs)
        return index_ref, rejected_ref

    def _route(self, member_index, job_index):
        s = self.spec
        buckets = max(1, math.ceil(s.rows_in / s.rows_per_partition))
        forgotten = [self.ray.put(s.forgotten)] if s.forgotten else None
        pairs = read_files(s.pair_files, "pairs", PAIRS_ROWS_PER_BATCH, _annotate,
                           {"member_index": [member_index], "job_index": [job_index], "run_fp": s.run_fp,
                            "limits": s.limits, "num_buckets": buckets, "forgotten": forgotten},
                           self.meter, "annotate")
        work = pairs
        if s.prev_files and s.incremental:
            prev = read_files(s.prev_files, "scores", PAIRS_ROWS_PER_BATCH, _prev,
                              {"num_buckets": buckets, "forgotten": forgotten}, self.meter, "read_previous")
            work = pairs.union(prev)
        opts = RouteOptions(incremental=s.incremental, explainer_enabled=s.explainer is not None,
                            per_member_policy=bool(s.policy and s.policy.top_n_per_member))
        self.ray.get(self.meter.set_total.remote("route", s.rows_in))
        self.ray.get(self.meter.set_total.remote("annotate", s.rows_in))
        routed = work.groupby("__bucket", num_partitions=buckets).map_groups(
            _route, batch_format="pyarrow", fn_kwargs={"opts": opts, "meter": self.meter})
        return routed.materialize(), buckets

    def _content_refs(self, rows_ds, mode: str) -> tuple[dict[str, list], str]:
        """Object refs of the member/job content the rows need (filtered to exactly those)."""
        s = self.spec
        orders = rows_ds.map_batches(_orders, batch_format="pyarrow").to_arrow_refs()
        m_needed, j_needed = self.ray.remote(_unique_orders).options(num_returns=2).remote(*orders)
        refs, sizes = {}, {}
        for table_name, files, needed in (("members", s.member_files, m_needed), ("jobs", s.job_files, j_needed)):
            content = read_files(files, table_name, ENTITY_ROWS_PER_BATCH, _content,
                                 {"table_name": table_name, "needed": [needed]}, self.meter,
                                 f"content_{table_name}").materialize()
            sizes[table_name] = content.size_bytes()
            refs[table_name] = content
        strategy = s.join_strategy
        if strategy == "auto":
            strategy = "broadcast" if max(sizes.values()) <= s.broadcast_max_bytes else "shuffle"
        self.join_used[mode] = strategy
        event(log, "precompute.join", mode=mode, strategy=strategy,
              member_bytes=sizes["members"], job_bytes=sizes["jobs"])
        if strategy == "broadcast":
            out = {}
            for table_name, content in refs.items():
                sorted_ref = self.ray.remote(_sorted_content).remote(table_name, *content.to_arrow_refs())
                out[table_name] = [sorted_ref]
            return out, strategy
        return refs, strategy

    def _join(self, rows_ds, mode: str, options: dict, batch_size: int):
        s = self.spec
        options = {**options, "run_fp": s.run_fp}  # to check the joined content against the digest
        content, strategy = self._content_refs(rows_ds, mode)
        if strategy == "broadcast":
            return rows_ds.map_batches(
                features.BroadcastJoin, batch_size=batch_size, batch_format="pyarrow",
                fn_constructor_kwargs={"content_refs": content, "mode": mode, "options": options,
                                       "meter": self.meter},
                concurrency=1, num_cpus=0.5)
        parts = s.join_partitions or max(2, math.ceil(s.rows_in / 100_000))
        joined = rows_ds
        for table_name in ("members", "jobs"):
            key = features.ORDER_COLUMN[table_name]
            right = content[table_name].map_batches(_rename_order, batch_format="pyarrow", fn_kwargs={"key": key})
            joined = joined.join(right, join_type="left_outer", num_partitions=parts, on=(key,))
        return joined.map_batches(_stage_inputs, batch_format="pyarrow", batch_size=batch_size,
                                  fn_kwargs={"mode": mode, "options": options, "meter": self.meter})

    # -- the run

    def run(self) -> PipelineResult:
        s = self.spec
        t = s.timings
        start = time.perf_counter()
        m_index, m_rejected = self._index(s.member_files, "members")
        j_index, j_rejected = self._index(s.job_files, "jobs")
        members_rejected, jobs_rejected = self.ray.get([m_rejected, j_rejected])
        t["index"] = time.perf_counter() - start
        event(log, "precompute.indexed", members_rejected=sum(members_rejected.values()),
              jobs_rejected=sum(jobs_rejected.values()))

        start = time.perf_counter()
        routed, buckets = self._route(m_index, j_index)
        route_counts = _counts(routed, "__route")
        t["route"] = time.perf_counter() - start
        event(log, "precompute.routed", buckets=buckets, **{k: route_counts.get(k, 0) for k in ("score", "reuse", "reselect", "error")})

        gate = None
        if s.gate_ref is not None:
            start = time.perf_counter()
            gate = self.ray.get(s.gate_ref)
            t["quality_gate"] = time.perf_counter() - start
            if s.gate_check is not None:
                s.gate_check(gate)

        start = time.perf_counter()
        n_score = route_counts.get("score", 0)
        n_reselect = route_counts.get("reselect", 0)
        parts = []
        if n_score:
            self.ray.get(self.meter.set_total.remote("classify", n_score))
            to_score = _pairs_of(routed, "__route", ("score",))
            joined = self._join(to_score, "classifier", {"max_chars": s.classifier.max_chars},
                                s.classifier_resources["batch_size"])
            res = s.classifier_resources
            classified = joined.map_batches(
                ClassifierActor, batch_size=res["batch_size"], batch_format="pyarrow",
                fn_constructor_kwargs={"settings": s.classifier, "meter": self.meter},
                concurrency=res["concurrency"], num_cpus=res["num_cpus"], num_gpus=res["num_gpus"])
            parts.append(classified)
        if n_reselect:
            parts.append(_pairs_of(routed, "__route", ("reselect",)))
        selected = None
        n_explain = 0
        if parts:
            sel_in = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
            ver = s.explainer.version if s.explainer else None
            kwargs = {"policy": s.policy, "explainer_version": ver}
            if s.policy and s.policy.top_n_per_member and s.explainer:
                selected = sel_in.groupby("__bucket", num_partitions=buckets).map_groups(
                    _select, batch_format="pyarrow", fn_kwargs=kwargs)
            else:
                selected = sel_in.map_batches(_select, batch_format="pyarrow", fn_kwargs=kwargs)
            selected = selected.materialize()
            n_explain = _counts(selected, "__explain").get("true", 0)
        t["classify"] = time.perf_counter() - start
        event(log, "precompute.classified", scored=n_score, reselected=n_reselect, to_explain=n_explain)

        start = time.perf_counter()
        final_parts = [_pairs_of(routed, "__route", ("error", "reuse"))]
        if selected is not None:
            if n_explain and s.explainer is not None:
                res = s.explainer_resources
                to_explain = _pairs_of(selected, "__explain", (True,))
                joined = self._join(to_explain, "explainer",
                                    {"member_tokens": res["member_tokens"], "job_tokens": res["job_tokens"],
                                     "prompt_version": s.explainer.prompt_version},
                                    res["batch_size"])
                # Prompts are tokenised and checked against the context first (no vLLM), so the
                # engine starts only when some prompt can be explained.
                prepared = joined.map_batches(
                    PromptBuilder, batch_size=res["batch_size"], batch_format="pyarrow",
                    fn_constructor_kwargs={"settings": s.explainer, "meter": self.meter},
                    concurrency=1, num_cpus=0.5).materialize()
                n_fit = _counts(prepared, "__explain").get("true", 0)
                event(log, "precompute.explain_prompts", selected=n_explain, fit=n_fit,
                      over_context=n_explain - n_fit)
                final_parts += [_pairs_of(selected, "__explain", (False,)),
                                _pairs_of(prepared, "__explain", (False,)).map_batches(
                                    drop_prompt_ids, batch_format="pyarrow")]
                if n_fit:
                    self.explainer_started = True
                    self.ray.get(self.meter.set_total.remote("explain", n_fit))
                    explained = _pairs_of(prepared, "__explain", (True,)).map_batches(
                        ExplainerActor, batch_size=res["batch_size"], batch_format="pyarrow",
                        fn_constructor_kwargs={"settings": s.explainer, "meter": self.meter},
                        concurrency=res["concurrency"], num_cpus=res["num_cpus"], num_gpus=res["num_gpus"],
                        max_restarts=res["max_restarts"], max_task_retries=res["max_task_retries"])
                    final_parts.append(explained)
            else:
                final_parts.append(selected)
        final = final_parts[0].union(*final_parts[1:]) if len(final_parts) > 1 else final_parts[0]
        self.ray.get(self.meter.set_total.remote("write", s.rows_in))
        written = final.map_batches(
            _write, batch_size=s.rows_per_file, batch_format="pyarrow",
            fn_kwargs={"scores_dir": s.scores_dir, "errors_dir": s.errors_dir, "run_id": s.run_id,
                       "meter": self.meter}).take_all()
        t["explain_and_write"] = time.perf_counter() - start

        counts = manifest.aggregate_counts(json.loads(r["counts"]) for r in written)
        stats = self.ray.get(self.meter.snapshot.remote())
        return PipelineResult(
            scores_files=sorted(r["scores_file"] for r in written if r["scores_file"]),
            errors_files=sorted(r["errors_file"] for r in written if r["errors_file"]),
            counts=counts,
            members_rejected=members_rejected,
            jobs_rejected=jobs_rejected,
            stages=manifest.stage_rates(stats),
            route_counts=route_counts,
            join_strategy_used=self.join_used,
            gate=gate,
            explainer_started=self.explainer_started,
        )


def _rename_order(rows: pa.Table, key: str) -> pa.Table:
    return rows.rename_columns([key if c == "__order" else c for c in rows.column_names])


def _stage_inputs(rows: pa.Table, mode: str, options: dict, meter: Any) -> pa.Table:
    start = time.perf_counter()
    # The hash join may reorder columns: restore the work layout, then build the inputs.
    out = features.stage_inputs(as_work(rows, extra=features.JOINED_COLUMNS), mode, options)
    if meter is not None:
        meter.add.remote(f"join_{mode}", rows.num_rows, time.perf_counter() - start)
    return out
