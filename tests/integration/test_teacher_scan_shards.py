"""Synthesize's input scan through Ray, in several shards (``shard_rows`` smaller than the
pairs): the pass's counts and plan are those of the scan in one shard in memory."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from lantern_batch.io import read_table
from lantern_batch.teacher import job as teacher_job
from lantern_batch.teacher.config import SynthesizeConfig, TeacherSpec
from lantern_batch.teacher.inputs import pair_read_tasks, read_row_group, scan_pairs

pytestmark = pytest.mark.integration


def test_scan_pass_in_shards_on_ray_matches_one_shard(ray_local, tiny_world_dirty, tmp_path):
    (tmp_path / "pairs").mkdir()
    pq.write_table(read_table(str(tiny_world_dirty / "pairs")), tmp_path / "pairs" / "part-0.parquet", row_group_size=50)
    cfg = SynthesizeConfig(out=str(tmp_path / "out"), sample_fraction=0.5, shard_rows=150,
                           inputs={"members": str(tiny_world_dirty / "members"), "jobs": str(tiny_world_dirty / "jobs"),
                                   "pairs": str(tmp_path / "pairs")})
    teacher = TeacherSpec(name="t", kind="engagement")
    side = teacher_job.prepare_side_tables(cfg)
    tasks = pair_read_tasks(cfg.inputs.pairs)
    counts, plan = teacher_job.scan_pass(cfg, teacher, side, tasks, "tv")
    one = scan_pairs(tasks, 0.5, frozenset())
    assert counts == {k: one[k] for k in counts} and counts["duplicates"] > 0 and counts["not_sampled"] > 0
    # One plan file per shard that has a later copy to record (a resume would add its skips).
    assert 1 < len(plan.decisions) <= -(-counts["rows_in"] // 150) == 3 and not plan.changed
    copies, skips = {}, set()
    for t in tasks:
        c, s = plan.lookup(read_row_group(t.__dict__, columns=["member_id"]).column("_order").to_numpy())
        copies.update(c)
        skips |= s
    assert copies == one["copy_index"] and skips == set()


@pytest.mark.parametrize("backend", ["pyarrow", "s3fs"])
def test_plan_files_and_streamed_validation_errors_on_s3(s3_server, monkeypatch, tiny_world_dirty, backend):
    """The plan's writes and reads and the validation's streamed errors file work on S3."""
    from lantern_batch import io
    from lantern_batch.schema import RowLimits, validate_table
    from lantern_batch.teacher.inputs import ScanPlan, scan_shard, write_plan
    from lantern_batch.validation import validate_path

    monkeypatch.setenv("LANTERN_S3_BACKEND", backend)
    pairs = s3_server.uri("scan", backend, "pairs")
    table = read_table(str(tiny_world_dirty / "pairs"))
    io.write_table(table, pairs, basename="part-0.parquet", row_group_size=64)
    io.write_table(table.slice(0, 30), pairs, basename="part-1.parquet")  # later copies
    tasks = pair_read_tasks(pairs)
    one = scan_pairs(tasks, 1.0, frozenset())
    plan_dir = s3_server.uri("scan", backend, "_scan")
    files = [write_plan(scan_shard(tasks, 1.0, shard=b, shards=2), plan_dir) for b in range(2)]
    plan = ScanPlan(decisions=tuple(f["decisions"] for f in files if f["decisions"]))
    assert plan.decisions and all(d.startswith("s3://") for d in plan.decisions)
    copies = {}
    for t in tasks:
        copies.update(plan.lookup(read_row_group(t.__dict__, columns=["member_id"]).column("_order").to_numpy())[0])
    assert copies == one["copy_index"] and len(copies) >= 30

    errors_out = s3_server.uri("scan", backend, "errors")
    result = validate_path("pairs", pairs, errors_out=errors_out, shard_rows=200, batch_rows=50)
    whole = validate_table(io.read_table(pairs, table="pairs"), "pairs", RowLimits())
    assert result.counts == whole.counts and result.shards == 3
    assert io.read_table(errors_out).num_rows == whole.errors.num_rows
    assert [io.basename(f) for f in io.list_parquet_files(errors_out)] == ["part-00000.parquet"]
