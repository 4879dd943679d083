"""Hostile input files (issue 13, item 14) through the readers every job uses.

Each case is either a whole-input :class:`~lantern_batch.errors.InputError` (exit code 2) raised
from the Parquet footers, naming the table, the column, the file and its rows, or it reads into
contract-conformed rows where the bad ones are error rows. Never an exception from inside a
reader (that would surface as a traceback from a Ray task).

Readers under test: ``io.dataset_schema`` (the footer check of validate, synthesize, distill and
precompute), ``io.read_table(table=...)`` (validate, the synthesize side tables, distill's
broadcast join) and the per-file streaming readers (precompute's ``read_file_batches``, the
teacher's ``read_row_group`` / ``scan_pairs``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lantern_batch import io
from lantern_batch.errors import InputError
from lantern_batch.precompute import features
from lantern_batch.precompute.job import input_files
from lantern_batch.schema import TS, RowLimits, validate_table
from lantern_batch.teacher.inputs import pair_read_tasks, read_row_group, scan_pairs

BAD_BYTES = b"caf\xc3 \xff\xfe"  # a truncated sequence and two bytes that never occur in UTF-8


def _members(ids: list[str], **overrides) -> pa.Table:
    cols: dict[str, pa.Array | list] = {
        "member_id": ids,
        "current_title": [f"Title {i}" for i in ids],
        "skills": [["sql"] for _ in ids],
        "summary": [f"summary of {i}" for i in ids],
        "years_experience": [2.0 for _ in ids],
    }
    cols.update(overrides)
    return pa.table(cols)


def _bad_text(values: list[bytes | None]) -> pa.Array:
    """A string array holding the given bytes unvalidated (as a hostile writer would)."""
    return pa.array(values, pa.binary()).view(pa.string())


def _write(directory: Path, files: dict[str, pa.Table | bytes]) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (directory / name).write_bytes(content)
        else:
            pq.write_table(content, directory / name)
    return str(directory)


# ---------------------------------------------------------------------------------------------
# Whole-input failures: from the footers, before any row is read

WHOLE_INPUT_CASES: dict[str, tuple[Callable[[], dict[str, pa.Table | bytes]], tuple[str, ...]]] = {
    # id typed string in one file and int in another: neither "first footer wins" nor a cast
    "mixed_id_types": (
        lambda: {"a.parquet": _members(["m1", "m2"]),
                 "b.parquet": _members(["x", "y", "z"]).set_column(0, "member_id", pa.array([3, 4, 5]))},
        ("'members'", "'member_id'", "int64", "b.parquet", "3 rows"),
    ),
    "mixed_id_types_int_first": (
        lambda: {"a.parquet": _members(["x", "y"]).set_column(0, "member_id", pa.array([3, 4])),
                 "b.parquet": _members(["m1"])},
        ("'members'", "'member_id'", "a.parquet", "2 rows"),
    ),
    "schemas_differ_incompatibly": (
        lambda: {"a.parquet": _members(["m1"]),
                 "b.parquet": _members(["m2"], years_experience=pa.array(["ten"]))},
        ("'members'", "'years_experience'", "b.parquet", "1 rows"),
    ),
    "required_column_missing_in_one_file": (
        lambda: {"a.parquet": _members(["m1"]),
                 "b.parquet": _members(["m2", "m3"]).drop_columns(["current_title"])},
        ("'members'", "'current_title'", "is missing", "b.parquet", "2 rows"),
    ),
    "empty_table": (
        lambda: {"a.parquet": _members([]), "b.parquet": _members([])},
        ("'members'", "no rows", "2 Parquet file"),
    ),
    "not_parquet": (
        lambda: {"a.parquet": _members(["m1"]), "b.parquet": b"member_id,current_title\nm2,Nurse\n"},
        ("'members'", "b.parquet", "not a Parquet file"),
    ),
}


@pytest.mark.parametrize("case", sorted(WHOLE_INPUT_CASES))
@pytest.mark.parametrize("reader", ["dataset_schema", "read_table", "precompute_input_files"])
def test_hostile_input_is_an_input_error_naming_table_column_file(tmp_path, case, reader):
    build, expected = WHOLE_INPUT_CASES[case]
    path = _write(tmp_path / "members", build())
    read = {
        "dataset_schema": lambda: io.dataset_schema(path, "members"),
        "read_table": lambda: io.read_table(path, table="members"),
        "precompute_input_files": lambda: input_files(path, "members"),
    }[reader]
    with pytest.raises(InputError) as e:
        read()
    assert e.value.exit_code == 2
    for part in expected:
        assert part in str(e.value), f"{part!r} not in {str(e.value)!r}"


def test_a_single_path_that_is_not_parquet_names_the_file(tmp_path):
    f = tmp_path / "members.parquet"
    f.write_bytes(b"PAR1 but not really")
    with pytest.raises(InputError, match="members.parquet.*not a Parquet file"):
        io.dataset_schema(str(f), "members")


def test_files_of_other_tables_are_checked_across_every_footer(tmp_path):
    # Not an input contract (seed, teacher labels): the footers must still agree, all of them.
    path = _write(tmp_path / "seed", {
        "a.parquet": pa.table({"pair_id": ["p1"], "fit_label": [None]}),  # null-typed here
        "b.parquet": pa.table({"pair_id": ["p2"], "fit_label": ["High"]}),
        "c.parquet": pa.table({"pair_id": [3], "fit_label": ["Low"]}),
    })
    with pytest.raises(InputError, match=r"'seed'.*'pair_id'.*c\.parquet"):
        io.dataset_schema(path, "seed")
    ok = _write(tmp_path / "seed_ok", {
        "a.parquet": pa.table({"pair_id": ["p1"], "fit_label": pa.nulls(1)}),
        "b.parquet": pa.table({"pair_id": ["p2"], "fit_label": ["High"]}),
    })
    assert io.dataset_schema(ok, "seed").field("fit_label").type == pa.string()
    assert io.read_table(ok, table="seed").column("fit_label").to_pylist() == [None, "High"]


# ---------------------------------------------------------------------------------------------
# Inputs that read: conformed to the contract, bad rows become error rows

NS = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z


def _ts_nanoseconds() -> dict[str, pa.Table]:
    ts = pa.array([NS, NS + 1], pa.timestamp("ns"))  # sub-microsecond digits: a plain cast fails
    return {"a.parquet": _members(["m1", "m2"], updated_at=ts)}


def _ts_other_zones() -> dict[str, pa.Table]:
    us = NS // 1000
    return {
        "a.parquet": _members(["m1"], updated_at=pa.array([us], pa.timestamp("us", tz="Asia/Tokyo"))),
        "b.parquet": _members(["m2"], updated_at=pa.array([NS], pa.timestamp("ns", tz="America/New_York"))),
        "c.parquet": _members(["m3"], updated_at=pa.array([us], TS)),
    }


def _null_typed_in_one_file() -> dict[str, pa.Table]:
    return {
        # first file: every optional column null-typed, and a null-typed required text column
        "a.parquet": _members(["m1", "m2"], summary=pa.nulls(2), years_experience=pa.nulls(2),
                              experience=pa.nulls(2), updated_at=pa.nulls(2), current_title=pa.nulls(2)),
        "b.parquet": _members(["m3"], updated_at=pa.array([NS // 1000], TS)),
    }


def _compatible_differences() -> dict[str, pa.Table]:
    return {
        "a.parquet": _members(["m1"], extra=pa.array([1])),
        "b.parquet": _members(["m2"], years_experience=pa.array([3], pa.int32())).drop_columns(["summary"]),
        "c.parquet": _members(["m3"], member_id=pa.array(["m3"], pa.large_string())),
    }


def _invalid_utf8() -> dict[str, pa.Table]:
    return {"a.parquet": _members(
        ["m1", "m2", "m3", "m4"],
        member_id=_bad_text([b"m1", b"m2", BAD_BYTES, b"m4"]),
        summary=_bad_text([b"fine", BAD_BYTES, b"fine", b"fine"]),
        skills=pa.array([[b"sql"], [b"sql"], [b"sql"], [b"sql", BAD_BYTES]], pa.list_(pa.binary()))
        .view(pa.list_(pa.string())),
    )}


def _list_100k() -> dict[str, pa.Table]:
    return {"a.parquet": _members(["m1", "m2"], skills=[["sql"], [f"s{i}" for i in range(100_000)]])}


ROW_CASES: dict[str, tuple[Callable[[], dict[str, pa.Table]], dict[str, int]]] = {
    "timestamps_nanoseconds": (_ts_nanoseconds, {"good": 2}),
    "timestamps_other_zones": (_ts_other_zones, {"good": 3}),
    "null_typed_column_in_one_file": (_null_typed_in_one_file, {"good": 1, "empty_text:current_title": 2}),
    "schemas_differ_compatibly": (_compatible_differences, {"good": 3}),
    "invalid_utf8": (_invalid_utf8, {"good": 1, "invalid_utf8:member_id": 1, "invalid_utf8:summary": 1,
                                     "invalid_utf8:skills": 1}),
    "list_with_100k_elements": (_list_100k, {"good": 1, "too_many_items:skills": 1}),
}


def _check_conformed(case: str, result) -> None:
    good = result.good
    assert good.schema.field("updated_at").type == TS
    if case.startswith("timestamps"):
        # the same instant in UTC, truncated to microseconds
        want = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=timezone.utc)
        assert set(good.column("updated_at").to_pylist()) == {want}
    result.errors.validate(full=True)  # error rows are valid UTF-8: they can be written and read
    details = [r["detail"] for r in result.errors.to_pylist()]
    assert all(d is None or "\ufffd" not in d for d in details)  # never the offending value


@pytest.mark.parametrize("case", sorted(ROW_CASES))
def test_hostile_rows_read_and_become_error_rows(tmp_path, case):
    build, counts = ROW_CASES[case]
    path = _write(tmp_path / "members", build())
    io.dataset_schema(path, "members")  # the footers pass
    table = io.read_table(path, table="members")
    table.validate(full=True)  # valid UTF-8 everywhere after the read
    result = validate_table(table, "members", RowLimits(max_list_items=500))
    assert result.counts == counts
    _check_conformed(case, result)
    assert sum(counts.values()) == table.num_rows


@pytest.mark.parametrize("case", sorted(ROW_CASES))
def test_hostile_rows_through_precompute_digest(tmp_path, case):
    build, counts = ROW_CASES[case]
    path = _write(tmp_path / "members", build())
    files = input_files(path, "members")
    blocks = [features.digest_batch(chunk, "members", RowLimits())
              for i, f in enumerate(files) for chunk in features.read_file_batches(f, i, "members", 1_000)]
    index, rejected = features.finalize_index(blocks, "members")
    assert index.column("member_id").to_pylist()  # ids readable (valid UTF-8)
    expected = {k: v for k, v in counts.items() if k != "good"}
    assert rejected == expected


def test_real_world_seniority_and_workplace_types_through_precompute_digest(tmp_path):
    """Values real tables hold are good rows in the streaming reader too: seniority outside the
    enum kept as written, workplace types conformed (an unknown one is "unknown")."""
    jobs = pa.table({"job_id": ["j1", "j2", "j3"], "title": ["Staff Engineer", "Analyst", "Nurse"],
                     "description": ["d"] * 3, "seniority": ["Senior Staff", "mid-senior level", None],
                     "workplace_type": ["flexible", "On-site", "Remote-ish"]})
    path = _write(tmp_path / "jobs", {"a.parquet": jobs})
    files = input_files(path, "jobs")
    chunks = [c for i, f in enumerate(files) for c in features.read_file_batches(f, i, "jobs", 1_000)]
    assert [r for c in chunks for r in c.column("workplace_type").to_pylist()] == ["unknown", "onsite", "unknown"]
    assert [r for c in chunks for r in c.column("seniority").to_pylist()] == ["Senior Staff", "mid-senior level", None]
    index, rejected = features.finalize_index([features.digest_batch(c, "jobs", RowLimits()) for c in chunks], "jobs")
    assert rejected == {} and index.num_rows == 3


def test_invalid_utf8_in_pair_ids_through_the_teacher_reader(tmp_path):
    path = _write(tmp_path / "pairs", {"a.parquet": pa.table({
        "member_id": _bad_text([b"m1", BAD_BYTES, b"m3"]),
        "job_id": _bad_text([b"j1", b"j2", b"j3"]),
        "query": _bad_text([None, None, BAD_BYTES]),
    })})
    tasks = pair_read_tasks(path)
    scan = scan_pairs(tasks, 1.0, frozenset())
    assert scan["rows_in"] == 3
    batch = read_row_group(tasks[0].__dict__)
    batch.validate(full=True)
    from lantern_batch.schema import row_reasons

    reasons = row_reasons(batch.drop_columns(["_order"]), "pairs", RowLimits()).tolist()
    assert reasons == [None, "invalid_utf8:member_id", "invalid_utf8:query"]


@pytest.mark.parametrize("case", sorted(ROW_CASES))
def test_hostile_rows_through_distill_reads_and_join(tmp_path, case):
    """Distillation reads members in the driver (``io.read_table``) or, for the shuffle join, per
    file in Ray Data (``read_input_files``, not ``ray.data.read_parquet``, which merges the
    files' schemas and failed on zones, units and null-typed columns); either way a member
    that fails the row checks makes its label rows error rows ``invalid_member:<reason>``."""
    from lantern_batch.distill.data import mark_unjoined, pack_entities, read_input_files

    build, counts = ROW_CASES[case]
    path = _write(tmp_path / "members", build())
    files = pa.table({"path": io.list_parquet_files(path)})
    streamed = pa.concat_tables(list(read_input_files(files, "members")))
    whole = io.read_table(path, table="members")
    assert streamed.equals(whole)
    packed = pack_entities(streamed, "member_id", "member", "members")
    invalid = [r for r in packed.column("member_invalid").to_pylist() if r]
    assert {r: invalid.count(r) for r in invalid} == {k: v for k, v in counts.items() if k != "good"}
    ids = packed.column("member_id").to_pylist()
    labels = pa.table({"member_id": ids, "reason": pa.nulls(len(ids), pa.string()),
                       "member": packed.column("member"), "member_invalid": packed.column("member_invalid"),
                       "job": pa.array([{"job_id": "j1"}] * len(ids))})
    reasons = mark_unjoined(labels).column("reason").to_pylist()
    assert [r.removeprefix("invalid_member:") if r else None for r in reasons] == \
        packed.column("member_invalid").to_pylist()


def test_engagement_teacher_reads_member_files_that_differ(tiny_world, tmp_path):
    """The engagement teacher's fit reads members and jobs as the input tables they are (each
    file conformed): files whose timestamps differ in unit and zone, with a null-typed column in
    one, fitted before as 'column updated_at has type ... but ... in the files before it'."""
    from lantern_batch.teacher.engagement import fit_engagement_model

    members = io.read_table(str(tiny_world / "members"))
    n = members.num_rows // 3
    ns = pa.array([NS] * n, pa.timestamp("ns", tz="America/New_York"))
    path = _write(tmp_path / "members", {
        "a.parquet": members.slice(0, n).set_column(members.schema.get_field_index("updated_at"), "updated_at", ns),
        "b.parquet": members.slice(n, n).set_column(members.schema.get_field_index("years_experience"),
                                                    "years_experience", pa.nulls(n)),
        "c.parquet": members.slice(2 * n),
    })
    model = fit_engagement_model({"apply_log": str(tiny_world / "apply_log"), "seed": str(tiny_world / "seed"),
                                  "max_train_rows": 300, "l2": 1.0}, path, str(tiny_world / "jobs"))
    assert model["train_rows"] == 300 and model["seed_rows"] > 100


def test_files_that_do_not_unify_name_the_column_that_does_not(tmp_path):
    # A null-typed column unifies with any type: the error names the zones that do not.
    path = _write(tmp_path / "seed", {
        "a.parquet": pa.table({"pair_id": ["p1"], "score": [1.0], "at": pa.array([NS], pa.timestamp("ns", tz="Asia/Tokyo"))}),
        "b.parquet": pa.table({"pair_id": ["p2"], "score": pa.nulls(1), "at": pa.array([NS // 1000], TS)}),
    })
    with pytest.raises(InputError, match=r"'seed': column 'at' has type timestamp\[us, tz=UTC\] in file .*b\.parquet \(1 rows\)"):
        io.dataset_schema(path, "seed")
