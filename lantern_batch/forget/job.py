"""``lantern-batch forget``: delete every row of some members from the outputs (right to be
forgotten), keep them out of later runs, and report what was deleted.

    LANTERN_FORGET_KEY=... lantern-batch forget --config configs/demo_forget.yaml --members request.txt

Order of work, and why:

1. The request is read (Parquet with ``member_id``, or a text file, one id per line) and every
   id hashed with the secret key (:mod:`~lantern_batch.forget.tombstones`).
2. **The tombstone is written first**, into every output root's ``_tombstones/`` (and
   ``out`` and the central ``tombstones`` directory): from then on a nightly run excludes the
   members, even if this run dies half-way, and a rerun of forget finishes the deletion.
3. precompute roots, one ds at a time under that ds's lock (``scores/_locks/ds=<ds>.lock``,
   the one precompute takes; a held lock is skipped and reported, exit 1): the errors partition,
   then the scores partition, each republished with
   :func:`lantern_batch.io.publish_partition` as a *new generation* (run id
   ``forget-<forget_id>``): files holding the members are rewritten without them, the others
   copied (hard links on local disk, server-side copies on S3) under the new run's names, a
   manifest with updated counts written, then ``_SUCCESS`` switched. Readers see the old
   generation or the new one, never a half-deleted partition. After ``gc_grace_s`` the replaced
   generation (which still holds the members) and any leftover file that holds them are
   deleted, again under the lock.
4. synthesize roots, under ``_locks/synthesize.lock``: the commit markers first (their row keys
   are pair ids derived from the member ids), then ``labels/teacher=*/``, ``fused/`` and
   ``errors/`` (rewritten in place, or deleted when nothing is left), then the black-box
   response cache (the members' directories; entries of the older flat layout cannot be
   attributed to a member and are all deleted), and a scan plan a killed pass left (``_scan/``).
5. Distillation work dirs, curation sheets (``review.csv`` keeps every other line byte for
   byte) and the other configured tables: every Parquet file with a ``member_id`` column.
   Evaluation reports that name one of the members (they list example pairs) are deleted.
6. The report, ``out/report-<forget_id>.json``: counts per table, the tombstone files,
   ``status`` (``complete``, or ``incomplete`` with what was skipped and why). Neither it nor
   the log holds a member id or the request's path.

Exit codes: 0 complete, 1 incomplete (a lock was held: rerun forget) or other failure, 2 bad
input or config (no ids, no key, tombstones with another key).
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from io import StringIO
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lantern_batch import io
from lantern_batch.errors import InputError, LockHeldError, NotPublishedError
from lantern_batch.forget import tombstones as tb
from lantern_batch.forget.config import ForgetConfig
from lantern_batch.logs import event, get_logger

log = get_logger(__name__)

_HEX2 = re.compile(r"^[0-9a-f]{2}$")


# --------------------------------------------------------------------------- the request


def read_member_ids(path: str | None) -> list[str]:
    """Unique member ids of the request, sorted (see :attr:`ForgetConfig.members`).

    Raises:
        InputError: no path, nothing there, no ``member_id`` column, or no ids.
    """
    if not path:
        raise InputError("forget: the members to forget are required (--members FILE)")
    if not io.exists(path):
        raise InputError("forget: the members file does not exist")
    fs, p = io.filesystem(path)
    if fs.get_file_info(p).type == pafs.FileType.Directory or _is_parquet(path):
        schema = io.dataset_schema(path, "members to forget")
        if schema.get_field_index("member_id") < 0:
            raise InputError("table 'members to forget': column 'member_id' is missing")
        col = io.read_table(path, columns=["member_id"], table="members to forget").column("member_id")
        values = [None if v is None else str(v).strip() for v in col.to_pylist()]
    else:
        text = io.read_text(path).lstrip("\ufeff")
        values = [line.strip() for line in text.splitlines()]
    ids = sorted({v for v in values if v})
    if not ids:
        raise InputError("forget: the members file holds no member ids")
    return ids


def _is_parquet(path: str) -> bool:
    fs, p = io.filesystem(path)
    with fs.open_input_file(p) as f:
        return f.read(4) == b"PAR1"


# --------------------------------------------------------------------------- bookkeeping


class Report:
    """Counts per table and per root, what was skipped, the members seen (ids stay in memory)."""

    def __init__(self, forget_id: str, requested: int):
        self.forget_id = forget_id
        self.requested = requested
        self.tables: dict[str, Counter[str]] = defaultdict(Counter)
        self.roots: dict[str, dict[str, defaultdict[str, Counter[str]]]] = {}
        self.incomplete: list[dict[str, str]] = []
        self.found: set[str] = set()
        self.tombstones: list[str] = []
        self.created_at = datetime.now(timezone.utc).isoformat()

    def add(self, table: str, root: str, detail: str | None = None, **counts: int) -> None:
        """Add counts of ``table`` under ``root`` (and of one part of it: a ds, a teacher)."""
        counts = {k: int(v) for k, v in counts.items() if v}
        if not counts:
            return
        self.tables[table].update(counts)
        entry = self.roots.setdefault(root, {"tables": defaultdict(Counter), "parts": defaultdict(Counter)})
        entry["tables"][table].update(counts)
        if detail:
            entry["parts"][f"{table} {detail}"].update(counts)

    def skip(self, what: str, root: str, reason: str) -> None:
        self.incomplete.append({"what": what, "root": root, "reason": reason})
        log.warning("forget.skipped what=%s root=%s reason=%s", what, root, reason)

    def to_json(self, key_id: str, status: str, error: str | None = None) -> dict[str, Any]:
        return {
            "forget_id": self.forget_id,
            "created_at": self.created_at,
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "status": status,
            **({"error": error} if error else {}),
            "members_requested": self.requested,
            "members_found": len(self.found),
            "tombstones": {"key_id": key_id, "files": self.tombstones},
            "tables": {k: dict(sorted(v.items())) for k, v in sorted(self.tables.items())},
            "roots": {r: {part: {k: dict(sorted(c.items())) for k, c in sorted(entry[part].items())}
                          for part in ("tables", "parts")} for r, entry in sorted(self.roots.items())},
            "incomplete": self.incomplete,
        }


class Matcher:
    """The requested ids as an Arrow value set, and what each table matched."""

    def __init__(self, ids: list[str], report: Report):
        self.ids = pa.array(ids, pa.string())
        self.idset = frozenset(ids)
        self.report = report

    def mask(self, col: pa.Array | pa.ChunkedArray) -> np.ndarray:
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if len(col) == 0:
            return np.zeros(0, dtype=bool)
        if not pa.types.is_string(col.type):
            col = col.cast(pa.string())
        m = np.asarray(pc.fill_null(pc.is_in(col, value_set=self.ids), False).to_numpy(zero_copy_only=False),
                       dtype=bool)
        if m.any():
            self.report.found.update(v for v in pc.unique(col.filter(pa.array(m))).to_pylist() if v is not None)
        return m


# --------------------------------------------------------------------------- file helpers


def _read_file(path: str, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file as written (no partition columns inferred from its path)."""
    fs, p = io.filesystem(path)
    with fs.open_input_file(p) as fh:
        return pq.ParquetFile(fh).read(columns=columns)


