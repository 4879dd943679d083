"""Commit markers, resume sets and clean-up of files left by a killed run."""

import pyarrow as pa

from lantern_batch.schema import ERRORS_SCHEMA, TEACHER_LABELS_SCHEMA
from lantern_batch.teacher import store


def _batch(keys, stages, reasons):
    return store.marker_rows(keys, stages, reasons)


def test_batch_id_is_deterministic_and_order_free():
    a = store.batch_id(["k1", "k2"], "t", "v1")
    assert a == store.batch_id(["k2", "k1"], "t", "v1")
    assert a != store.batch_id(["k1", "k2"], "t", "v2") and len(a) == 24


def test_commit_then_resume_sets_and_totals(tmp_path):
    out = str(tmp_path)
    markers = store.marker_rows(["p1#0", "p2#0", "p3#1"], [None, "teacher", "dedup"],
                                [None, "over_context", "duplicate_pair"], [100, 3000, 0], [40, 0, 0])
    bid = store.commit_batch(out, "t", "v1", TEACHER_LABELS_SCHEMA.empty_table(), ERRORS_SCHEMA.empty_table(), markers)
    assert (tmp_path / "_commits" / "teacher=t" / "prompt_version=v1" / f"{bid}.parquet").is_file()
    done, inputs = store.load_done(out, "t", "v1")
    assert done == {"p1#0", "p2#0"} and inputs == {"p3#1"}
    other_done, other_inputs = store.load_done(out, "u", "v1")
    assert other_done == frozenset() and other_inputs == {"p3#1"}  # input errors are written once
    assert store.load_done(out, "t", "v2")[0] == frozenset()
    totals = store.output_totals(out, [("t", "v1")])
    assert totals["teachers"]["t"] == {"prompt_version": "v1", "labelled": 1, "errors": 1,
                                       "errors_by_reason": {"over_context": 1},
                                       "prompt_tokens": 3100, "output_tokens": 40}
    assert totals["input_errors_by_reason"] == {"duplicate_pair": 1}


def test_clean_orphans_deletes_only_uncommitted_part_files(tmp_path):
    out = str(tmp_path)
    labels = pa.Table.from_pylist([], schema=TEACHER_LABELS_SCHEMA)
    bid = store.commit_batch(out, "t", "v1", labels, ERRORS_SCHEMA.empty_table(), _batch(["a#0"], [None], [None]))
    kept = tmp_path / "labels" / "teacher=t" / f"part-{bid}.parquet"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(b"committed")
    orphan = tmp_path / "labels" / "teacher=t" / ("part-" + "f" * 24 + ".parquet")
    orphan.write_bytes(b"partial")
    orphan_err = tmp_path / "errors" / ("part-" + "e" * 24 + ".parquet")
    orphan_err.parent.mkdir(parents=True, exist_ok=True)
    orphan_err.write_bytes(b"partial")
    side = tmp_path / "errors" / "part-input-members.parquet"
    side.write_bytes(b"side table errors")
    deleted = store.clean_orphans(out)
    assert sorted(deleted) == sorted([str(orphan), str(orphan_err)])
    assert kept.exists() and side.exists() and not orphan.exists()
