"""Output layout of ``synthesize``, commit markers, resume and clean-up of killed runs.

    OUT/labels/teacher=NAME/part-<bid>.parquet     teacher labels (TEACHER_LABELS_SCHEMA)
    OUT/errors/part-<bid>.parquet                  rejected pairs (ERRORS_SCHEMA)
    OUT/errors/part-input-members.parquet          rejected members / jobs (rewritten per run)
    OUT/fused/part-*.parquet                       fused soft labels (several teachers only)
    OUT/_commits/teacher=NAME/prompt_version=V/<bid>.parquet   one marker per committed batch
    OUT/_scan/teacher=NAME/{decisions,changed}-<shard>.parquet   a pass's scan plan (while it runs)
    OUT/resolved_config.yaml, OUT/run_summary.json, OUT/agreement.json

**Exactly once.** Each output batch gets a deterministic id ``bid`` (a hash of its row keys,
the teacher and the prompt version), so a retried batch overwrites its own files. Its data
files are written first (each atomically: temporary name, then rename; one PUT on S3), and the
marker last. A batch counts as done only when its marker exists. At the start of every run,
``part-<bid>`` files without a marker (left by a killed run) are deleted, and the row keys in
the markers form the done set that the join stage skips. So killing a run at any point and
rerunning yields the rows of one clean run: none missing, none twice.

A marker holds ``row_key`` and ``kind`` for every row the batch wrote: ``teacher`` (a label or
a teacher error of this teacher and prompt version) or ``input`` (an input error: invalid,
duplicate or unjoinable pair), its outcome and its prompt/output token counts (so token
accounting covers every run that contributed to an output, resumed ones included), the pair's
``input_fingerprint`` (member and job content, query) and the ``teacher_version`` of the pass.
Input errors are written once per output, by whichever teacher pass meets them first.

**Resume keys on content.** A teacher row counts as done only for a pass of the same
:func:`teacher_version` (model content hash, prompt version, the settings that change outputs)
and only while the pair's ``input_fingerprint`` is unchanged (:func:`skipped`). Before a pass,
:func:`retire_stale` takes the rows that no longer hold out of the output: every row of another
teacher version (so one teacher's labels of one prompt version always come from one model and
one set of settings) and the rows of pairs whose content changed; the pass then labels those
pairs again. Retiring is crash-safe: the marker first marks the rows ``retired`` (no longer
done), then the batch's label and error files are rewritten without them, then the marker drops
them; a run killed in between finishes the job at its next start.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lantern_batch import io
from lantern_batch.errors import InputError

INPUT_STAGES = ("validate", "dedup", "join")
"""Error stages that concern the input pair itself, not one teacher."""

MARKER_SCHEMA = pa.schema([
    pa.field("row_key", pa.string()),
    pa.field("kind", pa.string()),  # teacher | input | retired (being taken out, see retire_stale)
    pa.field("outcome", pa.string()),  # labelled | <error reason>
    pa.field("prompt_tokens", pa.int64()),
    pa.field("output_tokens", pa.int64()),
    pa.field("input_fingerprint", pa.string()),  # the pair's content when written (null: input error)
    pa.field("teacher_version", pa.string()),  # teacher_version() of the pass that wrote it
])

RETIRED = "retired"
"""Marker kind of a row being taken out of the output (:func:`retire_stale`)."""

_PART = re.compile(r"^part-([0-9a-f]{24})\.parquet$")


def labels_dir(out: str, teacher: str) -> str:
    return io.join(out, "labels", f"teacher={teacher}")


def errors_dir(out: str) -> str:
    return io.join(out, "errors")


def fused_dir(out: str) -> str:
    return io.join(out, "fused")


#: Written last into ``fused/`` by a complete fusion: the teachers (name, prompt version,
#: weight) and temperature it fused. Readers use ``fused/`` only when it is there.
FUSED_MARKER = "_SUCCESS"


def fused_marker(out: str) -> dict[str, Any] | None:
    """The complete fused table's record, or None (no fused table, or one half-written or
    invalidated by a later run with another teacher set)."""
    path = io.join(fused_dir(out), FUSED_MARKER)
    if not io.exists(path):
        return None
    try:
        return json.loads(io.read_text(path))
    except ValueError:
        return None


def invalidate_fused(out: str) -> None:
    """Withdraw ``fused/`` before it is rewritten, or for good when a run has one teacher:
    the marker goes first, so no reader takes the table while it is changing."""
    io.delete_file(io.join(fused_dir(out), FUSED_MARKER))
    io.delete_dir(fused_dir(out))


def commits_root(out: str) -> str:
    return io.join(out, "_commits")


def commits_dir(out: str, teacher: str, prompt_version: str) -> str:
    return io.join(commits_root(out), f"teacher={teacher}", f"prompt_version={prompt_version}")


def batch_id(row_keys: Iterable[str], teacher: str, prompt_version: str) -> str:
    """Deterministic id of an output batch (24 hex chars)."""
    h = hashlib.sha256(f"{teacher}\x1f{prompt_version}".encode())
    for key in sorted(row_keys):
        h.update(b"\x1e" + key.encode())
    return h.hexdigest()[:24]


def _files(directory: str, recursive: bool = True) -> list[str]:
    """Every file under ``directory`` (full paths in the caller's form); [] if absent."""
    fs, p = io.filesystem(directory)
    if fs.get_file_info(p).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=recursive, allow_not_found=True))
    prefix = "s3://" if io.is_s3(directory) else ""
    return sorted(prefix + fi.path for fi in infos if fi.type == pafs.FileType.File)