def _file_schema(path: str) -> pa.Schema:
    fs, p = io.filesystem(path)
    with fs.open_input_file(p) as fh:
        return pq.ParquetFile(fh).schema_arrow


def _rewrite(path: str, kept: pa.Table) -> str:
    """Replace a file with ``kept`` (same name; atomic) or delete it when nothing is left;
    returns ``rewritten`` or ``deleted``."""
    if kept.num_rows:
        io.write_table(kept, io.parent(path), basename=io.basename(path))
        return "rewritten"
    io.delete_file(path)
    return "deleted"


def _clone(src: str, dst: str) -> None:
    """A second name for an unchanged data file: a hard link locally (a copy where links are
    not possible), a server-side copy on S3."""
    if io.is_s3(src):
        fs, s = io.filesystem(src)
        fs.copy_file(s, io.filesystem(dst)[1])
        return
    try:
        os.link(src, dst)
    except OSError:
        tmp = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def _all_files(directory: str) -> list[str]:
    """Every file under ``directory`` (recursive), full paths in the caller's form."""
    fs, p = io.filesystem(directory)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.File:
        return [directory]
    if info.type == pafs.FileType.NotFound:
        return []
    prefix = "s3://" if io.is_s3(directory) else ""
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=True, allow_not_found=True))
    return sorted(prefix + fi.path for fi in infos if fi.type == pafs.FileType.File)


