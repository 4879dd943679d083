"""``validate_path`` streams: batch by batch, duplicates found in shards of hash buckets, with the
counts and error rows of one validation of the whole table in memory."""

import collections

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lantern_batch import io
from lantern_batch.schema import RowLimits, validate_table
from lantern_batch.validation import format_counts, validate_path


def _error_rows(table: pa.Table) -> collections.Counter:
    return collections.Counter((r["member_id"], r["job_id"], r["table"], r["stage"], r["reason"], r["detail"])
                               for r in table.drop_columns(["created_at"]).to_pylist())


def _split(table: pa.Table, directory, row_group_size: int) -> str:
    """The table in three files of small row groups, with copies of earlier rows in later files."""
    directory.mkdir(parents=True)
    n = table.num_rows
    parts = [table.slice(0, n // 3), pa.concat_tables([table.slice(n // 3, n // 3), table.slice(0, 25)]),
             pa.concat_tables([table.slice(2 * (n // 3)), table.slice(5, 3), table.slice(n // 3, 10)])]
    for i, part in enumerate(parts):
        pq.write_table(part, directory / f"part-{i}.parquet", row_group_size=row_group_size)
    return str(directory)


@pytest.mark.parametrize("table_name", ["pairs", "members", "jobs"])
def test_streaming_validate_counts_duplicates_across_row_groups_files_and_shards(tiny_world_dirty, tmp_path, table_name):
    path = _split(io.read_table(str(tiny_world_dirty / table_name), table=table_name), tmp_path / "in", 16)
    whole = validate_table(io.read_table(path, table=table_name), table_name, RowLimits())
    dup = "duplicate_pair" if table_name == "pairs" else "duplicate_id"
    assert whole.counts[dup] >= 25 and len(whole.counts) > 2  # copies, and other reasons too
    rows = sum(whole.counts.values())
    for shard_rows, batch_rows in ((10**9, 10**6), (10**9, 7), (rows // 4 + 1, 16), (rows // 9, 5)):
        errors_out = tmp_path / f"errors-{shard_rows}-{batch_rows}"
        result = validate_path(table_name, path, errors_out=str(errors_out), shard_rows=shard_rows,
                               batch_rows=batch_rows)
        assert result.counts == whole.counts
        assert _error_rows(pq.read_table(errors_out)) == _error_rows(whole.errors)
        assert result.shards == -(-rows // shard_rows)
        if result.shards > 1:  # each pass held one bucket's keys only
            assert result.held_keys < 0.5 * (whole.counts["good"] + whole.counts[dup])
    assert format_counts(result).startswith(f"table '{table_name}': {rows} rows, {whole.counts['good']} good")


def test_a_validation_that_fails_part_way_leaves_no_errors_file(tmp_path, monkeypatch):
    path = _split(pa.table({"member_id": [f"m{i % 40}" for i in range(120)], "current_title": ["t"] * 120,
                            "skills": [["x"]] * 120}), tmp_path / "in", 10)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk gone")
        return original(*args, **kwargs)

    import lantern_batch.validation as validation

    original = validation.row_reasons
    monkeypatch.setattr(validation, "row_reasons", failing)
    with pytest.raises(OSError):
        validate_path("members", path, errors_out=str(tmp_path / "errors"), batch_rows=10)
    assert not (tmp_path / "errors").exists() or not list((tmp_path / "errors").iterdir())
    monkeypatch.setattr(validation, "row_reasons", original)
    result = validate_path("members", path, errors_out=str(tmp_path / "errors"), batch_rows=10)
    assert result.counts == {"good": 40, "duplicate_id": 80 + 25 + 13}
