"""Human review of teacher labels: export a review sheet, import the decisions as D_seed.

    lantern-batch curate export --labels runs/demo/synth/labels/teacher=t1 --out runs/demo/curation
    # reviewers fill accept / edited_label / edited_explanation / reject_reason in review.csv
    lantern-batch curate import --review runs/demo/curation/review.csv --out runs/demo/curation

The sheet (``review.csv`` and ``review.parquet``, the same rows) has one row per pair: ids,
a short member and job summary (the same compressed text the prompts use), the teacher's
label, probabilities, dimension scores (JSON) and explanation, and four empty columns for the
reviewer. ``accept`` takes yes/no (also y/n, true/false, 1/0, accept/reject).

Import rules, one outcome per sheet row (counts conserve):

* accepted -> a D_seed row (:data:`~lantern_batch.schema.SEED_SCHEMA`) with the edited label /
  explanation when given; ``source`` is ``curated:<teacher>`` or ``curated-edited:<teacher>``;
* rejected -> ``rejected/`` with the reviewer's reason (``rejected_by_reviewer`` if blank);
* blank ``accept`` -> rejected as ``undecided``; an edited label outside High/Medium/Low ->
  ``bad_edited_label``; an accepted row without any explanation -> ``empty_explanation``;
  a repeated pair id -> ``duplicate_pair`` (the first row wins).

``review.csv`` is opened in spreadsheets, so a text cell that a spreadsheet would run as a
formula (one starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return: OWASP's CSV
injection list) is written with a leading ``'``; importing a CSV removes it again, so the round
trip is lossless (so is text a CSV reader could take for null, ``NA`` or ``""``, and text with
line breaks). ``review.parquet`` holds the values unchanged.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from lantern_batch import io
from lantern_batch.config import write_resolved_config
from lantern_batch.errors import InputError
from lantern_batch.logs import event, get_logger
from lantern_batch.prompts import job_text, member_text
from lantern_batch.schema import DIMENSIONS, FIT_LABELS, SEED_SCHEMA
from lantern_batch.teacher.config import CurateExportConfig, CurateImportConfig

log = get_logger(__name__)

REVIEW_COLUMNS = ["accept", "edited_label", "edited_explanation", "reject_reason"]
SHEET_COLUMNS = ["pair_id", "member_id", "job_id", "teacher", "prompt_version", "member_summary",
                 "job_summary", "fit_label", "p_high", "p_medium", "p_low", "dimension_scores",
                 "explanation", *REVIEW_COLUMNS]
REJECTED_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("member_id", pa.string()), ("job_id", pa.string()),
    ("teacher", pa.string()), ("fit_label", pa.string()), ("explanation", pa.string()),
    ("reason", pa.string()),
])
_FORMULA = re.compile(r"'*[=+\-@\t\r]")
"""A cell a spreadsheet would evaluate, after any quotes of earlier neutralisation."""
_YES = {"yes", "y", "true", "1", "accept", "accepted"}
_NO = {"no", "n", "false", "0", "reject", "rejected"}


def _one_line(text: str) -> str:
    return " | ".join(line for line in text.splitlines() if line)


def review_sheet(labels: pa.Table, members: dict[str, dict], jobs: dict[str, dict],
                 summary_chars: int = 300) -> pa.Table:
    """Build the review sheet from teacher label rows (pure function)."""
    rows = []
    for r in labels.to_pylist():
        m, j = members.get(r["member_id"]), jobs.get(r["job_id"])
        dims = r.get("dimension_scores")
        rows.append({
            "pair_id": r["pair_id"], "member_id": r["member_id"], "job_id": r["job_id"],
            "teacher": r.get("teacher"), "prompt_version": r.get("prompt_version"),
            "member_summary": _one_line(member_text(m, summary_chars // 4)) if m else None,
            "job_summary": _one_line(job_text(j, summary_chars // 4)) if j else None,
            "fit_label": r["fit_label"],
            "p_high": r.get("p_high"), "p_medium": r.get("p_medium"), "p_low": r.get("p_low"),
            "dimension_scores": json.dumps(dims) if dims else None,
            "explanation": r.get("explanation"),
            **{c: None for c in REVIEW_COLUMNS},
        })
    schema = pa.schema([(c, pa.float32() if c.startswith("p_") else pa.string()) for c in SHEET_COLUMNS])
    return pa.Table.from_pylist(rows, schema=schema)


def neutralise_cell(value: str | None) -> str | None:
    """``value`` with a leading ``'`` when a spreadsheet would run it as a formula.

    Values that already start with quotes before a formula character get one more quote, so
    :func:`restore_cell` inverts this exactly for every string.
    """
    return "'" + value if value and _FORMULA.match(value) else value


def restore_cell(value: str | None) -> str | None:
    """Inverse of :func:`neutralise_cell`: drop the one ``'`` it added, leave anything else."""
    return value[1:] if value and value.startswith("'") and _FORMULA.match(value, 1) else value