def _subdirs(directory: str) -> list[str]:
    fs, p = io.filesystem(directory)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=False, allow_not_found=True))
    return sorted(io.basename(fi.path) for fi in infos if fi.type == pafs.FileType.Directory)


def _dirty(path: str, m: Matcher) -> int:
    """Rows of the members in one Parquet file (0 for a file without ``member_id``)."""
    if _file_schema(path).get_field_index("member_id") < 0:
        return 0
    return int(m.mask(_read_file(path, ["member_id"]).column("member_id")).sum())


def _purge_file(path: str, m: Matcher) -> tuple[str, pa.Table] | None:
    """Remove the members' rows from one Parquet file in place; (outcome, removed rows), or None
    when it holds none."""
    if not _dirty(path, m):
        return None
    full = _read_file(path)
    mask = m.mask(full.column("member_id"))
    return _rewrite(path, full.filter(pa.array(~mask))), full.filter(pa.array(mask))


def _is_published_dir(directory: str) -> bool:
    return any(n.startswith(io.MANIFEST_PREFIX) or n == io.MANIFEST for n in io.list_dir(directory))


# --------------------------------------------------------------------------- precompute


def _ds_values(root: str) -> list[str]:
    from lantern_batch.precompute.job import partition_dirs

    scores_base, errors_base = io.join(root, "scores"), io.join(root, "errors")
    found = set(partition_dirs(scores_base)) | set(partition_dirs(errors_base))
    for name in io.list_dir(io.join(scores_base, "_locks")):
        if name.startswith("ds=") and name.endswith(".lock"):
            found.add(name[3:-5])
    return sorted(found)


def _scores_manifest(old: dict, run_id: str, forget_id: str, removed: pa.Table, errors_removed: int) -> dict:
    from lantern_batch.precompute import manifest as mf

    new = copy.deepcopy(old)
    new.pop("files", None)
    new["run_id"] = run_id
    n = removed.num_rows
    c = new.setdefault("counts", {})
    c["rows_forgotten"] = int(c.get("rows_forgotten", 0)) + n
    c["errors_forgotten"] = int(c.get("errors_forgotten", 0)) + errors_removed
    if "rows_published" in c:
        c["rows_published"] = int(c["rows_published"]) - n
    c["conservation"] = ("rows_in = rows_scored + rows_reused + rows_error; "
                         "rows_published = rows_scored + rows_reused - rows_forgotten")
    if all(k in c for k in ("rows_in", "rows_scored", "rows_reused", "rows_error", "rows_published")):
        run = c["rows_scored"] + c["rows_reused"]
        c["conservation_ok"] = (c["rows_in"] == run + c["rows_error"]
                                and c["rows_published"] == run - c["rows_forgotten"])
    labels = new.get("labels")
    if isinstance(labels, dict) and isinstance(labels.get("counts"), dict) and "fit_label" in removed.column_names:
        gone = Counter(removed.column("fit_label").to_pylist())
        labels["counts"] = {k: max(0, int(v) - gone.get(k, 0)) for k, v in labels["counts"].items()}
        labels["shares"] = mf.shares(labels["counts"])
    new.setdefault("forget", []).append({
        "forget_id": forget_id, "at": datetime.now(timezone.utc).isoformat(),
        "replaced_run_id": old.get("run_id"), "rows_removed": n, "errors_removed": errors_removed})
    return new


def _errors_manifest(old: dict, run_id: str, forget_id: str, removed: pa.Table) -> dict:
    new = copy.deepcopy(old)
    new.pop("files", None)
    new["run_id"] = run_id
    n = removed.num_rows
    if "rows" in new:
        new["rows"] = int(new["rows"]) - n
    new["rows_forgotten"] = int(new.get("rows_forgotten", 0)) + n
    ebr = new.get("errors_by_reason")
    if isinstance(ebr, dict) and all(c in removed.column_names for c in ("table", "stage", "reason")):
        gone = Counter(f"{t}/{s}/{r}" for t, s, r in zip(removed.column("table").to_pylist(),
                                                         removed.column("stage").to_pylist(),
                                                         removed.column("reason").to_pylist(), strict=True))
        new["errors_by_reason"] = {k: int(v) - gone.get(k, 0) for k, v in ebr.items()
                                   if int(v) - gone.get(k, 0) > 0}
    new.setdefault("forget", []).append({
        "forget_id": forget_id, "at": datetime.now(timezone.utc).isoformat(),
        "replaced_run_id": old.get("run_id"), "rows_removed": n})
    return new