def _marker_files(out: str, teacher: str | None = None, prompt_version: str | None = None) -> list[str]:
    root = commits_root(out) if teacher is None else commits_dir(out, teacher, prompt_version or "")
    return [f for f in _files(root) if f.endswith(".parquet") and "/." not in f]


def _read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    fs, p = io.filesystem(path)
    return pq.read_table(p, filesystem=fs, columns=columns)


def commit_batch(out: str, teacher: str, prompt_version: str, labels: pa.Table, errors: pa.Table,
                 markers: pa.Table) -> str:
    """Write one batch's labels and errors, then its marker. Returns the batch id."""
    bid = batch_id(markers.column("row_key").to_pylist(), teacher, prompt_version)
    name = f"part-{bid}.parquet"
    if labels.num_rows:
        io.write_table(labels, labels_dir(out, teacher), basename=name)
    if errors.num_rows:
        io.write_table(errors, errors_dir(out), basename=name)
    io.write_table(markers, commits_dir(out, teacher, prompt_version), basename=f"{bid}.parquet")
    return bid


def committed_ids(out: str) -> set[str]:
    """Batch ids that have a marker (any teacher, any prompt version)."""
    return {io.basename(f)[: -len(".parquet")] for f in _marker_files(out)}


def clean_orphans(out: str) -> list[str]:
    """Delete ``part-<bid>`` data files whose batch has no marker; returns the deleted paths."""
    committed = committed_ids(out)
    deleted = []
    for directory in [errors_dir(out), io.join(out, "labels")]:
        for f in _files(directory):
            m = _PART.match(io.basename(f))
            if m and m.group(1) not in committed:
                io.delete_file(f)
                deleted.append(f)
    return deleted


