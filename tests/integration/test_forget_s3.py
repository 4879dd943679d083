"""``lantern-batch forget`` on S3 (a real moto_server, tests/fixtures/s3.py), both S3 backends:
the same outputs as the local test (tests/fixtures/forget.py), forgotten, then checked object by
object; the cleaned partitions are published generations that io.read_published reads."""

from __future__ import annotations

import json

import pytest

from lantern_batch import io
from lantern_batch.forget import tombstones as tb
from lantern_batch.forget.config import ForgetConfig
from lantern_batch.forget.job import run
from lantern_batch.teacher import store
from tests.fixtures.forget import FORGET, KEY, assert_nothing_left, build_outputs, kept, snapshot

pytestmark = pytest.mark.integration


@pytest.fixture(params=["pyarrow", "s3fs"])
def s3_backend(request, monkeypatch, s3_server):
    monkeypatch.setenv("LANTERN_S3_BACKEND", request.param)
    return request.param


def test_forget_on_s3(s3_server, s3_backend, monkeypatch, tmp_path):
    monkeypatch.setenv(tb.KEY_ENV, KEY)
    root = s3_server.uri("forget", s3_backend)
    paths = build_outputs(root)
    before = snapshot(paths)
    request = io.join(root, "requests", "members.txt")
    io.write_text(request, "\n".join(FORGET) + "\n")
    out = io.join(root, "forget-reports")
    cfg = ForgetConfig(members=request, out=out, tombstones=io.join(root, "central-tombstones"),
                       precompute=[paths["precompute"]], synthesize=[paths["synthesize"]],
                       distill=[paths["distill"]], curation=[paths["curation"]], tables=[paths["tables"]],
                       reports=[paths["reports"]],
                       gc_grace_s=0.05)
    assert run(cfg) == 0

    io.delete_file(request)  # the request itself is the operator's to delete
    assert_nothing_left(root)
    after = snapshot(paths)
    for name, rows in before.items():
        assert after[name] == kept(rows), name
    for ds in ("2026-11-23", "2026-11-24"):
        sdir = io.join(paths["precompute"], "scores", f"ds={ds}")
        man, _ = io.published_files(sdir)
        assert man["run_id"].startswith("forget-")
        assert sorted(n for n in io.list_dir(sdir) if n.endswith(".parquet")) == sorted(man["files"])
        assert man["counts"]["rows_published"] == io.read_published(sdir).num_rows
        assert man["counts"]["conservation_ok"] is True
    assert store.clean_orphans(paths["synthesize"]) == []
    (name,) = [n for n in io.list_dir(out) if n.startswith("report-")]
    report = json.loads(io.read_text(io.join(out, name)))
    assert report["status"] == "complete" and report["members_found"] == 2
    assert report["tables"]["precompute.scores"]["rows_removed"] == 5
    assert report["tables"]["reports"] == {"files_deleted": 1}
    assert report["tables"]["synthesize.blackbox_cache"] == {"entries_deleted": 3, "legacy_entries_deleted": 1}
    # The central directory and each root's hold the tombstone; a later run's filter reads it.
    f = tb.load_filter(paths["precompute"], io.join(root, "central-tombstones"))
    assert f.mask([*FORGET, "mem-keep-one"]).tolist() == [True, True, False]
    assert len(report["tombstones"]["files"]) == 4
