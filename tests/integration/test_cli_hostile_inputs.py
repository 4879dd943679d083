"""Hostile input files (issue 13, item 14) through the commands users run, as subprocesses:
``lantern-batch synthesize``, ``lantern-batch distill classifier`` and ``lantern-batch
precompute``.

A whole-input problem (a file that is not Parquet, an id typed int in one file and string in
another, files whose schemas differ incompatibly, a required column missing from one file, an
empty table) exits with status 2 and one line naming the table, the column, the file and its row
count, found from the Parquet footers of *every* file (the bad file is never the first) before
Ray starts or any model loads: each run here exits in seconds, and no output holds a traceback.

The row-level cases (timestamps with nanosecond digits or in other zones, invalid UTF-8, a column
that is null-typed in one file, a list of 100k elements, files that differ compatibly) are no
whole-input error: precompute's footer check accepts them and the run goes on to its models (here
a classifier that does not exist, so it stops there, exit 2 naming the model and no table). What
becomes of their rows is checked in the library (tests/unit/test_hostile_inputs.py: error rows
``invalid_utf8:<column>``, ``too_many_items:skills``, ``empty_text:current_title``, timestamps
conformed to microseconds in UTC) and, end to end through the CLI, by
``test_precompute_publishes_hostile_rows_as_error_rows`` (slow: a whole run on a local Ray).

    .venv/bin/python -m pytest -q tests/integration/test_cli_hostile_inputs.py -m "not slow"
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORLD = dict(num_members=20, num_jobs=10, num_pairs=60, num_seed=30, seed=3)
BAD_BYTES = b"caf\xc3 \xff\xfe"  # a truncated sequence and two bytes that never occur in UTF-8
NS = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
SECONDS_BEFORE_RAY = 30.0
"""Generous bound on a run that must stop at its footer check (~1-4 s on the 2-core machine,
where starting Ray alone takes 10-40 s)."""


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("lantern-batch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lantern_batch.cli"]


def run_cli(*args: str, timeout: float = 120) -> tuple[int, str, float]:
    """Run ``lantern-batch ARGS`` in a fresh process; (exit status, stdout + stderr, seconds)."""
    start = time.perf_counter()
    done = subprocess.run([*_cli(), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - start


def _bad_text(values: list[bytes | None]) -> pa.Array:
    """A string array holding the given bytes unvalidated (as a hostile writer would)."""
    return pa.array(values, pa.binary()).view(pa.string())


def _with(table: pa.Table, column: str, values: pa.Array | list) -> pa.Table:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    idx = table.schema.get_field_index(column)
    return table.set_column(idx, column, arr) if idx >= 0 else table.append_column(column, arr)


# ---------------------------------------------------------------------------------------------
# Fixtures: one tiny world, the hostile variants of its tables, one tiny classifier export


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from lantern_batch.world import GenerateConfig, run_generate

    out = tmp_path_factory.mktemp("hostile_world")
    assert run_generate(GenerateConfig(out=str(out), **WORLD)) == 0
    return out


def _table(world: Path, name: str) -> pa.Table:
    files = sorted((world / name).rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


# Each builder returns the files of one hostile table (name -> table, or raw bytes), given the
# world's clean table and its name; the bad file is never the first.
Files = dict[str, "pa.Table | bytes"]


def _id_column(table_name: str) -> str:
    return {"members": "member_id", "jobs": "job_id", "pairs": "member_id"}[table_name]


def not_parquet(t: pa.Table, name: str) -> Files:
    return {"part-0.parquet": t.slice(0, 5), "part-1.parquet": t.slice(5),
            "part-2.parquet": b"member_id,job_id,title\nm1,j1,Nurse\n"}


def mixed_id_types(t: pa.Table, name: str) -> Files:
    key = _id_column(name)
    bad = _with(t.slice(7, 3), key, pa.array([1001, 1002, 1003], pa.int64()))
    return {"part-0.parquet": t.slice(0, 7), "part-1.parquet": bad, "part-2.parquet": t.slice(10)}


def empty_table(t: pa.Table, name: str) -> Files:
    return {"part-0.parquet": t.slice(0, 0), "part-1.parquet": t.slice(0, 0)}


def schemas_differ(t: pa.Table, name: str) -> Files:
    bad = _with(t.slice(6, 4), "years_experience", pa.array(["ten"] * 4))
    return {"part-0.parquet": t.slice(0, 6), "part-1.parquet": bad, "part-2.parquet": t.slice(10)}


def required_column_missing(t: pa.Table, name: str) -> Files:
    return {"part-0.parquet": t.slice(0, 6), "part-1.parquet": t.slice(6, 5).drop_columns(["current_title"]),
            "part-2.parquet": t.slice(11)}


def timestamps(t: pa.Table, name: str) -> Files:
    us = NS // 1000
    ns_zone = pa.array([NS + i for i in range(5)], pa.timestamp("ns", tz="America/New_York"))
    return {"part-0.parquet": t.slice(0, 5),
            "part-1.parquet": _with(t.slice(5, 5), "updated_at", ns_zone),
            "part-2.parquet": _with(t.slice(10), "updated_at", pa.array([us] * (t.num_rows - 10),
                                                                        pa.timestamp("us", tz="Asia/Tokyo")))}


def invalid_utf8(t: pa.Table, name: str) -> Files:
    part = t.slice(4, 4)
    ids = [m.encode() for m in part.column("member_id").to_pylist()]
    summary = [b"fine"] * 4
    summary[1] = BAD_BYTES
    skills = [[s.encode() for s in row] for row in part.column("skills").to_pylist()]
    skills[2] = [*skills[2], BAD_BYTES]
    ids[3] = ids[3] + b"\xff"
    part = _with(part, "summary", _bad_text(summary))
    part = _with(part, "skills", pa.array(skills, pa.list_(pa.binary())).view(pa.list_(pa.string())))
    part = _with(part, "member_id", _bad_text(ids))
    return {"part-0.parquet": t.slice(0, 4), "part-1.parquet": part, "part-2.parquet": t.slice(8)}


def null_typed_in_one_file(t: pa.Table, name: str) -> Files:
    part = t.slice(3, 4)
    for col in ("summary", "years_experience", "experience", "updated_at"):  # optional columns
        part = _with(part, col, pa.nulls(part.num_rows))
    part = _with(part, "current_title", pa.nulls(part.num_rows))  # a required one: error rows
    return {"part-0.parquet": t.slice(0, 3), "part-1.parquet": part, "part-2.parquet": t.slice(7)}


def list_100k(t: pa.Table, name: str) -> Files:
    part = t.slice(2, 2)
    skills = part.column("skills").to_pylist()
    skills[0] = [f"skill-{i}" for i in range(100_000)]
    return {"part-0.parquet": t.slice(0, 2), "part-1.parquet": _with(part, "skills", pa.array(skills)),
            "part-2.parquet": t.slice(4)}


def compatible_differences(t: pa.Table, name: str) -> Files:
    return {"part-0.parquet": _with(t.slice(0, 5), "extra_column", [1] * 5),
            "part-1.parquet": _with(t.slice(5, 5), "years_experience", pa.array([3] * 5, pa.int32()))
            .drop_columns(["summary"]),
            "part-2.parquet": _with(t.slice(10), "member_id",
                                    t.slice(10).column("member_id").cast(pa.large_string()))}


WHOLE_INPUT: dict[str, Callable[[pa.Table, str], Files]] = {
    "not_parquet": not_parquet,
    "mixed_id_types": mixed_id_types,
    "empty_table": empty_table,
    "schemas_differ": schemas_differ,
    "required_column_missing": required_column_missing,
}
ROW_LEVEL: dict[str, Callable[[pa.Table, str], Files]] = {
    "timestamps_nanoseconds_other_zones": timestamps,
    "invalid_utf8": invalid_utf8,
    "null_typed_column_in_one_file": null_typed_in_one_file,
    "list_with_100k_elements": list_100k,
    "schemas_differ_compatibly": compatible_differences,
}


def expected_parts(case: str, table_name: str, files: Files, root: Path) -> tuple[str, ...]:
    """What the error line must name for a whole-input case: table, column, file, rows."""
    def path(name: str) -> str:
        return str(root / name)

    def rows(name: str) -> str:
        return f"({files[name].num_rows} rows)"

    table = f"table '{table_name}'"
    if case == "not_parquet":
        return table, path("part-2.parquet"), "not a Parquet file"
    if case == "mixed_id_types":
        return (table, f"column '{_id_column(table_name)}'", "int64", "expected type string",
                path("part-1.parquet"), rows("part-1.parquet"))
    if case == "empty_table":
        return table, "no rows", "2 Parquet file(s)", path("part-0.parquet")
    if case == "schemas_differ":
        return (table, "column 'years_experience'", "type string", "expected type double",
                path("part-1.parquet"), rows("part-1.parquet"))
    if case == "required_column_missing":
        return table, "column 'current_title'", "is missing", path("part-1.parquet"), rows("part-1.parquet")
    raise AssertionError(case)


def write_files(directory: Path, files: Files) -> Path:
    directory.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (directory / name).write_bytes(content)
        else:
            pq.write_table(content, directory / name)
    return directory


@pytest.fixture(scope="module")
def hostile(world, tmp_path_factory) -> Callable[[str, str], tuple[Path, Files]]:
    """``hostile(case, table)``: the directory of that hostile version of the world's table
    (built once per module) and its files."""
    root = tmp_path_factory.mktemp("hostile_tables")
    built: dict[tuple[str, str], tuple[Path, Files]] = {}

    def get(case: str, table_name: str) -> tuple[Path, Files]:
        if (case, table_name) not in built:
            build = {**WHOLE_INPUT, **ROW_LEVEL}[case]
            files = build(_table(world, table_name), table_name)
            built[case, table_name] = (write_files(root / f"{case}-{table_name}", files), files)
        return built[case, table_name]

    return get


def tables_with(world: Path, table_name: str, hostile_dir: Path) -> list[str]:
    """``--members/--jobs/--pairs`` with one table replaced by its hostile version."""
    paths = {name: str(world / name) for name in ("members", "jobs", "pairs")}
    paths[table_name] = str(hostile_dir)
    return ["--members", paths["members"], "--jobs", paths["jobs"], "--pairs", paths["pairs"]]


def command(name: str, world: Path, out: Path) -> list[str]:
    """The smallest arguments that reach each command's input reading (the demo configs, outputs
    under ``out``)."""
    if name == "synthesize":
        return ["synthesize", "--config", "configs/demo_synthesize.yaml", "--out", str(out / "synth")]
    if name == "distill classifier":
        return ["distill", "classifier", "--config", "configs/demo_distill_classifier.yaml",
                "--out", str(out / "classifier"), "--set", "data.teacher_labels=null", "--seed", str(world / "seed"),
                "--set", f"train.storage_path={out / 'train'}"]
    if name == "precompute":
        return ["precompute", "--config", "configs/demo_precompute.yaml", "--out", str(out / "precompute"),
                "--ds", "2026-01-01", "--classifier", str(out / "no-such-classifier"),
                "--explainer", str(out / "no-such-explainer"), "--set", "quality_gate.canary=null"]
    raise AssertionError(name)


def assert_no_traceback(output: str) -> None:
    assert "Traceback" not in output, output[-4000:]


def assert_stopped_before_any_work(output: str, seconds: float, out: Path) -> None:
    assert "ray.local_started" not in output and "Started a local Ray instance" not in output, output[-2000:]
    assert seconds < SECONDS_BEFORE_RAY, f"{seconds:.1f} s: the check must come before Ray starts"
    # Nothing written: no lock, no resolved config, no partition.
    assert not any(p.is_file() for p in out.rglob("*")), sorted(map(str, out.rglob("*")))


# ---------------------------------------------------------------------------------------------
# Whole-input cases: exit 2 from the footers, for every command

COMMAND_CASES = [
    # (command, hostile table, case): each command gets the three the issue names on a table of
    # its own; precompute gets every whole-input case.
    *[("synthesize", "pairs", c) for c in ("not_parquet", "mixed_id_types", "empty_table")],
    *[("distill classifier", "jobs", c) for c in ("not_parquet", "mixed_id_types", "empty_table")],
    *[("precompute", "members", c) for c in WHOLE_INPUT],
]


@pytest.mark.parametrize("name, table_name, case", COMMAND_CASES,
                         ids=[f"{n.replace(' ', '_')}-{t}-{c}" for n, t, c in COMMAND_CASES])
def test_whole_input_problem_exits_2_naming_table_column_file_rows(world, hostile, tmp_path, name, table_name,
                                                                   case):
    directory, files = hostile(case, table_name)
    out = tmp_path / "out"
    out.mkdir()
    code, output, seconds = run_cli(*command(name, world, out), *tables_with(world, table_name, directory))
    assert code == 2, output[-3000:]
    assert_no_traceback(output)
    errors = [line for line in output.splitlines() if ": error: " in line]
    assert len(errors) == 1, output[-3000:]
    assert errors[0].startswith(f"lantern-batch {name.split()[0]}: error: "), errors[0]
    for part in expected_parts(case, table_name, files, directory):
        assert part in errors[0], f"{part!r} not in {errors[0]!r}"
    assert_stopped_before_any_work(output, seconds, out)


# ---------------------------------------------------------------------------------------------
# Row-level cases: the footer check accepts them; the rows are the pipeline's to judge


@pytest.mark.parametrize("case", sorted(ROW_LEVEL))
def test_row_level_problem_passes_precompute_footer_check(world, hostile, tmp_path, case):
    directory, _ = hostile(case, "members")
    out = tmp_path / "out"
    out.mkdir()
    args = command("precompute", world, out)
    code, output, seconds = run_cli(*args, *tables_with(world, "members", directory))
    # Past the inputs, the run stops at its first model: the classifier here does not exist.
    assert code == 2, output[-3000:]
    assert_no_traceback(output)
    errors = [line for line in output.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "no-such-classifier" in errors[0], output[-3000:]
    assert "table '" not in errors[0]
    assert_stopped_before_any_work(output, seconds, out)
