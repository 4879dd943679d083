"""Validation, de-duplication and the broadcast join, on the dirty tiny world (no Ray)."""

import collections

import pyarrow as pa
import pyarrow.compute as pc

from lantern_batch.io import read_table, write_table
from lantern_batch.schema import RowLimits
from lantern_batch.teacher.inputs import (
    PairJoiner,
    content_index,
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
    # Content only: a touched-but-unchanged profile keeps its fingerprint (and its label).
    assert a == fingerprint({"member_id": "m", "skills": ["x"], "updated_at": "2027-01-01"}, {"job_id": "j"}, None)


def _side(world, out):
    members, bad_m, _ = prepare_side_table(str(world / "members"), "members", RowLimits(), str(out / "errors"))
    jobs, bad_j, _ = prepare_side_table(str(world / "jobs"), "jobs", RowLimits(), str(out / "errors"))
    return members, bad_m, jobs, bad_j


def _pass(world, out, done):
    """Scan (with this teacher's done rows) and join, as a resumed pass does."""
    members, bad_m, jobs, bad_j = _side(world, out)
    tasks = pair_read_tasks(str(world / "pairs"))
    scan = scan_pairs(tasks, 1.0, frozenset(), done, content_index(members, "members"), content_index(jobs, "jobs"))
    joiner = PairJoiner(members, jobs, bad_m, bad_j, scan["copy_index"], scan["skip"], 1.0, RowLimits())
    return scan, pa.concat_tables([joiner(read_row_group(t.__dict__)) for t in tasks])


def test_resume_skips_unchanged_pairs_and_relabels_changed_ones(tiny_world, tmp_path):
    world = tmp_path / "w"
    for name in ("members", "jobs", "pairs"):
        write_table(read_table(str(tiny_world / name)), str(world / name))
    _, first = _pass(world, tmp_path, {})
    good = first.filter(pc.is_null(first.column("_err_reason")))
    done = dict(zip(good.column("_row_key").to_pylist(), good.column("input_fingerprint").to_pylist(), strict=True))
    assert len(done) > 10 and None not in done.values()

    scan, joined = _pass(world, tmp_path, done)  # nothing changed: every labelled pair is skipped
    assert scan["skipped_done"] == len(done) and scan["changed_done"] == 0 and scan["changed"] == frozenset()
    assert set(joined.column("_row_key").to_pylist()).isdisjoint(done)

    # One member's summary changes; another member is only touched (updated_at), not changed.
    members = read_table(str(world / "members")).to_pylist()
    changed_id, touched_id = good.column("member_id")[0].as_py(), None
    for m in members:
        if m["member_id"] == changed_id:
            m["summary"] = (m["summary"] or "") + " Now also leads the on-call rota."
    touched_id = next(r for r in good.column("member_id").to_pylist() if r != changed_id)
    for m in members:
        if m["member_id"] == touched_id:
            m["updated_at"] = m["updated_at"].replace(year=m["updated_at"].year + 1) if m["updated_at"] else None
    schema = read_table(str(world / "members")).schema
    write_table(pa.Table.from_pylist(members, schema=schema), str(world / "members"), basename="part-00000.parquet")
    for f in (world / "members").glob("*.parquet"):
        if f.name != "part-00000.parquet":
            f.unlink()
    scan, joined = _pass(world, tmp_path, done)
    expected = {k for k, m in zip(good.column("_row_key").to_pylist(), good.column("member_id").to_pylist(), strict=True)
                if m == changed_id}
    assert scan["changed"] == expected and scan["changed_done"] == len(expected) >= 1
    assert scan["skipped_done"] == len(done) - len(expected)
    relabelled = joined.filter(pc.is_null(joined.column("_err_reason")))
    assert set(relabelled.column("_row_key").to_pylist()) == expected
    assert not set(relabelled.column("input_fingerprint").to_pylist()) & set(done.values())
    assert scan["rows_in"] == scan["skipped_done"] + joined.num_rows  # conserved


def test_scan_and_join_agree_on_every_input_fingerprint(tiny_world_dirty, tmp_path):
    members, bad_m, jobs, bad_j = _side(tiny_world_dirty, tmp_path)
    _, joined = _pass(tiny_world_dirty, tmp_path, {})
    good = joined.filter(pc.is_null(joined.column("_err_reason")))
    done = {k: "stale" for k in good.column("_row_key").to_pylist()}
    scan, _ = _pass(tiny_world_dirty, tmp_path, done)
    assert scan["changed"] == set(done)  # every recorded fingerprint differs from the scan's
    done = dict(zip(good.column("_row_key").to_pylist(), good.column("input_fingerprint").to_pylist(), strict=True))
    assert _pass(tiny_world_dirty, tmp_path, done)[0]["changed"] == frozenset()