def _map_text_columns(table: pa.Table, fn) -> pa.Table:
    for i, field in enumerate(table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            values = [fn(v) for v in table.column(i).to_pylist()]
            table = table.set_column(i, field, pa.array(values, field.type))
    return table


def csv_safe(sheet: pa.Table) -> pa.Table:
    """The sheet with every text cell passed through :func:`neutralise_cell` (for ``review.csv``)."""
    return _map_text_columns(sheet, neutralise_cell)


def csv_restored(table: pa.Table) -> pa.Table:
    """A sheet read from CSV with every text cell passed through :func:`restore_cell`."""
    return _map_text_columns(table, restore_cell)


EXPORT_COLUMNS = ["pair_id", "member_id", "job_id", "teacher", "prompt_version", "fit_label", "p_high",
                  "p_medium", "p_low", "dimension_scores", "explanation"]


def first_labels(path: str, limit: int | None, batch_rows: int = 65_536) -> pa.Table:
    """The first ``limit`` label rows by pair id (ties in file and row order; null ids last),
    the sheet's rows. Streams: the labels are read a batch at a time and only the best
    ``limit`` rows so far are kept, so memory is bounded by ``limit``, not by the labels
    (without a limit the sheet is every row, read whole)."""
    if limit is None:
        return io.read_table(path, columns=EXPORT_COLUMNS, table="teacher labels").sort_by("pair_id")
    best: pa.Table | None = None
    for batch in io.iter_table_batches(path, EXPORT_COLUMNS, table="teacher labels", batch_rows=batch_rows):
        if best is not None and best.num_rows == limit:  # only rows that can still be in the first `limit`
            last = best.column("pair_id")[-1]
            if last.is_valid:
                batch = batch.filter(pc.fill_null(pc.less_equal(batch.column("pair_id"), last), False))
            if batch.num_rows == 0:
                continue
        both = batch if best is None else pa.concat_tables([best, batch.cast(best.schema)])
        # sort_by is stable: earlier rows stay first among equal pair ids, as in one sort of all rows
        best = both.sort_by("pair_id").slice(0, limit).combine_chunks()
    return best if best is not None else io.read_table(path, columns=EXPORT_COLUMNS, table="teacher labels")


def _rows_by_id(path: str, table: str, ids: set[str]) -> dict[str, dict]:
    """{id: row} of the ``members`` / ``jobs`` rows with these ids (the last row of an id wins),
    streaming the table and keeping only those."""
    key = "member_id" if table == "members" else "job_id"
    wanted = pa.array(list(ids), pa.string())
    rows: dict[str, dict] = {}
    for batch in io.iter_input_batches(path, table):
        hit = batch.filter(pc.is_in(batch.column(key), value_set=wanted))
        rows.update((r[key], r) for r in hit.to_pylist())
    return rows


def run_export(cfg: CurateExportConfig) -> int:
    """Entry point of ``lantern-batch curate export``."""
    labels = first_labels(cfg.labels, cfg.limit)  # pair ids are hashes: the first N are a fair sample
    members = _rows_by_id(cfg.members, "members", set(labels.column("member_id").to_pylist()))
    jobs = _rows_by_id(cfg.jobs, "jobs", set(labels.column("job_id").to_pylist()))
    sheet = review_sheet(labels, members, jobs, cfg.summary_chars)
    write_resolved_config(cfg, cfg.out, name="export_config.yaml")
    io.write_table(sheet, cfg.out, basename="review.parquet")
    buf = pa.BufferOutputStream()
    pacsv.write_csv(csv_safe(sheet), buf)
    io.write_text(io.join(cfg.out, "review.csv"), buf.getvalue().to_pybytes().decode())
    event(log, "curate.export", rows=sheet.num_rows, out=cfg.out)
    return 0


_CSV_PARSE = pacsv.ParseOptions(newlines_in_values=True)
"""Cells may hold line breaks (explanations, edits, a neutralised ``'\\r...``): without this the
reader splits the file into blocks at any line break, and a sheet over one block fails."""
_CSV_CONVERT = pacsv.ConvertOptions(
    column_types={c: pa.string() for c in SHEET_COLUMNS if not c.startswith("p_")},
    strings_can_be_null=True, null_values=[""], quoted_strings_can_be_null=False)
"""Lossless for what :func:`run_export` wrote: pyarrow writes null as a bare empty field and
every string quoted, so only a bare empty field is null; ``""``, ``NA`` or ``null`` stay text."""
_NULL_WORDS = frozenset(pacsv.ConvertOptions().null_values)
"""What a CSV reader takes for null by default (``NA``, ``N/A``, ``null``...): in the reviewer's
columns, no value, as before."""


def _reviewer_nulls(table: pa.Table) -> pa.Table:
    """The reviewer's columns with blanks and null words as null (spreadsheets write an empty
    cell bare, so the lossless reading keeps a quoted one as ``""``)."""
    for name in REVIEW_COLUMNS:
        if name in table.column_names:
            i = table.column_names.index(name)
            values = [None if v is None or v in _NULL_WORDS else v for v in table.column(i).to_pylist()]
            table = table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))
    return table