def teacher_version(model_version: str, prompt_version: str, settings: Mapping[str, Any]) -> str:
    """The version of a teacher pass: what its labels depend on besides the pair (16 hex chars).

    Args:
        model_version: the model's content hash (:func:`lantern_batch.models.model_version` for an
            open model; the fitted weights' hash for the engagement teacher; the served model
            name for a black-box endpoint, the only thing known of it).
        prompt_version: the teacher's prompt version.
        settings: the settings that change its outputs (sampling, output schema, engine
            precision and context, prompt budgets).
    """
    blob = json.dumps({"model": model_version, "prompt_version": prompt_version, "settings": dict(settings)},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def key_shard(row_key: str, shards: int) -> int:
    """The scan shard (0..shards-1) of an input row by its row key: the same as
    :func:`pair_shard` of the row's pair id (``<pair_id>#<n>``), or of its position for a pair
    with a null id (``null#<order>``). A key of another form goes to shard 0."""
    if shards <= 1:
        return 0
    head, _, tail = row_key.rpartition("#")
    if head == "null":
        try:
            return pair_shard(None, int(tail), shards)
        except ValueError:
            return 0
    return pair_shard(head, 0, shards)


def pair_shard(pid: str | None, order: int, shards: int) -> int:
    """The scan shard of a pair: a hash of its pair id (every copy of a pair, and every row key
    of it, in one shard), or its position ``order`` for a pair with a null id."""
    if shards <= 1:
        return 0
    if pid is None:
        return int(order) % shards
    return zlib.crc32(pid.encode()) % shards


def load_done(out: str, teacher: str, prompt_version: str,
              version: str) -> tuple[dict[str, str], frozenset[str]]:
    """What a pass of ``teacher`` / ``prompt_version`` / teacher ``version`` finds done.

    Returns:
        ({row key: input_fingerprint} of this teacher's rows written by a pass of the same
        version, row keys of input errors written by any pass). Rows of another version, retired
        rows and rows of markers that predate fingerprints are not done.
    """
    done, _, inputs_done = load_done_shard(out, teacher, prompt_version, version)
    return done, inputs_done


def load_done_shard(out: str, teacher: str, prompt_version: str, version: str, shard: int = 0,
                    shards: int = 1) -> tuple[dict[str, str], dict[str, str], frozenset[str]]:
    """:func:`load_done` for the row keys of one scan shard (:func:`key_shard`), streaming the
    marker files one at a time, so what it holds is bounded by the shard.

    Returns:
        (done {row key: input_fingerprint}, {row key: name of the marker file that holds it}
        for the done keys, row keys of input errors), each of this shard only.
    """
    teacher_done: dict[str, str] = {}
    where: dict[str, str] = {}
    inputs_done: set[str] = set()
    own_dir = commits_dir(out, teacher, prompt_version) + "/"
    for f in _marker_files(out):
        t = _read_parquet(f)
        keys = t.column("row_key").to_pylist()
        kinds = t.column("kind").to_pylist()
        own = f.startswith(own_dir)
        name = io.basename(f)
        fps = _column_or_nulls(t, "input_fingerprint")
        versions = _column_or_nulls(t, "teacher_version")
        for k, kind, fp, v in zip(keys, kinds, fps, versions, strict=True):
            if shards > 1 and key_shard(k, shards) != shard:
                continue
            if kind == "input":
                inputs_done.add(k)
            elif own and kind == "teacher" and v == version and fp is not None:
                teacher_done[k] = fp
                where[k] = name
    return teacher_done, where, frozenset(inputs_done)


def skipped(row_key: str, fingerprint: str | None, done: Mapping[str, str], inputs_done: frozenset[str]) -> bool:
    """Whether a pass skips an input row: its input error is written, or this teacher version
    labelled it from the same content (``fingerprint``: the pair's input_fingerprint now, None
    when it cannot be joined)."""
    return row_key in inputs_done or (fingerprint is not None and done.get(row_key) == fingerprint)


def _column_or_nulls(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def retire_stale(out: str, teacher: str, prompt_version: str, version: str, changed: Iterable[str] = (),
                 changed_files: Iterable[str] = ()) -> dict[str, int]:
    """Take the rows that no longer hold out of this teacher's output for ``prompt_version``.

    Stale: every teacher row written by a pass of another teacher ``version`` (or by one that
    recorded none), the rows whose key is in ``changed`` (the pair's content changed since), and
    rows a killed retirement left marked ``retired``. Input-error rows stay. See the module doc
    for the order of writes that makes this safe to kill.

    Args:
        changed: changed row keys, in memory (small sets, tests).
        changed_files: the scan's changed-key files instead (:data:`CHANGED_SCHEMA`, each sorted
            by marker file): they are merged by marker name while the markers are walked in
            name order, so what is held is one marker file's changed keys.

    Returns:
        ``{"rows": rows retired, "batches": batches rewritten}``.
    """
    changed = frozenset(changed)
    by_marker = _changed_by_marker(list(changed_files))
    pending = next(by_marker, None)
    markers_dir = commits_dir(out, teacher, prompt_version)
    rows = batches = 0
    for f in sorted(_marker_files(out, teacher, prompt_version), key=io.basename):
        name = io.basename(f)
        while pending is not None and pending[0] < name:  # a marker that has gone since the scan
            pending = next(by_marker, None)
        here = changed
        if pending is not None and pending[0] == name:
            here = changed | pending[1]
            pending = next(by_marker, None)
        marker = _read_parquet(f)
        stale = _stale_mask(marker, version, here)
        if not any(stale):
            continue
        io.write_table(_with_kind(marker, stale), markers_dir, basename=name)  # 1: no longer done
        keys = [k for k, s_ in zip(marker.column("row_key").to_pylist(), stale, strict=True) if s_]
        _filter_batch_files(out, teacher, name[: -len(".parquet")], {k.rsplit("#", 1)[0] for k in keys})  # 2
        _rewrite(marker.filter(pa.array([not s_ for s_ in stale], pa.bool_())), markers_dir, name)  # 3
        rows += len(keys)
        batches += 1
    return {"rows": rows, "batches": batches}


CHANGED_SCHEMA = pa.schema([pa.field("marker", pa.string()), pa.field("row_key", pa.string())])
"""A scan's done rows whose content changed: the marker file (name) that holds each row key."""


def _changed_by_marker(files: list[str]) -> Iterator[tuple[str, frozenset[str]]]:
    """(marker name, its changed row keys) in name order, from changed-key files each sorted by
    marker name (a k-way merge: one batch of each file in memory)."""

    def rows(path: str) -> Iterator[tuple[str, str]]:
        fs, p = io.filesystem(path)
        with fs.open_input_file(p) as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=8192, columns=["marker", "row_key"]):
                yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)

    merged = heapq.merge(*(rows(f) for f in files))
    for name, group in itertools.groupby(merged, key=lambda r: r[0]):
        yield name, frozenset(k for _, k in group)


