"""Publishing and resume under faults, on local disk and on S3 (a real moto_server on loopback).

A crash at any step of a republish leaves a generation that reads whole; an error after the
switch (in garbage collection, Ctrl-C) never deletes the live generation's files; a failed
run's cleanup deletes only files no manifest lists; ``_LATEST`` names only readable partitions
and never moves backwards under concurrent publishes; partitions in the single-manifest layout
still read and republish. Faults come from ``tests/fixtures/faults.py``.

    .venv/bin/python -m pytest -q tests/unit/test_precompute_publish.py
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from types import SimpleNamespace

import pyarrow as pa
import pytest

from lantern_batch import io
from lantern_batch.errors import NotPublishedError
from lantern_batch.precompute import job
from lantern_batch.precompute import manifest as mf
from lantern_batch.precompute.config import PrecomputeConfig
from tests.fixtures.faults import InjectedFault

DS = "2026-11-24"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def where(request, tmp_path):
    """A fresh base directory: local, or a fresh prefix in the moto bucket."""
    if request.param == "local":
        return str(tmp_path / "out")
    server = request.getfixturevalue("s3_server")
    return server.uri("publish", uuid.uuid4().hex[:10])


def _write(final_dir: str, run_id: str, n_files: int, rows: int = 5) -> list[str]:
    return [
        io.write_table(pa.table({"run_id": [run_id] * rows, "i": list(range(rows))}), final_dir,
                       basename=io.part_name(run_id, k))
        for k in range(n_files)
    ]


def _publish(final_dir: str, run_id: str, n_files: int = 2, rows: int = 5) -> dict:
    files = _write(final_dir, run_id, n_files, rows)
    return io.publish_partition(final_dir, files, {"run_id": run_id, "rows": n_files * rows})


def _reads_whole(final_dir: str, run_id: str, rows: int) -> None:
    """A reader that follows the contract gets exactly generation ``run_id``, every row."""
    table = io.read_published(final_dir, torn_grace_s=0.2, poll_s=0.02)
    assert set(table.column("run_id").to_pylist()) == {run_id}
    assert table.num_rows == rows
    manifest, files = io.published_files(final_dir, torn_grace_s=0.2)
    assert manifest["run_id"] == run_id
    present = set(io.list_dir(final_dir))
    assert all(io.basename(f) in present for f in files)


def _names(final_dir: str, prefix: str) -> set[str]:
    return {n for n in io.list_dir(final_dir) if n.startswith(prefix)}


# --------------------------------------------------------------------------- layout


def test_publish_writes_a_manifest_per_generation_and_switches_success(where):
    final_dir = io.join(where, "scores", f"ds={DS}")
    _publish(final_dir, "runA")
    _publish(final_dir, "runB", n_files=3)
    names = io.list_dir(final_dir)
    assert {"_manifest-runA.json", "_manifest-runB.json", "_manifest.json", "_SUCCESS"} <= set(names)
    assert io.read_text(io.join(final_dir, "_SUCCESS")).strip() == "runB"
    own = json.loads(io.read_text(io.join(final_dir, "_manifest-runB.json")))
    copy = json.loads(io.read_text(io.join(final_dir, "_manifest.json")))
    assert own == copy and own["files"] == [io.part_name("runB", k) for k in range(3)]
    _reads_whole(final_dir, "runB", 15)
    # The generation before last goes, manifest and files, once a third one is live.
    _publish(final_dir, "runC")
    assert not _names(final_dir, "part-runA") and "_manifest-runA.json" not in io.list_dir(final_dir)
    assert len(_names(final_dir, "part-runB")) == 3 and "_manifest-runB.json" in io.list_dir(final_dir)
    assert io.referenced_files(final_dir) == _names(final_dir, "part-")


# --------------------------------------------------------------------------- crash points


def test_crash_between_new_manifest_and_success_leaves_old_generation_readable(where, faults):
    final_dir = io.join(where, f"ds={DS}")
    _publish(final_dir, "runA", n_files=2)
    faults.fail("write", "_SUCCESS")
    with pytest.raises(InjectedFault):
        _publish(final_dir, "runB", n_files=3)
    # New readers and old ones (which read _manifest.json) alike still get runA, whole.
    _reads_whole(final_dir, "runA", 10)
    old_reader = json.loads(io.read_text(io.join(final_dir, "_manifest.json")))
    assert old_reader["run_id"] == "runA"
    # A rerun publishes over the leftovers and collects them.
    faults.clear()
    _publish(final_dir, "runC")
    _reads_whole(final_dir, "runC", 10)
    assert not _names(final_dir, "part-runB") and "_manifest-runB.json" not in io.list_dir(final_dir)


def test_a_crash_at_every_step_of_a_republish_leaves_one_whole_generation(tmp_path, faults):
    """Record the writes and deletes of a republish, then crash it at each one in turn: a
    reader always gets runA or runB whole, runB from the switch on."""
    def setup(root: str) -> str:
        final_dir = io.join(root, f"ds={DS}")
        _publish(final_dir, "run0", n_files=1)  # a generation for runB's publish to collect
        _publish(final_dir, "runA", n_files=2)
        _write(final_dir, "runB", 3)
        return final_dir

    probe = setup(str(tmp_path / "probe"))
    faults.clear()
    io.publish_partition(probe, [io.join(probe, io.part_name("runB", k)) for k in range(3)],
                         {"run_id": "runB"})
    steps = list(faults.calls)
    assert ("write", "_SUCCESS") in steps and any(op == "delete" for op, _ in steps)
    switch = steps.index(("write", "_SUCCESS"))
    for k, (op, name) in enumerate(steps):
        for when in ("before", "after"):
            final_dir = setup(str(tmp_path / f"step{k}-{when}"))
            faults.clear()
            faults.fail("*", "*", nth=k + 1, when=when, exc=KeyboardInterrupt())
            with pytest.raises(KeyboardInterrupt):
                io.publish_partition(final_dir, [io.join(final_dir, io.part_name("runB", i))
                                                 for i in range(3)], {"run_id": "runB"})
            switched = k > switch or (k == switch and when == "after")
            if switched:
                _reads_whole(final_dir, "runB", 15)
            else:
                _reads_whole(final_dir, "runA", 10)
            # The failed run's cleanup then deletes only what no manifest lists.
            faults.clear()
            job._cleanup(final_dir, "runB")
            _reads_whole(final_dir, "runB" if switched else "runA", 15 if switched else 10)
            assert len(_names(final_dir, "part-runA")) == 2, (op, name, when)


def test_gc_error_after_the_switch_keeps_the_live_files_and_the_publish_stands(where, faults, caplog):
    final_dir = io.join(where, f"ds={DS}")
    _publish(final_dir, "runA")
    _publish(final_dir, "runB")
    faults.fail("delete", "part-runA-*")  # GC of the generation before last fails half-way
    logging.getLogger("lantern_batch").propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="lantern_batch"):
            written = _publish(final_dir, "runC", n_files=3)
    finally:
        logging.getLogger("lantern_batch").propagate = False
    assert written["run_id"] == "runC"
    assert any("publish.gc_failed" in r.getMessage() and "InjectedFault" in r.getMessage()
               for r in caplog.records)
    _reads_whole(final_dir, "runC", 15)
    assert len(_names(final_dir, "part-runC")) == 3 and len(_names(final_dir, "part-runB")) == 2
    # The next publish collects what this one left.
    faults.clear()
    _publish(final_dir, "runD")
    assert not _names(final_dir, "part-runA") and not _names(final_dir, "part-runB")


def test_a_gc_that_raises_does_not_fail_the_publish(where, monkeypatch):
    final_dir = io.join(where, f"ds={DS}")
    _publish(final_dir, "runA")

    def broken_gc(final_dir: str, keep_runs: set[str]) -> int:
        raise OSError("S3 SlowDown")

    monkeypatch.setattr(io, "collect_garbage", broken_gc)
    _publish(final_dir, "runB")
    _reads_whole(final_dir, "runB", 10)


def test_cleanup_after_a_failure_past_the_switch_deletes_nothing_live(where, faults):
    final_dir = io.join(where, f"ds={DS}")
    _publish(final_dir, "runA")
    _publish(final_dir, "runB")
    faults.fail("delete", "part-runA-*", exc=KeyboardInterrupt())  # Ctrl-C during GC
    with pytest.raises(KeyboardInterrupt):
        _publish(final_dir, "runC", n_files=3)
    faults.clear()
    job._cleanup(final_dir, "runC")
    _reads_whole(final_dir, "runC", 15)
    assert len(_names(final_dir, "part-runC")) == 3
    assert not [op for op, name in faults.calls if name.startswith(("part-runC", "_manifest-runC"))]


def test_cleanup_when_the_success_write_landed_but_its_reply_was_lost(where, faults):
    final_dir = io.join(where, f"ds={DS}")
    _publish(final_dir, "runA")
    faults.fail("write", "_SUCCESS", when="after")
    with pytest.raises(InjectedFault):
        _publish(final_dir, "runB")
    faults.clear()
    job._cleanup(final_dir, "runB")
    _reads_whole(final_dir, "runB", 10)


def test_cleanup_before_the_switch_deletes_only_the_failed_runs_unlisted_files(where, faults):
    final_dir = io.join(where, f"ds={DS}")
    _publish(final_dir, "runA")
    _publish(final_dir, "runB")
    orphan = _write(final_dir, "crashed", 1)  # a killed run's leftover: not this run's to delete
    faults.fail("write", "_SUCCESS")
    with pytest.raises(InjectedFault):
        _publish(final_dir, "runC", n_files=3)
    faults.clear()
    job._cleanup(final_dir, "runC")
    _reads_whole(final_dir, "runB", 10)
    assert not _names(final_dir, "part-runC") and "_manifest-runC.json" not in io.list_dir(final_dir)
    assert len(_names(final_dir, "part-runA")) == 2 and len(_names(final_dir, "part-runB")) == 2
    assert io.exists(orphan[0])
    assert {n for op, n in faults.calls if op == "delete"} == (
        {io.part_name("runC", k) for k in range(3)} | {"_manifest-runC.json"})


def test_referenced_files_is_the_union_of_every_manifest(where, faults):
    final_dir = io.join(where, f"ds={DS}")
    _publish(final_dir, "runA")
    _publish(final_dir, "runB", n_files=1)
    faults.fail("write", "_SUCCESS")
    with pytest.raises(InjectedFault):
        _publish(final_dir, "runC", n_files=1)  # its manifest is written, never switched to
    assert io.referenced_files(final_dir) == (
        {io.part_name("runA", k) for k in range(2)} | {io.part_name("runB", 0), io.part_name("runC", 0)})
    io.write_text(io.join(final_dir, "_manifest-runC.json"), "{not json")
    with pytest.raises(ValueError, match="_manifest-runC.json is not valid JSON"):
        io.referenced_files(final_dir)


# --------------------------------------------------------------------------- readers


def test_success_naming_a_run_without_a_manifest_is_reported_then_resolved(where):
    final_dir = io.join(where, f"ds={DS}")
    _publish(final_dir, "runA")
    files_b = _write(final_dir, "runB", 1, rows=3)
    io.write_text(io.join(final_dir, "_SUCCESS"), "runB\n")
    with pytest.raises(NotPublishedError, match="_SUCCESS names run runB but neither _manifest-runB.json"):
        io.read_published(final_dir, torn_grace_s=0.2, poll_s=0.05)
    timer = threading.Timer(0.3, io.write_text, args=(
        io.join(final_dir, "_manifest-runB.json"),
        json.dumps({"run_id": "runB", "files": [io.basename(f) for f in files_b]})))
    timer.start()
    table = io.read_published(final_dir, torn_grace_s=20, poll_s=0.05)
    timer.join()
    assert table.num_rows == 3 and set(table.column("run_id").to_pylist()) == {"runB"}


def _legacy_publish(final_dir: str, run_id: str, n_files: int = 2) -> None:
    """The single-manifest layout of earlier versions: _manifest.json, then _SUCCESS."""
    files = _write(final_dir, run_id, n_files)
    manifest = {"run_id": run_id, "files": sorted(io.basename(f) for f in files)}
    io.write_text(io.join(final_dir, "_manifest.json"), json.dumps(manifest))
    io.write_text(io.join(final_dir, "_SUCCESS"), run_id + "\n")


def test_a_single_manifest_partition_still_reads_and_republishes(where):
    base = io.join(where, "scores")
    final_dir = io.join(base, f"ds={DS}")
    _legacy_publish(final_dir, "old")
    _reads_whole(final_dir, "old", 10)
    assert job.find_previous(base, DS)[1]["run_id"] == "old"
    assert io.write_latest(base, DS) == DS

    _publish(final_dir, "runB")
    _reads_whole(final_dir, "runB", 10)
    # The replaced generation got a manifest of its own and its files stay for slow readers.
    assert json.loads(io.read_text(io.join(final_dir, "_manifest-old.json")))["run_id"] == "old"
    assert len(_names(final_dir, "part-old")) == 2
    _publish(final_dir, "runC")
    assert not _names(final_dir, "part-old") and "_manifest-old.json" not in io.list_dir(final_dir)


def test_a_legacy_publisher_over_a_new_partition_is_followed(where):
    final_dir = io.join(where, f"ds={DS}")
    _publish(final_dir, "runA")
    _legacy_publish(final_dir, "legacy", n_files=1)  # an older version republished the ds
    _reads_whole(final_dir, "legacy", 5)
    _publish(final_dir, "runC")
    _reads_whole(final_dir, "runC", 10)
    assert len(_names(final_dir, "part-legacy")) == 1 and not _names(final_dir, "part-runA")


# --------------------------------------------------------------------------- _LATEST


def test_write_latest_refuses_a_partition_that_is_not_readable(where):
    base = io.join(where, "scores")
    with pytest.raises(NotPublishedError, match="not published"):
        io.write_latest(base, DS)
    assert io.read_latest(base) is None
    final_dir = io.join(base, f"ds={DS}")
    _write(final_dir, "runA", 1)
    with pytest.raises(NotPublishedError, match="not published"):
        io.write_latest(base, DS)
    _publish(final_dir, "runB")
    io.delete_file(io.join(final_dir, io.part_name("runB", 1)))
    with pytest.raises(NotPublishedError, match=r"lists 1 data files that do not exist, e\.g\. part-runB-00001"):
        io.write_latest(base, DS)
    assert io.read_latest(base) is None
    _publish(final_dir, "runC")
    assert io.write_latest(base, DS) == DS and io.read_latest(base) == DS


def test_two_concurrent_write_latest_never_move_latest_backwards(where, monkeypatch):
    """Both publishers read _LATEST before either writes, and the older ds would write last: a
    plain read-then-write leaves _LATEST on the older ds."""
    base = io.join(where, "scores")
    start, older, newer = "2026-11-23", "2026-11-24", "2026-11-25"
    for ds in (start, older, newer):
        _publish(io.join(base, f"ds={ds}"), f"run-{ds}", n_files=1)
    io.write_latest(base, start)
    real_read = io.read_text
    delay = {older: 0.6, newer: 0.2}

    def slow_latest_read(path: str) -> str:
        try:
            return real_read(path)
        finally:
            if io.basename(path) == io.LATEST:
                time.sleep(delay.get(threading.current_thread().name, 0.0))

    monkeypatch.setattr(io, "read_text", slow_latest_read)
    results: dict[str, str] = {}
    threads = [threading.Thread(target=lambda d=d: results.__setitem__(d, io.write_latest(base, d)), name=d)
               for d in (older, newer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    monkeypatch.setattr(io, "read_text", real_read)
    assert io.read_latest(base) == newer
    assert results[newer] == newer and results[older] in (older, newer)


def test_many_concurrent_publishers_leave_latest_on_the_newest(where):
    base = io.join(where, "scores")
    days = [f"2026-11-{d:02d}" for d in range(10, 18)]
    for ds in days:
        _publish(io.join(base, f"ds={ds}"), f"run-{ds}", n_files=1)
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if (value := io.read_latest(base)) is not None:
                seen.append(value)

    watcher = threading.Thread(target=watch)
    watcher.start()
    barrier = threading.Barrier(len(days))

    def publish(ds: str) -> None:
        barrier.wait()
        io.write_latest(base, ds)

    threads = [threading.Thread(target=publish, args=(ds,)) for ds in reversed(days)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    watcher.join(timeout=30)
    assert io.read_latest(base) == days[-1]
    assert seen == sorted(seen), "a reader saw _LATEST move backwards"


# --------------------------------------------------------------------------- the precompute job


@pytest.fixture
def fake_job(monkeypatch, tmp_path):
    """``job.run`` with everything before publishing stubbed out (no Ray, no models): the
    fake pipeline writes a few part files per run into the partitions, as the real one does."""
    import lantern_batch.runtime

    monkeypatch.setattr(lantern_batch.runtime, "init_ray", lambda cfg: None)
    monkeypatch.setattr(job, "input_files", lambda path, name: [io.join(path, "part-0.parquet")])
    monkeypatch.setattr(job, "_count_rows", lambda files: 8)
    monkeypatch.setattr(job, "_resolve_models", lambda cfg: {
        "classifier": SimpleNamespace(max_length=32, max_chars=400, version="cls-test", dtype="auto", use_gpu=False,
                                      temperature=1.0), "explainer": None})

    def pipeline(cfg, run_id, ds, files, rows_in, prev_files, scores_dir, errors_dir, *args):
        scores = [io.write_table(pa.table({"run_id": [run_id] * 3}), scores_dir,
                                 basename=f"part-{run_id}-{k:05d}.parquet") for k in range(2)]
        errors = [io.write_table(pa.table({"run_id": [run_id] * 2}), errors_dir,
                                 basename=f"part-{run_id}-e0.parquet")]
        counts = mf.aggregate_counts([{"rows_scored": 6, "rows_error": 2, "labels": {"High": 6}}])
        return SimpleNamespace(counts=counts, scores_files=scores, errors_files=errors, stages={},
                               join_strategy_used="broadcast", explainer_started=False,
                               members_rejected={}, jobs_rejected={}, gate=None)

    monkeypatch.setattr(job, "_pipeline", pipeline)

    def make(out: str, ds: str = DS) -> PrecomputeConfig:
        world = str(tmp_path / "world")
        return PrecomputeConfig(out=out, ds=ds, inputs={"members": f"{world}/members", "jobs": f"{world}/jobs",
                                                        "pairs": f"{world}/pairs"},
                                explainer={"enabled": False})

    return make


def _live_run(out: str, ds: str = DS) -> str:
    return io.published_files(io.join(out, "scores", f"ds={ds}"))[0]["run_id"]


def test_job_gc_error_after_the_switch_exits_0_with_every_live_file(where, fake_job, faults, caplog):
    cfg = fake_job(where)
    assert job.run(cfg) == 0
    first = _live_run(where)
    assert job.run(cfg) == 0
    # Third run: garbage collection of the first run's scores files fails after the switch.
    faults.fail("delete", f"part-{first}-0000*")
    logging.getLogger("lantern_batch").propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="lantern_batch"):
            assert job.run(cfg) == 0
    finally:
        logging.getLogger("lantern_batch").propagate = False
    faults.clear()
    assert any("publish.gc_failed" in r.getMessage() for r in caplog.records)
    live = _live_run(where)
    scores_dir = io.join(where, "scores", f"ds={DS}")
    _reads_whole(scores_dir, live, 6)
    assert len(_names(scores_dir, f"part-{live}-")) == 2
    assert io.read_published(io.join(where, "errors", f"ds={DS}")).num_rows == 2
    assert io.read_latest(io.join(where, "scores")) == DS


def test_job_ctrl_c_in_gc_keeps_every_live_file(where, fake_job, faults):
    cfg = fake_job(where)
    assert job.run(cfg) == 0
    first = _live_run(where)
    assert job.run(cfg) == 0
    # Third run: Ctrl-C while the scores publish collects the first run's files.
    faults.fail("delete", f"part-{first}-0000*", exc=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        job.run(cfg)
    faults.clear()
    live = _live_run(where)
    assert live != first
    scores_dir = io.join(where, "scores", f"ds={DS}")
    _reads_whole(scores_dir, live, 6)
    assert len(_names(scores_dir, f"part-{live}-")) == 2
    assert io.read_published(io.join(where, "errors", f"ds={DS}")).num_rows == 2


def test_job_failure_before_the_switch_exits_1_and_keeps_the_previous_generation(where, fake_job, faults):
    cfg = fake_job(where)
    assert job.run(cfg) == 0
    first = _live_run(where)
    scores_dir = io.join(where, "scores", f"ds={DS}")
    before = set(io.list_dir(scores_dir))
    # The scores partition's switch fails (the errors partition's _SUCCESS is written first).
    faults.fail("write", "_SUCCESS", nth=2)
    assert job.run(cfg) == 1
    faults.clear()
    _reads_whole(scores_dir, first, 6)
    assert set(io.list_dir(scores_dir)) == before, "the failed run's files and manifest are cleaned up"
    assert io.read_latest(io.join(where, "scores")) == DS
