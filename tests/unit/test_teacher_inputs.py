"""Validation, de-duplication and the broadcast join, on the dirty tiny world (no Ray)."""

import collections

import pyarrow as pa
import pyarrow.compute as pc

from lantern_batch.io import read_table, write_table
from lantern_batch.schema import RowLimits
from lantern_batch.teacher.inputs import (
    PairJoiner,
    fingerprint,
    pair_read_tasks,
    prepare_side_table,
    read_row_group,
    scan_pairs,
)
from lantern_batch.teacher.records import JOINED_SCHEMA


def _join_all(world, out, skip=frozenset(), fraction=1.0):
    members, bad_m, _ = prepare_side_table(str(world / "members"), "members", RowLimits(), str(out / "errors"))
    jobs, bad_j, _ = prepare_side_table(str(world / "jobs"), "jobs", RowLimits(), str(out / "errors"))
    tasks = pair_read_tasks(str(world / "pairs"))
    scan = scan_pairs(tasks, fraction, skip)
    joiner = PairJoiner(members, jobs, bad_m, bad_j, scan["copy_index"], skip, fraction, RowLimits())
    joined = pa.concat_tables([joiner(read_row_group(t.__dict__)) for t in tasks])
    return scan, joined


def test_every_pair_row_is_joined_or_an_error(tiny_world_dirty, tmp_path):
    scan, joined = _join_all(tiny_world_dirty, tmp_path)
    pairs = read_table(str(tiny_world_dirty / "pairs"))
    assert joined.schema.equals(JOINED_SCHEMA)
    assert joined.num_rows == scan["rows_in"] == pairs.num_rows
    errs = joined.filter(pc.is_valid(joined.column("_err_reason")))
    good = joined.filter(pc.is_null(joined.column("_err_reason")))
    assert errs.num_rows > 0 and good.num_rows > 0
    reasons = collections.Counter(errs.column("_err_reason").to_pylist())
    assert reasons["duplicate_pair"] == scan["duplicates"] > 0
    assert set(errs.column("_err_stage").to_pylist()) <= {"validate", "dedup", "join"}
    # Good rows carry their member and job; error rows carry neither.
    assert pc.all(pc.is_valid(good.column("member"))).as_py() and pc.all(pc.is_valid(good.column("job"))).as_py()
    assert good.column("member").combine_chunks().field("member_id").to_pylist() == good.column("member_id").to_pylist()
    assert pc.all(pc.is_null(errs.column("member"))).as_py()
    # Row keys are unique, also across copies of a pair.
    keys = joined.column("_row_key").to_pylist()
    assert len(set(keys)) == len(keys)
    assert (tmp_path / "errors" / "part-input-members.parquet").is_file()


def test_first_copy_wins_and_skip_and_sample(tiny_world, tmp_path):
    world = tmp_path / "w"
    pairs = read_table(str(tiny_world / "pairs"))
    first = pairs.slice(0, 1)
    doubled = pa.concat_tables([pairs, first.cast(pairs.schema)])
    for name in ("members", "jobs"):
        write_table(read_table(str(tiny_world / name)), str(world / name))
    write_table(doubled, str(world / "pairs"))
    scan, joined = _join_all(world, tmp_path)
    m, j = first.column("member_id")[0].as_py(), first.column("job_id")[0].as_py()
    rows = [r for r in joined.to_pylist() if r["member_id"] == m and r["job_id"] == j]
    assert [r["_err_reason"] for r in rows] == [None, "duplicate_pair"]
    assert [r["_row_key"].split("#")[1] for r in rows] == ["0", "1"]
    # Skipping done keys and sampling are applied identically by the scan and the joiner.
    skip = frozenset(joined.column("_row_key").to_pylist()[:10])
    scan2, joined2 = _join_all(world, tmp_path, skip=skip, fraction=0.5)
    assert scan2["skipped_done"] + scan2["not_sampled"] + joined2.num_rows == scan2["rows_in"]
    assert not set(joined2.column("_row_key").to_pylist()) & skip


def test_fingerprint_changes_with_inputs():
    a = fingerprint({"member_id": "m", "skills": ["x"]}, {"job_id": "j"}, None)
    assert a == fingerprint({"skills": ["x"], "member_id": "m"}, {"job_id": "j"}, None)
    assert a != fingerprint({"member_id": "m", "skills": ["y"]}, {"job_id": "j"}, None)
    assert a != fingerprint({"member_id": "m", "skills": ["x"]}, {"job_id": "j"}, "q")