def _purge_partition(final_dir: str, m: Matcher, kind: str, run_id: str, forget_id: str,
                     errors_removed: int = 0) -> tuple[Counter[str], set[str]]:
    """Republish one partition without the members (see the module doc, step 3).

    Returns:
        (counts, names of the files that hold the members: deleted later by :func:`_collect`).

    Raises:
        NotPublishedError: ``_SUCCESS`` names a run without a manifest (a torn publish).
    """
    counts: Counter[str] = Counter()
    data = [n for n in io.list_dir(final_dir) if n.endswith(".parquet") and not n.startswith(("_", "."))]
    if not data:
        return counts, set()
    manifest, live_names = None, set()
    if io.live_run_id(final_dir) is not None:
        manifest, files = io.published_files(final_dir, torn_grace_s=0)
        live_names = {io.basename(f) for f in files}
    dirty = {n for n in data if _dirty(io.join(final_dir, n), m)}
    if not dirty:
        return counts, set()
    if manifest is not None and dirty & live_names:
        from lantern_batch.precompute.job import _cleanup

        try:
            new_files, removed = [], []
            for i, name in enumerate(sorted(live_names)):
                src, target = io.join(final_dir, name), io.part_name(run_id, i)
                if name in dirty:
                    full = _read_file(src)
                    mask = m.mask(full.column("member_id"))
                    removed.append(full.filter(pa.array(mask)))
                    kept = full.filter(pa.array(~mask))
                    if kept.num_rows:
                        new_files.append(io.write_table(kept, final_dir, basename=target))
                        counts["files_rewritten"] += 1
                    else:
                        counts["files_dropped"] += 1
                else:
                    _clone(src, io.join(final_dir, target))
                    new_files.append(io.join(final_dir, target))
                    counts["files_copied"] += 1
            gone = pa.concat_tables(removed)
            new = (_scores_manifest(manifest, run_id, forget_id, gone, errors_removed) if kind == "scores"
                   else _errors_manifest(manifest, run_id, forget_id, gone))
            io.publish_partition(final_dir, new_files, new)
        except BaseException:
            _cleanup(final_dir, run_id)  # only what no manifest lists and no _SUCCESS names
            raise
        counts["rows_removed"] += gone.num_rows
        counts["generations_published"] += 1
    return counts, dirty


def _collect(final_dir: str, dirty: set[str]) -> int:
    """Delete the replaced generation and every remaining non-live file that holds the members
    (garbage collection keeps only the live generation). Returns those files deleted."""
    live = io.live_run_id(final_dir)
    io.collect_garbage(final_dir, {live} if live else set())
    live_names = {io.basename(f) for f in io.published_files(final_dir, torn_grace_s=0)[1]} if live else set()
    present = set(io.list_dir(final_dir))
    deleted = 0
    for name in sorted(dirty):
        if name in live_names:
            continue  # cannot happen: the cleaned generation has new names
        if name in present:
            io.delete_file(io.join(final_dir, name))
        deleted += 1
    return deleted