def _stale_mask(marker: pa.Table, version: str, changed: frozenset[str]) -> list[bool]:
    keys = marker.column("row_key").to_pylist()
    kinds = marker.column("kind").to_pylist()
    fps = _column_or_nulls(marker, "input_fingerprint")
    versions = _column_or_nulls(marker, "teacher_version")
    return [kind == RETIRED or (kind == "teacher" and (v != version or fp is None or k in changed))
            for k, kind, fp, v in zip(keys, kinds, fps, versions, strict=True)]


def _with_kind(marker: pa.Table, retired: list[bool]) -> pa.Table:
    """The marker with ``kind`` set to :data:`RETIRED` where ``retired`` (every column kept)."""
    kinds = [RETIRED if r else k for k, r in zip(marker.column("kind").to_pylist(), retired, strict=True)]
    i = marker.schema.get_field_index("kind")
    return marker.set_column(i, marker.schema.field(i), pa.array(kinds, pa.string()))


def _filter_batch_files(out: str, teacher: str, bid: str, pair_ids: set[str]) -> None:
    """Rewrite batch ``bid``'s label and error files without the teacher rows of ``pair_ids``
    (input-error rows stay); a file left empty is deleted."""
    from lantern_batch.policy import pair_id

    name = f"part-{bid}.parquet"
    ids = pa.array(sorted(pair_ids), pa.string())
    if io.exists(io.join(labels_dir(out, teacher), name)):
        labels = _read_parquet(io.join(labels_dir(out, teacher), name))
        _rewrite(labels.filter(pc.invert(pc.is_in(labels.column("pair_id"), value_set=ids))),
                 labels_dir(out, teacher), name)
    if io.exists(io.join(errors_dir(out), name)):
        errors = _read_parquet(io.join(errors_dir(out), name))
        pids = [pair_id(m, j) if m is not None and j is not None else None
                for m, j in zip(errors.column("member_id").to_pylist(), errors.column("job_id").to_pylist(), strict=True)]
        keep = [stage in INPUT_STAGES or p not in pair_ids
                for stage, p in zip(errors.column("stage").to_pylist(), pids, strict=True)]
        _rewrite(errors.filter(pa.array(keep, pa.bool_())), errors_dir(out), name)


def _rewrite(table: pa.Table, directory: str, name: str) -> None:
    """Replace ``directory/name`` with ``table`` (one atomic write), or delete it when empty."""
    if table.num_rows:
        io.write_table(table, directory, basename=name)
    else:
        io.delete_file(io.join(directory, name))


