"""Curation: the review sheet, the import rules (CSV round trip) and CSV formula neutralisation."""

import pyarrow as pa
import pyarrow.csv as pacsv

from lantern_batch.io import read_table, write_table
from lantern_batch.schema import DIMENSIONS, SEED_SCHEMA, TEACHER_LABELS_SCHEMA
from lantern_batch.teacher.config import CurateExportConfig, CurateImportConfig
from lantern_batch.teacher.curation import (
    REVIEW_COLUMNS,
    SHEET_COLUMNS,
    _read_review,
    apply_decisions,
    csv_safe,
    neutralise_cell,
    restore_cell,
    run_export,
    run_import,
)


def _labels(world):
    pairs = read_table(str(world / "pairs")).slice(0, 6).to_pylist()
    rows = []
    for i, p in enumerate(pairs):
        rows.append({"pair_id": f"p{i}", "member_id": p["member_id"], "job_id": p["job_id"], "teacher": "t1",
                     "fit_label": "High", "p_high": 0.7, "p_medium": 0.2, "p_low": 0.1,
                     "dimension_scores": {d: 3.0 for d in DIMENSIONS}, "explanation": f"Reason {i}.",
                     "prompt_version": "v1", "model_ref": "m", "input_fingerprint": "f", "created_at": None})
    return pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in TEACHER_LABELS_SCHEMA]))


def test_export_then_import_roundtrip(tiny_world, tmp_path):
    write_table(_labels(tiny_world), str(tmp_path / "labels"))
    cfg = CurateExportConfig(labels=str(tmp_path / "labels"), members=str(tiny_world / "members"),
                             jobs=str(tiny_world / "jobs"), out=str(tmp_path / "cur"), limit=5)
    assert run_export(cfg) == 0
    sheet = pacsv.read_csv(tmp_path / "cur" / "review.csv").to_pylist()
    assert len(sheet) == 5 and read_table(str(tmp_path / "cur" / "review.parquet")).num_rows == 5
    assert sheet[0]["member_summary"].startswith("Current title:") and sheet[0]["job_summary"].startswith("Title:")
    decisions = [("yes", None, None, None), ("no", None, None, "label too generous"), ("y", "low", "Edited.", None),
                 ("yes", "Great", None, None), (None, None, None, None)]
    for row, (acc, lab, expl, why) in zip(sheet, decisions, strict=True):
        row.update(accept=acc, edited_label=lab, edited_explanation=expl, reject_reason=why)
    sheet.append(dict(sheet[0]))  # a repeated pair
    pacsv.write_csv(pa.Table.from_pylist(sheet), tmp_path / "cur" / "review.csv")
    assert run_import(CurateImportConfig(review=str(tmp_path / "cur" / "review.csv"), out=str(tmp_path / "seed"))) == 0
    seed = read_table(str(tmp_path / "seed" / "seed"))
    rejected = read_table(str(tmp_path / "seed" / "rejected")).to_pylist()
    assert seed.schema.equals(SEED_SCHEMA, check_metadata=False)
    assert seed.num_rows == 2 and seed.num_rows + len(rejected) == len(sheet)
    by_pair = {r["pair_id"]: r for r in seed.to_pylist()}
    edited = by_pair[sheet[2]["pair_id"]]
    assert edited["fit_label"] == "Low" and edited["explanation"] == "Edited." and edited["source"] == "curated-edited:t1"
    assert by_pair[sheet[0]["pair_id"]]["source"] == "curated:t1"
    assert by_pair[sheet[0]["pair_id"]]["dimension_scores"] == {d: 3.0 for d in DIMENSIONS}
    assert sorted(r["reason"] for r in rejected) == ["bad_edited_label", "duplicate_pair", "label too generous", "undecided"]


def test_apply_decisions_empty_explanation_and_bad_accept():
    review = pa.Table.from_pylist([
        {"pair_id": "a", "member_id": "m", "job_id": "j", "fit_label": "High", "explanation": "", "accept": "yes",
         "edited_label": None, "edited_explanation": None},
        {"pair_id": "b", "member_id": "m", "job_id": "j", "fit_label": "High", "explanation": "x", "accept": "maybe",
         "edited_label": None, "edited_explanation": None},
    ])
    seed, rejected, counts = apply_decisions(review)
    assert seed.num_rows == 0
    assert rejected.column("reason").to_pylist() == ["empty_explanation", "bad_accept_value"]


_FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+2", "-2+3", "@SUM(A1:A2)", "\tcmd", "\rcmd",
             "'=already quoted", "''+twice"]