def purge_precompute(root: str, m: Matcher, cfg: ForgetConfig, report: Report, forget_id: str) -> list[tuple]:
    """Every ds of one precompute root; returns the partitions whose replaced generations are
    still to be collected (when ``gc_grace_s`` > 0)."""
    run_id = f"forget-{forget_id}"
    pending = []
    for ds in _ds_values(root):
        lock = io.join(root, "scores", "_locks", f"ds={ds}.lock")
        dirs = {"errors": io.join(root, "errors", f"ds={ds}"), "scores": io.join(root, "scores", f"ds={ds}")}
        try:
            with io.LockKeeper(lock, owner=run_id, ttl_s=cfg.lock.ttl_s, wait_s=cfg.lock.wait_s,
                               what=f"forget ds={ds}"):
                errors_removed, later = 0, []
                for kind in ("errors", "scores"):  # the order precompute publishes in
                    try:
                        counts, dirty = _purge_partition(dirs[kind], m, kind, run_id, forget_id, errors_removed)
                    except NotPublishedError:
                        report.skip(f"precompute.{kind} ds={ds}", root, "torn_publish: rerun precompute for this ds")
                        continue
                    if kind == "errors":
                        errors_removed = counts["rows_removed"]
                    if dirty and cfg.gc_grace_s == 0:
                        counts["stale_files_deleted"] += _collect(dirs[kind], dirty)
                    elif dirty:
                        later.append((dirs[kind], kind, dirty))
                    report.add(f"precompute.{kind}", root, detail=f"ds={ds}", **counts)
                    if counts:
                        report.add(f"precompute.{kind}", root, partitions_changed=1)
                if later:
                    pending.append((root, ds, lock, later))
        except LockHeldError:
            report.skip(f"precompute ds={ds}", root, "locked: a precompute run holds this ds; rerun forget after it")
    return pending


def collect_pending(pending: list[tuple], cfg: ForgetConfig, report: Report, forget_id: str) -> None:
    """Second pass after ``gc_grace_s``: delete the replaced generations, under each ds lock."""
    for root, ds, lock, later in pending:
        try:
            with io.LockKeeper(lock, owner=f"forget-{forget_id}", ttl_s=cfg.lock.ttl_s,
                               wait_s=cfg.lock.wait_s, what=f"forget ds={ds}"):
                for final_dir, kind, dirty in later:
                    report.add(f"precompute.{kind}", root, detail=f"ds={ds}",
                               stale_files_deleted=_collect(final_dir, dirty))
        except LockHeldError:
            report.skip(f"precompute ds={ds} (replaced generation)", root,
                        "locked: rerun forget to delete the generation the cleaned one replaced")


# --------------------------------------------------------------------------- synthesize


def _pair_ids(rows: pa.Table) -> set[str]:
    from lantern_batch.policy import pair_id

    out = set()
    if "pair_id" in rows.column_names:
        out.update(p for p in rows.column("pair_id").to_pylist() if p)
    if "job_id" in rows.column_names:
        out.update(pair_id(mm, j) for mm, j in zip(rows.column("member_id").to_pylist(),
                                                   rows.column("job_id").to_pylist(), strict=True)
                   if mm is not None and j is not None)
    return out


def _synth_tables(root: str) -> list[tuple[str, str, str]]:
    """(report table, detail, file) of every Parquet file forget cleans in a synthesis output."""
    from lantern_batch.teacher import store

    out = []
    labels = io.join(root, "labels")
    for name in _subdirs(labels):
        for f in io.list_parquet_files(io.join(labels, name)):
            out.append(("synthesize.labels", name, f))
    for f in io.list_parquet_files(store.fused_dir(root)):
        out.append(("synthesize.fused", "fused", f))
    for f in io.list_parquet_files(store.errors_dir(root)):
        out.append(("synthesize.errors", "errors", f))
    return out


def purge_synthesize(root: str, m: Matcher, cfg: ForgetConfig, report: Report, forget_id: str) -> None:
    """One synthesis output, under its lock (see the module doc, step 4)."""
    try:
        with io.LockKeeper(io.join(root, "_locks", "synthesize.lock"), owner=f"forget-{forget_id}",
                           ttl_s=cfg.lock.ttl_s, wait_s=cfg.lock.wait_s, what="forget synthesize"):
            _purge_synthesize_locked(root, m, report)
    except LockHeldError:
        report.skip("synthesize", root, "locked: a synthesize run holds this output; rerun forget after it")


