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


def test_sharded_scan_decides_exactly_as_one_shard_and_each_shard_holds_its_bucket(tiny_world_dirty, tmp_path):
    """The scan in shards (each a hash bucket of the pairs, with its own done rows read from the
    markers, writing plan files) gives the counts, later copies, skips, changed keys and joined
    rows of the scan in one shard; no shard holds more than its bucket."""
    import shutil

    import pyarrow.parquet as pq

    from lantern_batch.forget import tombstones as tb
    from lantern_batch.teacher import job as teacher_job
    from lantern_batch.teacher import store
    from lantern_batch.teacher.inputs import ScanPlan, scan_shard, shard_count
    from tests.fixtures.forget import KEY

    world = tmp_path / "w"
    pairs = read_table(str(tiny_world_dirty / "pairs"))
    n = pairs.num_rows
    (world / "pairs").mkdir(parents=True)
    # Two files of small row groups; later copies across row groups and across files (one pair three times).
    pq.write_table(pairs.slice(0, n // 2), world / "pairs" / "part-0.parquet", row_group_size=40)
    again = pa.concat_tables([pairs.slice(n // 2), pairs.slice(0, 40), pairs.slice(3, 1), pairs.slice(3, 1)])
    pq.write_table(again, world / "pairs" / "part-1.parquet", row_group_size=40)
    members, bad_m, jobs, bad_j = _side(tiny_world_dirty, tmp_path)
    hashes = content_index(members, "members"), content_index(jobs, "jobs")
    tasks = pair_read_tasks(str(world / "pairs"))
    assert len(tasks) > 10

    # What an earlier pass committed: labels (a fifth since changed) and input errors, in several markers.
    first = scan_pairs(tasks, 1.0, frozenset())
    joiner = PairJoiner(members, jobs, bad_m, bad_j, first["copy_index"], frozenset(), 1.0, RowLimits())
    joined = pa.concat_tables([joiner(read_row_group(t.__dict__)) for t in tasks])
    rows = joined.select(["_row_key", "_err_stage", "_err_reason", "input_fingerprint"]).to_pylist()
    rows = [r for i, r in enumerate(rows) if r["_err_stage"] is None or i % 2]  # half the input errors
    for i, r in enumerate(rows):
        if r["_err_stage"] is None and i % 5 == 0:
            r["input_fingerprint"] = "changed-since"
    out = str(tmp_path / "out")
    for i in range(0, len(rows), 64):
        part = rows[i:i + 64]
        store.commit_batch(out, "t", "v1", pa.table({}), pa.table({}), store.marker_rows(
            [r["_row_key"] for r in part], [r["_err_stage"] for r in part], [r["_err_reason"] for r in part],
            input_fingerprints=[r["input_fingerprint"] if r["_err_stage"] is None else None for r in part],
            teacher_version="tv"))

    member = collections.Counter(pairs.column("member_id").to_pylist()).most_common(1)[0][0]
    forgotten = tb.ForgetFilter(KEY.encode(), frozenset({tb.member_hash(KEY.encode(), member)}))
    done, where, inputs_done = store.load_done_shard(out, "t", "v1", "tv")
    one = scan_shard(tasks, 0.7, inputs_done=inputs_done, done=done, where=where, member_hashes=hashes[0],
                     job_hashes=hashes[1], forgotten=forgotten)
    assert all(one.counts[k] > 0 for k in ("duplicates", "not_sampled", "skipped_done", "changed_done", "forgotten"))

    shard_rows = -(-one.counts["rows_in"] // 3)
    shards = shard_count(tasks, shard_rows)
    assert shards == 3
    plan_dir = str(tmp_path / "plan")
    results = [teacher_job._scan_shard(tasks, b, shards, 0.7, out, "t", "v1", "tv", True, *hashes, forgotten, plan_dir)
               for b in range(shards)]
    for k, v in one.counts.items():
        assert sum(r[k] for r in results) == v, k
    # Each shard held its bucket only: together exactly what one shard holds, each well under it.
    assert sum(r["held"]["pairs"] for r in results) == one.held["pairs"]
    assert sum(r["held"]["done"] for r in results) == one.held["done"]
    assert all(0 < r["held"]["pairs"] < 0.6 * one.held["pairs"] for r in results)
    assert all(r["held"]["done"] < 0.6 * one.held["done"] for r in results)

    plan = ScanPlan(decisions=tuple(r["decisions"] for r in results if r["decisions"]),
                    changed=tuple(r["changed"] for r in results if r["changed"]))
    copies, skips = {}, set()
    for t in tasks:  # one row group at a time, as a join batch would ask
        c, s = plan.lookup(read_row_group(t.__dict__, columns=["member_id"]).column("_order").to_numpy())
        copies.update(c)
        skips |= s
    assert copies == one.copy_index and skips == set(one.skip)

    # The join reads the plan and writes the same rows as with the decisions in memory.
    in_memory = PairJoiner(members, jobs, bad_m, bad_j, one.copy_index, frozenset(one.skip.values()), 0.7, RowLimits())
    planned = PairJoiner(members, jobs, bad_m, bad_j, None, None, 0.7, RowLimits(), plan=plan)
    batches = [read_row_group(t.__dict__) for t in tasks]
    mixed = pa.concat_tables([batches[1], batches[-1], batches[0]])  # a batch of far-apart row groups
    for batch in [*batches, mixed]:
        assert planned(batch).equals(in_memory(batch))

    # Retiring the changed rows from the plan files retires what the in-memory set does.
    changed = {k for k, _ in one.changed}
    assert {k for f in plan.changed for k in pq.read_table(f).column("row_key").to_pylist()} == changed
    shutil.copytree(out, tmp_path / "out2")
    by_files = store.retire_stale(out, "t", "v1", "tv", changed_files=plan.changed)
    by_set = store.retire_stale(str(tmp_path / "out2"), "t", "v1", "tv", changed=changed)
    assert by_files == by_set and by_files["rows"] == len(changed) > 0
    assert store.load_done(out, "t", "v1", "tv") == store.load_done(str(tmp_path / "out2"), "t", "v1", "tv")