_PLAIN = ["'Tis a fit.", "Plain reason.", "a=b", "x - y"]


def test_neutralise_and_restore_cells():
    for v in _FORMULAS:
        assert neutralise_cell(v) == "'" + v and restore_cell(neutralise_cell(v)) == v
    for v in [*_PLAIN, "", None]:
        assert neutralise_cell(v) == v and restore_cell(v) == v


def test_review_csv_neutralises_formulas_and_import_restores_them(tiny_world, tmp_path):
    labels = _labels(tiny_world)
    values = ["=HYPERLINK(\"http://x\",\"y\")", "+1+2", "@SUM(A1:A2)", "\rcmd", "'=already quoted",
              "'Tis a fit."]
    rows = labels.to_pylist()
    for i, (r, v) in enumerate(zip(rows, values, strict=True)):
        r["explanation"], r["pair_id"] = v, f"{v}#{i}"
    rows[0]["teacher"] = "=cmd|' /C calc'!A0"
    write_table(pa.Table.from_pylist(rows, schema=labels.schema), str(tmp_path / "labels"))
    cfg = CurateExportConfig(labels=str(tmp_path / "labels"), members=str(tiny_world / "members"),
                             jobs=str(tiny_world / "jobs"), out=str(tmp_path / "cur"), limit=None)
    assert run_export(cfg) == 0
    original = read_table(str(tmp_path / "cur" / "review.parquet"))
    raw = pacsv.read_csv(tmp_path / "cur" / "review.csv",
                         parse_options=pacsv.ParseOptions(newlines_in_values=True),
                         convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    formula_starts = ("=", "+", "-", "@", "\t", "\r")
    for column in raw.column_names:
        for cell in raw.column(column).to_pylist():
            assert not (isinstance(cell, str) and cell.startswith(formula_starts)), (column, cell)
    by_pair = {r["pair_id"]: r for r in raw.to_pylist()}
    assert by_pair["'=HYPERLINK(\"http://x\",\"y\")#0"]["teacher"] == "'=cmd|' /C calc'!A0"
    assert {r["explanation"] for r in raw.to_pylist()} == {neutralise_cell(v) for v in values}

    read_back = _read_review(str(tmp_path / "cur" / "review.csv"))
    for column in ("pair_id", "teacher", "explanation", "member_summary", "job_summary", "fit_label"):
        assert read_back.column(column).to_pylist() == original.column(column).to_pylist(), column

    # A reviewer accepts every row in the CSV; D_seed gets the original (non-blank) text back.
    sheet = raw.to_pylist()
    for row in sheet:
        row["accept"] = "yes"
    pacsv.write_csv(pa.Table.from_pylist(sheet), tmp_path / "cur" / "review.csv")
    assert run_import(CurateImportConfig(review=str(tmp_path / "cur" / "review.csv"), out=str(tmp_path / "seed"))) == 0
    seed = {r["pair_id"]: r for r in read_table(str(tmp_path / "seed" / "seed")).to_pylist()}
    assert len(seed) == len(values)
    for i, v in enumerate(values):
        assert seed[f"{v}#{i}".strip()]["explanation"] == v.strip()  # import strips blanks
    assert seed[f"{values[0]}#0"]["source"] == "curated:=cmd|' /C calc'!A0"


def _sheet(values: list[str | None], reviewer: str | None = None) -> pa.Table:
    """A review sheet whose every text column holds ``values`` (review columns: ``reviewer``)."""
    n = len(values)
    columns = {}
    for c in SHEET_COLUMNS:
        if c.startswith("p_"):
            columns[c] = pa.array([0.5] * n, pa.float32())
        elif c == "pair_id":
            columns[c] = pa.array([f"p{i}" for i in range(n)])
        elif c in REVIEW_COLUMNS:
            columns[c] = pa.array([reviewer] * n, pa.string())
        else:
            columns[c] = pa.array(values, pa.string())
    return pa.table(columns)


def _write_sheet_csv(sheet: pa.Table, path) -> None:
    buf = pa.BufferOutputStream()
    pacsv.write_csv(csv_safe(sheet), buf)  # what run_export writes
    path.write_bytes(buf.getvalue().to_pybytes())


# Text that CSV readers take for null by default, empty text, formulas and plain text.
_NULL_LIKE = ["NA", "N/A", "n/a", "null", "NULL", "NaN", "nan", "-NaN", "#N/A", "1.#QNAN", "-1.#IND", "", None]


def test_review_csv_round_trip_keeps_text_a_reader_could_take_for_null(tmp_path):
    """Every exported text cell comes back from review.csv exactly as it was in the sheet:
    null stays null, and '', 'NA', 'null', 'NaN'... stay text (a member id or an explanation
    'N/A' must not turn into a missing value on import)."""
    values = [*_NULL_LIKE, *_FORMULAS, *_PLAIN]
    sheet = _sheet(values)
    _write_sheet_csv(sheet, tmp_path / "review.csv")
    back = _read_review(str(tmp_path / "review.csv"))
    for column in SHEET_COLUMNS:
        if column in REVIEW_COLUMNS or column.startswith("p_"):
            continue
        assert back.column(column).to_pylist() == sheet.column(column).to_pylist(), column


def test_reviewer_blank_and_null_words_still_mean_no_decision(tmp_path):
    """The reviewer's columns keep reading a blank or a null word ('NA', 'N/A') as no value."""
    for word in ["NA", "N/A", "null", ""]:
        _write_sheet_csv(_sheet(["x"], reviewer=word), tmp_path / "review.csv")
        back = _read_review(str(tmp_path / "review.csv"))
        for column in REVIEW_COLUMNS:
            assert back.column(column).to_pylist() == [None], (word, column)


def test_review_csv_with_line_breaks_in_cells_imports_past_the_first_block(tmp_path):
    """A sheet larger than the CSV reader's 1 MiB block, with line breaks (and a carriage
    return after the neutralising quote) inside cells, imports whole and unchanged."""
    n = 400
    values = [f"\rcmd {i}\n" + "line two -x\r\n" * 300 + "=end" for i in range(n)]
    sheet = _sheet(values)
    _write_sheet_csv(sheet, tmp_path / "review.csv")
    assert (tmp_path / "review.csv").stat().st_size > 2 * (1 << 20)
    back = _read_review(str(tmp_path / "review.csv"))
    assert back.num_rows == n
    assert back.column("explanation").to_pylist() == values


def test_export_with_a_limit_streams_labels_over_several_files_and_picks_the_first_by_pair_id(tiny_world, tmp_path):
    """The first `limit` rows by pair id, kept while the labels stream by batch (ties keep file and
    row order, null ids last): the same sheet as sorting every label row at once."""
    import random

    import pyarrow.parquet as pq

    from lantern_batch.teacher.curation import EXPORT_COLUMNS, first_labels

    pairs = read_table(str(tiny_world / "pairs")).to_pylist()
    rng = random.Random(7)
    base = _labels(tiny_world).to_pylist()[0]
    rows = []
    for i, p in enumerate(pairs[:150]):
        pid = None if i % 37 == 0 else f"p{rng.randrange(60):03d}"  # ties and null ids
        rows.append({**base, "pair_id": pid, "member_id": p["member_id"], "job_id": p["job_id"],
                     "explanation": f"Row {i}."})
    schema = _labels(tiny_world).schema
    (tmp_path / "labels").mkdir()
    for f in range(3):
        pq.write_table(pa.Table.from_pylist(rows[f * 50:(f + 1) * 50], schema=schema),
                       tmp_path / "labels" / f"part-{f}.parquet", row_group_size=9)
    everything = read_table(str(tmp_path / "labels"), columns=EXPORT_COLUMNS).sort_by("pair_id")
    for limit in (1, 40, 149, 150, 500):
        got = first_labels(str(tmp_path / "labels"), limit, batch_rows=8)
        assert got.equals(everything.slice(0, limit)), limit
    # The members and jobs of the sheet come from tables read in several files too.
    for name in ("members", "jobs"):
        table = read_table(str(tiny_world / name))
        (tmp_path / name).mkdir()
        for f in range(3):
            pq.write_table(table.slice(f * table.num_rows // 3, table.num_rows // 3 + 1),
                           tmp_path / name / f"part-{f}.parquet", row_group_size=7)
    cfg = CurateExportConfig(labels=str(tmp_path / "labels"), members=str(tmp_path / "members"),
                             jobs=str(tmp_path / "jobs"), out=str(tmp_path / "cur"), limit=40)
    assert run_export(cfg) == 0
    sheet = read_table(str(tmp_path / "cur" / "review.parquet"))
    assert sheet.column("explanation").to_pylist() == everything.slice(0, 40).column("explanation").to_pylist()
    assert all(s is not None for s in sheet.column("member_summary").to_pylist())
    assert all(s is not None for s in sheet.column("job_summary").to_pylist())