def _purge_synthesize_locked(root: str, m: Matcher, report: Report) -> None:
    from lantern_batch.teacher import store

    # 1. Which files hold the members, and the pair ids of their rows.
    dirty, pids = [], set()
    for table, detail, f in _synth_tables(root):
        if _dirty(f, m):
            cols = [c for c in ("member_id", "job_id", "pair_id") if _file_schema(f).get_field_index(c) >= 0]
            t = _read_file(f, cols)
            pids |= _pair_ids(t.filter(pa.array(m.mask(t.column("member_id")))))
            dirty.append((table, detail, f))
    # 2. Commit markers first: a crash after this leaves data rows a rerun still finds.
    if pids:
        for f in io.list_parquet_files(store.commits_root(root)):
            t = _read_file(f)
            # Row keys are "<pair_id>#<copy>" (or "null#<order>", which names no member).
            mask = np.fromiter(((k or "").split("#", 1)[0] in pids for k in t.column("row_key").to_pylist()),
                               dtype=bool, count=t.num_rows)
            if mask.any():
                outcome = _rewrite(f, t.filter(pa.array(~mask)))
                report.add("synthesize.commit_markers", root, rows_removed=int(mask.sum()),
                           **{f"files_{outcome}": 1})
    # 3. The data files.
    for table, detail, f in dirty:
        done = _purge_file(f, m)
        if done is not None:
            outcome, removed = done
            report.add(table, root, detail=detail, rows_removed=removed.num_rows, **{f"files_{outcome}": 1})
    # 4. The black-box response cache.
    _purge_cache(root, m, report)
    # 5. A killed pass's scan plan (row keys of any member): no pass runs while forget holds the
    # lock, and the next pass would delete it anyway.
    io.delete_dir(io.join(root, "_scan"))


def _purge_cache(root: str, m: Matcher, report: Report) -> None:
    cache = io.join(root, "cache")
    teachers = _subdirs(cache)
    if not teachers:
        return
    from lantern_batch.teacher.blackbox import member_cache_dir

    for teacher in teachers:
        base = io.join(cache, teacher)
        for mid in sorted(m.idset):
            d = io.join(base, member_cache_dir(mid))
            files = _all_files(d)
            if files:
                io.delete_dir(d)
                m.report.found.add(mid)
                report.add("synthesize.blackbox_cache", root, detail=teacher, entries_deleted=len(files))
        for sub in _subdirs(base):
            if _HEX2.match(sub):  # the flat layout before per-member directories: unattributable
                d = io.join(base, sub)
                n = sum(f.endswith(".json") for f in _all_files(d))
                io.delete_dir(d)
                report.add("synthesize.blackbox_cache", root, detail=teacher, legacy_entries_deleted=n)


# --------------------------------------------------------------------------- other tables


def purge_tree(root: str, table: str, m: Matcher, report: Report, with_csv: bool = False) -> None:
    """Every Parquet file with ``member_id`` under ``root`` (and, for curation, every CSV sheet)."""
    if not io.exists(root):
        return
    published: dict[str, bool] = {}
    for f in io.list_parquet_files(root):
        d = io.parent(f)
        if d not in published:
            published[d] = _is_published_dir(d)
        if published[d]:
            report.skip(table, root, "a published partition: list its root under precompute instead")
            continue
        done = _purge_file(f, m)
        if done is not None:
            outcome, removed = done
            report.add(table, root, rows_removed=removed.num_rows, **{f"files_{outcome}": 1})
    if with_csv:
        for f in _all_files(root):
            if f.endswith(".csv"):
                removed = purge_csv(f, m)
                if removed:
                    report.add(table, root, rows_removed=removed, files_rewritten=1)


def purge_reports(root: str, m: Matcher, report: Report) -> None:
    """Evaluation reports: Parquet files lose the members' rows; any other file that names one
    of them (an id standing alone, not inside a longer token) is deleted."""
    if not io.exists(root):
        return
    purge_tree(root, "reports", m, report)
    pattern = re.compile(rb"(?<![A-Za-z0-9_.-])(?:" + b"|".join(re.escape(i.encode()) for i in sorted(m.idset))
                         + rb")(?![A-Za-z0-9_-])")
    for f in _all_files(root):
        if f.endswith(".parquet"):
            continue
        fs, p = io.filesystem(f)
        with fs.open_input_file(p) as fh:
            data = fh.read()
        found = {x.decode() for x in pattern.findall(data)}
        if found:
            m.report.found.update(found)
            io.delete_file(f)
            report.add("reports", root, files_deleted=1)


