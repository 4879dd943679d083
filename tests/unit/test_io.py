"""lantern_batch.io on local disk: Parquet round trips, atomic text writes, atomic partition
publishing (no mixed reads while a rerun publishes), garbage collection, _LATEST, the lock.

The same publish/lock code runs against S3 in tests/integration/test_s3.py; crashes and errors
at each step of a publish are in tests/unit/test_precompute_publish.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pytest

from lantern_batch import io
from lantern_batch.errors import LanternError, LockHeldError, NotPublishedError


def _write_generation(final_dir: str, run_id: str, n_files: int, rows_per_file: int) -> list[str]:
    files = []
    for i in range(n_files):
        table = pa.table(
            {
                "run_id": [run_id] * rows_per_file,
                "row": list(range(i * rows_per_file, (i + 1) * rows_per_file)),
            }
        )
        files.append(io.write_table(table, final_dir, basename=io.part_name(run_id, i)))
    return files


def _publish(final_dir: str, run_id: str, n_files: int = 2, rows_per_file: int = 5) -> dict:
    files = _write_generation(final_dir, run_id, n_files, rows_per_file)
    return io.publish_partition(
        final_dir, files, {"run_id": run_id, "rows": n_files * rows_per_file}
    )


# --------------------------------------------------------------------------- basics


def test_write_read_list_parquet_roundtrip(tmp_path):
    table = pa.table({"member_id": ["m1", "m2"], "score": [0.5, 0.25]})
    path = io.write_table(table, str(tmp_path / "t"), basename="part-a.parquet")
    io.write_text(str(tmp_path / "t" / "_SUCCESS"), "x\n")
    assert io.list_parquet_files(str(tmp_path / "t")) == [path]
    assert io.read_table(str(tmp_path / "t")).equals(table)
    assert io.read_table(path, columns=["score"]).column_names == ["score"]
    assert io.dataset_schema(str(tmp_path / "t")) == table.schema


def test_missing_input_names_the_table(tmp_path):
    with pytest.raises(LanternError, match="table 'members'.*no Parquet files"):
        io.read_table(str(tmp_path / "nothing"), table="members")


def test_write_text_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    target = str(tmp_path / "d" / "_manifest.json")
    io.write_text(target, "old")
    assert io.read_text(target) == "old"

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        io.write_text(target, "new")
    monkeypatch.undo()
    # The failed write changed nothing and cleaned up its temp file.
    assert io.read_text(target) == "old"
    assert os.listdir(tmp_path / "d") == ["_manifest.json"]
    io.write_text(target, "new")
    assert io.read_text(target) == "new"
    assert os.listdir(tmp_path / "d") == ["_manifest.json"]


def test_join_basename_parent_for_local_and_s3():
    assert io.join("s3://b/x", "y", "z.parquet") == "s3://b/x/y/z.parquet"
    assert io.basename("s3://b/x/y/") == "y"
    assert io.parent("s3://b/x/y.parquet") == "s3://b/x"
    assert io.parent("/a/b/c") == "/a/b"


# --------------------------------------------------------------------------- publish


def test_publish_writes_manifest_and_success_with_run_id(tmp_path):
    final_dir = str(tmp_path / "scores" / "ds=2026-11-24")
    manifest = _publish(final_dir, "runA")
    assert manifest["files"] == ["part-runA-00000.parquet", "part-runA-00001.parquet"]
    on_disk = json.loads(io.read_text(io.join(final_dir, "_manifest-runA.json")))
    assert on_disk == manifest
    # The copy for readers that predate per-generation manifests.
    assert json.loads(io.read_text(io.join(final_dir, "_manifest.json"))) == manifest
    assert io.read_text(io.join(final_dir, "_SUCCESS")).strip() == "runA"
    table = io.read_published(final_dir)
    assert table.num_rows == 10 and set(table.column("run_id").to_pylist()) == {"runA"}


def test_gc_keeps_previous_generation_and_drops_the_one_before(tmp_path):
    final_dir = str(tmp_path / "ds=2026-11-24")
    _publish(final_dir, "runA")
    # An orphan of a crashed run: never listed, so garbage.
    io.write_table(pa.table({"x": [1]}), final_dir, basename="part-crashed-00000.parquet")
    _publish(final_dir, "runB")
    names = io.list_dir(final_dir)
    assert {n for n in names if n.startswith("part-runA")} == {
        "part-runA-00000.parquet",
        "part-runA-00001.parquet",
    }, "the previous generation must survive one publish (slow readers)"
    assert "part-crashed-00000.parquet" not in names
    # A directory listing now holds two generations; only the manifest gives one.
    assert len(io.list_parquet_files(final_dir)) == 4
    assert set(io.read_published(final_dir).column("run_id").to_pylist()) == {"runB"}

    _publish(final_dir, "runC")
    names = io.list_dir(final_dir)
    assert not any(n.startswith("part-runA") for n in names)
    assert sum(n.startswith("part-runB") for n in names) == 2
    assert sum(n.startswith("part-runC") for n in names) == 2


def test_concurrent_reader_never_sees_a_mix(tmp_path):
    """A reader loops over read_published while reruns publish generations of different sizes;
    every read must be exactly one generation, whole."""
    final_dir = str(tmp_path / "ds=2026-11-24")
    expected_rows = {}

    def publish(i: int) -> None:
        run_id = f"run{i:03d}"
        n_files = 1 + i % 3
        expected_rows[run_id] = n_files * 7
        _publish(final_dir, run_id, n_files=n_files, rows_per_file=7)

    publish(0)
    stop = threading.Event()
    seen: list[str] = []
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                table = io.read_published(final_dir, poll_s=0.001)
            except Exception as exc:  # any failure is a contract violation
                problems.append(f"{type(exc).__name__}: {exc}")
                return
            runs = set(table.column("run_id").to_pylist())
            if len(runs) != 1:
                problems.append(f"mixed read: {sorted(runs)}")
                return
            run = runs.pop()
            if table.num_rows != expected_rows[run]:
                problems.append(f"partial read of {run}: {table.num_rows} rows")
                return
            seen.append(run)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(1, 25):
        publish(i)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not problems, problems
    assert len(set(seen)) >= 2, "the readers should have seen several generations"
    assert set(io.read_published(final_dir).column("run_id").to_pylist()) == {"run024"}


def test_half_done_republish_reads_the_old_generation_then_the_new(tmp_path):
    final_dir = str(tmp_path / "ds=2026-11-24")
    _publish(final_dir, "runA")
    # A publish between its manifest and its switch: runB's manifest written, _SUCCESS still
    # names runA. Readers follow _SUCCESS, so they read runA whole (no torn state to wait out).
    files_b = _write_generation(final_dir, "runB", 1, 3)
    io.write_text(
        io.join(final_dir, "_manifest-runB.json"),
        json.dumps({"run_id": "runB", "files": [io.basename(f) for f in files_b]}),
    )
    table = io.read_published(final_dir, torn_grace_s=0.3, poll_s=0.05)
    assert table.num_rows == 10 and set(table.column("run_id").to_pylist()) == {"runA"}

    # The switch: readers get the new generation from then on.
    io.write_text(io.join(final_dir, "_SUCCESS"), "runB\n")
    table = io.read_published(final_dir, torn_grace_s=0.3, poll_s=0.05)
    assert table.num_rows == 3 and set(table.column("run_id").to_pylist()) == {"runB"}


def test_success_without_its_manifest_is_detected_and_retried(tmp_path):
    final_dir = str(tmp_path / "ds=2026-11-24")
    _publish(final_dir, "runA")
    files_b = _write_generation(final_dir, "runB", 1, 3)
    io.write_text(io.join(final_dir, "_SUCCESS"), "runB\n")
    with pytest.raises(NotPublishedError, match="_SUCCESS names run runB"):
        io.read_published(final_dir, torn_grace_s=0.3, poll_s=0.05)

    # The manifest appearing while a reader waits: the reader gets that generation.
    body = json.dumps({"run_id": "runB", "files": [io.basename(f) for f in files_b]})
    timer = threading.Timer(0.3, io.write_text, args=(io.join(final_dir, "_manifest-runB.json"), body))
    timer.start()
    table = io.read_published(final_dir, torn_grace_s=10, poll_s=0.05)
    timer.join()
    assert table.num_rows == 3 and set(table.column("run_id").to_pylist()) == {"runB"}


def test_read_published_waits_for_success(tmp_path):
    final_dir = str(tmp_path / "ds=2026-11-24")
    with pytest.raises(NotPublishedError, match="not published"):
        io.read_published(final_dir)
    files = _write_generation(final_dir, "runA", 1, 4)
    timer = threading.Timer(0.3, io.publish_partition, args=(final_dir, files, {"run_id": "runA"}))
    start = time.monotonic()
    timer.start()
    table = io.read_published(final_dir, wait_s=20, poll_s=0.05)
    timer.join()
    assert table.num_rows == 4
    assert time.monotonic() - start < 20


def test_published_files_lists_only_the_manifest_generation(tmp_path):
    final_dir = str(tmp_path / "ds=2026-11-24")
    _publish(final_dir, "runA")
    _publish(final_dir, "runB", n_files=3)
    manifest, files = io.published_files(final_dir)
    assert manifest["run_id"] == "runB"
    assert [io.basename(f) for f in files] == [f"part-runB-{i:05d}.parquet" for i in range(3)]


def test_empty_partition_reads_with_schema(tmp_path):
    final_dir = str(tmp_path / "ds=2026-11-24")
    io.publish_partition(final_dir, [], {"run_id": "runA", "rows": 0})
    schema = pa.schema([("member_id", pa.string())])
    assert io.read_published(final_dir, schema=schema).schema == schema


def test_publish_refuses_bad_inputs(tmp_path):
    final_dir = str(tmp_path / "ds=2026-11-24")
    elsewhere = io.write_table(pa.table({"x": [1]}), str(tmp_path / "other"), basename="p.parquet")
    with pytest.raises(ValueError, match="not directly in"):
        io.publish_partition(final_dir, [elsewhere], {"run_id": "r"})
    with pytest.raises(ValueError, match="run_id"):
        io.publish_partition(final_dir, [], {})
    with pytest.raises(ValueError, match="run_id"):  # it names a file: _manifest-<run_id>.json
        io.publish_partition(final_dir, [], {"run_id": "a/b"})
    with pytest.raises(ValueError, match="missing"):
        io.publish_partition(final_dir, [io.join(final_dir, "part-x.parquet")], {"run_id": "r"})
    # Reusing a published name under another run would rewrite a file readers may be reading.
    io.write_table(pa.table({"x": [1]}), final_dir, basename="part-00000.parquet")
    io.publish_partition(final_dir, [io.join(final_dir, "part-00000.parquet")], {"run_id": "r1"})
    with pytest.raises(ValueError, match="run-unique"):
        io.publish_partition(final_dir, [io.join(final_dir, "part-00000.parquet")], {"run_id": "r2"})


def test_write_latest_names_the_newest_ds(tmp_path):
    base = str(tmp_path / "scores")
    for ds in ("2026-11-20", "2026-11-23", "2026-11-24"):
        _publish(io.join(base, f"ds={ds}"), f"run-{ds}")
    assert io.read_latest(base) is None
    assert io.write_latest(base, "2026-11-23") == "2026-11-23"
    assert io.write_latest(base, "2026-11-24") == "2026-11-24"
    # Re-publishing an older day does not move _LATEST backwards.
    assert io.write_latest(base, "2026-11-20") == "2026-11-24"
    assert io.read_latest(base) == "2026-11-24"


# --------------------------------------------------------------------------- lock


def test_lock_contention_raises_and_release_frees(tmp_path):
    path = str(tmp_path / "locks" / "ds=2026-11-24.lock")
    with io.PartitionLock(path, owner="runA", ttl_s=3600):
        with pytest.raises(LockHeldError, match="held by runA"):
            io.PartitionLock(path, owner="runB", ttl_s=3600).acquire()
    assert not os.path.exists(path)
    with io.PartitionLock(path, owner="runB", ttl_s=3600) as lock:
        assert lock.held
    assert not os.path.exists(path)


def test_only_one_of_many_concurrent_contenders_wins(tmp_path):
    path = str(tmp_path / "ds.lock")
    winners, losers = [], []
    barrier = threading.Barrier(8)

    def contend(i: int) -> None:
        barrier.wait()
        try:
            io.PartitionLock(path, owner=f"run{i}", ttl_s=3600).acquire()
            winners.append(i)
        except LockHeldError:
            losers.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7


def test_stale_lock_is_broken_with_a_warning(tmp_path, caplog):
    path = str(tmp_path / "ds.lock")
    with open(path, "w") as f:
        json.dump({"owner": "dead-run", "token": "t0", "created_at": time.time() - 7200}, f)
    lock = io.PartitionLock(path, owner="runB", ttl_s=3600)
    import logging

    logging.getLogger("lantern_batch").propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="lantern_batch"):
            lock.acquire()
    finally:
        logging.getLogger("lantern_batch").propagate = False
    assert any("stale" in r.getMessage() and "dead-run" in r.getMessage() for r in caplog.records)
    assert json.loads(open(path).read())["owner"] == "runB"
    lock.release()
    assert not os.path.exists(path)


def _fresh_lock(path, pid, **ident):
    body = {"owner": "killed-run", "token": "t0", "host": socket.gethostname(), "pid": pid,
            **io._process_identity(), "created_at": time.time(), "ttl_s": 3600, **ident}
    with open(path, "w") as f:
        json.dump(body, f)


@pytest.mark.skipif(not io._process_identity(), reason="needs /proc (Linux)")
def test_a_fresh_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    """A run killed with SIGKILL leaves a lock well inside its ttl; the next run on the same
    machine takes it over at once, while a live holder, or one in another pid namespace or on
    another host, still blocks it."""
    path = str(tmp_path / "ds.lock")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _fresh_lock(path, gone.pid)
    lock = io.PartitionLock(path, owner="runB", ttl_s=3600).acquire()
    assert json.loads(open(path).read())["owner"] == "runB"
    lock.release()

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for ident in ({}, {"pid_ns": "pid:[1]"}, {"host": "another-host"}):
            _fresh_lock(path, alive.pid if not ident else gone.pid, **ident)
            with pytest.raises(LockHeldError, match="killed-run"):
                io.PartitionLock(path, owner="runB", ttl_s=3600).acquire()
    finally:
        alive.kill()
        alive.wait()
    _fresh_lock(path, 1, boot_id="an-earlier-boot")  # the host rebooted since: nothing of it runs
    io.PartitionLock(path, owner="runB", ttl_s=3600).acquire().release()


def test_empty_lock_file_ages_by_mtime(tmp_path):
    # A holder that died between creating and writing its lock leaves an empty file.
    path = str(tmp_path / "ds.lock")
    open(path, "w").close()
    with pytest.raises(LockHeldError):
        io.PartitionLock(path, owner="runB", ttl_s=3600).acquire()
    old = time.time() - 7200
    os.utime(path, (old, old))
    with io.PartitionLock(path, owner="runB", ttl_s=3600) as lock:
        assert lock.held


def test_lost_lock_is_not_deleted_on_release(tmp_path):
    path = str(tmp_path / "ds.lock")
    lock = io.PartitionLock(path, owner="runA", ttl_s=0.0).acquire()
    time.sleep(0.01)
    # runA's lock went stale and runB broke it; runA's release must not free runB's lock.
    other = io.PartitionLock(path, owner="runB", ttl_s=3600).acquire()
    with pytest.raises(LockHeldError, match="lost"):
        lock.refresh()
    lock.release()
    assert json.loads(open(path).read())["owner"] == "runB"
    other.release()


def test_refresh_keeps_a_long_run_lock_fresh(tmp_path):
    path = str(tmp_path / "ds.lock")
    lock = io.PartitionLock(path, owner="runA", ttl_s=0.5).acquire()
    for _ in range(3):
        time.sleep(0.2)
        lock.refresh()
        with pytest.raises(LockHeldError):
            io.PartitionLock(path, owner="runB", ttl_s=0.5).acquire()
    lock.release()


# ---------------------------------------------------------------------------------------------
# LockKeeper: a run holds its lock for its whole length


def _unreachable_endpoint():
    # What s3fs lets through unconverted when the endpoint cannot be reached: not an OSError.
    from botocore.exceptions import EndpointConnectionError

    exc = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert not isinstance(exc, OSError)
    return exc


@pytest.mark.parametrize("errors", [
    lambda: [OSError("503 slow down"), OSError("connection reset")],
    lambda: [_unreachable_endpoint(), _unreachable_endpoint()],
], ids=["oserror", "botocore"])
def test_keeper_retries_a_transient_refresh_error(tmp_path, monkeypatch, errors):
    path = tmp_path / "_locks" / "x.lock"
    keeper = io.LockKeeper(str(path), owner="run-a", ttl_s=1.5)
    real = keeper.lock.refresh
    failures = iter(errors())

    def flaky():
        exc = next(failures, None)
        if exc is not None:
            raise exc
        real()

    monkeypatch.setattr(keeper.lock, "refresh", flaky)
    with keeper:
        time.sleep(2.5)  # past ttl_s: only refreshes after the errors keep the lock fresh
        assert keeper._thread is not None and keeper._thread.is_alive()
        assert not keeper.lost and keeper.lock.held
        with pytest.raises(LockHeldError):
            io.PartitionLock(str(path), "run-b", 1.5).acquire()
    assert not path.exists()


def test_a_refresh_that_keeps_failing_with_a_botocore_error_stops_the_run(tmp_path, monkeypatch):
    path = tmp_path / "_locks" / "x.lock"
    keeper = io.LockKeeper(str(path), owner="run-a", ttl_s=1.5, what="synthesize")

    def unreachable():
        raise _unreachable_endpoint()

    monkeypatch.setattr(keeper.lock, "refresh", unreachable)
    start = time.monotonic()
    with pytest.raises(io.LockLostError, match="lost the lock"):
        with keeper:
            for _ in range(50):  # hours of work, in 0.1 s steps
                time.sleep(0.1)
    assert keeper.lost
    assert time.monotonic() - start < 4


def test_a_run_that_lost_its_lock_stops_at_once(tmp_path):
    path = tmp_path / "_locks" / "x.lock"
    start = time.monotonic()
    with pytest.raises(io.LockLostError, match="lost the lock"):
        with io.LockKeeper(str(path), owner="run-a", ttl_s=1.5, what="synthesize"):
            # Another run broke the lock as stale and took it over.
            path.write_text(json.dumps({"owner": "run-b", "token": "theirs", "created_at": time.time(),
                                        "ttl_s": 900}))
            for _ in range(300):  # hours of work, in 0.1 s steps
                time.sleep(0.1)
    assert time.monotonic() - start < 5
    assert json.loads(path.read_text())["owner"] == "run-b"  # their lock is left alone


def test_a_failed_release_after_success_is_only_a_warning(tmp_path, monkeypatch, caplog):
    keeper = io.LockKeeper(str(tmp_path / "_locks" / "x.lock"), owner="run-a", ttl_s=60)

    def unreachable():
        raise OSError("endpoint unreachable")

    with keeper:
        monkeypatch.setattr(keeper.lock, "release", unreachable)
    assert "lock.release_failed" in caplog.text


def test_a_botocore_error_on_release_after_success_is_only_a_warning(tmp_path, monkeypatch, caplog):
    keeper = io.LockKeeper(str(tmp_path / "_locks" / "x.lock"), owner="run-a", ttl_s=60)

    def unreachable():
        raise _unreachable_endpoint()

    with keeper:
        monkeypatch.setattr(keeper.lock, "release", unreachable)
    assert "lock.release_failed" in caplog.text
    assert "EndpointConnectionError" in caplog.text


def test_synthesize_refuses_an_output_another_run_holds(tmp_path, tiny_world):
    from lantern_batch.teacher.config import SynthesizeConfig
    from lantern_batch.teacher.job import run

    out = tmp_path / "synth"
    cfg = SynthesizeConfig.model_validate({
        "inputs": {t: str(tiny_world / t) for t in ("members", "jobs", "pairs")}, "out": str(out)})
    with io.LockKeeper(str(out / "_locks" / "synthesize.lock"), owner="the-other-run", ttl_s=60):
        with pytest.raises(LockHeldError, match="the-other-run"):
            run(cfg)