def _read_review(path: str) -> pa.Table:
    if not io.exists(path):
        raise InputError(f"review sheet not found: {path}")
    if path.endswith(".csv"):
        fs, p = io.filesystem(path)
        with fs.open_input_stream(p) as f:
            data = f.read()
        # One block: pyarrow drops the LF of a CRLF inside a quoted cell when a block boundary
        # falls between the CR and the LF (pyarrow 26; a review sheet fits in memory).
        one_block = pacsv.ReadOptions(block_size=min(max(len(data) + 1, 1 << 20), (1 << 31) - 1))
        table = pacsv.read_csv(pa.BufferReader(data), read_options=one_block, parse_options=_CSV_PARSE,
                               convert_options=_CSV_CONVERT)
        table = csv_restored(_reviewer_nulls(table))
    else:
        table = io.read_table(path, table="review")
    required = ["pair_id", "member_id", "job_id", "fit_label", "explanation", "accept", "edited_label",
                "edited_explanation"]
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise InputError(f"review sheet {path}: missing column(s) {', '.join(missing)}")
    return table


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def apply_decisions(review: pa.Table, source: str = "curated") -> tuple[pa.Table, pa.Table, dict]:
    """Apply reviewer decisions (pure function): (D_seed rows, rejected rows, counts)."""
    seed, rejected = [], []
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    for r in review.to_pylist():
        pid, teacher = _text(r.get("pair_id")), _text(r.get("teacher")) or "unknown"

        def reject(reason: str, r: dict = r, pid: str | None = pid, teacher: str = teacher) -> None:
            rejected.append({"pair_id": pid, "member_id": _text(r.get("member_id")), "job_id": _text(r.get("job_id")),
                             "teacher": teacher, "fit_label": _text(r.get("fit_label")),
                             "explanation": _text(r.get("explanation")), "reason": reason})
            counts[f"rejected:{reason}"] += 1

        if pid is None or pid in seen:
            reject("duplicate_pair" if pid else "missing_pair_id")
            continue
        seen.add(pid)
        decision = (_text(r.get("accept")) or "").lower()
        if decision in _NO:
            reject(_text(r.get("reject_reason")) or "rejected_by_reviewer")
            continue
        if decision not in _YES:
            reject("undecided" if not decision else "bad_accept_value")
            continue
        edited_label = _text(r.get("edited_label"))
        label = (edited_label or _text(r.get("fit_label")) or "").capitalize()
        if label not in FIT_LABELS:
            reject("bad_edited_label" if edited_label else "bad_label")
            continue
        edited_expl = _text(r.get("edited_explanation"))
        explanation = edited_expl or _text(r.get("explanation"))
        if not explanation:
            reject("empty_explanation")
            continue
        dims = None
        raw = _text(r.get("dimension_scores"))
        if raw:
            try:
                d = json.loads(raw)
                dims = {k: float(d[k]) for k in DIMENSIONS} if all(k in d for k in DIMENSIONS) else None
            except (ValueError, TypeError):
                dims = None
        edited = bool(edited_expl) or (edited_label is not None and edited_label.capitalize() != _text(r.get("fit_label")))
        seed.append({"pair_id": pid, "member_id": _text(r.get("member_id")), "job_id": _text(r.get("job_id")),
                     "fit_label": label, "dimension_scores": dims, "explanation": explanation,
                     "source": f"{source}{'-edited' if edited else ''}:{teacher}"})
        counts["accepted_edited" if edited else "accepted"] += 1
    return (pa.Table.from_pylist(seed, schema=SEED_SCHEMA),
            pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA), dict(counts))


def run_import(cfg: CurateImportConfig) -> int:
    """Entry point of ``lantern-batch curate import``."""
    review = _read_review(cfg.review)
    seed, rejected, counts = apply_decisions(review, cfg.source)
    write_resolved_config(cfg, cfg.out, name="import_config.yaml")
    io.write_table(seed, io.join(cfg.out, "seed"), basename="part-00000.parquet")
    io.write_table(rejected, io.join(cfg.out, "rejected"), basename="part-00000.parquet")
    summary = {"rows": review.num_rows, "seed_rows": seed.num_rows, "rejected_rows": rejected.num_rows,
               "by_outcome": counts}
    io.write_text(io.join(cfg.out, "curation_summary.json"), json.dumps(summary, indent=2) + "\n")
    event(log, "curate.import", rows=review.num_rows, seed=seed.num_rows, rejected=rejected.num_rows)
    return 0
