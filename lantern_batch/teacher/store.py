"""Output layout of ``synthesize``, commit markers, resume and clean-up of killed runs.

    OUT/labels/teacher=NAME/part-<bid>.parquet     teacher labels (TEACHER_LABELS_SCHEMA)
    OUT/errors/part-<bid>.parquet                  rejected pairs (ERRORS_SCHEMA)
    OUT/errors/part-input-members.parquet          rejected members / jobs (rewritten per run)
    OUT/fused/part-*.parquet                       fused soft labels (several teachers only)
    OUT/_commits/teacher=NAME/prompt_version=V/<bid>.parquet   one marker per committed batch
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
accounting covers every run that contributed to an output, resumed ones included). Input
errors are written once per output, by whichever teacher pass meets them first.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lantern_batch import io

INPUT_STAGES = ("validate", "dedup", "join")
"""Error stages that concern the input pair itself, not one teacher."""

MARKER_SCHEMA = pa.schema([
    pa.field("row_key", pa.string()),
    pa.field("kind", pa.string()),  # teacher | input
    pa.field("outcome", pa.string()),  # labelled | <error reason>
    pa.field("prompt_tokens", pa.int64()),
    pa.field("output_tokens", pa.int64()),
])

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


def load_done(out: str, teacher: str, prompt_version: str) -> tuple[frozenset[str], frozenset[str]]:
    """(row keys this teacher+prompt version already has, row keys of input errors written)."""
    teacher_done: set[str] = set()
    inputs_done: set[str] = set()
    for f in _marker_files(out):
        t = _read_parquet(f, ["row_key", "kind"])
        keys = t.column("row_key").to_pylist()
        kinds = t.column("kind").to_pylist()
        own = f.startswith(commits_dir(out, teacher, prompt_version) + "/")
        for k, kind in zip(keys, kinds, strict=False):
            if kind == "input":
                inputs_done.add(k)
            elif own:
                teacher_done.add(k)
    return frozenset(teacher_done), frozenset(inputs_done)


def marker_rows(row_keys: list[str], stages: list[str | None], reasons: list[str | None],
                prompt_tokens: list[int | None] | None = None, output_tokens: list[int | None] | None = None) -> pa.Table:
    """Marker table for a batch: one row per written row."""
    kinds = ["input" if s in INPUT_STAGES else "teacher" for s in stages]
    outcomes = [r if r is not None else "labelled" for r in reasons]
    n = len(row_keys)
    return pa.Table.from_arrays([pa.array(row_keys, pa.string()), pa.array(kinds, pa.string()),
                                 pa.array(outcomes, pa.string()),
                                 pa.array(prompt_tokens if prompt_tokens is not None else [0] * n, pa.int64()),
                                 pa.array(output_tokens if output_tokens is not None else [0] * n, pa.int64())],
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