def choose_prompt_version(found: Iterable[str], configured: str | None, where: str) -> str | None:
    """The prompt version of teacher labels a reader keeps: ``configured``, else the only one found.

    Labels of several prompt versions of one teacher never mix in one training set or report.

    Args:
        found: the prompt versions the labels hold.
        configured: the reader's configured version (None: take the only one).
        where: the labels, for messages (e.g. ``"teacher labels at PATH"``).

    Raises:
        InputError: several versions and none configured, or a configured version the labels
            (holding some) do not have; the message names the versions.
    """
    found = sorted(set(found))
    if configured is not None:
        if found and configured not in found:
            raise InputError(f"{where}: no rows of prompt version '{configured}' (found: {', '.join(found)})")
        return configured
    if len(found) > 1:
        raise InputError(f"{where} hold labels of several prompt versions ({', '.join(found)}): "
                         "set the reader's prompt_version to one of them")
    return found[0] if found else None


def label_prompt_versions(files: list[str]) -> list[str]:
    """The distinct ``prompt_version`` values of teacher-label files ([] when the column is absent:
    a fused table)."""
    import pyarrow.dataset as pads

    if not files:
        return []
    fs, _ = io.filesystem(files[0])
    dataset = pads.dataset([io.filesystem(f)[1] for f in files], format="parquet", filesystem=fs)
    if "prompt_version" not in dataset.schema.names:
        return []
    found: set[str] = set()
    for batch in dataset.to_batches(columns=["prompt_version"]):
        found.update(v for v in pc.unique(batch.column(0)).to_pylist() if v is not None)
    return sorted(found)


def marker_rows(row_keys: list[str], stages: list[str | None], reasons: list[str | None],
                prompt_tokens: list[int | None] | None = None, output_tokens: list[int | None] | None = None,
                input_fingerprints: list[str | None] | None = None, teacher_version: str | None = None) -> pa.Table:
    """Marker table for a batch: one row per written row (``input_fingerprints``: each pair's,
    null for input errors; ``teacher_version``: the pass's :func:`teacher_version`)."""
    kinds = ["input" if s in INPUT_STAGES else "teacher" for s in stages]
    outcomes = [r if r is not None else "labelled" for r in reasons]
    n = len(row_keys)
    return pa.Table.from_arrays([pa.array(row_keys, pa.string()), pa.array(kinds, pa.string()),
                                 pa.array(outcomes, pa.string()),
                                 pa.array(prompt_tokens if prompt_tokens is not None else [0] * n, pa.int64()),
                                 pa.array(output_tokens if output_tokens is not None else [0] * n, pa.int64()),
                                 pa.array(input_fingerprints if input_fingerprints is not None else [None] * n,
                                          pa.string()),
                                 pa.array([teacher_version] * n, pa.string())],
                                schema=MARKER_SCHEMA)


def output_totals(out: str, teachers: list[tuple[str, str]]) -> dict:
    """Counts of the output as it stands, from the markers: per teacher labelled rows, teacher
    errors by reason and tokens, and input errors by reason (written once per output)."""
    per: dict[str, dict] = {}
    inputs: Counter[str] = Counter()
    for name, pv in teachers:
        labelled, errs, tokens = 0, Counter(), Counter()
        for f in _marker_files(out, name, pv):
            t = _read_parquet(f)
            teacher_rows = t.filter(pc.equal(t.column("kind"), "teacher"))
            outcomes = teacher_rows.column("outcome").to_pylist()
            labelled += sum(o == "labelled" for o in outcomes)
            errs.update(o for o in outcomes if o != "labelled")
            for col in ("prompt_tokens", "output_tokens"):
                if col in t.column_names:
                    tokens[col] += int(pc.sum(t.column(col)).as_py() or 0)
        per[name] = {"prompt_version": pv, "labelled": labelled, "errors": sum(errs.values()),
                     "errors_by_reason": dict(errs), **{k: tokens[k] for k in ("prompt_tokens", "output_tokens")}}
    for f in _marker_files(out):
        t = _read_parquet(f, ["kind", "outcome"])
        inputs.update(t.filter(pc.equal(t.column("kind"), "input")).column("outcome").to_pylist())
    return {"teachers": per, "input_errors": sum(inputs.values()), "input_errors_by_reason": dict(inputs)}