def purge_csv(path: str, m: Matcher) -> int:
    """Remove the members' records from a CSV sheet with a ``member_id`` column; every other
    record keeps its exact bytes. Returns the records removed."""
    from lantern_batch.teacher.curation import restore_cell

    text = io.read_text(path)
    consumed: list[str] = []

    def lines():
        for line in StringIO(text, newline=""):
            consumed.append(line)
            yield line

    reader = csv.reader(lines())
    try:
        header = next(reader)
    except StopIteration:
        return 0
    if "member_id" not in header:
        return 0
    col = header.index("member_id")
    out = ["".join(consumed)]
    consumed.clear()
    removed = 0
    for record in reader:
        raw = "".join(consumed)
        consumed.clear()
        mid = restore_cell(record[col]) if len(record) > col else None
        if mid is not None and mid in m.idset:
            removed += 1
            m.report.found.add(mid)
            continue
        out.append(raw)
    if removed:
        io.write_text(path, "".join(out))
    return removed


# --------------------------------------------------------------------------- the job


def _destinations(cfg: ForgetConfig) -> list[str]:
    dirs = [io.join(cfg.out, tb.TOMBSTONE_DIR)]
    if cfg.tombstones:
        dirs.append(cfg.tombstones)
    dirs += [io.join(r, tb.TOMBSTONE_DIR) for r in [*cfg.precompute, *cfg.synthesize]]
    seen: dict[str, str] = {}
    for d in dirs:
        seen.setdefault(d.rstrip("/"), d)
    return list(seen.values())


def run(cfg: ForgetConfig) -> int:
    """Entry point of ``lantern-batch forget``; returns the exit code (0 complete, 1 incomplete)."""
    t0 = time.perf_counter()
    ids = read_member_ids(cfg.members)
    key = tb.forget_key(required=True)
    kid = tb.key_id(key)  # type: ignore[arg-type]
    forget_id = tb.new_forget_id()
    report = Report(forget_id, len(ids))
    m = Matcher(ids, report)
    destinations = _destinations(cfg)
    for d in destinations:  # refuse to mix keys before writing anything
        tb.check_key(tb.read_tombstones([d])[1], key, d)
    event(log, "forget.start", forget_id=forget_id, members=len(ids), tombstone_dirs=len(destinations),
          precompute_roots=len(cfg.precompute), synthesize_roots=len(cfg.synthesize))

    hashes = [tb.member_hash(key, i) for i in ids]  # type: ignore[arg-type]
    for d in destinations:
        report.tombstones.append(tb.write_tombstone(d, hashes, kid, forget_id))
    event(log, "forget.tombstones_written", files=len(report.tombstones), members=len(hashes))

    status, error = "failed", None
    try:
        pending = []
        for root in cfg.precompute:
            pending += purge_precompute(root, m, cfg, report, forget_id)
        for root in cfg.synthesize:
            purge_synthesize(root, m, cfg, report, forget_id)
        for root in cfg.distill:
            purge_tree(root, "distill", m, report)
        for root in cfg.curation:
            purge_tree(root, "curation", m, report, with_csv=True)
        for root in cfg.tables:
            purge_tree(root, "tables", m, report)
        for root in cfg.reports:
            purge_reports(root, m, report)
        if pending:
            time.sleep(cfg.gc_grace_s)
            collect_pending(pending, cfg, report, forget_id)
        status = "incomplete" if report.incomplete else "complete"
    except BaseException as exc:
        error = type(exc).__name__
        raise
    finally:
        body = report.to_json(kid, status, error)
        body["seconds"] = round(time.perf_counter() - t0, 2)
        path = io.join(cfg.out, f"report-{forget_id}.json")
        io.write_text(path, json.dumps(body, indent=2, sort_keys=True) + "\n")
        for table, counts in sorted(report.tables.items()):
            event(log, "forget.table", table=table, **dict(sorted(counts.items())))
        event(log, "forget.done", forget_id=forget_id, status=status, members=len(ids),
              members_found=len(report.found), skipped=len(report.incomplete), report=path,
              seconds=body["seconds"])
    removed = sum(c.get("rows_removed", 0) for c in report.tables.values())
    print(f"forget: {status}: {len(report.found)} of {len(ids)} members found, {removed} rows removed; "
          f"report {path}")
    if report.incomplete:
        print(f"forget: {len(report.incomplete)} parts skipped (see 'incomplete' in the report); "
              "rerun forget with the same members file", flush=True)
        return 1
    return 0
