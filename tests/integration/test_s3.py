"""S3 end to end against a real moto_server on loopback: Parquet I/O (pyarrow and s3fs backends),
atomic publish with a concurrent reader, GC, _LATEST, the lock's conditional puts, Ray Data
reading S3 from workers, and model references on S3.

    .venv/bin/python -m pytest -q tests/integration/test_s3.py
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pyarrow as pa
import pytest

from lantern_batch import io, models
from lantern_batch.errors import InputError, LockHeldError, NotPublishedError

pytestmark = pytest.mark.integration


@pytest.fixture(params=["pyarrow", "s3fs"])
def s3_backend(request, monkeypatch, s3_server):
    monkeypatch.setenv("LANTERN_S3_BACKEND", request.param)
    return request.param


def _publish(final_dir: str, run_id: str, n_files: int, rows_per_file: int = 4) -> dict:
    files = [
        io.write_table(
            pa.table({"run_id": [run_id] * rows_per_file, "i": list(range(rows_per_file))}),
            final_dir,
            basename=f"part-{run_id}-{k:05d}.parquet",
        )
        for k in range(n_files)
    ]
    return io.publish_partition(final_dir, files, {"run_id": run_id, "rows": n_files * rows_per_file})


def test_parquet_roundtrip_on_s3(s3_server, s3_backend):
    base = s3_server.uri("roundtrip", s3_backend, "members")
    t1 = pa.table({"member_id": ["m1", "m2"], "years": [3.5, 10.0]})
    t2 = pa.table({"member_id": ["m3"], "years": [1.0]})
    p1 = io.write_table(t1, base, basename="part-0.parquet")
    io.write_table(t2, io.join(base, "sub"), basename="part-1.parquet")
    io.write_text(io.join(base, "_SUCCESS"), "ok\n")
    assert p1 == f"{base}/part-0.parquet"
    assert io.list_parquet_files(base) == [p1, f"{base}/sub/part-1.parquet"]
    assert io.exists(p1) and not io.exists(io.join(base, "nope.parquet"))
    got = io.read_table(base)
    assert sorted(got.column("member_id").to_pylist()) == ["m1", "m2", "m3"]
    assert io.dataset_schema(base) == t1.schema
    assert io.read_text(io.join(base, "_SUCCESS")) == "ok\n"
    assert io.list_dir(base) == ["_SUCCESS", "part-0.parquet"]
    io.delete_dir(base)
    assert io.list_parquet_files(base) == []
    with pytest.raises(InputError, match="table 'members'"):
        io.read_table(base, table="members")


def test_publish_on_s3_concurrent_reader_never_sees_a_mix(s3_server):
    final_dir = s3_server.uri("out", "scores", "ds=2026-11-24")
    sizes = {}

    def publish(i: int) -> None:
        run_id = f"run{i:02d}"
        n_files = 1 + i % 3
        sizes[run_id] = n_files * 4
        _publish(final_dir, run_id, n_files)

    publish(0)
    stop = threading.Event()
    seen, problems = [], []

    def reader() -> None:
        while not stop.is_set():
            try:
                table = io.read_published(final_dir, poll_s=0.01)
            except Exception as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
                return
            runs = set(table.column("run_id").to_pylist())
            if len(runs) != 1 or table.num_rows != sizes[next(iter(runs))]:
                problems.append(f"mixed or partial read: {sorted(runs)} {table.num_rows} rows")
                return
            seen.append(runs.pop())

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(1, 8):
        publish(i)
    stop.set()
    thread.join(timeout=60)
    assert not problems, problems
    assert len(set(seen)) >= 2
    # GC kept exactly the last two generations.
    names = io.list_dir(final_dir)
    runs_present = {n.split("-")[1] for n in names if n.startswith("part-")}
    assert runs_present == {"run06", "run07"}
    assert io.read_text(io.join(final_dir, "_SUCCESS")).strip() == "run07"
    manifest, files = io.published_files(final_dir)
    assert manifest["run_id"] == "run07" and all(f.startswith("s3://") for f in files)


def test_half_done_publish_on_s3_reads_the_old_generation(s3_server):
    final_dir = s3_server.uri("torn", "ds=2026-11-24")
    _publish(final_dir, "runA", 1)
    # runB's manifest is written but _SUCCESS still names runA: readers get runA.
    io.write_text(io.join(final_dir, "_manifest-runB.json"), json.dumps({"run_id": "runB", "files": []}))
    table = io.read_published(final_dir, torn_grace_s=0.2, poll_s=0.05)
    assert set(table.column("run_id").to_pylist()) == {"runA"}


def test_success_without_its_manifest_on_s3_is_reported(s3_server):
    final_dir = s3_server.uri("torn-success", "ds=2026-11-24")
    _publish(final_dir, "runA", 1)
    io.write_text(io.join(final_dir, "_SUCCESS"), "runB\n")
    with pytest.raises(NotPublishedError, match="_SUCCESS names run runB"):
        io.read_published(final_dir, torn_grace_s=0.2, poll_s=0.05)


def test_latest_on_s3(s3_server):
    base = s3_server.uri("latest", "scores")
    for ds in ("2026-11-23", "2026-11-24"):
        _publish(io.join(base, f"ds={ds}"), f"run-{ds}", 1)
    io.write_latest(base, "2026-11-24")
    io.write_latest(base, "2026-11-23")
    assert io.read_latest(base) == "2026-11-24"
    with pytest.raises(NotPublishedError, match="not published"):
        io.write_latest(base, "2026-11-25")


def test_lock_on_s3_contention_stale_and_release(s3_server, caplog):
    path = s3_server.uri("locks", "scores", "ds=2026-11-24.lock")
    with io.PartitionLock(path, owner="runA", ttl_s=3600):
        with pytest.raises(LockHeldError, match="held by runA"):
            io.PartitionLock(path, owner="runB", ttl_s=3600).acquire()
    assert not io.exists(path)

    # Eight contenders at once: the conditional PUT lets exactly one win.
    winners, barrier = [], threading.Barrier(8)

    def contend(i: int) -> None:
        barrier.wait()
        try:
            winners.append(io.PartitionLock(path, owner=f"run{i}", ttl_s=3600).acquire())
        except LockHeldError:
            pass

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    winners[0].release()

    # A stale lock (holder died 2 h ago) is broken; the new holder owns the object.
    io.write_text(path, json.dumps({"owner": "dead", "token": "t", "created_at": time.time() - 7200}))
    with io.PartitionLock(path, owner="runC", ttl_s=3600) as lock:
        assert json.loads(io.read_text(path))["token"] == lock.token
        lock.refresh()
        assert json.loads(io.read_text(path))["token"] == lock.token
    assert not io.exists(path)


def test_lost_lock_on_s3_is_not_released(s3_server):
    path = s3_server.uri("locks", "lost.lock")
    stale_holder = io.PartitionLock(path, owner="runA", ttl_s=0.0).acquire()
    time.sleep(0.05)
    new_holder = io.PartitionLock(path, owner="runB", ttl_s=3600).acquire()
    with pytest.raises(LockHeldError, match="lost"):
        stale_holder.refresh()
    stale_holder.release()
    assert json.loads(io.read_text(path))["owner"] == "runB"
    new_holder.release()


def test_ray_workers_read_s3(s3_server, ray_s3):
    base = s3_server.uri("ray", "pairs")
    for k in range(3):
        io.write_table(
            pa.table({"member_id": [f"m{k}-{i}" for i in range(50)], "x": list(range(50))}),
            base,
            basename=f"part-{k}.parquet",
        )
    ds = io.ray_read_parquet(base)
    # map_batches runs in Ray workers, so the read really happens outside the driver.
    counts = ds.map_batches(lambda b: {"n": [len(b["x"])]}, batch_format="numpy").take_all()
    total = sum(r["n"] for r in counts)
    assert total == 150

    final_dir = s3_server.uri("ray", "scores", "ds=2026-11-24")
    _publish(final_dir, "runA", 2)
    _publish(final_dir, "runB", 3)
    _, files = io.published_files(final_dir)
    rows = io.ray_read_parquet(files).take_all()
    assert len(rows) == 12 and {r["run_id"] for r in rows} == {"runB"}


def test_model_reference_on_s3_downloads_once(s3_server, tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path / "cache"))
    fs = io.s3fs_filesystem()
    prefix = f"{s3_server.bucket}/models/tiny-bert"
    fs.put(str(tiny_bert_dir), prefix, recursive=True)
    uri = f"s3://{prefix}"

    local = models.resolve(uri)
    assert local.is_relative_to(tmp_path / "cache")
    for f in tiny_bert_dir.iterdir():
        assert (local / f.name).read_bytes() == f.read_bytes()
    assert models.model_version(local) == models.model_version(tiny_bert_dir)
    from transformers import AutoModel, AutoTokenizer

    AutoTokenizer.from_pretrained(local)
    AutoModel.from_pretrained(local)

    # Unchanged listing: the cached copy is reused, nothing is downloaded again.
    mtime = (local / "model.safetensors").stat().st_mtime_ns
    assert models.resolve(uri + "/") == local
    assert (local / "model.safetensors").stat().st_mtime_ns == mtime

    # A changed object changes the listing hash: a fresh download into a new directory.
    fs.pipe_file(f"{prefix}/{models.METADATA_FILE}", b'{"source": "retrained"}\n')
    changed = models.resolve(uri)
    assert changed != local
    assert json.loads((changed / models.METADATA_FILE).read_text()) == {"source": "retrained"}
    assert models.model_version(changed) != models.model_version(local)


def test_model_reference_on_s3_without_config_is_a_clear_error(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path / "cache"))
    fs = io.s3fs_filesystem()
    fs.pipe_file(f"{s3_server.bucket}/models/broken/weights.bin", b"x")
    with pytest.raises(InputError, match="no config.json"):
        models.resolve(s3_server.uri("models", "broken"))
    with pytest.raises(InputError, match="no config.json"):
        models.resolve(s3_server.uri("models", "does-not-exist"))
    assert not (tmp_path / "cache" / "models").exists() or not any(
        p for p in (tmp_path / "cache" / "models").iterdir() if not p.name.endswith(".lock")
    )
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)


def test_model_export_to_s3_keeps_the_previous_model_until_the_new_one_is_complete(
        s3_server, tiny_bert_dir, tmp_path, monkeypatch):
    """An export is uploaded as a new immutable version; the pointer switches only after every
    file is up, so a crash mid-upload leaves the previous model whole and readable."""
    import pyarrow.fs as pafs

    from lantern_batch.distill import export

    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path / "cache"))
    target = s3_server.uri("models", "export-versions")
    first = tmp_path / "first"
    shutil.copytree(tiny_bert_dir, first)
    (first / models.METADATA_FILE).write_text('{"generation": 1}\n')
    export.publish_dir(str(first), target)
    assert json.loads((models.resolve(target) / models.METADATA_FILE).read_text()) == {"generation": 1}

    second = tmp_path / "second"
    shutil.copytree(tiny_bert_dir, second)
    (second / models.METADATA_FILE).write_text('{"generation": 2}\n')
    real_copy = pafs.copy_files

    def crash_mid_upload(src, dst, **kwargs):
        raise OSError("connection reset during upload")

    monkeypatch.setattr(pafs, "copy_files", crash_mid_upload)
    with pytest.raises(OSError):
        export.publish_dir(str(second), target)
    monkeypatch.setattr(pafs, "copy_files", real_copy)
    live = models.resolve(target)
    assert json.loads((live / models.METADATA_FILE).read_text()) == {"generation": 1}
    for f in first.iterdir():
        assert (live / f.name).read_bytes() == f.read_bytes()

    # A complete publish switches; versions older than the previous one are collected.
    export.publish_dir(str(second), target)
    assert json.loads((models.resolve(target) / models.METADATA_FILE).read_text()) == {"generation": 2}
    export.publish_dir(str(first), target)
    fs = io.s3fs_filesystem()
    root = f"{s3_server.bucket}/models/export-versions/{models.EXPORT_VERSIONS}"
    versions = [v for v in fs.ls(root, refresh=True) if v.rstrip("/") != root]  # not the folder marker
    assert len(versions) == export.KEEP_VERSIONS
    assert json.loads((models.resolve(target) / models.METADATA_FILE).read_text()) == {"generation": 1}


def test_a_successful_export_after_a_crashed_upload_keeps_the_previously_live_model(
        s3_server, tiny_bert_dir, tmp_path, monkeypatch):
    """A crash after some files of a new version were uploaded leaves a fragment that is newer
    than the live version. The next successful export keeps the version ``CURRENT`` named before
    it (whole: a reader may still be downloading it) and deletes the fragment."""
    import pyarrow.fs as pafs

    from lantern_batch.distill import export

    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path / "cache"))
    target = s3_server.uri("models", "export-after-crash")
    prefix = f"{s3_server.bucket}/models/export-after-crash"
    versions_root = f"{prefix}/{models.EXPORT_VERSIONS}"
    fs = io.s3fs_filesystem()

    def versions() -> set[str]:
        return {v.rstrip("/").rsplit("/", 1)[-1] for v in fs.ls(versions_root, refresh=True)
                if v.rstrip("/") != versions_root}  # not the folder marker

    def files(version: str) -> list[str]:  # names of the objects, not folder markers
        return sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{versions_root}/{version}")
                      if not p.endswith("/"))

    def pointed() -> str:
        return json.loads(fs.cat_file(f"{prefix}/{models.EXPORT_POINTER}"))["version"]

    first = tmp_path / "first"
    shutil.copytree(tiny_bert_dir, first)
    (first / models.METADATA_FILE).write_text('{"generation": 1}\n')
    export.publish_dir(str(first), target)
    live = pointed()

    second = tmp_path / "second"
    shutil.copytree(tiny_bert_dir, second)
    (second / models.METADATA_FILE).write_text('{"generation": 2}\n')
    real_copy = pafs.copy_files

    def crash_after_two_files(src, dst, **kwargs):
        for name in sorted(os.listdir(src))[:2]:
            real_copy(os.path.join(src, name), f"{dst}/{name}", **kwargs)
        raise OSError("connection reset during upload")

    monkeypatch.setattr(pafs, "copy_files", crash_after_two_files)
    with pytest.raises(OSError, match="connection reset"):
        export.publish_dir(str(second), target)
    monkeypatch.setattr(pafs, "copy_files", real_copy)
    (fragment,) = versions() - {live}
    assert fragment > live  # newer than the live version: "the newest old one" would be it
    assert len(files(fragment)) == 2
    assert pointed() == live

    export.publish_dir(str(second), target)
    new = pointed()
    assert new not in (live, fragment)
    assert json.loads((models.resolve(target) / models.METADATA_FILE).read_text()) == {"generation": 2}
    assert versions() == {live, new}  # the previously live one and the new one; the fragment is gone
    assert files(live) == sorted(f.name for f in first.iterdir())  # whole, byte for byte
    for f in first.iterdir():
        assert fs.cat_file(f"{versions_root}/{live}/{f.name}") == f.read_bytes()


def test_export_root_reads_the_old_flat_layout_and_refuses_a_bad_pointer(s3_server, tiny_bert_dir, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path / "cache"))
    fs = io.s3fs_filesystem()
    prefix = f"{s3_server.bucket}/models/flat-export"
    fs.put(str(tiny_bert_dir), prefix, recursive=True)
    assert models.export_root(f"s3://{prefix}") == f"s3://{prefix}"
    fs.pipe_file(f"{prefix}/{models.EXPORT_POINTER}", b'{"version": "../../elsewhere"}')
    with pytest.raises(InputError, match="not a plain relative path"):
        models.resolve(f"s3://{prefix}")


def test_lock_refuses_an_s3_endpoint_that_ignores_conditional_writes(s3_server, monkeypatch):
    from lantern_batch.errors import LanternError

    uri = s3_server.uri("synth", "_locks", "synthesize.lock")
    with io.LockKeeper(uri, owner="run-a", ttl_s=60):  # moto honours If-None-Match
        with pytest.raises(LockHeldError):
            io.LockKeeper(uri, owner="run-b", ttl_s=60).__enter__()
    real_put = io._s3_put

    def ignoring_conditions(target, body, **conditions):  # what such an endpoint does
        return real_put(target, body)

    monkeypatch.setattr(io, "_s3_put", ignoring_conditions)
    monkeypatch.setattr(io, "_CONDITIONAL_OK", set())
    with pytest.raises(LanternError, match="ignores conditional writes"):
        io.LockKeeper(s3_server.uri("other", "_locks", "x.lock"), owner="run-c", ttl_s=60).__enter__()
    fs = io.s3fs_filesystem()
    assert not fs.exists(f"{s3_server.bucket}/other/_locks/x.lock")
    assert not [k for k in fs.find(f"{s3_server.bucket}/other") if "probe" in k]


def test_a_node_without_the_drivers_copy_resolves_the_model_itself(s3_server, tiny_bert_dir, tmp_path, monkeypatch):
    """Precompute's actors get the driver's resolved path; on another node of a cluster that
    path does not exist, so the node downloads the model into its own cache and checks that it
    is the version the run recorded."""
    fs = io.s3fs_filesystem()
    prefix = f"{s3_server.bucket}/models/node-local"
    fs.put(str(tiny_bert_dir), prefix, recursive=True)
    uri = f"s3://{prefix}"
    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path / "head-cache"))
    head_dir = models.resolve(uri)
    version = models.model_version(head_dir)
    assert models.on_this_node(uri, str(head_dir), version) == str(head_dir)

    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path / "worker-cache"))  # another node
    elsewhere = str(tmp_path / "not-on-this-node" / head_dir.name)
    local = models.on_this_node(uri, elsewhere, version)
    assert local.startswith(str(tmp_path / "worker-cache")) and models.model_version(local) == version

    fs.pipe_file(f"{prefix}/{models.METADATA_FILE}", b'{"retrained": true}\n')  # the export changed
    with pytest.raises(InputError, match="changed during the run"):
        models.on_this_node(uri, str(tmp_path / "gone" / "x"), version)
