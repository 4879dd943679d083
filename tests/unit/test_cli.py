"""The command line: validate's exit codes and counts, --dry-run, shortcuts, config errors."""

import pyarrow as pa
import pyarrow.parquet as pq

from lantern_batch.cli import COMMANDS, build_parser, main


def _write(tmp_path, name, table):
    d = tmp_path / name
    d.mkdir()
    pq.write_table(table, d / "part-0.parquet")
    return str(d)


def test_validate_missing_member_id_exits_2_naming_it(tmp_path, capsys):
    path = _write(tmp_path, "members", pa.table({"current_title": ["x"], "skills": [["a"]]}))
    assert main(["validate", "--table", "members", path]) == 2
    err = capsys.readouterr().err
    assert "member_id" in err and "members" in err


def test_validate_counts_bad_rows_by_reason_and_exits_0(tmp_path, capsys):
    t = pa.table({
        "member_id": ["a", "a", None, "d"],
        "current_title": ["t", "t", "t", "t"],
        "skills": [["x"], ["x"], ["x"], [None]],
        "summary": ["private words", "b", "c", "d"],
    })
    path = _write(tmp_path, "members", t)
    errors_out = str(tmp_path / "errors")
    assert main(["validate", "--table", "members", path, "--errors-out", errors_out]) == 0
    out = capsys.readouterr().out
    assert "4 rows, 1 good, 3 bad" in out
    assert "duplicate_id: 1" in out and "null_id:member_id: 1" in out and "bad_list_element:skills: 1" in out
    assert "private words" not in out
    assert pq.read_table(errors_out).num_rows == 3


def test_validate_no_files_is_input_error(tmp_path, capsys):
    assert main(["validate", "--table", "jobs", str(tmp_path / "nothing")]) == 2
    assert "no Parquet files" in capsys.readouterr().err


def test_every_command_has_help_and_parses():
    parser = build_parser(["--help"])
    assert set(COMMANDS) <= set(parser._subparsers._group_actions[0].choices)


def test_validate_mixed_id_types_across_files_exits_2_naming_table_column_file(tmp_path, capsys):
    d = tmp_path / "members"
    d.mkdir()
    pq.write_table(pa.table({"member_id": ["a"], "current_title": ["t"], "skills": [["x"]]}), d / "part-0.parquet")
    pq.write_table(pa.table({"member_id": [7, 8], "current_title": ["t", "u"], "skills": [["x"], ["y"]]}),
                   d / "part-1.parquet")
    assert main(["validate", "--table", "members", str(d)]) == 2
    err = capsys.readouterr().err
    assert "table 'members'" in err and "column 'member_id'" in err and "int64" in err
    assert "part-1.parquet (2 rows)" in err
    assert "Traceback" not in err


def test_an_input_error_raised_in_a_ray_task_is_one_line_and_exit_2(monkeypatch, capsys):
    """Ray wraps what a task raises (its copy is an instance of the same class, its message the
    remote traceback); Ray Data raises a UDF's error as the cause of its own. The user gets the
    original line and its exit code either way; any other error stays a traceback."""
    import pytest
    import ray.exceptions

    from lantern_batch.cli import project_error
    from lantern_batch.errors import InputError

    original = InputError("table 'members': column 'updated_at' has type int64 in file f.parquet (3 rows)")
    wrapped = ray.exceptions.RayTaskError("fit", "Traceback (most recent call last):\n  File ...", original)
    in_task = wrapped.as_instanceof_cause()
    assert isinstance(in_task, InputError) and "File ..." in str(in_task) and str(original) not in str(in_task)

    class UserCodeError(Exception):
        pass

    try:
        raise UserCodeError("UDF failed to process a data block.") from in_task
    except UserCodeError as exc:
        udf = exc
    for raised in (in_task, udf, ray.exceptions.RayTaskError("map", "tb", udf).as_instanceof_cause()):
        assert project_error(raised) is original

        def runner(cfg, raised=raised):
            raise raised

        monkeypatch.setattr("lantern_batch.cli.JobSpec.runner", lambda self, fn=runner: fn)
        assert main(["precompute"]) == 2
        err = capsys.readouterr().err
        assert err == f"lantern-batch precompute: error: {original}\n"
    # A bug raised while an input error was being handled is not that error: a traceback.
    try:
        try:
            raise original
        except InputError:
            raise KeyError("bug")  # noqa: B904
    except KeyError as exc:
        bug = exc
    assert project_error(bug) is None
    monkeypatch.setattr("lantern_batch.cli.JobSpec.runner", lambda self: (lambda cfg: (_ for _ in ()).throw(bug)))
    with pytest.raises(KeyError):
        main(["precompute"])
